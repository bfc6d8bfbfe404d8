#!/usr/bin/env bash
# Runs every sipdns fuzz target, one after the other, for SECONDS each (default 600), and
# prints one summary line per target; fuzz/last-run.txt keeps the last run of every target
# (a run of some targets updates their lines only; copy it into docs/resilience.md, "Fuzzing").
#
#   fuzz/run.sh [SECONDS] [TARGET...]      e.g. fuzz/run.sh 600   or   fuzz/run.sh 30 dns_wire
#
# - Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler (libFuzzer is built
#   from source by libfuzzer-sys).
# - cargo-fuzz passes nightly-only flags (-Zsanitizer=address, -Cpasses=sancov-module...).
#   On a stable toolchain RUSTC_BOOTSTRAP=1 lets rustc accept them; this script sets it
#   unless a nightly toolchain is asked for with FUZZ_TOOLCHAIN=nightly.
# - Shares the machine politely: everything runs under `nice -n 19`, one target at a time,
#   one libFuzzer job, at most 2 GB RSS per target, inputs capped at 4 KiB.
# - Corpora grow in fuzz/corpus/<target> (not committed), seeded from fuzz/seeds/<target>;
#   crashes land in fuzz/artifacts/<target>. A crash fails the script (exit 1) after all
#   targets ran; turn each one into a regression test in the normal test suite.
set -euo pipefail

SECONDS_EACH="${1:-600}"
shift || true
ALL_TARGETS=(dns_wire dns_handle sip_reply zone_yaml zone_file config)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

cd "$(dirname "$0")"
if [ "${FUZZ_TOOLCHAIN:-}" = nightly ]; then
    TOOLCHAIN=(+nightly)
else
    TOOLCHAIN=()
    export RUSTC_BOOTSTRAP=1
fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }

echo "building fuzz targets (release, ASan, debug assertions)..." >&2
nice -n 19 cargo "${TOOLCHAIN[@]}" fuzz build -O >&2

summary=last-run.txt
header="$(printf '%-12s %-20s %7s %12s %8s %7s %7s %s' target "finished (UTC)" seconds executions exec/s corpus crashes result)"
# One line per target, the last run of each: a run of some targets keeps the others' lines.
declare -A lines=()
if [ -f "$summary" ]; then
    while IFS= read -r l; do
        t="${l%% *}"
        case "$t" in ''|'#'*|target) ;; *) lines[$t]="$l" ;; esac
    done < "$summary"
fi
failed=0
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    if [ -d "seeds/$t" ] && [ -z "$(ls -A "corpus/$t")" ]; then
        cp "seeds/$t"/* "corpus/$t"/
    fi
    before=$(ls "artifacts/$t" | wc -l)
    log="artifacts/$t.log"
    echo "fuzzing $t for ${SECONDS_EACH}s (log: fuzz/$log)" >&2
    set +e
    nice -n 19 cargo "${TOOLCHAIN[@]}" fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=4096 -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        > "$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    corpus=$(ls "corpus/$t" | wc -l)
    crashes=$(( $(ls "artifacts/$t" | wc -l) - before ))
    result=ok
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        result="FAILED (exit $rc, see fuzz/$log)"
        failed=1
    fi
    lines[$t]="$(printf '%-12s %-20s %7s %12s %8s %7s %7s %s' "$t" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$SECONDS_EACH" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes" "$result")"
    echo "${lines[$t]}" >&2
done
{
    echo "# sipdns fuzz targets, last run of each ($(rustc --version), $(nproc) cores, nice 19)"
    echo "$header"
    for t in "${ALL_TARGETS[@]}"; do if [ -n "${lines[$t]:-}" ]; then echo "${lines[$t]}"; fi; done
} > "$summary"
cat "$summary"
exit "$failed"
