#!/usr/bin/env bash
# Runs every test: formatting, lints (every target, benches included), unit, doc and
# black-box tests (real sockets on loopback, real sipp / kamailio / baresip peers). This is
# the README's test command; .ci/run calls it. Benchmarks are compiled by clippy but run
# only by their own scripts (bench/*.sh), not here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
