#!/usr/bin/env bash
# Runs every test: formatting, lints (every target, benches included), unit, doc and
# black-box tests (real sockets on loopback, real sipp / kamailio / baresip / linphone /
# unbound / knot / bind / chromium peers). This is the README's test command; .ci/run calls
# it. Benchmarks are compiled by clippy but run only by their own scripts (bench/*.sh), not
# here. Ends with one totals line: `tests: N passed, N failed`.
#
# First it installs what the tests need and the machine lacks: as root on Debian with
# apt-get (one `apt-get update`, then one install); otherwise it prints the list of what is
# missing and the command that installs it, and exits non-zero. SIPDNS_NO_INSTALL=1 skips
# the installing (the check still runs).
set -euo pipefail
cd "$(dirname "$0")/.."

# One line a package: the Debian package, then the file or command that shows it is there.
# A command is looked up on PATH and in the sbin directories (as a non-root user /usr/sbin
# is often not on PATH).
packages=(
  "sip-tester            sipp"
  "kamailio              kamailio"
  "kamailio-tls-modules  /usr/lib/*/kamailio/modules/tls.so"
  "dnsutils              dig"
  "prometheus            promtool"
  "baresip-core          baresip"
  "linphone-cli          linphonec"
  "openssl               openssl"
  "ca-certificates       update-ca-certificates"
  "kea-dhcp4-server      kea-dhcp4"
  "dnsmasq-base          dnsmasq"
  "systemd               systemd-analyze"
  "unbound               unbound"
  "knot                  knotd"
  "knot-dnsutils         kdig"
  "bind9                 named"
  "bind9-dnsutils        delv"
  "chromium              chromium"
  "chromium-driver       chromedriver"
)
# Debian starts a system service for some of these packages; the tests start their own
# instances on loopback with their own config and ports, so the system ones are stopped.
services=(prometheus kamailio kea-dhcp4-server unbound knot named bind9)

present() {
  case "$1" in
    /*) compgen -G "$1" >/dev/null ;;
    *) command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
  esac
}

missing=()
for line in "${packages[@]}"; do
  read -r pkg probe <<<"$line"
  present "$probe" || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [ "${SIPDNS_NO_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    # The downloaded .deb files (chromium alone is over 100 MB) are not needed again.
    apt-get clean
  else
    {
      echo "The tests need these Debian packages, which are not installed:"
      printf '  %s\n' "${missing[@]}"
      echo "Install them (Debian 12), then run ./scripts/test.sh again:"
      echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
      echo "  sudo systemctl stop ${services[*]}   # the tests run their own instances"
    } >&2
    exit 1
  fi
fi
if [ "$(id -u)" = 0 ] && command -v systemctl >/dev/null; then
  systemctl stop "${services[@]}" >/dev/null 2>&1 || true
fi

# A clean build of every target takes about 1.5 GB (docs/performance.md, "Build footprint");
# a nearly full disk fails the build half-way with ENOSPC, so say so before starting.
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" 2>/dev/null | awk 'NR == 2 {print $4}')
if [ -n "${free_kb:-}" ] && [ "$free_kb" -lt 2000000 ]; then
  echo "warning: only $((free_kb / 1024)) MB free for $target_dir; a clean build needs about 1.5 GB" >&2
fi

cargo fmt --all -- --check
# The module import graph: no cycle, no arrow from a lower layer up (ARCHITECTURE.md).
if [ -e scripts/check-imports.sh ]; then
  bash scripts/check-imports.sh
fi
cargo clippy --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked 2>&1 | tee "$log" || status=$?
passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s += $6} END {print s + 0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
