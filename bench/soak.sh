#!/usr/bin/env bash
# Soak test (issue #8, point 4): the release binary under a steady mixed query load for
# DURATION seconds (default 600) while SIP targets flap and the config reloads, on loopback
# only. Checks, and exits non-zero if one fails:
#
#   - RSS: sampled every 5 s; after a 60 s warm-up (or 10 % of the run) it may grow by at
#     most RSS_BOUND_MB (default 32) — no leak;
#   - static names: 0 SERVFAIL (dnsperf's response code counts) and at most 0.1 % lost;
#   - health: every stop of a sipp peer shows as a `down` transition and every restart as
#     an `up` one (sipdns_target_transitions_total and /api/v1/targets), nothing else;
#   - reloads: every reload (file change, SIGHUP, API) counted as ok, none failed;
#   - the process is alive at the end and still answers.
#
#   bench/soak.sh [DURATION_SECONDS]          e.g. bench/soak.sh 60 for a quick run
#
# Load: two dnsperf clients — static names of the managed SIP domain (NAPTR / SRV / A /
# AAAA, 300 q/s) and forwarded names (A of 500 hosts with TTL 2 s from an upstream, plus
# NXDOMAIN names, 200 q/s). The upstream is a second sipdns answering from a static zone.
# Flapping: 3 sipp UAS peers behind the domain's SRV records; every FLAP seconds (default
# 12) one of them is stopped, and restarted FLAP seconds later. Reload: every RELOAD
# seconds (default 15), in turn a config file change, SIGHUP, and POST /api/v1/reload.
# Everything runs under `nice -n 19` (the machine is shared); results land in
# bench/soak-results/ (summary.txt, rss.csv, events.txt, dnsperf-*.txt).
set -euo pipefail

DURATION="${1:-600}"
FLAP="${FLAP:-12}"
RELOAD="${RELOAD:-15}"
RSS_BOUND_MB="${RSS_BOUND_MB:-32}"
STATIC_QPS="${STATIC_QPS:-300}"
FORWARD_QPS="${FORWARD_QPS:-200}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/bench/soak-results"
for tool in dnsperf sipp curl; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is missing" >&2; exit 2; }
done
[ "$DURATION" -ge 30 ] || { echo "soak: DURATION must be at least 30 s" >&2; exit 2; }

echo "soak: building the release binary..." >&2
(cd "$ROOT" && nice -n 19 cargo build --release --quiet)
BIN="$ROOT/target/release/sipdns"

