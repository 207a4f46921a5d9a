"""Statistics of a chunk plan and the analytic per-epoch communication volumes of DESIGN §4.

Everything here is a pure function of a `ChunkPlan` (and model widths): the profiler prints these numbers
next to the bytes `parallel/comm.py` measured, and they must agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gnnpipe.data.graph import Graph
from gnnpipe.parallel.codec import row_bytes
from gnnpipe.partition.chunker import ChunkPlan
from gnnpipe.units import format_bytes

__all__ = [
    "CommVolume",
    "PartStats",
    "PlanStats",
    "analytic_volume",
    "authors_graph_estimate",
    "authors_mirrors",
    "authors_pipeline_estimate",
    "format_plan_report",
    "graph_pairs",
    "graph_pairs_bwd",
    "plan_stats",
]


# ---------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class PartStats:
    """Per-part statistics of one level (chunks or ways); every field is ``[P] int64``.

    vertices: owned vertices. in_edges: edges into the part. cut_in: of those, edges whose source lies in
    another part. mirrors: distinct out-of-part in-neighbours, i.e. the rows of other parts this part reads
    per aggregation (for a chunk: ``len(plan.ext(c))``; for a way: rows it receives from other ways).
    """

    vertices: torch.Tensor
    in_edges: torch.Tensor
    cut_in: torch.Tensor
    mirrors: torch.Tensor

    @property
    def vertex_balance(self) -> float:
        """max / mean of the vertex counts (1.0 = perfectly balanced)."""
        return _balance(self.vertices)

    @property
    def edge_balance(self) -> float:
        """max / mean of the in-edge counts (1.0 = perfectly balanced)."""
        return _balance(self.in_edges)


@dataclass(frozen=True)
class PlanStats:
    """Chunk- and way-level statistics. ``pairs``: (vertex, other way) pairs = rows sent per aggregation."""

    chunk: PartStats
    way: PartStats
    pairs: int


def _balance(x: torch.Tensor) -> float:
    mean = x.double().mean().item()
    return float(x.max()) / mean if mean > 0 else 1.0


def plan_stats(plan: ChunkPlan) -> PlanStats:
    """Per-chunk and per-way statistics of ``plan`` (computed from its blocks and halo sets alone)."""
    C, W, P = plan.num_chunks, plan.num_ways, plan.chunks_per_way
    blocks = plan.block_counts
    chunk_in = blocks.sum(1)
    chunk = PartStats(
        vertices=plan.chunk_sizes(),
        in_edges=chunk_in,
        cut_in=chunk_in - blocks.diagonal(),
        mirrors=plan.ext_offsets[1:] - plan.ext_offsets[:-1],
    )
    way_blocks = blocks.view(W, P, W, P).sum((1, 3))
    way_in = way_blocks.sum(1)
    # halo_fwd(c, w2) for c outside w2 are disjoint and together are w2's out-of-way in-neighbours.
    fwd_sizes = (plan.halo_fwd_offsets[1:] - plan.halo_fwd_offsets[:-1]).view(C, W)
    way = PartStats(
        vertices=plan.way_bounds[1:] - plan.way_bounds[:-1],
        in_edges=way_in,
        cut_in=way_in - way_blocks.diagonal(),
        mirrors=fwd_sizes.sum(0),
    )
    return PlanStats(chunk=chunk, way=way, pairs=graph_pairs(plan))


def graph_pairs(plan: ChunkPlan) -> int:
    """Number of (vertex v, way w2 != way(v)) pairs with an edge from v into w2 (0 with one way)."""
    return int(plan.halo_fwd_vertices.numel())


def graph_pairs_bwd(plan: ChunkPlan) -> int:
    """Number of (vertex v, way w2 != way(v)) pairs with an edge from w2 into v: backward gradient rows."""
    return int(plan.halo_bwd_vertices.numel())


def authors_mirrors(plan: ChunkPlan) -> torch.Tensor:
    """[W] int64 mirrors per way as the authors' estimate tool counts them.

    mirrors(w) = distinct vertices outside ``w`` that are the destination of an edge from ``w``, i.e. the
    union of ``halo_bwd(c, w)`` over chunks ``c`` of other ways. Equals ``PlanStats.way.mirrors`` on
    symmetric graphs.
    """
    C, W = plan.num_chunks, plan.num_ways
    return (plan.halo_bwd_offsets[1:] - plan.halo_bwd_offsets[:-1]).view(C, W).sum(0)


# ---------------------------------------------------------------------------------------------- volumes
@dataclass(frozen=True)
class CommVolume:
    """Cluster-wide bytes per training epoch, by kind (DESIGN §4)."""

    layer: int
    graph: int
    weight: int

    @property
    def total(self) -> int:
        return self.layer + self.graph + self.weight


def analytic_volume(
    plan: ChunkPlan,
    *,
    stage_layers: list[int],
    agg_widths: list[int],
    agg_grad: list[bool],
    boundary_widths: list[int],
    h0_width: int,
    stage_weight_numels: list[int],
    bytes_per_elem: int = 4,
    compress: str = "none",
) -> CommVolume:
    """Per-epoch communication of one training epoch on ``plan`` with S = len(stage_layers) stages.

    stage_layers: [S] GNN layers per stage (each >= 1, sum L). agg_widths: [L] width of aggregation input
    z_l. agg_grad: [L] whether z_l depends on weights (backward exchange needed). boundary_widths: [L] width
    of h after layer l. h0_width: width of an initial residual travelling with activations (0 if none).
    stage_weight_numels: [S] weight elements per stage.

    layer  = sum over boundaries b (after the last layer l_b of stages 0..S-2) of 2 N (boundary_widths[l_b]
             + h0_width) bytes (forward rows + backward gradient rows).
    graph  = sum_l agg_widths[l] * bytes * (pairs_fwd + (pairs_bwd if agg_grad[l] else 0)): forward sends the
             rows of ``halo_fwd`` (`graph_pairs`); backward sends the aggregation-output gradient rows of
             ``halo_bwd`` (pull style, as the authors' system; `graph_pairs_bwd`). On symmetric graphs the two
             counts are equal and this is DESIGN §4's ``pairs * width * 2``.
    weight = sum_s 2 (W-1) stage_weight_numels[s] bytes (ring all-reduce over the W ways, cluster-wide).

    compress (``parallel.compress``): layer and graph rows of width d take ``codec.row_bytes(d, bytes,
    compress)`` bytes (d * bytes; 2 d for bf16/fp16; d + 2 for int8: payload and the row's bfloat16 scale);
    h0 is a row block of its own (its own scales). Weights are never compressed.
    """
    S, L = len(stage_layers), sum(stage_layers)
    if S < 1 or any(n < 1 for n in stage_layers):
        raise ValueError(f"stage_layers must be a non-empty list of positive layer counts, got {stage_layers}")
    for name, seq in (("agg_widths", agg_widths), ("agg_grad", agg_grad), ("boundary_widths", boundary_widths)):
        if len(seq) != L:
            raise ValueError(f"{name} has {len(seq)} entries but stage_layers sums to {L} layers")
    if len(stage_weight_numels) != S:
        raise ValueError(f"stage_weight_numels has {len(stage_weight_numels)} entries for {S} stages")
    n, w, b = plan.num_nodes, plan.num_ways, bytes_per_elem
    ends, acc = [], 0
    for count in stage_layers[:-1]:
        acc += count
        ends.append(acc - 1)  # index of the last layer before boundary

    def row(width: int) -> int:
        return row_bytes(width, b, compress) if width else 0

    layer = sum(2 * n * (row(boundary_widths[e]) + row(h0_width)) for e in ends)
    fwd, bwd = graph_pairs(plan), graph_pairs_bwd(plan)
    graph = sum(row(width) * (fwd + (bwd if grad else 0)) for width, grad in zip(agg_widths, agg_grad, strict=True))
    weight = sum(2 * (w - 1) * numel * b for numel in stage_weight_numels)
    return CommVolume(layer=layer, graph=graph, weight=weight)


def authors_graph_estimate(plan: ChunkPlan, num_layers: int, num_features: int, hidden: int) -> int:
    """The authors' graph-parallel estimate (toolkits/estimate_comm_volume.cc), bytes per epoch.

    sum_w mirrors(w) * 4 * (F + d * (L - 1)) * 2 with `authors_mirrors` over the plan's ways (use a plan
    whose ways are the graph-parallel parts, e.g. chunks = ways = G).
    """
    mirrors = int(authors_mirrors(plan).sum())
    return mirrors * 4 * (num_features + hidden * (num_layers - 1)) * 2


def authors_pipeline_estimate(num_nodes: int, num_stages: int, hidden: int) -> int:
    """The authors' pipeline estimate, bytes per epoch: (S - 1) * N * d * 4 * 2."""
    return (num_stages - 1) * num_nodes * hidden * 4 * 2


# ---------------------------------------------------------------------------------------------- report
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return ["  " + fmt.format(*header), *("  " + fmt.format(*r) for r in rows)]


def _part_rows(ps: PartStats, owner: torch.Tensor | None, max_rows: int) -> list[list[str]]:
    cols = [ps.vertices, ps.in_edges, ps.cut_in, ps.mirrors]
    count = ps.vertices.numel()
    if count <= max_rows:
        rows = []
        for i in range(count):
            first = [str(i)] + ([str(int(owner[i]))] if owner is not None else [])
            rows.append(first + [str(int(c[i])) for c in cols])
        return rows
    pad = [""] if owner is not None else []
    return [
        [f"min of {count}"] + pad + [str(int(c.min())) for c in cols],
        ["mean"] + pad + [f"{c.double().mean().item():.1f}" for c in cols],
        ["max"] + pad + [str(int(c.max())) for c in cols],
    ]


def format_plan_report(plan: ChunkPlan, graph: Graph, volumes: dict[str, CommVolume], *, max_rows: int = 32) -> str:
    """A readable report: per-chunk and per-way statistics and per-epoch volumes per strategy.

    Parts are listed one per row up to ``max_rows``, else summarised as min / mean / max. ``volumes`` maps a
    strategy name to its `CommVolume`; ratios are relative to the first entry.
    """
    st = plan_stats(plan)
    e = max(plan.num_edges, 1)
    lines = [
        f"Chunk plan for graph {graph.name!r}: N={plan.num_nodes} E={plan.num_edges} chunks={plan.num_chunks} "
        f"ways={plan.num_ways} method={plan.method} seed={plan.seed} vertex_weights={plan.vertex_weights or 'none'}",
        f"  edge cut: chunks {int(st.chunk.cut_in.sum())} ({100 * int(st.chunk.cut_in.sum()) / e:.1f}% of edges), "
        f"ways {int(st.way.cut_in.sum())} ({100 * int(st.way.cut_in.sum()) / e:.1f}%); "
        f"graph-exchange pairs {st.pairs}",
        "Chunks:",
    ]
    head = ["vertices", "in_edges", "cut_in", "mirrors"]
    lines += _table(["chunk", "way", *head], _part_rows(st.chunk, plan.chunk_way, max_rows))
    lines.append(f"  balance (max/mean): vertices {st.chunk.vertex_balance:.3f}, in-edges {st.chunk.edge_balance:.3f}")
    lines.append("Ways:")
    lines += _table(["way", *head], _part_rows(st.way, None, max_rows))
    lines.append(f"  balance (max/mean): vertices {st.way.vertex_balance:.3f}, in-edges {st.way.edge_balance:.3f}")
    if volumes:
        lines.append("Per-epoch communication (cluster-wide, training only):")
        base = next(iter(volumes.values())).total
        rows = [
            [
                name,
                format_bytes(v.layer),
                format_bytes(v.graph),
                format_bytes(v.weight),
                format_bytes(v.total),
                f"{v.total / base:.3f}x" if base else "-",
            ]
            for name, v in volumes.items()
        ]
        lines += _table(["strategy", "layer", "graph", "weight", "total", "ratio"], rows)
    return "\n".join(lines)
