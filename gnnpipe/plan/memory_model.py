"""Predicted peak memory per worker (DESIGN §7, §10): the memory model's kinds for this worker, plus what the
calibration runs measured beyond those kinds.

Per worker (way w, stage s): graph structures (bytes per in-edge of the way, calibrated), features (first
stage) and labels (last stage) per row, weights with gradients and Adam moments, history ``Z`` (and ``H``) over
the way's history rows, the gradient inbox (reported at its bound, one row per vertex and layer of the way,
not added to the peak: it fills what the backward frees), what autograd saves (bytes per row of the
stage's modules counted with ``memory.SavedTensors`` on a few rows, scaled by the ratio the calibration run
measured), the in-flight buffers and the evaluation buffers. Each phase's peak (load, setup, train, eval) is
the kinds alive in it plus the residual that phase showed in calibration (allocator slack, library buffers,
one chunk's transient working memory: linear in the chunk's rows); the eval phase (which also holds the
training epochs after the first) is the larger of training and the evaluation buffers. The predicted peak is
the process baseline plus the largest phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gnnpipe.memory import SavedTensors
from gnnpipe.models.deep import DeepGNN
from gnnpipe.models.ops import RowCtx
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.plan.costs import Calibration
from gnnpipe.plan.workload import Geometry

__all__ = ["stage_saved_per_row", "WorkerMemory", "predict_memory"]

_LABEL_BYTES_PER_ROW = 11  # int64 label + three bool masks
_PROBE_ROWS = 64


def stage_saved_per_row(model: DeepGNN, lo: int, hi: int, num_features: int, dtype: torch.dtype) -> float:
    """Bytes autograd saves per row for the modules of the stage holding layers ``[lo, hi)`` (the encoder when
    ``lo == 0``, the head when ``hi`` is the last layer), measured on a few random rows; the aggregation is
    replaced by the identity (its backward needs only the structure)."""
    model = model.to(dtype).train()
    n = _PROBE_ROWS
    g = torch.Generator().manual_seed(0)
    first, last = lo == 0, hi == model.num_layers
    width = model.layers[lo].in_width
    x = torch.rand(n, num_features if first else width, generator=g, dtype=dtype)
    ctx = RowCtx(training=True, seed=0, epoch=0, segments=((0, n),))
    h0 = x[:, :width].clone() if model.encoder.kind == "gcnii" and not first else None
    with SavedTensors(exclude=(x,)) as saved:
        if first:
            h, h0 = model.encoder(x.requires_grad_(False), ctx)
        else:
            h = x.requires_grad_(True)
        for layer in model.layers[lo:hi]:
            z, r = layer.pre(h, ctx)
            h = layer.post(z * 1.0, r, h0, ctx)
        if last:
            model.head(h, ctx).logsumexp(1).sum()
    return saved.bytes / n


@dataclass(frozen=True)
class WorkerMemory:
    kinds: dict[str, int]  # bytes held by kind (DESIGN §7)
    phases: dict[str, int]  # predicted peak growth of each phase over the baseline
    peak: int  # baseline + the largest phase


def _cal_runs(cal: Calibration) -> list[dict]:
    return [{**cal.memory["runs"][f"C{c}"], "chunks": c} for c in cal.memory["chunk_counts"]]


def predict_memory(
    *,
    dims: ParallelDims,
    rank: int,
    geo: Geometry,
    cal: Calibration,
    model: DeepGNN,
    num_features: int,
    itemsize: int,
    stage_params: list[int],
    total_params: int,
    saved_ratio: float,
    history_copies: int = 1,
    history_itemsize: int | None = None,
) -> WorkerMemory:
    """Peak memory of worker ``rank``; ``saved_ratio``: the engine's saved bytes over the probe's (from the
    calibration run), ``history_copies``: 2 with a separate snapshot ``H``, ``history_itemsize``: bytes per
    stored history element (``parallel.history_dtype``; default the model's)."""
    runs = _cal_runs(cal)
    way, stage = dims.coords(rank)
    lo, hi = dims.layer_range(stage)
    n_w, N = geo.way_rows(way), geo.num_nodes
    widths = model.dims().agg_widths[lo:hi]
    ref = runs[-1]
    first, last = dims.is_first(stage), dims.is_last(stage)
    per_row = stage_saved_per_row(model, lo, hi, num_features, _dtype(itemsize))
    label_total = N * _LABEL_BYTES_PER_ROW
    feat_per_row = max(ref["features_labels"] - label_total, 0) / N
    kinds = {
        "graph_structures": int(ref["graph_structures"] / max(ref["edges"], 1) * geo.way_edges(way)),
        "features_labels": int(n_w * (feat_per_row * first + _LABEL_BYTES_PER_ROW * last)),
        "weights_optimizer": int(ref["weights_optimizer"] * stage_params[stage] / max(total_params, 1)),
        "history": history_copies * geo.hist_rows[way] * sum(widths) * (history_itemsize or itemsize),
        # the engine's GradInbox fills what the backward frees (DESIGN §7): bounded by one row per vertex and
        # layer, not added to the peak; what it adds in practice is in the calibrated residual
        "history_grad": n_w * sum(widths) * itemsize,
        "saved_for_backward": int(saved_ratio * n_w * per_row),
        "in_flight_max": 2 * max(geo.rows) * (model.dims().boundary_widths[hi - 1] + model.dims().h0_width) * itemsize,
        "eval_buffers": int(ref["eval_buffers"] * (3 * n_w + N) / (4 * N)),
    }
    if dims.world_size == 1:
        kinds["in_flight_max"] = 0
    setup_kinds = ("graph_structures", "features_labels", "weights_optimizer", "history")

    def residual(phase: str, base: str | None, alive: tuple[str, ...]) -> np.ndarray:
        """Per calibration run: the phase's peak minus what the model names; returned as (rows/chunk, value)."""
        out = []
        for r in runs:
            held = sum(r[k] for k in alive) + (r[f"end_growth_{base}"] if base else 0)
            out.append((r["rows"] / r["chunks"], r[f"peak_growth_{phase}"] - held))
        return np.array(out)

    def fit_at(points: np.ndarray, x: float) -> float:
        if len(points) < 2 or np.ptp(points[:, 0]) == 0:
            return float(points[:, 1].mean())
        slope, icept = np.polyfit(points[:, 0], points[:, 1], 1)
        return float(icept + slope * x)

    chunk_rows = max(geo.rows)
    setup = sum(kinds[k] for k in setup_kinds) + fit_at(residual("setup", None, setup_kinds), chunk_rows)
    phases = {
        "load": float(np.mean([r["peak_growth_load"] for r in runs])),
        "setup": setup,
        "train": setup
        + kinds["saved_for_backward"]
        + kinds["in_flight_max"]
        + max(fit_at(residual("train", "setup", ("saved_for_backward",)), chunk_rows), 0.0),
    }
    # the eval phase runs from the end of the first epoch through the first evaluation, so it holds the later
    # training epochs too: the larger of a training epoch and the evaluation buffers, plus what it added in
    # calibration beyond the training peak
    extra = float(np.mean([max(r["peak_growth_eval"] - r["peak_growth_train"], 0) for r in runs]))
    phases["eval"] = max(phases["train"], setup + kinds["eval_buffers"]) + extra
    baseline = float(np.mean([r["baseline_rss"] for r in runs]))
    phases = {k: int(v) for k, v in phases.items()}
    return WorkerMemory(kinds=kinds, phases=phases, peak=int(baseline + max(phases.values())))


def _dtype(itemsize: int) -> torch.dtype:
    return torch.float64 if itemsize == 8 else torch.float32
