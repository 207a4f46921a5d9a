#!/usr/bin/env bash
# Prepared check of the CUDA path on a single-GPU machine, about 8 minutes at most (issue 12):
#   1. gnnpipe info (versions, devices, kernel backend);
#   2. the tests that can use one GPU (tests/test_kernels.py incl. its CUDA cases, test_models, test_reference);
#   3. our single-device GCNII-16 epoch vs PyG GCN2Conv (sparse CSR) on CUDA, 100k vertices / 2M edges: ratio;
#   4. the engine on the one GPU: a 2-stage pipeline and 2-way graph parallelism (two processes each) through
#      ./launch.sh with train.device=cuda, float64, checked against the same runs on CPU (losses to 1e-6).
#      Two processes on one GPU cannot use NCCL (it refuses a duplicate GPU); they need transfers staged through
#      host memory over gloo. If the config has a backend option (any field named *backend*), it is set to gloo;
#      otherwise the runs go as the engine chooses and a failure is recorded with its reason.
# Writes OUTDIR/gpu_check.json (device name, per-step status, figures) and OUTDIR/logs/.
#
#   scripts/gpu_check.sh [OUTDIR]     OUTDIR defaults to $OUT if set, else experiments/results/gpu
#
# Without a usable GPU it prints one line and exits 0. Exit 1 if a step failed (the JSON is written anyway).
# Dry run of the steps without a GPU: GNNPIPE_GPU_CHECK_DEVICE=cpu GNNPIPE_GPU_CHECK_SMALL=1 scripts/gpu_check.sh DIR
# Python: $GNNPIPE_PYTHON, else .venv/bin/python, else python3 (the repository is put on PYTHONPATH, so an
# installed gnnpipe is not needed; without the C++ extension the torch kernels run, which CUDA uses anyway).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${GNNPIPE_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

device="$("$py" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)"
[ "${GNNPIPE_GPU_CHECK_DEVICE:-cuda}" = cpu ] && device="cpu (dry run)"
if [ -z "$device" ]; then
  echo "gpu_check: no usable GPU here (torch.cuda.is_available() is False); nothing to check"
  exit 0
fi

out="${1:-${OUT:-$root/experiments/results/gpu}}"
mkdir -p "$out/logs"
budget="${GNNPIPE_GPU_CHECK_BUDGET_S:-460}"  # steps start only while time is left; each is capped below
start=$(date +%s)
steps="$(mktemp -d)"
trap 'rm -rf "$steps"' EXIT
cat > "$steps/steps.py" <<'PY'
"""Steps of scripts/gpu_check.sh: `steps.py STEP OUTDIR`, each writes OUTDIR/logs/STEP.json."""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ["GNNPIPE_ROOT"])
PY = sys.executable
DEVICE = os.environ.get("GNNPIPE_GPU_CHECK_DEVICE", "cuda")  # cpu: dry run of the steps on a machine without GPU
SMALL = os.environ.get("GNNPIPE_GPU_CHECK_SMALL", "0") == "1"  # tiny bench graph (dry runs)


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if DEVICE == "cuda" else f"{DEVICE} (dry run)"


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def save(out: Path, step: str, **fields) -> None:
    (out / "logs" / f"{step}.json").write_text(json.dumps(fields, indent=2) + "\n")


