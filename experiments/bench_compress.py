# .venv/bin/python experiments/bench_compress.py                 (Cora GCNII-8 h64, 60 epochs; ~5 min on 2 cores)
# .venv/bin/python experiments/bench_compress.py --epochs 3      (the byte ratios only; accuracy meaningless)
"""parallel.compress, a smoke benchmark: measured bytes per epoch of none / bf16 / fp16 / int8 on a 4-stage
pipeline (16 chunks) and 4-way graph parallelism, with their analytic twins, and the test accuracy each run
reaches on Cora with GCNII.

Every run is a real ``./launch.sh`` job (4 gloo workers), run through ``experiments/suite_runs.py`` (the same
runner as the accuracy suites); its run summary gives ``comm_bytes_per_epoch`` (counted by comm.py, as sent),
``comm_bytes_per_epoch_analytic`` and ``test_acc``. Writes ``compress.csv``, ``compress.json`` and
``compress.png`` into ``--out`` (default: a fresh temporary folder; ``--save``: ``experiments/results/compress/``).
The last line is ``ratio=<layer+graph bytes with none / with int8, pipeline>``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.paper_report import plot_compress  # noqa: E402
from experiments.suite_runs import REPO, Run, execute, read_summary  # noqa: E402
from experiments.suites import Experiment  # noqa: E402
from experiments.tables import write_runs  # noqa: E402

CONFIG = "experiments/configs/default.yaml"  # Cora, GCNII-8, hidden 64
SETTINGS = ("none", "bf16", "fp16", "int8")
STRATEGIES = {"pipeline": (1, 4, 16), "graph": (4, 1, 4)}  # ways, stages, chunks
TRAFFIC = ("layer", "graph")  # what compress applies to; weight all-reduce stays exact


def experiments(epochs: int) -> list[Experiment]:
    out = []
    for strategy, (ways, stages, chunks) in STRATEGIES.items():
        for how in SETTINGS:
            ov = (
                f"parallel.ways={ways}", f"parallel.stages={stages}", f"parallel.chunks={chunks}",
                f"parallel.compress={how}", f"train.epochs={epochs}", f"train.eval_every={max(1, min(10, epochs))}",
                "train.warmup_epochs=0",
            )  # fmt: skip
            out.append(Experiment(f"{strategy}-{how}", CONFIG, ov))
    return out


def row_of(exp: Experiment, metrics: Path) -> dict:
    s = read_summary(metrics)
    strategy, how = exp.name.split("-")
    measured, analytic = s.comm_bytes_per_epoch, s.comm_bytes_per_epoch_analytic
    return {
        "strategy": strategy, "compress": how, "traffic_bytes": sum(measured[k] for k in TRAFFIC),
        **{f"{k}_bytes": measured[k] for k in ("layer", "graph", "weight")},
        "measured_equals_analytic": all(measured[k] == analytic[k] for k in measured),
        "test_acc": s.test_acc, "best_val_acc": s.best_val_acc, "epoch_time_s": s.epoch_time_s,
    }  # fmt: skip


def add_ratios(rows: list[dict]) -> None:
    base = {r["strategy"]: r["traffic_bytes"] for r in rows if r["compress"] == "none"}
    for r in rows:
        r["ratio_vs_none"] = base[r["strategy"]] / r["traffic_bytes"] if r["traffic_bytes"] else None


def write_outputs(rows: list[dict], meta: dict, folder: Path) -> None:
    write_runs(folder, "compress", rows, meta)
    plotted = [{**r, "dataset": "cora", "test_acc": 100 * r["test_acc"], "test_acc_std": 0.0} for r in rows]
    title = f"parallel.compress: Cora GCNII-8 h64, 4 workers, {meta['epochs']} epochs"
    plot_compress(plotted, folder / "compress.png", title)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", type=Path, help="folder for the results (default: a fresh temporary folder)")
    ap.add_argument("--save", action="store_true", help="write into experiments/results/compress/")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    args = ap.parse_args(argv)
    if args.save:
        folder = REPO / "experiments" / "results" / "compress"
    else:
        folder = args.out or Path(tempfile.mkdtemp(prefix="gnnpipe-bench-compress-"))
    runs_dir = Path(tempfile.mkdtemp(prefix="gnnpipe-bench-compress-runs-"))
    rows = []
    for exp in experiments(args.epochs):
        run = Run(exp, seed=1, epochs=None, runs_dir=runs_dir)
        if not execute(run, args.timeout):
            return 1
        rows.append(row_of(exp, run.metrics))
    add_ratios(rows)
    for r in rows:
        print(
            f"{r['strategy']:<9} {r['compress']:<5} layer+graph {r['traffic_bytes'] / 2**20:8.2f} MiB/epoch"
            f"  ratio {r['ratio_vs_none']:.3f}  measured==analytic {r['measured_equals_analytic']}"
            f"  test acc {r['test_acc']:.4f}"
        )
    write_outputs(rows, {"config": CONFIG, "epochs": args.epochs, "strategies": STRATEGIES}, folder)
    print(f"results: {folder}")
    pipe = {r["compress"]: r["traffic_bytes"] for r in rows if r["strategy"] == "pipeline"}
    print(f"ratio={pipe['none'] / pipe['int8']:.3f}")
    return 0 if all(r["measured_equals_analytic"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
