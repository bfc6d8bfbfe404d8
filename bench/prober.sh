#!/usr/bin/env bash
# Prober benchmark: N fake SIP UAS on loopback (UDP), probed at a 1 s interval.
# Reports, per N, the prober's CPU (one core = 100 %), CPU per probe, and how late a 1 ms
# timer task sharing the prober's runtime wakes up (p50/p99/max) -- what probing adds to
# the latency of a DNS handler on the same runtime.
#
#   bench/prober.sh                 # N = 0 (baseline), 100, 1000, 5000; 10 s each
#   SECS=30 bench/prober.sh 5000    # one size, longer window
#
# Built with the release profile but without LTO, to keep the build short on small
# machines (the figures differ little from an LTO build).
#
# Then, per N, the whole server (DNS + prober probing the N targets) with a client sending
# QPS (default 2000) static queries per second on loopback: DNS p50/p99/p99.9 alongside,
# N = 0 being the baseline without probing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(0 100 1000 5000)
# One UDP socket per fake target, plus the prober's.
ulimit -n 20000 2>/dev/null || true
export CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 CARGO_PROFILE_BENCH_DEBUG=0
cargo bench --bench prober --no-run >/dev/null 2>&1 || cargo bench --bench prober --no-run
echo "# $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in "${SIZES[@]}"; do
  cargo bench --bench prober -q -- --targets "$n" --secs "$SECS" 2>&1 | grep -v '^$'
done
for n in "${SIZES[@]}"; do
  cargo bench --bench prober -q -- --dns --targets "$n" --secs "$SECS" --qps "${QPS:-2000}" 2>&1 | grep -v '^$'
done
