# .venv/bin/python experiments/paper.py --quick          (1 seed, 30 epochs: 28 min on 2 cores; fresh folder)
# .venv/bin/python experiments/paper.py --save           (3 seeds, 250 epochs: hours; resumes where it stopped)
"""The paper-shaped results from one command: strategies x models x datasets, volume against depth,
accuracy against epoch, and the effect of compression (issue 15).

Four parts, every number from real runs of the user path:

1. **Strategy x model matrix**: graph parallelism (4 ways), the GNNPipe pipeline (4 stages, 16 chunks) and the
   hybrid (2 ways x 2 stages, 16 chunks) x GCN, GraphSAGE, GCNII and ResGCN at 32 layers (hidden 64, one
   recipe for all) on Cora, CiteSeer and a 5000-vertex SBM graph; every arm one ``./launch.sh`` job per seed
   through the accuracy suites' runner (``experiments/suite_runs.py``). Best-valid test accuracy, epoch time,
   bytes per epoch by kind and the largest worker's peak memory growth.
2. **Volume against depth**: bytes per epoch of the three strategies (4 workers) at L = 4 ... 64, analytic on
   every dataset and measured by comm.py (one epoch on local gloo workers) where asked; the ratio graph /
   pipeline.
3. **Accuracy against epoch**: the matrix runs' evaluations, per dataset and model, one curve per strategy.
4. **Compression**: GCNII-32 on Cora, pipeline and graph parallelism, with ``parallel.compress`` = bf16, fp16
   and int8 beside the matrix's uncompressed run.

``--quick``: one seed and 30 epochs per run, volumes measured on Cora only (analytic everywhere): every table
and plot, in 28 minutes here (42 runs, 26 min; volumes, 2 min); its accuracies are those of 30 epochs, far
from converged for 32 layers. Without it: 3 seeds and the configs' 250 epochs (126 runs, about 8 hours here).
Output (``paper_report.py``): ``matrix.{csv,json}``, ``table.md``, ``depth.{csv,json}``,
``compress.{csv,json}``, ``matrix.png``, ``depth.png``, ``curves.png``, ``compress.png``, in a fresh folder
under ``experiments/results/tmp/paper/``, in ``--out DIR``, or (``--save``) in ``experiments/results/paper/``
(``.../paper/quick/`` with ``--quick``). Runs whose metrics exist there with the same config are skipped, so an
interrupted invocation resumes. The last line is ``ratio=<graph / pipeline bytes per epoch at 32 layers>`` on
Cora (the first dataset given).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from experiments import suite_runs as runner  # noqa: E402
from experiments.paper_report import write_all  # noqa: E402
from experiments.suites import Experiment  # noqa: E402

DATASETS = {  # name -> its GCNII-32 pipeline config; the other arms are overrides of it
    "cora": "experiments/configs/cora_gcnii32_pipe4.yaml",
    "citeseer": "experiments/configs/citeseer_gcnii32_pipe4.yaml",
    "sbm": "experiments/configs/sbm5k_gcnii32_pipe4.yaml",
}
MODELS = ("gcn", "sage", "gcnii", "resgcn")
STRATEGIES = {"graph": (4, 1, 4), "pipeline": (1, 4, 16), "hybrid": (2, 2, 16)}  # ways, stages, chunks
LAYERS = 32
DEPTHS = (4, 8, 16, 32, 64)
COMPRESS = ("bf16", "fp16", "int8")  # beside the matrix's "none"
COMPRESS_ARMS = (("cora", "pipeline"), ("cora", "graph"))
EVIDENCE = REPO / "experiments" / "results" / "paper"


@dataclass(frozen=True)
class Mode:
    """How much to run: ``seeds`` per arm, ``epochs`` per run (None: the configs' own), and the datasets whose
    volumes against depth are measured (the others analytic only)."""

    name: str
    seeds: tuple[int, ...]
    epochs: int | None
    measured: tuple[str, ...]


QUICK = Mode("quick", (1,), 30, ("cora",))
FULL = Mode("full", (1, 2, 3), None, tuple(DATASETS))


@dataclass(frozen=True)
class Arm:
    """One experiment of the matrix or the compression part, with the labels the tables group by."""

    dataset: str
    model: str
    strategy: str
    compress: str
    experiment: Experiment


def degrees(strategy: str) -> tuple[str, ...]:
    ways, stages, chunks = STRATEGIES[strategy]
    return f"parallel.ways={ways}", f"parallel.stages={stages}", f"parallel.chunks={chunks}"


def arms(datasets: tuple[str, ...] = tuple(DATASETS), models: tuple[str, ...] = MODELS) -> list[Arm]:
    """The matrix (dataset x model x strategy, uncompressed), then the compression arms (those of ``datasets``
    when ``models`` has GCNII)."""
    out = []
    for ds in datasets:
        config = DATASETS[ds]
        for model in models:
            for strategy in STRATEGIES:
                ov = (f"model.arch={model}", f"model.layers={LAYERS}", *degrees(strategy))
                out.append(Arm(ds, model, strategy, "none", Experiment(f"{ds}-{model}-{strategy}", config, ov)))
    for ds, strategy in (a for a in COMPRESS_ARMS if a[0] in datasets and "gcnii" in models):
        for how in COMPRESS:
            ov = ("model.arch=gcnii", f"model.layers={LAYERS}", *degrees(strategy), f"parallel.compress={how}")
            name = f"{ds}-gcnii-{strategy}-{how}"
            out.append(Arm(ds, "gcnii", strategy, how, Experiment(name, DATASETS[ds], ov)))
    return out


def depth_volumes(mode: Mode, datasets: tuple[str, ...], have: dict | None = None, measure: bool = True) -> list[dict]:
    """Bytes per training epoch of graph / pipeline / hybrid on 4 workers for every dataset and depth: analytic
    (the chunk plan's formulas) and, for ``mode.measured`` datasets, measured by comm.py over one epoch. Rows in
    ``have`` (by dataset and depth, from :func:`cached_depth`) are reused; without ``measure`` the missing ones
    are analytic only (``--report`` runs nothing)."""
    from gnnpipe.config import load_config
    from gnnpipe.data import load_graph
    from gnnpipe.profile.report import profile

    have, rows = have or {}, []
    for ds in datasets:
        config, graph = DATASETS[ds], None
        for layers in DEPTHS:
            if (ds, layers) in have:
                rows += have[(ds, layers)]
                continue
            cfg = load_config(REPO / config, ["model.arch=gcnii", f"model.layers={layers}", "train.seed=1"])
            graph = graph or load_graph(cfg.dataset)
            epochs = 1 if measure and ds in mode.measured else 0
            t0 = time.perf_counter()
            for r in profile(cfg, graph, workers=4, measure_epochs=epochs):
                rows.append({"dataset": ds, "layers": layers, "hidden": cfg.model.hidden, **flatten(r)})
            print(f"  volumes {ds} L={layers}: {'measured' if epochs else 'analytic'}, "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)  # fmt: skip
    return rows


def cached_depth(path: Path, mode: Mode) -> dict[tuple[str, int], list[dict]]:
    """The volume rows an earlier invocation wrote to ``path``, by (dataset, depth), where they are measured if
    ``mode`` measures that dataset (volumes depend only on the plan and the model's widths, not on training)."""
    if not path.is_file():
        return {}
    out: dict[tuple[str, int], list[dict]] = {}
    for r in json.loads(path.read_text())["runs"]:
        out.setdefault((r["dataset"], r["layers"]), []).append(
            {k: v for k, v in r.items() if k != "ratio_graph_over_pipeline"}
        )
    usable = {
        key: rows
        for key, rows in out.items()
        if key[0] not in mode.measured or all(r["total_measured"] is not None for r in rows)
    }
    if usable:
        print(f"  volumes: reusing {len(usable)} (dataset, depth) points from {runner.repo_relative(path)}")
    return usable


def flatten(r: dict) -> dict:
    """A profile row as flat columns: ``<kind>_analytic`` and ``<kind>_measured`` (None when not measured)."""
    out = {k: r[k] for k in ("strategy", "ways", "stages", "chunks")}
    for kind in ("layer", "graph", "weight"):
        out[f"{kind}_analytic"] = r["analytic"][kind]
        out[f"{kind}_measured"] = r["measured"][kind] if "measured" in r else None
    out["total_analytic"] = sum(r["analytic"].values())
    out["total_measured"] = sum(r["measured"].values()) if "measured" in r else None
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 30 epochs, volumes measured on Cora only")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset (default: all)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset (default: all)")
    ap.add_argument("--epochs", type=int, help="override the mode's epochs per run (e.g. a smoke test)")
    runner.add_run_options(ap, EVIDENCE)  # --save: EVIDENCE, or EVIDENCE/quick with --quick
    args = ap.parse_args(argv)
    runner.check_run_options(ap, args)
    for what, allowed in (("datasets", tuple(DATASETS)), ("models", MODELS)):
        chosen = tuple(getattr(args, what).split(","))
        if not chosen or set(chosen) - set(allowed):
            ap.error(f"--{what} = {getattr(args, what)!r}; allowed: a comma-separated subset of {', '.join(allowed)}")
        setattr(args, what, tuple(x for x in allowed if x in chosen))
    if args.epochs is not None and args.epochs < 1:
        ap.error(f"--epochs = {args.epochs}; expected >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.save:
        out = EVIDENCE / "quick" if args.quick else EVIDENCE
    else:
        out = args.out or runner.SCRATCH.parent / "paper" / f"{mode.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out.resolve()
    plan = arms(args.datasets, args.models)
    epochs = args.epochs or mode.epochs
    runs = [runner.Run(a.experiment, s, epochs, out / "runs") for a in plan for s in mode.seeds]
    if args.dry_run:
        print("\n".join(r.shell_command() for r in runs))
        return 0
    t0 = time.perf_counter()
    failed = [] if args.report else runner.run_all(runs, force=args.force, timeout_s=args.timeout)
    results, unreadable = runner.finished_results(runs)
    print(f"paper ({mode.name}): {len(results)} of {len(runs)} runs finished, {time.perf_counter() - t0:.0f}s")
    have = {} if args.force else cached_depth(out / "depth.json", mode)
    depth = depth_volumes(mode, args.datasets, have, measure=not args.report)
    depth += [r for (ds, _), rows in have.items() if ds not in args.datasets for r in rows]  # kept, not lost
    command = "python experiments/paper.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {
        "mode": mode.name, "seeds": list(mode.seeds), "epochs": epochs or "the configs' (250)",
        "layers": LAYERS, "strategies": STRATEGIES, "datasets": DATASETS, "failed": failed + unreadable,
        "command": command,
    }  # fmt: skip
    ratio = write_all(out, plan, results, depth, meta)
    print(f"wrote {runner.repo_relative(out)}: matrix, table.md, depth, compress (.csv/.json/.png), curves.png")
    print(f"paper ({mode.name}): {time.perf_counter() - t0:.0f}s in all")
    if failed or unreadable:
        print(f"FAILED runs: {', '.join(failed + unreadable)}")
    print(f"ratio={ratio:.3f}")
    return 1 if failed or unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
