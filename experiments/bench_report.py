"""What ``experiments/bench_single.py`` reports: per-epoch times of both sides, their medians and ratios, and
the files (CSV of every timed epoch, the result JSON, a bar chart)."""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

SIDES = ("ours", "pyg")


@dataclass(frozen=True)
class EpochTime:
    wall: float  # seconds
    cpu: float  # CPU seconds of the process (all threads): less sensitive than wall time to other jobs


def summarize(times: dict[str, list[EpochTime]]) -> dict:
    """Medians, minima and the ours/PyG ratios of the timed epochs."""
    wall = {name: [t.wall for t in ts] for name, ts in times.items()}
    cpu = {name: [t.cpu for t in ts] for name, ts in times.items()}
    median = {name: statistics.median(ts) for name, ts in wall.items()}
    median_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    return {
        "median_s": median,
        "min_s": {name: min(ts) for name, ts in wall.items()},
        "ratio": median["ours"] / median["pyg"],
        # robust to load that drifts between rounds: the two epochs of a round ran back to back
        "paired_ratio_median": statistics.median(o / p for o, p in zip(wall["ours"], wall["pyg"], strict=True)),
        "median_cpu_s": median_cpu,
        "cpu_ratio": median_cpu["ours"] / median_cpu["pyg"],
    }


def write_results(out: Path, result: dict, times: dict[str, list[EpochTime]], title: str) -> list[Path]:
    """``out/bench_single.csv`` (every timed epoch), ``.json`` (``result``) and ``.png`` (epoch times and, when
    measured, peak-memory growth per side, under ``title``)."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, png_path = out / "bench_single.csv", out / "bench_single.json", out / "bench_single.png"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "side", "seconds", "cpu_seconds"])
        for name, ts in times.items():
            w.writerows([i, name, f"{t.wall:.6f}", f"{t.cpu:.6f}"] for i, t in enumerate(ts))
    json_path.write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["GNNPipe", "PyG GCN2Conv\n(sparse_csr)"]
    colors = ["tab:blue", "tab:orange"]
    med = [result["median_s"][s] for s in SIDES]
    lo = [med[i] - min(t.wall for t in times[s]) for i, s in enumerate(SIDES)]
    hi = [max(t.wall for t in times[s]) - med[i] for i, s in enumerate(SIDES)]
    panels = 2 if result.get("memory") else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    ax.bar(labels, med, yerr=[lo, hi], capsize=6, color=colors)
    ax.set_ylabel("epoch time (s), median, min-max")
    ax.set_title(f"ratio ours/PyG = {result['ratio']:.2f}")
    if panels == 2:
        ax = axes[0][1]
        growth = [result["memory"][s]["peak_growth"] / 2**30 for s in SIDES]
        ax.bar(labels, growth, color=colors)
        ax.set_ylabel("peak RSS growth over graph (GiB)")
        ax.set_title("peak memory")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return [csv_path, json_path, png_path]