WORK="$(mktemp -d /tmp/sipdns-soak.XXXXXX)"
mkdir -p "$OUT" "$WORK/main/zones" "$WORK/up/zones"
rm -f "$OUT"/*.txt "$OUT"/*.csv "$OUT"/*.log
PIDS=()
SIPP_PIDS=()
cleanup() {
    # Only the processes this script started, by their ids.
    for p in "${SIPP_PIDS[@]:-}" "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A free loopback port (UDP and TCP), from the kernel.
free_port() {
    python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); print(p)'
}
DNS_PORT=$(free_port); UP_PORT=$(free_port); API_PORT=$(free_port)
SIP_PORTS=($(free_port) $(free_port) $(free_port))
TOKEN="soak-token-$RANDOM$RANDOM"
echo "$TOKEN" > "$WORK/main/api-token"
events() { echo "$(date +%s) $*" >> "$OUT/events.txt"; }

# --- the upstream: a second sipdns, authoritative for upstream.example.net ---------------
{
    echo '$ORIGIN upstream.example.net.'
    echo '$TTL 2'
    echo '@ IN SOA ns1 hostmaster 1 3600 600 86400 2'
    echo '  IN NS ns1'
    echo 'ns1 IN A 192.0.2.53'
    for i in $(seq 0 499); do echo "host$i IN A 198.51.100.$((i % 250 + 1))"; done
} > "$WORK/up/zones/upstream.example.net.zone"
cat > "$WORK/up/sipdns.yaml" <<YAML
dns:
  listen: ["127.0.0.1:$UP_PORT"]
  tcp_idle_timeout: 10s
api:
  listen: null
upstream:
  servers: ["127.0.0.1:9"]
zones:
  dir: zones
YAML
nice -n 19 "$BIN" run -c "$WORK/up/sipdns.yaml" 2>"$OUT/upstream.log" &
PIDS+=($!)

# --- the server under test --------------------------------------------------------------
{
    echo 'zone: pbx.example.org'
    echo 'ttl: 300'
    echo 'records:'
    echo '  - { name: "@", type: NAPTR, order: 100, preference: 50, flags: s, service: SIP+D2U, replacement: _sip._udp }'
    for i in 0 1 2; do
        echo "  - { name: _sip._udp, type: SRV, priority: $((10 * (i + 1))), weight: 1, port: ${SIP_PORTS[$i]}, target: server$i }"
        echo "  - { name: server$i, type: A, address: 127.0.0.1 }"
    done
} > "$WORK/main/zones/pbx.example.org.yaml"
write_config() {
    cat > "$WORK/main/sipdns.yaml" <<YAML
# soak config, version $1
dns:
  listen: ["127.0.0.1:$DNS_PORT"]
api:
  listen: "127.0.0.1:$API_PORT"
  token_file: api-token
upstream:
  servers: ["127.0.0.1:$UP_PORT"]
  timeout: 1s
  attempts: 2
  cache_size: 2000
zones:
  dir: zones
sip:
  probe:
    interval: 1s
    timeout: 500ms
    fall: 2
    rise: 2
  domains:
    - name: pbx.example.org
      ttl: $((20 + $1 % 10))
YAML
}
write_config 0
start_sipp() {
    local i=$1
    nice -n 19 sipp -sf "$ROOT/tests/fixtures/sipp/uas_options.xml" -i 127.0.0.1 \
        -p "${SIP_PORTS[$i]}" -t u1 -nostdin -max_socket 64 \
        >/dev/null 2>>"$OUT/sipp.log" &
    SIPP_PIDS[$i]=$!
}
for i in 0 1 2; do start_sipp "$i"; done
sleep 1
nice -n 19 "$BIN" run -c "$WORK/main/sipdns.yaml" 2>"$OUT/sipdns.log" &
MAIN=$!
PIDS+=($MAIN)
api() { curl -s -m 5 -H "Authorization: Bearer $TOKEN" "$@"; }
for _ in $(seq 1 200); do
    api -f -o /dev/null "http://127.0.0.1:$API_PORT/readyz" && break
    sleep 0.1
done
api -f -o /dev/null "http://127.0.0.1:$API_PORT/readyz" || { echo "soak: sipdns not ready" >&2; cat "$OUT/sipdns.log" >&2; exit 1; }
events "start main=$MAIN dns=$DNS_PORT api=$API_PORT sip=${SIP_PORTS[*]}"

# --- load ------------------------------------------------------------------------------
{
    for _ in 1 2 3 4; do
        echo "pbx.example.org NAPTR"
        echo "_sip._udp.pbx.example.org SRV"
        echo "server0.pbx.example.org A"
        echo "server1.pbx.example.org A"
        echo "server2.pbx.example.org A"
    done
    echo "server0.pbx.example.org AAAA"
    echo "nothere.pbx.example.org A"
} > "$WORK/static.txt"
{
    for i in $(seq 0 499); do echo "host$i.upstream.example.net A"; done
    for i in $(seq 0 49); do echo "missing$i.upstream.example.net A"; done
} > "$WORK/forward.txt"
nice -n 19 dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/static.txt" -l "$DURATION" \
    -Q "$STATIC_QPS" -c 8 -t 2 > "$OUT/dnsperf-static.txt" 2>&1 &
PERF_STATIC=$!
nice -n 19 dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/forward.txt" -l "$DURATION" \
    -Q "$FORWARD_QPS" -c 8 -t 2 > "$OUT/dnsperf-forward.txt" 2>&1 &
PERF_FWD=$!
PIDS+=($PERF_STATIC $PERF_FWD)

# --- flapping, reloads, RSS samples ----------------------------------------------------------
echo "t,rss_kb" > "$OUT/rss.csv"
START=$(date +%s)
END=$((START + DURATION))
stops=0; starts=0; reloads=0; down_peer=-1; next_flap=$((START + FLAP)); next_reload=$((START + RELOAD))
next_rss=$START; flap_turn=0
while [ "$(date +%s)" -lt "$END" ]; do
    now=$(date +%s)
    if [ "$now" -ge "$next_rss" ]; then
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$MAIN/status" 2>/dev/null || echo 0)
        echo "$((now - START)),$rss" >> "$OUT/rss.csv"
        next_rss=$((now + 5))
    fi
    # Stop a peer, or restart the stopped one; leave the last FLAP*2 seconds quiet so the
    # last change is observed before the end.
    if [ "$now" -ge "$next_flap" ] && [ "$now" -lt $((END - 2 * FLAP)) ]; then
        if [ "$down_peer" -lt 0 ]; then
            down_peer=$((flap_turn % 3)); flap_turn=$((flap_turn + 1))
            kill "${SIPP_PIDS[$down_peer]}"; wait "${SIPP_PIDS[$down_peer]}" 2>/dev/null || true
            stops=$((stops + 1)); events "stop sipp $down_peer port ${SIP_PORTS[$down_peer]}"
        else
            start_sipp "$down_peer"
            starts=$((starts + 1)); events "start sipp $down_peer port ${SIP_PORTS[$down_peer]}"
            down_peer=-1
        fi
        next_flap=$((now + FLAP))
    fi
    if [ "$now" -ge "$next_reload" ]; then
        reloads=$((reloads + 1))
        case $((reloads % 3)) in
            0) write_config "$reloads"; events "reload by file change ($reloads)" ;;
            1) kill -HUP "$MAIN"; events "reload by SIGHUP ($reloads)" ;;
            2) api -X POST -o /dev/null "http://127.0.0.1:$API_PORT/api/v1/reload"; events "reload by API ($reloads)" ;;
        esac
        next_reload=$((now + RELOAD))
    fi
    sleep 1
done
if [ "$down_peer" -ge 0 ]; then
    start_sipp "$down_peer"; starts=$((starts + 1)); events "start sipp $down_peer (final)"
    sleep $((FLAP))
fi
wait "$PERF_STATIC" "$PERF_FWD" || true
sleep 3

# --- verdicts --------------------------------------------------------------------------------
metrics=$(curl -s -m 5 "http://127.0.0.1:$API_PORT/metrics")
metric() { echo "$metrics" | awk -v k="$1" '$1 == k {print $2}' | head -1; }
targets=$(api "http://127.0.0.1:$API_PORT/api/v1/targets" || echo '[]')
api_transitions=$(echo "$targets" | python3 -c 'import json,sys
d=json.load(sys.stdin); t=d if isinstance(d,list) else d.get("targets",[])
print(sum(int(x.get("transitions",0)) for x in t))' || echo '?')
down=$(metric 'sipdns_target_transitions_total{to="down"}')
up=$(metric 'sipdns_target_transitions_total{to="up"}')
reload_ok=$(metric 'sipdns_config_reloads_total{result="ok"}')
reload_err=$(metric 'sipdns_config_reloads_total{result="error"}')
rcode() { { grep -o "$2 [0-9]*" "$OUT/$1" || true; } | awk '{print $2}' | head -1; }
field() { awk -v k="$2" -F: '$1 ~ k {gsub(/^[ \t]+/, "", $2); print $2; exit}' "$OUT/$1" | awk '{print $1}'; }
s_sent=$(field dnsperf-static.txt "Queries sent"); s_lost=$(field dnsperf-static.txt "Queries lost")
s_servfail=$(rcode dnsperf-static.txt SERVFAIL); s_servfail=${s_servfail:-0}
f_sent=$(field dnsperf-forward.txt "Queries sent"); f_lost=$(field dnsperf-forward.txt "Queries lost")
f_servfail=$(rcode dnsperf-forward.txt SERVFAIL); f_servfail=${f_servfail:-0}
warm=$((DURATION / 10 < 60 ? DURATION / 10 : 60))
rss_check=$(python3 - "$OUT/rss.csv" "$warm" "$RSS_BOUND_MB" <<'PY'
import csv, sys
rows = [(int(r["t"]), int(r["rss_kb"])) for r in csv.DictReader(open(sys.argv[1])) if int(r["rss_kb"]) > 0]
warm, bound = int(sys.argv[2]), int(sys.argv[3]) * 1024
base = next((kb for t, kb in rows if t >= warm), rows[-1][1])
peak = max(kb for t, kb in rows)
last = rows[-1][1]
growth = max(kb for t, kb in rows if t >= warm) - base
mb = lambda kb: f"{kb / 1024:.1f}"
print(f"{mb(rows[0][1])} {mb(base)} {mb(peak)} {mb(last)} {mb(growth)} {'ok' if growth <= bound else 'FAIL'}")
PY
)
read -r rss_first rss_base rss_peak rss_last rss_growth rss_verdict <<< "$rss_check"
alive=yes; kill -0 "$MAIN" 2>/dev/null || alive=no
answer=$(dig +short +time=2 +tries=1 -p "$DNS_PORT" @127.0.0.1 server0.pbx.example.org A || true)

verdict() { if [ "$1" = ok ]; then echo "ok"; else echo "FAIL"; fi; }
lost_ok=$(python3 -c "print('ok' if int('${s_lost:-1}') <= max(1, int('${s_sent:-0}') // 1000) else 'x')")
{
    echo "# sipdns soak $(date -u +%Y-%m-%dT%H:%M:%SZ): ${DURATION}s, $(nproc) cores, $("$BIN" --version)"
    echo "load: static ${STATIC_QPS} q/s + forwarded ${FORWARD_QPS} q/s; flap every ${FLAP}s; reload every ${RELOAD}s"
    echo "static queries: sent ${s_sent:-?}, lost ${s_lost:-?}, SERVFAIL ${s_servfail} -> $( [ "$s_servfail" = 0 ] && [ "$lost_ok" = ok ] && verdict ok || verdict x)"
    echo "forwarded queries: sent ${f_sent:-?}, lost ${f_lost:-?}, SERVFAIL ${f_servfail} (reported, not judged)"
    echo "RSS MB: start ${rss_first}, after warm-up (${warm}s) ${rss_base}, peak ${rss_peak}, end ${rss_last}, growth after warm-up ${rss_growth} (bound ${RSS_BOUND_MB}) -> $(verdict "$rss_verdict")"
    echo "health: peers stopped ${stops}, restarted ${starts}; transitions down ${down:-?}, up ${up:-?}, API total ${api_transitions} -> $( [ "${down:-x}" = "$stops" ] && [ "${up:-x}" = "$starts" ] && [ "$api_transitions" = $((stops + starts)) ] && verdict ok || verdict x)"
    echo "reloads: ${reloads} triggered; counted ok ${reload_ok:-?}, error ${reload_err:-?} -> $( [ "${reload_err:-1}" = 0 ] && [ "${reload_ok:-0}" -ge "$reloads" ] && verdict ok || verdict x)"
    echo "alive at the end: ${alive}; server0 A -> ${answer:-none} -> $( [ "$alive" = yes ] && [ "$answer" = 127.0.0.1 ] && verdict ok || verdict x)"
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"
if grep -q FAIL "$OUT/summary.txt"; then exit 1; fi
