#!/usr/bin/env bash
# Launch a GNNPipe run described by a YAML config on ways*stages workers.
#   ./launch.sh CONFIG [section.key=value ...] [--metrics-out PATH] [-- TORCHRUN_OPTIONS]
#   ./launch.sh --mpirun CONFIG ...        (use mpirun instead of torchrun; needs mpi4py)
# Multi-node: pass torchrun's own options after "--", e.g. -- --nnodes=2 --node_rank=0 --rdzv_endpoint=host:29500
# (then --standalone is not used). Only rank 0 prints epoch lines; every rank writes runs/<run>/rank<k>.log.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
py="${GNNPIPE_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
use_mpi=0
if [ "${1:-}" = "--mpirun" ]; then use_mpi=1; shift; fi
[ $# -ge 1 ] || { echo "usage: ./launch.sh [--mpirun] CONFIG [overrides] [--metrics-out PATH] [-- torchrun options]" >&2; exit 2; }
config="$1"; shift
args=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  args+=("$1"); shift
done
overrides=()
for a in "${args[@]+"${args[@]}"}"; do case "$a" in *=*) [[ "$a" == --* ]] || overrides+=("$a");; esac; done
nproc="$("$py" -m gnnpipe world-size --config "$config" "${overrides[@]+"${overrides[@]}"}")" || exit 2
if [ "$use_mpi" = 1 ]; then
  # like torchrun: one OpenMP thread per worker unless the user chose otherwise
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  exec mpirun -np "$nproc" -x OMP_NUM_THREADS "${extra[@]+"${extra[@]}"}" \
    "$py" -m gnnpipe train --config "$config" "${args[@]+"${args[@]}"}"
fi
if [ "$nproc" = 1 ] && [ ${#extra[@]} -eq 0 ]; then
  exec "$py" -m gnnpipe train --config "$config" "${args[@]+"${args[@]}"}"
fi
if [ ${#extra[@]} -eq 0 ]; then extra=(--standalone); fi
exec "$py" -m torch.distributed.run "${extra[@]}" --nproc_per_node="$nproc" -m gnnpipe train --config "$config" "${args[@]+"${args[@]}"}"
