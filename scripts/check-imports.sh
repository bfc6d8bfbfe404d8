#!/usr/bin/env bash
# The module import graph of src/: no cycle, no arrow from a lower layer up. The layers and
# the parser are in check-imports.py; `--graph` prints module -> imports.
set -euo pipefail
exec python3 "$(dirname "$0")/check-imports.py" "$@"
