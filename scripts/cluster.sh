#!/usr/bin/env bash
# An emulated multi-node cluster on this machine: network namespaces joined by tbf-shaped links (DESIGN §4).
#   scripts/cluster.sh up --nodes K --rate R [--latency T] [--name N]
#   scripts/cluster.sh run [--nodes K --rate R] [--pin] [--timeout S] [--metrics-out P] CONFIG [overrides]
#   scripts/cluster.sh down [--name N] | --all
# Needs root (exit 2 with one line otherwise). The code: gnnpipe/cluster/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${GNNPIPE_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
cd "$root"
exec "$py" -m gnnpipe.cluster "$@"
