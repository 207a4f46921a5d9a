"""The chunk plan (DESIGN §2): vertex renumbering, chunk and way ranges, edge blocks, halo sets.

A plan is computed once per (graph structure, chunks, ways, method, seed, vertex weights), saved as a
versioned artifact and reused. All vertex ids stored in a plan are NEW ids, i.e. ids of
``graph.permute(plan.perm)``, in which chunk ``c`` is the contiguous range ``[bounds[c], bounds[c+1])``
and way ``w`` owns chunks ``w*C/W .. (w+1)*C/W - 1``, the range ``[way_bounds[w], way_bounds[w+1])``.

Halo (mirror) sets, for chunk ``c`` owned by way ``w`` and another way ``w2 != w``:

- ``halo_fwd(c, w2)``: vertices ``u`` of ``c`` with an OUT-edge ``u -> v`` to a vertex ``v`` of way ``w2``.
  When ``c`` is processed, way ``w`` sends these rows of every aggregation input ``z_l`` to ``w2``, which
  reads them when aggregating its own vertices. In backward (push style, DESIGN §3/§4) ``w2`` returns the
  gradient rows of exactly these vertices (the sum of its chunks' contributions), so both directions
  carry ``len(halo_fwd(c, w2))`` rows.
- ``halo_bwd(c, w2)``: vertices ``v`` of ``c`` with an IN-edge ``u -> v`` from a vertex ``u`` of way
  ``w2``. These are the rows of the aggregation OUTPUT gradient that a pull-style backward (the authors'
  system: ``grad z[u] = sum_{u->v} Ahat[v,u] grad m[v]`` over out-edges) sends from ``w`` to ``w2``.

For ``w2 == w`` both sets are empty; with one way all halo sets are empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from gnnpipe.data.graph import Graph
from gnnpipe.partition.metis import atomic_write, check_options, partition

__all__ = [
    "PLAN_VERSION",
    "ChunkPlan",
    "PlanError",
    "build_plan",
    "get_or_build_plan",
    "load_plan",
    "plan_from_parts",
    "save_plan",
]

PLAN_VERSION = 1
_FORMAT = "gnnpipe-chunk-plan"
_META_FILE = "plan.json"
_TENSOR_FILE = "tensors.pt"


class PlanError(ValueError):
    """A saved chunk plan cannot be used: wrong graph, wrong version, or a corrupt/inconsistent file."""


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """Everything the engines need to know about chunks and ways; ids are NEW ids (see module docstring).

    perm: [N] int64, new id of old vertex. inv_perm: [N] int64, old id of new vertex.
    bounds: [C+1] int64 chunk ranges. chunk_way: [C] int64, way of chunk c = c // (C/W).
    way_bounds: [W+1] int64 way ranges. block_counts: [C, C] int64, edges from chunk j into chunk i at [i, j].
    ext_offsets: [C+1], ext_vertices: [sum]: ``ext(c)`` = ext_vertices[ext_offsets[c]:ext_offsets[c+1]].
    halo_{fwd,bwd}_offsets: [C*W+1], halo_{fwd,bwd}_vertices: [sum]: entry ``c*W + w2``, each sorted.
    """

    version: int
    graph_hash: str
    num_nodes: int
    num_edges: int
    num_chunks: int
    num_ways: int
    method: str
    seed: int
    vertex_weights: str | None
    perm: torch.Tensor
    inv_perm: torch.Tensor
    bounds: torch.Tensor
    chunk_way: torch.Tensor
    way_bounds: torch.Tensor
    block_counts: torch.Tensor
    ext_offsets: torch.Tensor
    ext_vertices: torch.Tensor
    halo_fwd_offsets: torch.Tensor
    halo_fwd_vertices: torch.Tensor
    halo_bwd_offsets: torch.Tensor
    halo_bwd_vertices: torch.Tensor

    # ------------------------------------------------------------------ ranges
    @property
    def chunks_per_way(self) -> int:
        return self.num_chunks // self.num_ways

    def chunk_range(self, c: int) -> tuple[int, int]:
        """``(begin, end)`` new-id range of chunk ``c``."""
        return int(self.bounds[c]), int(self.bounds[c + 1])

    def way_range(self, w: int) -> tuple[int, int]:
        """``(begin, end)`` new-id range of way ``w``."""
        return int(self.way_bounds[w]), int(self.way_bounds[w + 1])

    def chunks_of_way(self, w: int) -> range:
        """The chunk ids owned by way ``w`` (a contiguous block)."""
        return range(w * self.chunks_per_way, (w + 1) * self.chunks_per_way)

    def chunk_sizes(self) -> torch.Tensor:
        """[C] int64 number of vertices per chunk."""
        return self.bounds[1:] - self.bounds[:-1]

    def vertex_chunk(self) -> torch.Tensor:
        """[N] int64 chunk of every (new) vertex."""
        return torch.repeat_interleave(torch.arange(self.num_chunks), self.chunk_sizes())

    def vertex_way(self) -> torch.Tensor:
        """[N] int64 way of every (new) vertex."""
        return self.chunk_way[self.vertex_chunk()]

    # ------------------------------------------------------------------ per-chunk sets
    def ext(self, c: int) -> torch.Tensor:
        """[k] int64 sorted out-of-chunk in-neighbours of chunk ``c`` (rows it reads from other chunks)."""
        return self.ext_vertices[int(self.ext_offsets[c]) : int(self.ext_offsets[c + 1])]

    def halo_fwd(self, c: int, w2: int) -> torch.Tensor:
        """[k] int64 sorted vertices of chunk ``c`` with an out-edge into way ``w2`` (rows sent to ``w2``)."""
        i = c * self.num_ways + w2
        return self.halo_fwd_vertices[int(self.halo_fwd_offsets[i]) : int(self.halo_fwd_offsets[i + 1])]

    def halo_bwd(self, c: int, w2: int) -> torch.Tensor:
        """[k] int64 sorted vertices of chunk ``c`` with an in-edge from way ``w2`` (pull-style grad rows)."""
        i = c * self.num_ways + w2
        return self.halo_bwd_vertices[int(self.halo_bwd_offsets[i]) : int(self.halo_bwd_offsets[i + 1])]

    # ------------------------------------------------------------------ graph
    def permute(self, graph: Graph) -> Graph:
        """``graph`` relabelled into the plan's new ids (refuses a graph the plan was not built for)."""
        _check_graph_hash(self.graph_hash, graph, where="chunk plan")
        return graph.permute(self.perm)

    # ------------------------------------------------------------------ (de)serialisation helpers
    def metadata(self) -> dict:
        """The scalar fields, JSON-serialisable."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not _is_tensor_field(f.name)}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if _is_tensor_field(f.name)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkPlan):
            return NotImplemented
        if self.metadata() != other.metadata():
            return False
        theirs = other.tensors()
        return all(t.dtype == theirs[k].dtype and torch.equal(t, theirs[k]) for k, t in self.tensors().items())

    __hash__ = None  # type: ignore[assignment]  # holds tensors: not hashable


_TENSOR_FIELDS = (
    "perm",
    "inv_perm",
    "bounds",
    "chunk_way",
    "way_bounds",
    "block_counts",
    "ext_offsets",
    "ext_vertices",
    "halo_fwd_offsets",
    "halo_fwd_vertices",
    "halo_bwd_offsets",
    "halo_bwd_vertices",
)


def _is_tensor_field(name: str) -> bool:
    return name in _TENSOR_FIELDS


# ---------------------------------------------------------------------------------------------- building
def build_plan(
    graph: Graph,
    *,
    chunks: int,
    ways: int,
    method: str = "metis",
    seed: int = 0,
    vertex_weights: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ChunkPlan:
    """Partition ``graph`` into ``chunks`` parts (see `partition`) and derive the plan for ``ways`` ways.

    ``chunks`` must be divisible by ``ways``. ``cache_dir`` caches the partition itself (not the plan; see
    `get_or_build_plan` for that).
    """
    check_degrees(graph.num_nodes, chunks, ways)
    parts = partition(graph, chunks, method=method, seed=seed, vertex_weights=vertex_weights, cache_dir=cache_dir)
    return plan_from_parts(
        graph, parts, chunks=chunks, ways=ways, method=method, seed=seed, vertex_weights=vertex_weights
    )


def check_degrees(num_nodes: int, chunks: int, ways: int) -> None:
    """Raise ValueError unless ``1 <= ways``, ``ways | chunks`` and ``chunks <= num_nodes``."""
    for name, v in (("chunks", chunks), ("ways", ways)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if chunks % ways:
        raise ValueError(f"chunks={chunks} must be divisible by ways={ways} (each way owns chunks/ways chunks)")
    if chunks > num_nodes:
        raise ValueError(f"chunks={chunks} exceeds the number of vertices {num_nodes}; every chunk must be non-empty")


def plan_from_parts(
    graph: Graph,
    parts: torch.Tensor,
    *,
    chunks: int,
    ways: int,
    method: str = "custom",
    seed: int = 0,
    vertex_weights: str | None = None,
) -> ChunkPlan:
    """The plan of a given vertex assignment ``parts: [N] int64`` (old ids, values in ``[0, chunks)``).

    Chunk ``c`` is part ``c``; vertices keep their original relative order inside a chunk.
    """
    n = graph.num_nodes
    check_degrees(n, chunks, ways)
    if parts.shape != (n,) or parts.dtype != torch.int64:
        raise ValueError(f"parts must be int64 [{n}], got {parts.dtype} {tuple(parts.shape)}")
    if int(parts.min()) < 0 or int(parts.max()) >= chunks:  # n >= chunks >= 1: parts is non-empty
        raise ValueError(f"part ids must lie in [0, {chunks}), got [{int(parts.min())}, {int(parts.max())}]")
    sizes = torch.bincount(parts, minlength=chunks)
    if bool((sizes == 0).any()):
        raise ValueError(f"chunk {int(torch.nonzero(sizes == 0)[0])} is empty; every chunk needs a vertex")

    C, W = chunks, ways
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
        method=method,
        seed=seed,
        vertex_weights=vertex_weights,
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


# ---------------------------------------------------------------------------------------------- storage
def save_plan(plan: ChunkPlan, path: str | os.PathLike) -> None:
    """Save ``plan`` into the directory ``path``: ``tensors.pt`` (torch.save) and ``plan.json`` (metadata).

    Each file is written atomically; the JSON (written last) holds a digest of the tensors, so a reader never
    mixes the files of two different plans.
    """
    path = Path(path)
    tensors = plan.tensors()
    meta = {"format": _FORMAT, **plan.metadata(), "digest": _digest(tensors)}
    atomic_write(path / _TENSOR_FILE, lambda f: torch.save(tensors, f))
    atomic_write(path / _META_FILE, lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))


def load_plan(path: str | os.PathLike, graph: Graph) -> ChunkPlan:
    """Load the plan saved in directory ``path`` and check that it belongs to ``graph``.

    Raises PlanError if the directory holds no plan, if the plan was built for another graph structure or
    by another plan version, or if a file is corrupt or inconsistent.
    """
    path = Path(path)
    meta_path, tensor_path = path / _META_FILE, path / _TENSOR_FILE
    if not meta_path.exists() or not tensor_path.exists():
        raise PlanError(f"no chunk plan at {path} (expected {_META_FILE} and {_TENSOR_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise PlanError(f"chunk plan metadata {meta_path} is unreadable ({exc}); delete {path} and rebuild") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise PlanError(f"{meta_path} is not a gnnpipe chunk plan; delete {path} and rebuild")
    if meta.get("version") != PLAN_VERSION:
        raise PlanError(
            f"chunk plan at {path} has version {meta.get('version')!r}, this code reads version {PLAN_VERSION}; "
            "rebuild it"
        )
    _check_graph_hash(str(meta.get("graph_hash")), graph, where=f"chunk plan at {path}")
    try:
        tensors = torch.load(tensor_path, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise PlanError(f"chunk plan tensors {tensor_path} are unreadable ({exc}); delete {path} and rebuild") from exc
    if not isinstance(tensors, dict) or set(tensors) != set(_TENSOR_FIELDS):
        raise PlanError(f"chunk plan tensors {tensor_path} hold the wrong fields; delete {path} and rebuild")
    if _digest(tensors) != meta.get("digest"):
        raise PlanError(f"chunk plan at {path}: {tensor_path} does not match {meta_path}; delete {path} and rebuild")
    scalars = {k: v for k, v in meta.items() if k not in ("format", "digest")}
    try:
        plan = ChunkPlan(**scalars, **tensors)
    except TypeError as exc:
        raise PlanError(f"chunk plan metadata {meta_path} has the wrong fields ({exc}); rebuild it") from exc
    _check_shapes(plan, where=f"chunk plan at {path}")
    return plan


def get_or_build_plan(
    graph: Graph,
    *,
    chunks: int,
    ways: int,
    method: str = "metis",
    seed: int = 0,
    vertex_weights: str | None = None,
    cache_dir: str | os.PathLike,
) -> ChunkPlan:
    """The plan for these arguments, loaded from ``cache_dir`` if present, else built and saved there.

    The cache key is (structure hash, chunks, ways, method, seed, vertex weights, plan version); the METIS
    partition is cached separately in the same directory, so plans differing only in ``ways`` share it.
    An unusable cached plan is rebuilt with a warning.
    """
    check_degrees(graph.num_nodes, chunks, ways)
    check_options(method, vertex_weights)
    vw = vertex_weights or "none"
    name = f"plan_v{PLAN_VERSION}_{graph.structure_hash()}_C{chunks}_W{ways}_{method}_s{seed}_{vw}"
    path = Path(cache_dir) / name
    if (path / _META_FILE).exists():
        try:
            plan = load_plan(path, graph)
            wanted = (chunks, ways, method, seed, vertex_weights)
            if (plan.num_chunks, plan.num_ways, plan.method, plan.seed, plan.vertex_weights) == wanted:
                return plan
            warnings.warn(f"cached chunk plan {path} does not match its name; rebuilding", stacklevel=2)
        except PlanError as exc:
            warnings.warn(f"rebuilding unusable cached chunk plan: {exc}", stacklevel=2)
    plan = build_plan(
        graph, chunks=chunks, ways=ways, method=method, seed=seed, vertex_weights=vertex_weights, cache_dir=cache_dir
    )
    save_plan(plan, path)
    return plan


# ---------------------------------------------------------------------------------------------- checks
def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in _TENSOR_FIELDS:
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise PlanError(f"plan field {name} is not a tensor")
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_graph_hash(graph_hash: str, graph: Graph, *, where: str) -> None:
    if graph_hash != graph.structure_hash():
        raise PlanError(
            f"{where} was built for a graph with structure hash {graph_hash}, but graph {graph.name!r} has "
            f"{graph.structure_hash()}; build a plan for this graph"
        )


def _check_shapes(plan: ChunkPlan, *, where: str) -> None:
    """Cheap invariants of a loaded plan; a violation means a corrupt or hand-edited file."""
    n, C, W = plan.num_nodes, plan.num_chunks, plan.num_ways
    expected = {
        "perm": (n,),
        "inv_perm": (n,),
        "bounds": (C + 1,),
        "chunk_way": (C,),
        "way_bounds": (W + 1,),
        "block_counts": (C, C),
        "ext_offsets": (C + 1,),
        "halo_fwd_offsets": (C * W + 1,),
        "halo_bwd_offsets": (C * W + 1,),
    }
    for name, t in plan.tensors().items():
        if t.dtype != torch.int64 or (name in expected and tuple(t.shape) != expected[name]):
            raise PlanError(f"{where}: field {name} has {t.dtype} {tuple(t.shape)}; delete it and rebuild")
    for off, vals in (
        ("ext_offsets", "ext_vertices"),
        ("halo_fwd_offsets", "halo_fwd_vertices"),
        ("halo_bwd_offsets", "halo_bwd_vertices"),
    ):
        if int(getattr(plan, off)[-1]) != getattr(plan, vals).numel():
            raise PlanError(f"{where}: {off} does not match {vals}; delete it and rebuild")
    if int(plan.bounds[-1]) != n or int(plan.block_counts.sum()) != plan.num_edges:
        raise PlanError(f"{where}: chunk bounds or edge blocks do not cover the graph; delete it and rebuild")
