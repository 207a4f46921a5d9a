"""Tables and plots of ``experiments/paper.py`` (pure: reads finished runs and volume rows, runs nothing).

``write_all`` writes into one folder: ``matrix.{csv,json}`` (one row per run, then one summary row per arm),
``table.md`` (the strategy x model tables the README shows), ``depth.{csv,json}``, ``compress.{csv,json}`` and
the plots ``matrix.png``, ``curves.png``, ``depth.png``, ``compress.png``; it returns the headline ratio.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.suite_runs import RunResult
from experiments.tables import write_runs

if TYPE_CHECKING:  # paper.py imports this module; only the type is needed here
    from experiments.paper import Arm

KINDS = ("layer", "graph", "weight")
MIB = 2**20


def run_row(arm: Arm, r: RunResult) -> dict:
    """One finished run as a flat row: labels, accuracy (%), time, bytes per epoch by kind (measured), whether
    they equal the analytic ones, the largest worker's peak memory growth."""
    s = r.summary
    return {
        "dataset": arm.dataset, "model": arm.model, "strategy": arm.strategy, "compress": arm.compress,
        "seed": r.seed, "epochs": s.config["train"]["epochs"], "test_acc": 100 * s.test_acc,
        "best_val_acc": 100 * s.best_val_acc, "best_epoch": s.best_epoch, "epoch_time_s": s.epoch_time_s,
        **{f"{k}_bytes": s.comm_bytes_per_epoch[k] for k in KINDS},
        "bytes_per_epoch": sum(s.comm_bytes_per_epoch.values()),
        "measured_equals_analytic": s.comm_bytes_per_epoch == s.comm_bytes_per_epoch_analytic,
        "peak_growth_bytes": peak_growth(s.memory), "peak_memory_bytes": max(s.peak_memory_bytes, default=0),
        "wall_s": r.record.wall_s,
        "command": r.record.command,
    }  # fmt: skip


def peak_growth(memory: list[dict[str, int]]) -> int:
    """The largest worker's peak growth over its idle baseline, the largest over the phases (DESIGN §7)."""
    return max((v for w in memory for k, v in w.items() if k.startswith("peak_growth_")), default=0)


def arm_summary(rows: list[dict]) -> dict:
    """Mean (and sample std of the test accuracy) over one arm's seeds."""
    first, n = rows[0], len(rows)
    acc = [r["test_acc"] for r in rows]
    out = {k: first[k] for k in ("dataset", "model", "strategy", "compress")}
    out.update(seeds=n, test_acc=statistics.fmean(acc), test_acc_std=statistics.stdev(acc) if n > 1 else 0.0)
    for k in ("best_val_acc", "epoch_time_s", "bytes_per_epoch", *(f"{k}_bytes" for k in KINDS), "peak_growth_bytes"):
        out[k] = statistics.fmean(r[k] for r in rows)
    out["measured_equals_analytic"] = all(r["measured_equals_analytic"] for r in rows)
    return out


def summaries(plan: list[Arm], rows: list[dict]) -> list[dict]:
    """One summary per arm of ``plan`` that has finished runs, in plan order."""
    out = []
    for a in plan:
        mine = [r for r in rows if (r["dataset"], r["model"], r["strategy"], r["compress"]) == key(a)]
        if mine:
            out.append(arm_summary(mine))
    return out


def key(a: Arm) -> tuple[str, str, str, str]:
    return a.dataset, a.model, a.strategy, a.compress


def markdown_tables(summary: list[dict], meta: dict) -> str:
    """Two strategy x model tables (uncompressed arms): test accuracy, then epoch time / bytes / peak memory."""
    rows = [s for s in summary if s["compress"] == "none"]
    strategies = list(dict.fromkeys(s["strategy"] for s in rows))
    by = {(s["dataset"], s["model"], s["strategy"]): s for s in rows}
    pairs = list(dict.fromkeys((s["dataset"], s["model"]) for s in rows))
    head = "| dataset | model | " + " | ".join(strategies) + " |\n|---|---|" + "---|" * len(strategies)

    def table(cell) -> list[str]:
        lines = [head]
        for ds, model in pairs:
            cells = [cell(by[ds, model, st]) if (ds, model, st) in by else "–" for st in strategies]
            lines.append(f"| {ds} | {model} | " + " | ".join(cells) + " |")
        return lines

    seeds = f"{len(meta['seeds'])} seed{'s' if len(meta['seeds']) > 1 else ''}"
    out = [f"Test accuracy (%) at the best-valid epoch, {meta['layers']} layers, {seeds}, {meta['epochs']} epochs "
           f"(`{meta['command']}`):", ""]  # fmt: skip
    want = len(meta["seeds"])  # an arm with fewer finished seeds (an interrupted run) says how many it has

    def acc(s: dict) -> str:
        spread = f" ± {s['test_acc_std']:.1f}" if s["seeds"] > 1 else ""
        return f"{s['test_acc']:.1f}{spread}" + (f" (n={s['seeds']})" if s["seeds"] < want else "")

    out += table(acc)
    out += [
        "",
        "Epoch time (s) · bytes per epoch (MiB, all kinds, cluster-wide) · largest worker's peak memory growth (MiB):",
        "",
    ]
    out += table(
        lambda s: f"{s['epoch_time_s']:.2f} · {s['bytes_per_epoch'] / MIB:.1f} · {s['peak_growth_bytes'] / MIB:.0f}"
    )
    return "\n".join(out) + "\n"


