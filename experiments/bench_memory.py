# .venv/bin/python experiments/bench_memory.py                       (the graph: 200k vertices, GCNII-16)
# .venv/bin/python experiments/bench_memory.py --preset scale --save  (N*L*d >= 1e9: 4-stage pipeline, recompute)
"""Peak memory per worker: single device vs pipeline (S = 2, 4), graph parallelism (W = 4) and hybrid (2x2),
each with and without ``parallel.recompute``, on the same graph and model.

Every run is a real ``./launch.sh`` job; its run summary's ``memory`` section gives, per worker, the resident
size when measuring started and the peak growth of each phase (``gnnpipe.memory``). A worker's growth is its
overall peak minus the resident size of an idle process that imported torch (measured here, in the same
run). The graph is prepared once (permuted, beside its plan, in a fresh cache) before the runs, as a user's
second run finds it; preparing is not part of any worker's peak. Graph parallelism runs on an SBM graph of the
same size (its own single-device baseline beside it), as the issue asks. Writes CSV, JSON and a plot into a
fresh folder (``--save``: ``experiments/results/memory/``). The last line is
``ratio=<largest pipeline S=4 worker growth / single-device growth>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from experiments.tables import write_runs  # noqa: E402

PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
CONFIG = "experiments/configs/default.yaml"

PRESETS = {
    # the measurement: power-law 200k vertices, avg degree 10, 100 features, 10 classes, GCNII-16 h64
    "issue": {"nodes": 200_000, "degree": 10.0, "layers": 16, "hidden": 64, "epochs": 2},
    "small": {"nodes": 20_000, "degree": 10.0, "layers": 16, "hidden": 64, "epochs": 2},
    # the scale run: N * L * d = 500k * 32 * 64 = 1.02e9 on a 4-stage pipeline
    "scale": {"nodes": 500_000, "degree": 10.0, "layers": 32, "hidden": 64, "epochs": 2},
}


def runs_for(preset: str) -> list[tuple[str, str, str]]:
    """(name, generator, parallel overrides)."""
    if preset == "scale":
        return [("pipeline S=4 C=16 recompute", "powerlaw", "1 4 16 true")]
    out = [("single device", "powerlaw", "1 1 1 false")]
    for rc in ("false", "true"):
        tag = " recompute" if rc == "true" else ""
        out += [
            (f"pipeline S=2 C=8{tag}", "powerlaw", f"1 2 8 {rc}"),
            (f"pipeline S=4 C=16{tag}", "powerlaw", f"1 4 16 {rc}"),
            (f"hybrid 2x2 C=8{tag}", "powerlaw", f"2 2 8 {rc}"),
        ]
    out += [  # the same with the history stored in bfloat16 (parallel.history_dtype)
        ("pipeline S=4 C=16 bf16 history", "powerlaw", "1 4 16 false bfloat16"),
        ("pipeline S=4 C=16 recompute bf16 history", "powerlaw", "1 4 16 true bfloat16"),
    ]
    out.append(("single device (SBM)", "sbm", "1 1 1 false"))
    out += [
        (f"graph W=4{' recompute' if rc == 'true' else ''} (SBM)", "sbm", f"4 1 4 {rc}") for rc in ("false", "true")
    ]
    return out


def overrides(args, generator: str, par: str) -> list[str]:
    ways, stages, chunks, rc, *hist = par.split()
    return [
        f"parallel.history_dtype={hist[0] if hist else 'auto'}",
        f"dataset.name={generator}", f"dataset.num_nodes={args.nodes}", f"dataset.avg_degree={args.degree}",
        "dataset.num_features=100", "dataset.num_classes=10", "dataset.feature_norm=false",
        "model.arch=gcnii", f"model.layers={args.layers}", f"model.hidden={args.hidden}", "model.dropout=0.5",
        f"parallel.ways={ways}", f"parallel.stages={stages}", f"parallel.chunks={chunks}", f"parallel.recompute={rc}",
        f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}", "train.warmup_epochs=0",
    ]  # fmt: skip


def idle_torch_rss() -> int:
    """Resident size of an idle process that imported torch (the baseline every growth is measured over)."""
    code = "import torch; from gnnpipe.memory import current_bytes; print(current_bytes())"
    return int(subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout)


def prepare(args, generator: str, par: str, env: dict) -> None:
    """Write the prepared graph and plan into the bench cache (as a previous run would have)."""
    code = (
        "import sys; from gnnpipe.config import load_config; from gnnpipe.partition.prepared import prepare;"
        "from gnnpipe.train.run import cache_dir; prepare(load_config(sys.argv[1], sys.argv[2:]), cache_dir())"
    )
    subprocess.run([PY, "-c", code, CONFIG, *overrides(args, generator, par)], check=True, cwd=REPO, env=env)


def run_one(args, name: str, generator: str, par: str, work: Path, env: dict, idle: int) -> dict:
    out = work / f"{name.replace(' ', '_').replace('=', '').replace('(', '').replace(')', '')}.json"
    cmd = [
        "./launch.sh",
        CONFIG,
        *overrides(args, generator, par),
        f"log.dir={work / 'runs'}",
        "--metrics-out",
        str(out),
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(out.read_text())
    growth = []
    for mem in summary["memory"]:
        peaks = [v for k, v in mem.items() if k.startswith("peak_growth_")]
        growth.append(mem["baseline_rss"] + max(peaks) - idle)
    ways, stages, chunks, rc, *hist = par.split()
    return {
        "run": name, "graph": generator, "ways": int(ways), "stages": int(stages), "chunks": int(chunks),
        "recompute": rc == "true", "history_dtype": hist[0] if hist else "auto", "workers": len(growth),
        "max_growth": max(growth),
        "mean_growth": sum(growth) / len(growth), "sum_growth": sum(growth), "growth_per_worker": growth,
        "epoch_time_s": summary["epoch_time_s"], "wall_s": time.time() - t0, "memory": summary["memory"],
        "test_acc": summary["test_acc"],
    }  # fmt: skip


def write_outputs(rows: list[dict], meta: dict, folder: Path) -> None:
    keys = ["run", "graph", "ways", "stages", "chunks", "recompute", "history_dtype", "workers", "max_growth",
            "mean_growth", "sum_growth", "ratio_vs_single", "epoch_time_s"]  # fmt: skip
    write_runs(folder, "memory", rows, meta, keys)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = [r["run"] for r in rows]
    ax.barh(names, [r["max_growth"] / 2**30 for r in rows], label="largest worker")
    ax.barh(names, [r["mean_growth"] / 2**30 for r in rows], alpha=0.6, label="mean worker")
    ax.set_xlabel("peak growth per worker over an idle torch process (GiB)")
    ax.invert_yaxis()
    ax.legend()
    ax.set_title(f"GCNII-{meta['layers']} h{meta['hidden']}, {meta['nodes']} vertices")
    fig.tight_layout()
    fig.savefig(folder / "memory.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="issue")
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--degree", type=float)
    ap.add_argument("--only", help="run only the runs whose name contains this text")
    ap.add_argument("--save", action="store_true", help="write into experiments/results/memory/ (else a fresh folder)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    work = Path(tempfile.mkdtemp(prefix="gnnpipe-bench-memory-"))
    env = {**os.environ, "GNNPIPE_CACHE": str(work / "cache")}
    idle = idle_torch_rss()
    plan = [r for r in runs_for(args.preset) if not args.only or args.only in r[0]]
    for _, generator, par in plan:
        prepare(args, generator, par, env)
    rows = []
    for name, generator, par in plan:
        row = run_one(args, name, generator, par, work, env, idle)
        rows.append(row)
        mib = {k: row[k] / 2**20 for k in ("max_growth", "mean_growth", "sum_growth")}
        print(
            f"{name:<32} largest worker {mib['max_growth']:9.1f} MiB  mean {mib['mean_growth']:9.1f} MiB"
            f"  all {mib['sum_growth']:9.1f} MiB  epoch {row['epoch_time_s']:.2f}s",
            flush=True,
        )
    single = {}
    for g in ("powerlaw", "sbm"):
        single[g] = next((r["max_growth"] for r in rows if r["stages"] == r["ways"] == 1 and r["graph"] == g), None)
    for r in rows:
        base = single[r["graph"]]
        r["ratio_vs_single"] = r["max_growth"] / base if base else None
        if base:
            print(f"  {r['run']:<32} largest worker / single device = {r['ratio_vs_single']:.3f}")
    nld = args.nodes * args.layers * args.hidden
    meta = {**{k: getattr(args, k) for k in ("preset", "nodes", "layers", "hidden", "epochs", "degree")},
            "idle_torch_rss": idle, "N_L_d": nld}  # fmt: skip
    for r in rows:
        r["bytes_per_vertex_layer_channel"] = r["sum_growth"] / nld
    folder = REPO / "experiments" / "results" / "memory" if args.save else work / "results"
    write_outputs(rows, meta, folder)
    print(f"results: {folder}")
    s4 = [r for r in rows if r["stages"] == 4 and r["ways"] == 1 and not r["recompute"]] or rows  # float32 first
    ref = single["powerlaw"] or s4[0]["max_growth"]
    print(f"ratio={s4[0]['max_growth'] / ref:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
