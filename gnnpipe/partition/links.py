"""The analytic per-epoch volume split by link: intra-node and inter-node bytes of each kind (DESIGN §4).

The twin of ``Comm.sent_by_link``: the same formulas as ``partition.stats.analytic_volume``, with every term
given to the link between the two ranks that move it, for a rank layout (``ParallelDims``, its placement) and
a node map (``parallel.nodes.block_nodes``):

- layer: way ``w`` carries its own rows ``N_w`` over each stage boundary ``s -> s+1`` (forward rows and
  backward gradients): ``2 N_w (row(d_b) + row(d_h0))``, inter iff ranks ``(w, s)`` and ``(w, s+1)`` are on
  different nodes;
- graph: the halo rows way ``a`` sends way ``b`` at each layer of stage ``s`` (``halo_fwd`` forward, ``halo_bwd``
  backward, per way pair: :func:`way_pair_rows`), inter iff ``(a, s)`` and ``(b, s)`` are on different nodes;
- weight: each of the ``W`` ways of stage ``s`` sends ``2 (W-1)/W |theta_s| b`` on the ring link to its
  successor ``(w+1) mod W`` (the convention ``Comm.all_reduce_sum`` counts by).
"""

from __future__ import annotations

import torch

from gnnpipe.parallel.codec import row_bytes
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.nodes import LINKS, link_of
from gnnpipe.partition.plan import ChunkPlan

__all__ = ["analytic_by_link", "way_pair_rows"]


def way_pair_rows(plan: ChunkPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """``[W, W]`` int64 (forward, backward): rows way ``a`` sends way ``b`` per aggregation (``halo_fwd(c, b)``,
    ``halo_bwd(c, b)`` summed over ``a``'s chunks ``c``). The totals are ``stats.graph_pairs`` / ``graph_pairs_bwd``."""
    C, W = plan.num_chunks, plan.num_ways
    out = []
    for offsets in (plan.halo_fwd_offsets, plan.halo_bwd_offsets):
        sizes = (offsets[1:] - offsets[:-1]).view(C, W)
        pair = torch.zeros(W, W, dtype=torch.int64)
        pair.index_add_(0, plan.chunk_way, sizes)
        out.append(pair)
    return out[0], out[1]


def analytic_by_link(
    plan: ChunkPlan,
    dims: ParallelDims,
    node_of_rank: list[int],
    *,
    agg_widths: list[int],
    agg_grad: list[bool],
    boundary_widths: list[int],
    h0_width: int,
    stage_weight_numels: list[int],
    bytes_per_elem: int = 4,
    compress: str = "none",
) -> dict[str, dict[str, int]]:
    """``{kind: {"intra": bytes, "inter": bytes}}`` per training epoch, cluster-wide; intra + inter of each kind
    is ``analytic_volume``'s figure for the same arguments (``stage_layers`` = ``dims.layer_counts``)."""
    if len(node_of_rank) != dims.world_size:
        raise ValueError(f"node map of {len(node_of_rank)} ranks for a world of {dims.world_size}")
    if plan.num_ways != dims.ways:
        raise ValueError(f"plan has {plan.num_ways} ways, the layout {dims.ways}")
    b = bytes_per_elem
    out: dict[str, dict[str, float]] = {k: dict.fromkeys(LINKS, 0.0) for k in ("layer", "graph", "weight")}

    def row(width: int) -> int:
        return row_bytes(width, b, compress) if width else 0

    def add(kind: str, r1: int, r2: int, nbytes: float) -> None:
        out[kind][link_of(node_of_rank, r1, r2)] += nbytes

    way_rows = (plan.way_bounds[1:] - plan.way_bounds[:-1]).tolist()
    fwd, bwd = way_pair_rows(plan)
    W = dims.ways
    for s in range(dims.stages):
        lo, hi = dims.layer_range(s)
        for w in range(W):
            here = dims.rank(w, s)
            if s + 1 < dims.stages:
                nbytes = 2 * way_rows[w] * (row(boundary_widths[hi - 1]) + row(h0_width))
                add("layer", here, dims.rank(w, s + 1), nbytes)
            for w2 in range(W):
                rows = [int(fwd[w, w2]) + (int(bwd[w, w2]) if agg_grad[layer] else 0) for layer in range(lo, hi)]
                nbytes = sum(row(agg_widths[layer]) * n for layer, n in zip(range(lo, hi), rows, strict=True))
                if nbytes:
                    add("graph", here, dims.rank(w2, s), nbytes)
            if W > 1:
                add("weight", here, dims.rank((w + 1) % W, s), 2.0 * (W - 1) / W * stage_weight_numels[s] * b)
    return {k: {link: int(round(v)) for link, v in d.items()} for k, d in out.items()}