def compress_rows(summary: list[dict]) -> list[dict]:
    """The compression arms with their uncompressed twin first; bytes ratio against it (layer + graph)."""
    out = []
    for base in (s for s in summary if s["compress"] == "none"):
        twins = [s for s in summary if s["compress"] != "none" and key_of(s)[:3] == key_of(base)[:3]]
        if not twins:
            continue
        for s in (base, *twins):
            traffic = s["layer_bytes"] + s["graph_bytes"]
            ratio = (base["layer_bytes"] + base["graph_bytes"]) / traffic if traffic else None
            out.append({**s, "traffic_bytes": traffic, "ratio_vs_none": ratio})
    return out


def key_of(s: dict) -> tuple[str, str, str, str]:
    return s["dataset"], s["model"], s["strategy"], s["compress"]


def depth_ratio(depth: list[dict], dataset: str, layers: int) -> float:
    """Graph / pipeline bytes per epoch (measured where measured, else analytic) at one dataset and depth."""
    tot = {r["strategy"]: total(r) for r in depth if r["dataset"] == dataset and r["layers"] == layers}
    return tot["graph"] / tot["pipeline"] if tot.get("pipeline") else float("nan")


def total(r: dict) -> int:
    return r["total_measured"] if r["total_measured"] is not None else r["total_analytic"]


def write_all(out: Path, plan: list[Arm], results: list[RunResult], depth: list[dict], meta: dict) -> float:
    """Every table and plot into ``out``; returns the graph / pipeline volume ratio at ``meta['layers']`` on the
    first dataset (Cora unless left out)."""
    arms = {a.experiment.name: a for a in plan}
    rows = [run_row(arms[r.experiment], r) for r in results]
    summary = summaries(plan, rows)
    if rows:
        write_runs(out, "matrix", rows + [{"seed": "mean", **s} for s in summary], meta)
        (out / "table.md").write_text(markdown_tables(summary, meta))
        plot_matrix(summary, out / "matrix.png", meta)
        plot_curves(plan, results, out / "curves.png", meta)
    comp = compress_rows(summary)
    if comp:
        write_runs(out, "compress", comp, meta)
        plot_compress(comp, out / "compress.png")
    for r in depth:
        r["ratio_graph_over_pipeline"] = depth_ratio(depth, r["dataset"], r["layers"])
    write_runs(out, "depth", depth, meta)
    plot_depth(depth, out / "depth.png")
    return depth_ratio(depth, depth[0]["dataset"], meta["layers"]) if depth else float("nan")


# ---------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: Path, title: str | None) -> None:
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _datasets(items) -> list[str]:
    return list(dict.fromkeys(s["dataset"] for s in items))


def plot_matrix(summary: list[dict], path: Path, meta: dict) -> None:
    """Test accuracy per model, one bar per strategy (± std over seeds), one panel per dataset."""
    plt = _plt()
    rows = [s for s in summary if s["compress"] == "none"]
    datasets = _datasets(rows)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [s for s in rows if s["dataset"] == ds]
        models = list(dict.fromkeys(s["model"] for s in mine))
        strategies = list(dict.fromkeys(s["strategy"] for s in mine))
        width = 0.8 / len(strategies)
        for i, st in enumerate(strategies):
            pts = [next((s for s in mine if s["model"] == m and s["strategy"] == st), None) for m in models]
            xs = [j + i * width for j, p in enumerate(pts) if p]
            ys = [p["test_acc"] for p in pts if p]
            ax.bar(xs, ys, width, yerr=[p["test_acc_std"] for p in pts if p], capsize=3, label=st)
        ax.set_xticks([j + width * (len(strategies) - 1) / 2 for j in range(len(models))], models)
        ax.set_title(ds)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    _finish(fig, path, f"{meta['layers']} layers, 4 workers, {len(meta['seeds'])} seed(s), {meta['epochs']} epochs")


