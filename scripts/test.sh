#!/usr/bin/env bash
# Runs every test: formatting, lints (every target, benches included), unit, doc and
# black-box tests (real sockets on loopback, real sipp / kamailio / baresip peers). This is
# the README's test command; .ci/run calls it. Benchmarks are compiled by clippy but run
# only by their own scripts (bench/*.sh), not here. Ends with one totals line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
python3 scripts/check-imports.py # the module import graph points one way (layers listed inside)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"
passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s += $6} END {print s + 0}')
echo "tests: ${passed} passed, ${failed} failed"
