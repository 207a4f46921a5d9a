"""Analytic per-epoch communication of the three strategies at one worker count (DESIGN §4).

For ``G`` workers: graph parallelism (W=G, S=1, C=G), the GNNPipe pipeline (W=1, S=G, C = the configured
chunks, or 4G) and, when G is even and >= 4, a hybrid (W=2, S=G/2, C as the pipeline). Volumes come from
``partition.stats.analytic_volume`` on each strategy's own chunk plan (METIS parts are cached, so the extra
plans are cheap after the first run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from gnnpipe.config import ExperimentConfig, ParallelConfig
from gnnpipe.data.graph import Graph
from gnnpipe.models.deep import DeepGNN, build_model
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.partition.chunker import ChunkPlan
from gnnpipe.partition.links import analytic_by_link
from gnnpipe.partition.stages import stage_bounds
from gnnpipe.partition.stats import CommVolume, analytic_volume

__all__ = ["Strategy", "strategies_for", "volume_by_link", "volume_of", "with_degrees"]


@dataclass(frozen=True)
class Strategy:
    """One way to use the workers: ``ways x stages`` of them with ``chunks`` vertex chunks. ``name`` is its kind:
    ``graph``, ``pipeline``, ``hybrid`` or ``configured`` (the configured degrees when they are none of those)."""

    name: str
    ways: int
    stages: int
    chunks: int

    @property
    def degrees(self) -> tuple[int, int, int]:
        """``(ways, stages, chunks)``: what makes two strategies the same run, whatever their names."""
        return self.ways, self.stages, self.chunks


def strategies_for(cfg: ExperimentConfig, workers: int) -> list[Strategy]:
    """The configured degrees first (named by kind), then the other strategies at the same worker count."""
    p = cfg.parallel
    pipe_chunks = p.chunks if p.ways == 1 and p.stages == workers and p.chunks > 1 else 4 * workers
    out = [Strategy("graph", workers, 1, workers), Strategy("pipeline", 1, workers, pipe_chunks)]
    if workers >= 4 and workers % 2 == 0:
        hc = p.chunks if (p.ways, p.stages) == (2, workers // 2) else pipe_chunks + pipe_chunks % 2
        out.append(Strategy("hybrid", 2, workers // 2, hc))
    configured = Strategy("configured", p.ways, p.stages, p.chunks)
    if p.ways * p.stages == workers and all(s.degrees != configured.degrees for s in out):
        out.append(configured)
    return [s for s in out if s.stages <= cfg.model.layers]


def with_degrees(cfg: ExperimentConfig, s: Strategy) -> ExperimentConfig:
    par: ParallelConfig = dataclasses.replace(
        cfg.parallel,
        ways=s.ways,
        stages=s.stages,
        chunks=s.chunks,
        stage_split="equal",
    )
    return dataclasses.replace(cfg, parallel=par)


def _volume_args(cfg: ExperimentConfig, graph: Graph, model: DeepGNN | None) -> tuple[ParallelDims, dict]:
    if model is None:
        model = build_model(cfg.model, graph.num_features, graph.num_classes, seed=cfg.train.seed)
    dims = ParallelDims.from_config(cfg)
    d = model.dims()
    numels = [sum(q.numel() for q in model.stage_parameters(lo, hi)) for lo, hi in stage_bounds(dims.layer_counts)]
    itemsize = torch.empty((), dtype=getattr(torch, cfg.train.dtype)).element_size()
    return dims, {
        "agg_widths": d.agg_widths,
        "agg_grad": d.agg_grad,
        "boundary_widths": d.boundary_widths,
        "h0_width": d.h0_width,
        "stage_weight_numels": numels,
        "bytes_per_elem": itemsize,
        "compress": cfg.parallel.compress,
    }


def volume_of(cfg: ExperimentConfig, graph: Graph, plan: ChunkPlan, model: DeepGNN | None = None) -> CommVolume:
    """Analytic bytes per training epoch of ``cfg``'s degrees on ``plan`` (float width from train.dtype, row
    bytes from parallel.compress)."""
    dims, args = _volume_args(cfg, graph, model)
    return analytic_volume(plan, stage_layers=list(dims.layer_counts), **args)


def volume_by_link(
    cfg: ExperimentConfig, graph: Graph, plan: ChunkPlan, node_of_rank: list[int], model: DeepGNN | None = None
) -> dict[str, dict[str, int]]:
    """:func:`volume_of` split into ``intra``/``inter``-node bytes per kind for ``cfg``'s placement and the node
    of every rank (``parallel.nodes.block_nodes(world, nodes)`` for a launcher's layout), DESIGN §4."""
    dims, args = _volume_args(cfg, graph, model)
    return analytic_by_link(plan, dims, node_of_rank, **args)
