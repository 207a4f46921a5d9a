#!/usr/bin/env bash
# Set up (if needed) and run the built-in default job: a small multi-worker GNNPipe run on CPU.
# Extra arguments are config overrides, e.g. ./demo.sh train.epochs=50
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec ./launch.sh experiments/configs/default.yaml "$@"
