#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest, e.g. ./test.sh -k chunker
# Without arguments, the tests whose numbers depend on the aggregation kernels (engine equality, models,
# reference, kernels) run a second time on the pure-torch backend when the native one is in use.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
py="${GNNPIPE_VENV:-$root/.venv}/bin/python"
if [ $# -gt 0 ]; then
  exec "$py" -m pytest -q "$@"
fi
"$py" -m pytest -q
backend="$("$py" -c 'from gnnpipe import kernels; print(kernels.backend().name)')"
if [ "$backend" = native ]; then
  echo "[test.sh] again on the torch kernels (GNNPIPE_KERNELS=torch): engine, models, reference, kernels"
  GNNPIPE_KERNELS=torch "$py" -m pytest -q tests/test_engine.py tests/test_models.py tests/test_reference.py \
    tests/test_kernels.py
fi
