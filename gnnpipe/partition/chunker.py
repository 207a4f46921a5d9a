"""Building the chunk plan (DESIGN §2; the type and its id conventions are in ``plan.py``).

A plan is computed once per graph structure and `PlanSpec` (chunks, ways, method, seed, vertex weights): the vertex
parts come from `partition` (METIS, cached), and `get_or_build_plan` reuses a plan saved by
``plan_store`` under a name holding all of these and the plan version.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from gnnpipe.data.graph import Graph
from gnnpipe.partition.metis import check_options, partition
from gnnpipe.partition.plan import PLAN_VERSION, ChunkPlan, PlanError, PlanSpec
from gnnpipe.partition.plan_store import has_plan, load_plan, save_plan

__all__ = [
    "PLAN_VERSION",
    "ChunkPlan",
    "PlanError",
    "PlanSpec",
    "build_plan",
    "get_or_build_plan",
    "load_plan",
    "plan_from_parts",
    "save_plan",
]


# ---------------------------------------------------------------------------------------------- building
def build_plan(graph: Graph, spec: PlanSpec, *, cache_dir: str | os.PathLike | None = None) -> ChunkPlan:
    """Partition ``graph`` into ``spec.chunks`` parts (see `partition`) and derive the plan for ``spec.ways`` ways.

    ``chunks`` must be divisible by ``ways``. ``cache_dir`` caches the partition itself (not the plan; see
    `get_or_build_plan` for that).
    """
    check_degrees(graph.num_nodes, spec.chunks, spec.ways)
    parts = partition(
        graph,
        spec.chunks,
        method=spec.method,
        seed=spec.seed,
        vertex_weights=spec.vertex_weights,
        cache_dir=cache_dir,
    )
    return plan_from_parts(graph, parts, spec)


def check_degrees(num_nodes: int, chunks: int, ways: int) -> None:
    """Raise ValueError unless ``1 <= ways``, ``ways | chunks`` and ``chunks <= num_nodes``."""
    for name, v in (("chunks", chunks), ("ways", ways)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if chunks % ways:
        raise ValueError(f"chunks={chunks} must be divisible by ways={ways} (each way owns chunks/ways chunks)")
    if chunks > num_nodes:
        raise ValueError(f"chunks={chunks} exceeds the number of vertices {num_nodes}; every chunk must be non-empty")


def plan_from_parts(graph: Graph, parts: torch.Tensor, spec: PlanSpec) -> ChunkPlan:
    """The plan of a given vertex assignment ``parts: [N] int64`` (old ids, values in ``[0, spec.chunks)``).

    Chunk ``c`` is part ``c``; vertices keep their original relative order inside a chunk. ``spec.method``
    (``"custom"`` for parts from elsewhere), ``seed`` and ``vertex_weights`` are recorded, not used.
    """
    n, chunks = graph.num_nodes, spec.chunks
    check_degrees(n, chunks, spec.ways)
    if parts.shape != (n,) or parts.dtype != torch.int64:
        raise ValueError(f"parts must be int64 [{n}], got {parts.dtype} {tuple(parts.shape)}")
    if int(parts.min()) < 0 or int(parts.max()) >= chunks:  # n >= chunks >= 1: parts is non-empty
        raise ValueError(f"part ids must lie in [0, {chunks}), got [{int(parts.min())}, {int(parts.max())}]")
    sizes = torch.bincount(parts, minlength=chunks)
    if bool((sizes == 0).any()):
        raise ValueError(f"chunk {int(torch.nonzero(sizes == 0)[0])} is empty; every chunk needs a vertex")

    C, W = chunks, spec.ways
    inv_perm = torch.sort(parts, stable=True).indices  # new -> old: parts in id order, stable inside
    perm = torch.empty(n, dtype=torch.int64)
    perm[inv_perm] = torch.arange(n)
    bounds = torch.zeros(C + 1, dtype=torch.int64)
    torch.cumsum(sizes, 0, out=bounds[1:])
    chunk_way = torch.arange(C) // (C // W)
    way_bounds = bounds[torch.arange(W + 1) * (C // W)].clone()

    src_old, dst_old = graph.edges()
    src, dst = perm[src_old], perm[dst_old]
    del src_old, dst_old
    vchunk = torch.repeat_interleave(torch.arange(C), sizes)
    cs, cd = vchunk[src], vchunk[dst]
    block_counts = torch.bincount(cd * C + cs, minlength=C * C).view(C, C)

    cross = cs != cd
    ext_offsets, ext_vertices = _grouped_unique(cd[cross], src[cross], C, n)
    ws, wd = chunk_way[cs], chunk_way[cd]
    xw = ws != wd
    halo_fwd = _grouped_unique(cs[xw] * W + wd[xw], src[xw], C * W, n)
    halo_bwd = _grouped_unique(cd[xw] * W + ws[xw], dst[xw], C * W, n)

    return ChunkPlan(
        version=PLAN_VERSION,
        graph_hash=graph.structure_hash(),
        num_nodes=n,
        num_edges=graph.num_edges,
        num_chunks=C,
        num_ways=W,
        method=spec.method,
        seed=spec.seed,
        vertex_weights=spec.vertex_weights,
        perm=perm,
        inv_perm=inv_perm,
        bounds=bounds,
        chunk_way=chunk_way,
        way_bounds=way_bounds,
        block_counts=block_counts,
        ext_offsets=ext_offsets,
        ext_vertices=ext_vertices,
        halo_fwd_offsets=halo_fwd[0],
        halo_fwd_vertices=halo_fwd[1],
        halo_bwd_offsets=halo_bwd[0],
        halo_bwd_vertices=halo_bwd[1],
    )


def _grouped_unique(
    group: torch.Tensor, vertex: torch.Tensor, num_groups: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct ``vertex`` values per ``group`` as (offsets: [num_groups+1], vertices: [sum]), each sorted."""
    key = torch.unique(group * n + vertex)  # sorted: by group, then vertex
    offsets = torch.zeros(num_groups + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(key // n, minlength=num_groups), 0, out=offsets[1:])
    return offsets, key % n


# ---------------------------------------------------------------------------------------------- cache
def get_or_build_plan(graph: Graph, spec: PlanSpec, *, cache_dir: str | os.PathLike) -> ChunkPlan:
    """The plan for ``spec``, loaded from ``cache_dir`` if present, else built and saved there.

    The cache key is (structure hash, chunks, ways, method, seed, vertex weights, plan version); the METIS
    partition is cached separately in the same directory, so plans differing only in ``ways`` share it.
    An unusable cached plan is rebuilt with a warning.
    """
    check_degrees(graph.num_nodes, spec.chunks, spec.ways)
    check_options(spec.method, spec.vertex_weights)
    path = Path(cache_dir) / _cache_name(graph, spec)
    if has_plan(path):
        try:
            plan = load_plan(path, graph)
            if plan.spec == spec:
                return plan
            warnings.warn(f"cached chunk plan {path} does not match its name; rebuilding", stacklevel=2)
        except PlanError as exc:
            warnings.warn(f"rebuilding unusable cached chunk plan: {exc}", stacklevel=2)
    plan = build_plan(graph, spec, cache_dir=cache_dir)
    save_plan(plan, path)
    return plan


def _cache_name(graph: Graph, spec: PlanSpec) -> str:
    """``plan_v<version>_<structure hash>_C<chunks>_W<ways>_<method>_s<seed>_<vertex weights or none>``."""
    vw = spec.vertex_weights or "none"
    return f"plan_v{PLAN_VERSION}_{graph.structure_hash()}_C{spec.chunks}_W{spec.ways}_{spec.method}_s{spec.seed}_{vw}"
