#!/usr/bin/env bash
# Launch a GNNPipe run described by a YAML config on ways*stages workers.
#   ./launch.sh CONFIG [section.key=value ...] [--metrics-out PATH] [--resume RUN_DIR] [--max-restarts N]
#               [-- TORCHRUN_OPTIONS]
#   ./launch.sh --mpirun CONFIG ...        (use mpirun instead of torchrun; needs mpi4py)
# Multi-node: pass torchrun's own options after "--", e.g. -- --nnodes=2 --node_rank=0 --rdzv_endpoint=host:29500
# (then --standalone is not used, and each node starts ways*stages/nnodes workers). Only rank 0 prints epoch
# lines; every rank writes runs/<run>/rank<k>.log.
# --max-restarts N: torchrun restarts the whole group up to N times after a worker fails or dies; the restarted
# workers go on in the same run directory from its newest complete checkpoint (needs train.checkpoint_every).
# Exit status: 0, or the status of the worker that failed first (2: bad input; 17: stopped by another worker's
# failure; 128+n: signal n), with one line naming that worker, the phase and the error (DESIGN §4).
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
py="${GNNPIPE_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
use_mpi=0
if [ "${1:-}" = "--mpirun" ]; then use_mpi=1; shift; fi
[ $# -ge 1 ] || { echo "usage: ./launch.sh [--mpirun] CONFIG [overrides] [--metrics-out PATH] [-- torchrun options]" >&2; exit 2; }
config="$1"; shift
fail() { echo "launch.sh: error: $*" >&2; exit 2; }
args=(); extra=(); restarts=0
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    --max-restarts=*) restarts="${1#*=}" ;;
    --max-restarts) [ $# -ge 2 ] || fail "--max-restarts needs a value: a count >= 0"; restarts="$2"; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
[[ "$restarts" =~ ^[0-9]+$ ]] || fail "--max-restarts $restarts: expected an integer >= 0"
restarts=$((10#$restarts))
[ "$use_mpi" = 0 ] || [ "$restarts" = 0 ] || fail "--max-restarts needs torchrun's elastic agent; mpirun cannot restart"
overrides=()
for a in "${args[@]+"${args[@]}"}"; do case "$a" in *=*) [[ "$a" == --* ]] || overrides+=("$a");; esac; done
nproc="$("$py" -m gnnpipe world-size --config "$config" --max-restarts "$restarts" \
  "${overrides[@]+"${overrides[@]}"}")" || exit 2
if [ "$use_mpi" = 1 ]; then
  # like torchrun: one OpenMP thread per worker unless the user chose otherwise
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  exec mpirun -np "$nproc" -x OMP_NUM_THREADS "${extra[@]+"${extra[@]}"}" \
    "$py" -m gnnpipe train --config "$config" "${args[@]+"${args[@]}"}"
fi
if [ "$nproc" = 1 ] && [ ${#extra[@]} -eq 0 ] && [ "$restarts" = 0 ]; then
  exec "$py" -m gnnpipe train --config "$config" "${args[@]+"${args[@]}"}"
fi

# Workers per node: the world divided by torchrun's --nnodes (a fixed count), unless given explicitly.
nnodes=1; per_node=""
for ((i = 0; i < ${#extra[@]}; i++)); do
  next="${extra[$((i + 1))]:-}"
  case "${extra[$i]}" in
    --nnodes=*) nnodes="${extra[$i]#*=}" ;;
    --nnodes) nnodes="$next" ;;
    --nproc_per_node=* | --nproc-per-node=*) per_node="${extra[$i]#*=}" ;;
    --nproc_per_node | --nproc-per-node) per_node="$next" ;;
  esac
done
if [[ "$nnodes" == *:* ]]; then
  lo="${nnodes%%:*}"; hi="${nnodes#*:}"
  [ "$lo" = "$hi" ] || fail "--nnodes=$nnodes: an elastic range cannot work, the config needs exactly $nproc workers; give a fixed node count"
  nnodes="$lo"
fi
[[ "$nnodes" =~ ^[1-9][0-9]*$ ]] || fail "--nnodes=$nnodes: expected a positive integer"
if [ -n "$per_node" ]; then
  [[ "$per_node" =~ ^[1-9][0-9]*$ ]] || fail "--nproc_per_node=$per_node: expected a positive integer"
  [ $((per_node * nnodes)) = "$nproc" ] ||
    fail "--nproc_per_node=$per_node x --nnodes=$nnodes = $((per_node * nnodes)) workers, but parallel.ways * parallel.stages = $nproc"
  per_node_arg=()
else
  [ $((nproc % nnodes)) = 0 ] ||
    fail "--nnodes=$nnodes does not divide the $nproc workers (parallel.ways * parallel.stages); give --nproc_per_node per node"
  per_node_arg=(--nproc_per_node="$((nproc / nnodes))")
fi
if [ ${#extra[@]} -eq 0 ]; then extra=(--standalone); fi
# torchrun's agent keeps one store server across restarts, and a restarted gloo group finds the old group's
# keys in it and hangs: with restarts, each attempt's rank 0 hosts a fresh store instead.
if [ "$restarts" != 0 ]; then export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1; fi

# torchrun, run in-process so that its ChildFailedError is not a traceback: the workers write their one line
# to $GNNPIPE_STATUS_DIR (gnnpipe/parallel/liveness.py) and this prints the first failure's line and status.
read -r -d '' wrapper <<'PY' || true
import os, shutil, sys, tempfile, threading
status_dir = tempfile.mkdtemp(prefix="gnnpipe-status-")
os.environ["GNNPIPE_STATUS_DIR"] = status_dir
# c10d's C++ log (a failed connect is a warning with ~35 C++ stack frames, repeated per retry) in this process
# only: the level is read once when torch loads, and the workers get the environment as it was.
quiet = "TORCH_CPP_LOG_LEVEL" not in os.environ and "LOGLEVEL" not in os.environ
if quiet:
    os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
import logging
import torch
from torch.distributed import DistError
from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous import api as rdzv_api
from torch.distributed.run import main, parse_args
if quiet:
    del os.environ["TORCH_CPP_LOG_LEVEL"]

# Multi-node: a rendezvous that cannot connect or times out ends with one line naming the endpoint, within the
# rendezvous timeout (a watchdog: torchrun's store client retries past it), and no C++ frames.
rdzv, rendezvoused = None, threading.Event()
try:
    a = parse_args(sys.argv[1:])
    if not a.standalone:
        conf = dict(kv.split("=", 1) for kv in (a.rdzv_conf or "").split(",") if "=" in kv)
        static = a.rdzv_backend == "static"
        timeout = float(conf.get("timeout" if static else "join_timeout", 600))  # torchrun's defaults
        rdzv = dict(endpoint=a.rdzv_endpoint or f"{a.master_addr}:{a.master_port}", node_rank=a.node_rank,
                    nnodes=a.nnodes, backend=a.rdzv_backend, timeout=timeout,
                    hint="--rdzv-conf=timeout=S" if static else "--rdzv-conf=join_timeout=S,read_timeout=S")
except (SystemExit, Exception):  # torchrun itself says what is wrong with its arguments
    rdzv = None


def rdzv_line(why):
    r = rdzv
    host, _, port = r["endpoint"].rpartition(":")
    same = (f"--master_addr={host} --master_port={port}" if r["backend"] == "static"
            else f"--rdzv_backend={r['backend']} --rdzv_endpoint={r['endpoint']}")
    return (f"launch.sh: rendezvous at {r['endpoint']} failed (node_rank {r['node_rank']} of {r['nnodes']} nodes, "
            f"{r['backend']} rendezvous): {why}; check that every node runs the same job with {same}, that {host} "
            f"resolves and port {port} is reachable from this node (firewall; GLOO_SOCKET_IFNAME names the interface), "
            f"and that all {r['nnodes']} nodes start within the rendezvous timeout ({r['timeout']:g}s: {r['hint']})")


if rdzv is not None:
    create = rdzv_api.RendezvousHandlerRegistry.create_handler

    def create_handler(self, params):  # marks the first rendezvous that completes
        handler = create(self, params)
        inner = handler.next_rendezvous

        def next_rendezvous(*args, **kwargs):
            info = inner(*args, **kwargs)
            rendezvoused.set()
            return info

        handler.next_rendezvous = next_rendezvous
        return handler

    rdzv_api.RendezvousHandlerRegistry.create_handler = create_handler

    def watchdog():  # no worker has started before the rendezvous: nothing to stop but this process
        if not rendezvoused.wait(rdzv["timeout"] + 3):
            print(rdzv_line(f"no rendezvous within {rdzv['timeout']:g}s"), file=sys.stderr, flush=True)
            shutil.rmtree(status_dir, ignore_errors=True)
            os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()

if "LOGLEVEL" not in os.environ:  # torchrun's own log of a worker's failure: the worker's line says it
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

code, killed, ok = 0, [], False
try:
    main(sys.argv[1:])
    ok = True
except ChildFailedError as e:
    f = e.get_first_failure()[1]
    code = f.exitcode if f.exitcode > 0 else 128 - f.exitcode if f.exitcode < 0 else 1
    killed = sorted((r, -f.exitcode) for r, f in e.failures.items() if f.exitcode < 0)
except SignalException as e:
    code = 128 + int(e.sigval)
except KeyboardInterrupt:
    code = 130
except Exception as e:  # rendezvous and launch errors of torchrun itself
    if rdzv is not None and not rendezvoused.is_set() and isinstance(e, (DistError, rdzv_api.RendezvousError)):
        first = lambda x: " ".join(str(x).strip().splitlines()[0].split()).rstrip(".") if str(x).strip() else ""
        why = first(e) or "not every node joined in time"
        cause = e.__cause__ or e.__context__
        if cause is not None and first(cause):
            why += f" ({first(cause)})"
        print(rdzv_line(f"{type(e).__name__}: {why}"), file=sys.stderr)
    else:
        print(f"launch.sh: torchrun: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
    code = 1
finally:
    reports = []  # (attempt, not root, rank, code, line) of every worker that wrote one (rank<k>.a<attempt>)
    for name in os.listdir(status_dir):
        rank, _, attempt = name[4:].partition(".a")
        if name.startswith("rank") and rank.isdigit() and attempt.isdigit():
            with open(os.path.join(status_dir, name), encoding="utf-8", errors="replace") as fh:
                parts = fh.read().strip().split(" ", 2)
            if len(parts) == 3 and parts[0].isdigit():
                reports.append((int(attempt), parts[1] != "root", int(rank), int(parts[0]), parts[2]))
    shutil.rmtree(status_dir, ignore_errors=True)
    import signal
    last = max([r[0] for r in reports], default=0)
    for a in sorted({r[0] for r in reports if r[0] < last or ok}):  # attempts torchrun restarted after
        line = min(r for r in reports if r[0] == a)[4]
        print(f"launch.sh: attempt {a} failed and the workers were restarted: {line}", file=sys.stderr, flush=True)
    reports = [] if ok else [r for r in reports if r[0] == last]
    for rank, sig in killed:  # a worker killed outright (SIGKILL, the out-of-memory killer) cannot report
        if rank not in [r[2] for r in reports]:
            why = f"rank {rank} was killed by {signal.Signals(sig).name} (by a user or the out-of-memory killer)"
            reports.append((last, False, -1, 128 + sig, f"gnnpipe train: error: {why}"))
if reports:
    _, _, _, code, line = min(reports)
    print(line, file=sys.stderr, flush=True)
sys.exit(code)
PY
exec "$py" -c "$wrapper" --max-restarts="$restarts" "${extra[@]}" "${per_node_arg[@]+"${per_node_arg[@]}"}" -m gnnpipe train --config "$config" "${args[@]+"${args[@]}"}"