def run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Run cmd in its own process group (killed whole on timeout: torchrun's workers too); output to log.
    Returns (returncode, or 124 on timeout; the last lines of output)."""
    import signal

    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = 124
    if rc == 124:
        with open(log, "a") as f:
            f.write(f"\n[gpu_check] timed out after {timeout:.0f}s\n")
    return rc, "\n".join(log.read_text(errors="replace").strip().splitlines()[-5:])


def step_info(out: Path, timeout: float) -> None:
    import torch

    rc, tail = run([PY, "-m", "gnnpipe", "info"], out / "logs" / "info.txt", timeout)
    save(
        out,
        "info",
        status="ok" if rc == 0 else "failed",
        device=device_name(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        tail=tail,
    )


def step_tests(out: Path, timeout: float) -> None:
    files = ["tests/test_kernels.py", "tests/test_models.py", "tests/test_reference.py"]
    rc, tail = run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], out / "logs" / "tests.txt", timeout)
    save(out, "tests", status="ok" if rc == 0 else "failed", files=files, returncode=rc, tail=tail)


def step_bench(out: Path, timeout: float) -> None:
    """Our GCNII epoch vs PyG GCN2Conv on cuda, same weights and graph as experiments/bench_single.py."""
    import torch

    sys.path.insert(0, str(ROOT))
    from experiments.bench_single import BenchConfig, make_graph
    from gnnpipe.models.deep import build_model
    from gnnpipe.train.executor import SingleDeviceExecutor

    bench = BenchConfig(epochs=10, warmup=3)
    if SMALL:
        bench = BenchConfig(nodes=2000, edges=20000, layers=4, hidden=32, epochs=2, warmup=1)
    cfg = bench.experiment()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=DEVICE))
    graph = make_graph(bench)
    dev = torch.device(DEVICE)
    cuda = dev.type == "cuda"
    sides = {"ours": SingleDeviceExecutor(cfg, graph)}
    note = ""
    try:
        from experiments.pyg_gcnii import PygTrainer

        pyg = PygTrainer(cfg, graph, build_model(cfg.model, graph.num_features, graph.num_classes, seed=cfg.train.seed))
        pyg.model.to(dev)  # parameters move in place: the optimizer keeps them
        pyg.adj_t, pyg.x, pyg.y, pyg.train_idx = (t.to(dev) for t in (pyg.adj_t, pyg.x, pyg.y, pyg.train_idx))
        sides["pyg"] = pyg
    except ImportError as e:
        note = f"PyG side skipped: {e}"
    diff = None
    if "pyg" in sides:
        diff = float((sides["ours"].logits().float() - sides["pyg"].logits().float()).abs().max())
    times = {k: [] for k in sides}
    peaks = {k: [] for k in sides}
    names = list(sides)
    for r in range(bench.warmup + bench.epochs):
        for name in names if r % 2 == 0 else names[::-1]:
            sync()
            base = torch.cuda.memory_allocated() if cuda else 0
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            sides[name].train_epoch(r)
            sync()
            if r >= bench.warmup:
                times[name].append(time.perf_counter() - t0)
                peaks[name].append(torch.cuda.max_memory_allocated() - base if cuda else 0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "status": "ok",
        "graph": {"nodes": graph.num_nodes, "edges": graph.num_edges},
        "config": dataclasses.asdict(bench),
        "median_epoch_s": med,
        "peak_growth_bytes": {k: max(v) for k, v in peaks.items()},
        "max_logit_difference": diff,
    }
    if "pyg" in med:
        result["ratio"] = med["ours"] / med["pyg"]
        if cuda:
            result["memory_ratio"] = result["peak_growth_bytes"]["ours"] / result["peak_growth_bytes"]["pyg"]
    if note:
        result["note"] = note
    save(out, "bench", **result)


def backend_overrides() -> list[str]:
    """``section.field=gloo`` for a config field named like *backend*, if the config has one."""
    from gnnpipe.config import ExperimentConfig

    cfg = ExperimentConfig()
    found = []
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        if dataclasses.is_dataclass(value):
            found += [f"{section.name}.{f.name}=gloo" for f in dataclasses.fields(value) if "backend" in f.name]
    return found


def step_engine(out: Path, timeout: float) -> None:
    import importlib.util

    per_run = (timeout - 10) / 4
    # dropout 0: CUDA draws its masks from CUDA generators (other bits than the CPU's), so only a run without
    # dropout can match the CPU run to 1e-6
    common = ["train.epochs=3", "train.eval_every=3", "train.dtype=float64", "model.dropout=0.0",
              f"log.dir={out / 'logs' / 'runs'}"]  # fmt: skip
    if importlib.util.find_spec("pymetis") is None:
        common.append("parallel.partition=contiguous")
    staging = backend_overrides()
    runs = {
        "pipeline_2stage": ["parallel.ways=1", "parallel.stages=2", "parallel.chunks=8"],
        "graph_2way": ["parallel.ways=2", "parallel.stages=1", "parallel.chunks=2"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    results = {}
    ok = True
    for name, over in runs.items():
        losses = {}
        res: dict = {}
        for label, dev in ((DEVICE, DEVICE), ("cpu", "cpu")) if DEVICE != "cpu" else (("cpu", "cpu"), ("cpu2", "cpu")):
            metrics = out / "logs" / f"engine_{name}_{label}.json"
            extra = staging if dev == "cuda" else []
            cmd = ["./launch.sh", "experiments/configs/default.yaml", *common, *over, f"train.device={dev}", *extra]
            log = out / "logs" / f"engine_{name}_{label}.txt"
            rc, tail = run([*cmd, "--metrics-out", str(metrics)], log, per_run, env)
            res[label] = {"returncode": rc, "tail": tail if rc else ""}
            if rc == 0 and metrics.is_file():
                summary = json.loads(metrics.read_text())
                losses[label] = summary["losses"]
                res[label]["epoch_time_s"] = summary["epoch_time_s"]
        if len(losses) == 2:
            a, b = losses.values()
            diff = max(abs(x - y) for x, y in zip(a, b, strict=True))
            res.update(losses=losses, max_loss_difference=diff, status="ok" if diff < 1e-6 else "failed")
        else:
            res["status"] = "failed"
        ok &= res["status"] == "ok"
        results[name] = res
    note = (
        f"staged over gloo via {', '.join(staging)}"
        if staging
        else "config has no backend option: two processes on one GPU use NCCL, which refuses a duplicate GPU; "
        "needs a gloo (host-staged) backend option in parallel/comm.py + config"
    )
    save(out, "engine", status="ok" if ok else "failed", runs=results, note=note)


def summary(out: Path, total_s: float) -> int:
    steps = {}
    for name in ("info", "tests", "bench", "engine"):
        p = out / "logs" / f"{name}.json"
        missing = {"status": "not run (crashed, timed out or no budget)"}
        steps[name] = json.loads(p.read_text()) if p.is_file() else missing
    info = steps["info"]
    doc = {
        "device": info.get("device"),
        "torch": info.get("torch"),
        "cuda": info.get("cuda"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "total_s": total_s,
        "steps": steps,
    }
    path = out / "gpu_check.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    status = {k: v.get("status") for k, v in steps.items()}
    ratio = steps["bench"].get("ratio")
    print(f"gpu_check: {doc['device']}: {status}" + (f", GCNII epoch ours/PyG = {ratio:.2f}" if ratio else ""))
    print(f"gpu_check: wrote {path}")
    return 0 if all(v == "ok" for v in status.values()) else 1


if __name__ == "__main__":
    step, out = sys.argv[1], Path(sys.argv[2])
    arg = float(sys.argv[3])
    if step == "summary":
        sys.exit(summary(out, arg))
    {"info": step_info, "tests": step_tests, "bench": step_bench, "engine": step_engine}[step](out, arg)
PY

export GNNPIPE_ROOT="$root"
# step: name, seconds it may take (the whole check stops starting steps once the budget is spent)
for spec in info:30 tests:110 bench:110 engine:190; do
  name="${spec%%:*}"; limit="${spec##*:}"
  left=$((budget - ($(date +%s) - start)))
  if [ "$left" -lt 20 ]; then echo "gpu_check: $name skipped (budget of ${budget}s spent)"; continue; fi
  [ "$limit" -gt "$left" ] && limit="$left"
  echo "gpu_check: $name (at most ${limit}s) ..."
  timeout --kill-after=5 "$limit" "$py" "$steps/steps.py" "$name" "$out" "$((limit - 5))" \
    > "$out/logs/$name.out" 2>&1 || echo "gpu_check: $name exited non-zero (see $out/logs/$name.out)"
done
"$py" "$steps/steps.py" summary "$out" "$(($(date +%s) - start))"
