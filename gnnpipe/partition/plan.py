"""The chunk plan type (DESIGN §2): vertex renumbering, chunk and way ranges, edge blocks, halo sets.

A plan is computed once per (graph structure, chunks, ways, method, seed, vertex weights), saved as a
versioned artifact and reused. All vertex ids stored in a plan are NEW ids, i.e. ids of
``graph.permute(plan.perm)``, in which chunk ``c`` is the contiguous range ``[bounds[c], bounds[c+1])``
and way ``w`` owns chunks ``w*C/W .. (w+1)*C/W - 1``, the range ``[way_bounds[w], way_bounds[w+1])``.

Halo (mirror) sets, for chunk ``c`` owned by way ``w`` and another way ``w2 != w``:

- ``halo_fwd(c, w2)``: vertices ``u`` of ``c`` with an OUT-edge ``u -> v`` to a vertex ``v`` of way ``w2``.
  When ``c`` is processed, way ``w`` sends these rows of every aggregation input ``z_l`` to ``w2``, which
  reads them when aggregating its own vertices (forward halo exchange).
- ``halo_bwd(c, w2)``: vertices ``v`` of ``c`` with an IN-edge ``u -> v`` from a vertex ``u`` of way
  ``w2``. These are the rows of the aggregation OUTPUT gradient that the backward sends from ``w`` to ``w2``
  (pull style, as the authors' system: ``w2`` computes ``grad z[u] = sum_{u->v} Ahat[v,u] grad m[v]`` for its
  own ``u``), so the backward carries ``len(halo_bwd(c, w2))`` rows (DESIGN §4).

For ``w2 == w`` both sets are empty; with one way all halo sets are empty.

This module holds the type and its accessors; ``chunker`` builds plans, ``plan_store`` saves and loads them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from gnnpipe.data.graph import Graph

__all__ = ["PLAN_VERSION", "TENSOR_FIELDS", "ChunkPlan", "PlanError", "PlanSpec", "check_graph_hash"]

PLAN_VERSION = 1


class PlanError(ValueError):
    """A saved chunk plan cannot be used: wrong graph, wrong version, or a corrupt/inconsistent file."""


@dataclass(frozen=True)
class PlanSpec:
    """What a plan is built from besides the graph: ``chunks`` parts cut by ``method`` (seeded, weighted by
    ``vertex_weights``; see `metis.partition`), owned in contiguous blocks by ``ways`` ways.

    A plain value: `chunker.build_plan` validates it against the graph (``check_degrees``, ``check_options``).
    ``method = "custom"`` marks a plan of caller-given parts (`chunker.plan_from_parts`).
    """

    chunks: int
    ways: int
    method: str = "metis"
    seed: int = 0
    vertex_weights: str | None = None


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

    @property
    def spec(self) -> PlanSpec:
        """The spec this plan was built from."""
        return PlanSpec(self.num_chunks, self.num_ways, self.method, self.seed, self.vertex_weights)

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
        check_graph_hash(self.graph_hash, graph, where="chunk plan")
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


TENSOR_FIELDS = (
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
    return name in TENSOR_FIELDS


def check_graph_hash(graph_hash: str, graph: Graph, *, where: str) -> None:
    if graph_hash != graph.structure_hash():
        raise PlanError(
            f"{where} was built for a graph with structure hash {graph_hash}, but graph {graph.name!r} has "
            f"{graph.structure_hash()}; build a plan for this graph"
        )
