#!/usr/bin/env bash
# Secondary zones at scale (issue 17): a real Knot DNS primary on loopback serving a zone of
# RECORDS records (default 100000) and a catalog of MEMBERS member zones (default 1000);
# the sipdns binary follows them with TSIG. Prints time to first answer after start (cold:
# AXFR; restarted without the primary: the disk copy), RSS, and an IXFR of one record under
# QPS queries/s (default 2000; lost queries, latency, slowest query around the swap).
#
#   bench/transfer.sh
#   RECORDS=20000 MEMBERS=200 bench/transfer.sh
#
# Needs knotd/knotc (Debian: knot). Built with the release profile but without LTO, to
# keep the build short on small machines.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 CARGO_PROFILE_BENCH_DEBUG=0
command -v knotd >/dev/null || PATH="$PATH:/usr/sbin"
cargo bench --bench transfer -q -- --run --records "${RECORDS:-100000}" --members "${MEMBERS:-1000}" \
  --qps "${QPS:-2000}" --secs "${SECS:-6}"
