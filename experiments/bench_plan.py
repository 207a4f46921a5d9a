# .venv/bin/python experiments/bench_plan.py            (all runs; results in a fresh temp folder)
# .venv/bin/python experiments/bench_plan.py --save     (results in experiments/results/plan/)
"""Predicted against measured: ``gnnpipe plan``'s cost model checked on real ``./launch.sh`` runs (issue 14).

For Cora (GCNII-8, h64) and a synthetic power-law graph (100k vertices), graph parallelism, pipelines and
a hybrid run on local gloo workers, each configuration ``--repeats`` times in interleaved rounds. The median
of its runs' median epoch times after warm-up (from ``epochs.csv``), peak memory per worker and bytes per epoch
by kind (run summary) are compared with the plan's prediction for the
same degrees, from one calibration per graph (measured in this benchmark, at the threads each worker gets).
Writes ``plan.csv``, ``plan.json`` and ``plan.png`` (predicted vs measured) into a fresh folder (``--save``:
``experiments/results/plan/``), prints the worst relative errors and, last, ``ratio=<measured time of the
plan's first choice / fastest measured>`` (the worst over the groups of runs with the same graph and worker
count: the plan picks among exactly those).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from experiments.bench_memory import CONFIG  # noqa: E402
from experiments.tables import write_runs  # noqa: E402

GRAPHS = {
    "cora": ["dataset.name=cora", "model.layers=8", "model.hidden=64"],
    "powerlaw100k": [
        "dataset.name=powerlaw", "dataset.num_nodes=100000", "dataset.avg_degree=10", "dataset.num_features=64",
        "dataset.num_classes=8", "dataset.feature_norm=false", "model.layers=4", "model.hidden=32",
    ],
}  # fmt: skip
RUNS = {  # (ways, stages, chunks)
    "cora": [(2, 1, 2), (1, 2, 2), (1, 2, 4), (1, 2, 8), (4, 1, 4), (1, 4, 8), (2, 2, 4), (2, 2, 8)],
    "powerlaw100k": [(2, 1, 2), (1, 2, 2), (1, 2, 8), (2, 2, 4), (1, 4, 8)],
}


def overrides(graph: str, w: int, s: int, c: int, epochs: int, warmup: int) -> list[str]:
    return [
        *GRAPHS[graph], "model.arch=gcnii", "model.dropout=0.5", f"parallel.ways={w}", f"parallel.stages={s}",
        f"parallel.chunks={c}", "parallel.stage_split=equal", f"train.epochs={epochs}", f"train.eval_every={epochs}",
        f"train.warmup_epochs={warmup}", "log.progress=false",
    ]  # fmt: skip


def _procs_running() -> int:
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("procs_running"))


def measure(graph: str, wsc: tuple[int, int, int], args, work: Path, env: dict, repeat: int = 0) -> dict:
    """One ``./launch.sh`` run: median epoch time after warm-up, peak memory per worker, bytes by kind."""
    w, s, c = wsc
    name = f"{graph}_W{w}S{s}C{c}_r{repeat}"
    out, logdir = work / f"{name}.json", work / "runs" / name
    cmd = ["./launch.sh", CONFIG, *overrides(graph, w, s, c, args.epochs, args.warmup), f"log.dir={logdir}"]
    cmd += ["--metrics-out", str(out)]
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        running = []
        while proc.poll() is None:  # the machine's runnable processes while this run goes on (ours included)
            running.append(_procs_running())
            time.sleep(0.2)
        _, stderr = proc.communicate(timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    summary = json.loads(out.read_text())
    rows = list(csv.DictReader(open(next(logdir.rglob("epochs.csv")))))
    key = "time" if "time" in rows[0] else next(k for k in rows[0] if "time" in k)
    times = [float(r[key]) for r in rows[args.warmup :]]
    return {
        "epoch_time_s": statistics.median(times),
        "epoch_times_s": times,
        "peak_memory_bytes": summary["peak_memory_bytes"],
        "bytes": {k: int(v) for k, v in summary["comm_bytes_per_epoch"].items()},
        "procs_running": statistics.mean(running) if running else 0.0,
    }


def combine(runs: list[dict]) -> dict:
    """One configuration's repeated runs as one measurement: the median of the runs' median epoch times (a run
    of 4 workers on 2 cores varies by up to a quarter from the next), each worker's median peak, and the bytes,
    which every run must give alike."""
    if any(r["bytes"] != runs[0]["bytes"] for r in runs):
        raise SystemExit(f"bytes per epoch differ between repeats of one run: {[r['bytes'] for r in runs]}")
    return {
        "epoch_time_s": statistics.median(r["epoch_time_s"] for r in runs),
        "runs_s": [r["epoch_time_s"] for r in runs],
        "epoch_times_s": [t for r in runs for t in r["epoch_times_s"]],
        "peak_memory_bytes": [
            int(statistics.median(p)) for p in zip(*(r["peak_memory_bytes"] for r in runs), strict=True)
        ],
        "bytes": runs[0]["bytes"],
        "procs_running": statistics.mean(r["procs_running"] for r in runs),
    }


def predictions(graph: str, runs: list, args) -> list[tuple[dict, object]]:
    """The calibration (measured once, then cached in this benchmark's cache) and every run's prediction. Each
    run's graph is prepared here too (as a user's second run finds it): preparing is no part of a run."""
    from gnnpipe.config import load_config
    from gnnpipe.data import load_graph
    from gnnpipe.partition.prepared import prepare
    from gnnpipe.partition.stages import split_layers
    from gnnpipe.plan.planner import calibration_for
    from gnnpipe.plan.search import Candidate, predict
    from gnnpipe.train.run import cache_dir

    out, g = [], None
    for w, s, c in runs:
        cfg = load_config(CONFIG, overrides(graph, w, s, c, args.epochs, args.warmup))
        g = g or load_graph(cfg.dataset)
        prepare(cfg, cache_dir(), g)
        cal = calibration_for(cfg, g, w * s)
        cand = Candidate(w, s, c, tuple(split_layers(cfg.model.layers, s)), "equal")
        p = predict(cfg, g, cand, cal, first_epoch=args.warmup, orders=args.epochs - args.warmup)
        d = {**p.to_dict(), "calibration": cal.key, "link": cal.link.describe(), "background": cal.background}

        def under_load(background: float, cfg=cfg, g=g, cand=cand, cal=cal) -> float:
            """The same prediction with the background load a run met (instead of the calibration's)."""
            c2 = dataclasses.replace(cal, background=background)
            return predict(cfg, g, cand, c2, first_epoch=args.warmup, orders=args.epochs - args.warmup).epoch_time_s

        out.append((d, under_load))
    return out


def _tag(r: dict) -> str:
    return f"{r['ways']}x{r['stages']} C={r['chunks']}"


def rel(pred: float, meas: float) -> float:
    return (pred - meas) / meas if meas else float("inf")


def write_outputs(rows: list[dict], meta: dict, folder: Path) -> None:
    keys = ["graph", "ways", "stages", "chunks", "strategy", "pred_epoch_s", "meas_epoch_s", "err_epoch",
            "pred_epoch_s_run_load", "err_epoch_run_load", "background_at_calibration", "background_during_run",
            "pred_peak_max", "meas_peak_max", "err_peak_max", "bytes_equal"]  # fmt: skip
    write_runs(folder, "plan", rows, meta, keys)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (p, m, unit, scale) in zip(
        axes, [("pred_epoch_s", "meas_epoch_s", "s", 1), ("pred_peak_max", "meas_peak_max", "MB", 1e-6)], strict=True
    ):
        for g, marker in zip(GRAPHS, "os", strict=False):
            sel = [r for r in rows if r["graph"] == g]
            ax.scatter([r[m] * scale for r in sel], [r[p] * scale for r in sel], marker=marker, label=g)
            for r in sel:
                ax.annotate(f"{r['ways']}x{r['stages']} C{r['chunks']}", (r[m] * scale, r[p] * scale), fontsize=7)
        lo = min(min(r[m], r[p]) for r in rows) * scale * 0.8
        hi = max(max(r[m], r[p]) for r in rows) * scale * 1.2
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        band = 0.25 if unit == "s" else 0.15  # the acceptance bands
        for f in (1 - band, 1 + band):
            ax.plot([lo, hi], [lo * f, hi * f], "k:", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.set_title("epoch time" if unit == "s" else "peak memory, largest worker")
        ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "plan.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8, help="epochs per run (the first --warmup are left out)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration (the median is compared)")
    ap.add_argument("--only", choices=sorted(GRAPHS), help="one graph only")
    ap.add_argument("--out", help="results folder (default: a fresh temp folder)")
    ap.add_argument("--save", action="store_true", help="write into experiments/results/plan/")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.epochs <= args.warmup or args.warmup < 0:
        ap.error(f"need --repeats >= 1 and 0 <= --warmup < --epochs (got {args.repeats}, {args.warmup}, {args.epochs})")
    work = Path(tempfile.mkdtemp(prefix="gnnpipe-bench-plan-"))
    env = {**os.environ, "GNNPIPE_CACHE": str(work / "cache")}
    os.environ["GNNPIPE_CACHE"] = env["GNNPIPE_CACHE"]
    load = {"before": os.getloadavg()}
    t0 = time.time()
    rows = []
    for graph in [args.only] if args.only else list(GRAPHS):
        preds = predictions(graph, RUNS[graph], args)
        repeats: dict[tuple, list[dict]] = {wsc: [] for wsc in RUNS[graph]}
        for k in range(args.repeats):  # rounds over all runs, every other one backwards: drift hits all alike
            for wsc in RUNS[graph] if k % 2 == 0 else RUNS[graph][::-1]:
                repeats[wsc].append(measure(graph, wsc, args, work, env, k))
        for wsc, (pred, under_load) in zip(RUNS[graph], preds, strict=True):
            meas = combine(repeats[wsc])
            # other runnable processes during the run: the sampled count less the sampler and our busy workers
            busy = wsc[0] * wsc[1] * (pred["compute_s"] + pred["overhead_s"]) / pred["epoch_time_s"]
            background = max(meas["procs_running"] - 1 - busy, 0.0)
            row = {
                "graph": graph, "ways": wsc[0], "stages": wsc[1], "chunks": wsc[2], "strategy": pred["strategy"],
                "pred_epoch_s": pred["epoch_time_s"], "meas_epoch_s": meas["epoch_time_s"],
                "pred_peak_max": max(pred["peak_memory_bytes"]), "meas_peak_max": max(meas["peak_memory_bytes"]),
                "pred_peak": pred["peak_memory_bytes"], "meas_peak": meas["peak_memory_bytes"],
                "pred_bytes": pred["bytes"], "meas_bytes": meas["bytes"], "bytes_equal": pred["bytes"] == meas["bytes"],
                "breakdown": {k: pred[k] for k in ("compute_s", "comm_s", "overhead_s", "bubble_s")},
                "epoch_times_s": meas["epoch_times_s"], "meas_epoch_runs_s": meas["runs_s"], "link": pred["link"],
                "background_at_calibration": pred["background"], "procs_running_during_run": meas["procs_running"],
                "background_during_run": background, "pred_epoch_s_run_load": under_load(background),
            }  # fmt: skip
            row["err_epoch_run_load"] = rel(row["pred_epoch_s_run_load"], row["meas_epoch_s"])
            row["err_epoch"] = rel(row["pred_epoch_s"], row["meas_epoch_s"])
            row["err_peak"] = [rel(p, m) for p, m in zip(row["pred_peak"], row["meas_peak"], strict=True)]
            row["err_peak_max"] = max(row["err_peak"], key=abs)
            rows.append(row)
            print(
                f"{graph:<13} {_tag(row)} epoch pred {row['pred_epoch_s']:.4f}s meas {row['meas_epoch_s']:.4f}s "
                f"({row['err_epoch']:+.1%}; runs {min(meas['runs_s']):.4f}-{max(meas['runs_s']):.4f}s)  "
                f"peak pred {row['pred_peak_max'] / 1e6:.0f} MB meas "
                f"{row['meas_peak_max'] / 1e6:.0f} MB ({row['err_peak_max']:+.1%})  bytes equal {row['bytes_equal']}"
                f"  [at the run's load {row['pred_epoch_s_run_load']:.4f}s ({row['err_epoch_run_load']:+.1%})]",
                flush=True,
            )
    load["after"] = os.getloadavg()
    ratios = {}
    for graph in {r["graph"] for r in rows}:
        for n in {r["ways"] * r["stages"] for r in rows if r["graph"] == graph}:
            grp = [r for r in rows if r["graph"] == graph and r["ways"] * r["stages"] == n]
            choice = min(grp, key=lambda r: r["pred_epoch_s"])
            fastest = min(grp, key=lambda r: r["meas_epoch_s"])
            ratios[f"{graph} {n} workers"] = choice["meas_epoch_s"] / fastest["meas_epoch_s"]
            print(
                f"{graph}, {n} workers: first choice {choice['ways']}x{choice['stages']} C={choice['chunks']} "
                f"measured {choice['meas_epoch_s']:.4f}s; fastest {fastest['ways']}x{fastest['stages']} "
                f"C={fastest['chunks']} {fastest['meas_epoch_s']:.4f}s"
            )
    meta = {"epochs": args.epochs, "warmup": args.warmup, "repeats": args.repeats, "loadavg": load,
            "wall_s": time.time() - t0, "cores": os.cpu_count(), "ratios": ratios, "graphs": GRAPHS}  # fmt: skip
    folder = REPO / "experiments" / "results" / "plan" if args.save else Path(args.out or work / "results")
    write_outputs(rows, meta, folder)
    worst_t = max(rows, key=lambda r: abs(r["err_epoch"]))
    worst_l = max(rows, key=lambda r: abs(r["err_epoch_run_load"]))
    worst_m = max(rows, key=lambda r: abs(r["err_peak_max"]))
    print(f"worst epoch-time error {worst_t['err_epoch']:+.1%} ({worst_t['graph']} {_tag(worst_t)})")
    print(f"worst epoch-time error at each run's load {worst_l['err_epoch_run_load']:+.1%} ({_tag(worst_l)})")
    print(f"worst peak-memory error {worst_m['err_peak_max']:+.1%} ({worst_m['graph']} {_tag(worst_m)})")
    print(f"bytes equal in {sum(r['bytes_equal'] for r in rows)} of {len(rows)} runs")
    print(f"load average before {load['before'][0]:.2f}, after {load['after'][0]:.2f}; {meta['wall_s']:.0f}s")
    print(f"results: {folder}")
    print(f"ratio={max(ratios.values()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
