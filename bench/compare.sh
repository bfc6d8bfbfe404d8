#!/usr/bin/env bash
# sipdns against unbound and dnsmasq, side by side on loopback (issue 6): the one command
# behind docs/performance.md.
#
#   bench/compare.sh                         # full run, about 12 minutes on 2 cores
#   bench/compare.sh --rounds 1 --secs 3     # a quick look
#   bench/compare.sh --help                  # every option (bench/compare.py)
#
# Installs what it needs on a fresh Debian 12 (dnsperf, unbound, dnsmasq-base, python3),
# builds sipdns in release mode, then runs bench/compare.py: every server on 127.0.0.1 only,
# ports 25301-25307 and SIP on 127.0.0.11-12:25060 (--port-base moves the DNS ports).
# The table goes to stdout and to target/bench/results.md; logs to target/bench/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v unbound >/dev/null || need+=(unbound)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base) # the binary, without the system service
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "installing ${need[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release --quiet
exec python3 bench/compare.py "$@"
