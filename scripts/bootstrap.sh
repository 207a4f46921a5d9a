#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install GNNPipe with its pinned dependencies.
# A machine whose Python already has torch (e.g. a CUDA build) keeps it; otherwise the pinned CPU wheel is used.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GNNPIPE_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.gnnpipe-installed"
want="$(cat "$root/requirements.txt" "$root/requirements-test.txt" "$root/setup.py" "$root"/csrc/* 2>/dev/null | cksum)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[bootstrap] setting up $venv" >&2
if [ ! -x "$venv/bin/python" ]; then
  # --system-site-packages lets a preinstalled (CUDA) torch be seen; everything else is pinned in the venv.
  "$py" -m venv --system-site-packages "$venv"
fi
vpy="$venv/bin/python"
"$vpy" -m pip install -q --upgrade pip
if ! "$vpy" -c "import torch" 2>/dev/null; then
  "$vpy" -m pip install -q "torch==2.13.0"
fi
"$vpy" -m pip install -q -r "$root/requirements.txt" -r "$root/requirements-test.txt"
# --no-build-isolation: setup.py compiles the C++ kernels (csrc/) against this venv's torch; a failed build
# installs without them (pure-torch kernels) and the line below says why.
"$vpy" -c "import setuptools" 2>/dev/null || "$vpy" -m pip install -q setuptools
"$vpy" -m pip install -q --no-deps --no-build-isolation -e "$root"
echo "[bootstrap] $("$vpy" -c 'from gnnpipe.kernels import describe; print(describe())')" >&2
echo "$want" > "$stamp"
echo "[bootstrap] done" >&2
