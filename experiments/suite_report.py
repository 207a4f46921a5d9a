"""Tables, checks and the plot of a suite's finished runs (pure: no runs, no subprocesses).

``build_report`` turns :class:`~experiments.suite_runs.RunResult` objects into one row per run, mean/std per
experiment and the suite's checks; ``write_tables`` writes ``<stem>.csv`` (rows, then a mean and a std row per
experiment) and ``<stem>.json``; ``plot`` writes ``<stem>.png`` (test accuracy per experiment, mean training-loss
curves); ``format_tables`` is what the runner prints.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from experiments.suite_runs import RunResult
from experiments.suites import Check, Suite

STAT_KEYS = (
    "test_acc", "best_val_acc", "best_epoch", "final_loss", "epoch_time_s", "comm_bytes_per_epoch",
    "peak_memory_bytes", "wall_s",
)  # fmt: skip


@dataclass(frozen=True)
class Report:
    """Flat records, as written: ``rows`` one per run (``row_of``'s keys), ``summary`` one per experiment in suite
    order (``n``, ``seeds``, ``<k>_mean``/``<k>_std`` for ``STAT_KEYS``), ``checks`` one per suite check whose
    experiments finished (``experiment, check, value, pass`` with ``pass`` None when not judged, and for a
    baseline check the largest and mean per-epoch training-loss gap). ``losses[(experiment, seed)]``: the curve;
    ``targets``: the absolute test-accuracy bars, for the plot."""

    suite: str
    rows: list[dict]
    summary: list[dict]
    checks: list[dict]
    losses: dict[tuple[str, int], list[float]]
    targets: dict[str, float]

    def failed_checks(self) -> list[dict]:
        return [c for c in self.checks if c["pass"] is False]


def row_of(result: RunResult, suite: str) -> dict:
    """One run as a table row; accuracies in percent, bytes per epoch summed over the traffic kinds."""
    m, cfg = result.summary, result.summary.config
    comm = m.comm_bytes_per_epoch
    return {
        "suite": suite,
        "experiment": result.experiment,
        "seed": result.seed,
        "dataset": cfg["dataset"]["name"],
        "layers": cfg["model"]["layers"],
        "workers": cfg["parallel"]["ways"] * cfg["parallel"]["stages"],
        "epochs": cfg["train"]["epochs"],
        "test_acc": 100.0 * m.test_acc,
        "best_val_acc": 100.0 * m.best_val_acc,
        "best_epoch": m.best_epoch,
        "final_loss": m.losses[-1],
        "epoch_time_s": m.epoch_time_s,
        "comm_layer_bytes": comm["layer"],
        "comm_graph_bytes": comm["graph"],
        "comm_weight_bytes": comm["weight"],
        "comm_bytes_per_epoch": sum(comm.values()),
        "peak_memory_bytes": max(m.peak_memory_bytes, default=0),  # the largest worker's, whole run
        "wall_s": result.record.wall_s,
        "command": result.record.command,
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample std (0 for one seed) of every ``STAT_KEYS`` column, per experiment, in row order."""
    out = []
    for name in dict.fromkeys(r["experiment"] for r in rows):
        mine = [r for r in rows if r["experiment"] == name]
        s = {"experiment": name, "n": len(mine), "seeds": ",".join(str(r["seed"]) for r in mine)}
        for k in STAT_KEYS:
            vals = [float(r[k]) for r in mine]
            s[f"{k}_mean"] = statistics.fmean(vals)
            s[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def loss_gaps(losses: dict[tuple[str, int], list[float]], name: str, baseline: str) -> tuple[float, float]:
    """Largest and mean |loss - baseline loss| per epoch, over the seeds both arms ran (nan if none)."""
    gaps = [
        abs(a - b)
        for (n, seed), curve in losses.items()
        if n == name and (baseline, seed) in losses
        for a, b in zip(curve, losses[(baseline, seed)], strict=False)
    ]
    return (max(gaps), statistics.fmean(gaps)) if gaps else (math.nan, math.nan)


def run_checks(
    checks: tuple[Check, ...], summary: list[dict], losses: dict[tuple[str, int], list[float]]
) -> list[dict]:
    """Each check whose experiments finished, judged on the means over seeds."""
    by = {s["experiment"]: s for s in summary}
    out = []
    for c in checks:
        if c.experiment not in by or (c.baseline is not None and c.baseline not in by):
            continue
        mean = by[c.experiment][f"{c.metric}_mean"]
        if c.baseline is None:
            value, ok = mean, mean >= c.at_least
            out.append({"experiment": c.experiment, "check": c.label, "value": value, "pass": ok if c.judged else None})
            continue
        value = mean - by[c.baseline][f"{c.metric}_mean"]
        ok = abs(value) <= c.tolerance
        rec = {"experiment": c.experiment, "check": c.label, "value": value, "pass": ok if c.judged else None}
        rec["max_loss_gap"], rec["mean_loss_gap"] = loss_gaps(losses, c.experiment, c.baseline)
        out.append(rec)
    return out


def build_report(suite: Suite, results: list[RunResult]) -> Report:
    """Rows, summary and checks of ``results`` (finished runs, in suite order: experiment, then seed)."""
    rows = [row_of(r, suite.name) for r in results]
    summary = summarise(rows)
    losses = {(r.experiment, r.seed): list(r.summary.losses) for r in results}
    targets = {c.experiment: c.at_least for c in suite.checks if c.at_least is not None and c.metric == "test_acc"}
    return Report(suite.name, rows, summary, run_checks(suite.checks, summary, losses), losses, targets)


# ---------------------------------------------------------------------------------------------- files
def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def write_tables(report: Report, stem: Path, meta: dict) -> list[Path]:
    """``<stem>.csv`` (runs, then mean and std rows per experiment; the command last) and ``<stem>.json``
    (``meta`` + runs, summary, acceptance)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = report.rows
    cols = [k for k in rows[0] if k != "command"] + ["command"]
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for s in report.summary:
            w.writerows({k: _fmt(r[k]) for k in cols} for r in rows if r["experiment"] == s["experiment"])
            for stat in ("mean", "std"):
                rec = {"experiment": s["experiment"], "seed": stat, "suite": report.suite}
                rec.update({k: _fmt(s[f"{k}_{stat}"]) for k in STAT_KEYS})
                w.writerow(rec)
    doc = {**meta, "runs": rows, "summary": report.summary, "acceptance": report.checks}
    json_path.write_text(json.dumps(doc, indent=2))
    return [csv_path, json_path]


def plot(report: Report, stem: Path) -> Path:
    """``<stem>.png``: mean ± std test accuracy per experiment (seeds in gray, targets in red) and the mean
    training-loss curve per experiment (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, rows = report.summary, report.rows
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
    names = [s["experiment"] for s in summary]
    xs = range(len(names))
    ax.errorbar(
        xs, [s["test_acc_mean"] for s in summary], yerr=[s["test_acc_std"] for s in summary], fmt="o", capsize=5
    )
    for i, name in enumerate(names):
        pts = [r["test_acc"] for r in rows if r["experiment"] == name]
        ax.scatter([i + 0.12] * len(pts), pts, s=12, color="gray", zorder=3)
        if name in report.targets:
            ax.hlines(report.targets[name], i - 0.3, i + 0.3, colors="red", linestyles="--")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%) at best valid epoch")
    ax.set_title(f"{stem.name}: mean ± std over seeds (gray: seeds, red: target)")
    ax.grid(alpha=0.3)
    ax2.set_prop_cycle(color=plt.cm.tab20.colors)  # suites have up to ~12 arms
    for name in names:
        curves = [c for (n, _), c in report.losses.items() if n == name]
        n = min(len(c) for c in curves)
        ax2.plot([statistics.fmean(c[i] for c in curves) for i in range(n)], label=name, lw=1)
    ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (mean over seeds)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def format_tables(report: Report) -> str:
    """Per-run and per-experiment lines, then one line per check (PASS / FAIL / info)."""
    lines = [f"{'experiment':<28} {'seed':>4} {'test':>6} {'val':>6} {'best_ep':>7} {'loss':>7} "
             f"{'epoch_s':>8} {'comm/epoch':>11} {'wall_s':>7}"]  # fmt: skip
    for s in report.summary:
        for r in (r for r in report.rows if r["experiment"] == s["experiment"]):
            lines.append(
                f"{r['experiment']:<28} {r['seed']:>4} {r['test_acc']:6.2f} {r['best_val_acc']:6.2f} "
                f"{r['best_epoch']:7d} {r['final_loss']:7.4f} {r['epoch_time_s']:8.3f} "
                f"{r['comm_bytes_per_epoch'] / 1e6:9.2f}MB {r['wall_s']:7.0f}"
            )
        lines.append(
            f"{s['experiment']:<28} {'mean':>4} {s['test_acc_mean']:6.2f} {s['best_val_acc_mean']:6.2f} "
            f"{s['best_epoch_mean']:7.0f} {s['final_loss_mean']:7.4f} {s['epoch_time_s_mean']:8.3f} "
            f"{s['comm_bytes_per_epoch_mean'] / 1e6:9.2f}MB {s['wall_s_mean']:7.0f}"
        )
        if s["n"] > 1:
            lines.append(f"{'':<28} {'std':>4} {s['test_acc_std']:6.2f} {s['best_val_acc_std']:6.2f}")
    if report.checks:
        lines.append("")
    for c in report.checks:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[c["pass"]]
        gap = ""
        if "max_loss_gap" in c:
            gap = f"   |loss gap| max {c['max_loss_gap']:.2e} mean {c['mean_loss_gap']:.2e}"
        lines.append(f"{verdict:<5} {c['experiment']:<28} {c['check']:<40} {c['value']:+.2f}{gap}")
    return "\n".join(lines)
