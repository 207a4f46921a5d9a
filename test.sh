#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest, e.g. ./test.sh -k chunker
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "${GNNPIPE_VENV:-$root/.venv}/bin/python" -m pytest -q "$@"
