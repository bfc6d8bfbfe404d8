#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and black-box tests (real sockets on loopback,
# real sipp / kamailio / baresip peers). This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
cargo test --doc --locked