def plot_curves(plan: list[Arm], results: list[RunResult], path: Path, meta: dict) -> None:
    """Test accuracy against epoch (mean over seeds), a panel per dataset x model, a line per strategy."""
    plt = _plt()
    arms = {a.experiment.name: a for a in plan if a.compress == "none"}
    curves: dict[tuple[str, str, str], list[list[tuple[int, float]]]] = {}
    for r in results:
        if r.experiment in arms and r.summary.evals:
            a = arms[r.experiment]
            curves.setdefault((a.dataset, a.model, a.strategy), []).append(
                [(e["epoch"], 100 * e["test"]) for e in r.summary.evals]
            )
    datasets = list(dict.fromkeys(k[0] for k in curves))
    models = list(dict.fromkeys(k[1] for k in curves))
    if not curves:
        return
    fig, axes = plt.subplots(len(datasets), len(models), figsize=(3.4 * len(models), 2.6 * len(datasets)),
                             squeeze=False, sharex=True)  # fmt: skip
    for (ds, model, st), seeds in curves.items():
        ax = axes[datasets.index(ds)][models.index(model)]
        n = min(len(c) for c in seeds)
        ax.plot([seeds[0][i][0] for i in range(n)], [statistics.fmean(c[i][1] for c in seeds) for i in range(n)],
                "o-", label=st, lw=1, ms=2)  # fmt: skip
        ax.set_title(f"{ds} {model}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel("test acc (%)")
    axes[0][0].legend(fontsize=7)
    _finish(fig, path, f"accuracy against epoch, {meta['layers']} layers (mean over {len(meta['seeds'])} seed(s))")


def plot_depth(depth: list[dict], path: Path) -> None:
    """Bytes per epoch against depth per strategy (solid: measured, dashed: analytic only), and graph/pipeline."""
    plt = _plt()
    datasets = _datasets(depth)
    fig, axes = plt.subplots(1, len(datasets) + 1, figsize=(4.2 * (len(datasets) + 1), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=False):
        mine = [r for r in depth if r["dataset"] == ds]
        for st in dict.fromkeys(r["strategy"] for r in mine):
            pts = [r for r in mine if r["strategy"] == st]
            measured = all(r["total_measured"] is not None for r in pts)
            ax.plot([r["layers"] for r in pts], [total(r) / MIB for r in pts], "o-" if measured else "o--", label=st)
        ax.set(xscale="log", yscale="log", xlabel="layers", ylabel="MiB per epoch (4 workers)", title=ds)
        _layer_ticks(ax, mine)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[0][-1]
    for ds in datasets:
        pts = [r for r in depth if r["dataset"] == ds and r["strategy"] == "graph"]
        ax.plot([r["layers"] for r in pts], [r["ratio_graph_over_pipeline"] for r in pts], "o-", label=ds)
    ax.set(xscale="log", xlabel="layers", ylabel="graph / pipeline bytes", title="volume ratio")
    _layer_ticks(ax, depth)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _finish(fig, path, None)


def _layer_ticks(ax, rows: list[dict]) -> None:
    depths = sorted({r["layers"] for r in rows})
    ax.set_xticks(depths, [str(d) for d in depths], minor=False)
    ax.set_xticks([], minor=True)


def plot_compress(rows: list[dict], path: Path, title: str = "parallel.compress, GCNII") -> None:
    """Bytes (layer + graph) and test accuracy (%, with ``test_acc_std``) per compression setting, one group per
    (dataset, strategy). Also ``bench_compress.py``'s plot."""
    plt = _plt()
    groups = list(dict.fromkeys((r["dataset"], r["strategy"]) for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(groups)
    for i, (ds, st) in enumerate(groups):
        mine = [r for r in rows if (r["dataset"], r["strategy"]) == (ds, st)]
        xs = [j + i * width for j in range(len(mine))]
        axes[0].bar(xs, [r["traffic_bytes"] / MIB for r in mine], width, label=f"{ds} {st}")
        axes[1].bar(xs, [r["test_acc"] for r in mine], width, yerr=[r["test_acc_std"] for r in mine], capsize=3,
                    label=f"{ds} {st}")  # fmt: skip
    settings = list(dict.fromkeys(r["compress"] for r in rows))
    for ax, label in zip(axes, ("layer + graph MiB per epoch (measured)", "test accuracy (%)"), strict=True):
        ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(settings))], settings)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[1].set_ylim(bottom=max(0.0, min(r["test_acc"] for r in rows) - 10))
    _finish(fig, path, title)
