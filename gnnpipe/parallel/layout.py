"""What one way holds of the graph: its units (chunks processed together) with their aggregation blocks, and
what it must know about the other ways' units to exchange halo rows (DESIGN §2, §4).

A *unit* is the set of rows a way processes at one position: one chunk in a normal epoch, all of the way's
chunks in an exact (warm-up) epoch. Built once from the normalised CSR; afterwards the engine needs no other
graph structure, so the whole graph can be dropped (DESIGN §7).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from gnnpipe.models.ops import SparseOp
from gnnpipe.parallel.blocks import Csr, in_neighbours, sub_operator
from gnnpipe.partition.chunker import ChunkPlan

__all__ = ["Unit", "Remote", "Layout", "build_layout", "chunk_groups", "exact_groups"]


@dataclass
class Unit:
    """Rows ``[lo, hi)`` of this way processed at one position."""

    index: int  # local unit index within the way (the position order permutes these)
    chunks: list[int]
    lo: int
    hi: int
    a_in: SparseOp  # Ahat[rows, rows]
    a_ext: SparseOp  # Ahat[rows, ext]
    ext: torch.Tensor  # [X] sorted out-of-unit in-neighbours (any way)
    ext_slot: torch.Tensor  # [X] their rows in this worker's history (see Layout)
    ext_unit: torch.Tensor  # [X] local unit index (in its own way) of each ext vertex
    ext_own: torch.Tensor  # [X] bool: ext vertex belongs to this way (its gradient is pushed locally)
    own: slice  # this unit's rows in this worker's history (and in its way-local x / y)
    train: torch.Tensor  # [T] training rows, relative to lo
    segments: tuple[tuple[int, int], ...]  # (chunk, rows) in row order: dropout masks are keyed per chunk
    send_fwd: dict[int, torch.Tensor] = field(default_factory=dict)  # peer way -> rows (rel.) of z sent
    send_bwd: dict[int, torch.Tensor] = field(default_factory=dict)  # peer way -> rows (rel.) of grad(m) sent

    @property
    def n(self) -> int:
        return self.hi - self.lo


@dataclass
class Remote:
    """Unit ``index`` of another way, as this worker sees it."""

    fwd_ids: torch.Tensor  # rows of its z this worker receives (halo_fwd toward this way)
    fwd_slot: torch.Tensor  # ... and where they go in this worker's history
    bwd_ids: torch.Tensor  # rows of its grad(m) this worker receives (halo_bwd toward this way)
    r_op: SparseOp  # Ahat[bwd_ids, tgt]: how those gradient rows reach this way's vertices
    tgt: torch.Tensor  # this way's vertices those rows read
    tgt_slot: torch.Tensor
    tgt_unit: torch.Tensor


@dataclass
class Layout:
    """A way's units, what it knows of the other ways' units, and its *slots*: the rows of per-row buffers
    (history, evaluation) this worker holds -- its own rows ``[0, rows)`` in plan order, then the other ways'
    rows it reads (its halo), sorted. With one way the slots are the vertex ids."""

    units: list[Unit]
    remotes: dict[tuple[int, int], Remote]  # (peer way, unit index) -> remote unit
    costs: torch.Tensor  # [P] in-edges per unit index summed over ways (for degree order)
    rows: int  # this way's vertices
    num_slots: int  # rows + halo rows


def chunk_groups(plan: ChunkPlan) -> list[list[list[int]]]:
    """``groups[w][j]``: chunk ``w * P + j`` alone (a normal epoch)."""
    P = plan.chunks_per_way
    return [[[w * P + j] for j in range(P)] for w in range(plan.num_ways)]


def exact_groups(plan: ChunkPlan) -> list[list[list[int]]]:
    """All of a way's chunks as one unit: every read is fresh (exact warm-up epochs)."""
    return [[list(plan.chunks_of_way(w))] for w in range(plan.num_ways)]


def _on_device(obj, device: torch.device):
    """Move a unit's / remote's index tensors to the compute device (indices must live with the data)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            setattr(obj, f.name, v.to(device))
        elif isinstance(v, dict):
            setattr(obj, f.name, {k: t.to(device) for k, t in v.items()})
    return obj


def build_layout(
    plan: ChunkPlan,
    csr: Csr,
    train_mask: torch.Tensor,
    *,
    way: int,
    groups: list[list[list[int]]],
    device: torch.device,
) -> Layout:
    """Units of ``way`` for a grouping of chunks (``groups[w][j]`` = chunks of way w processed as unit j).

    ``csr``: the permuted, normalised in-edge CSR (new ids); ``train_mask``: [N] bool in new ids.
    """
    W = plan.num_ways
    unit_of_chunk = torch.empty(plan.num_chunks, dtype=torch.int64)
    for w in range(W):
        for j, chunks in enumerate(groups[w]):
            unit_of_chunk[torch.tensor(chunks)] = j
    vchunk = plan.vertex_chunk()
    vunit = unit_of_chunk[vchunk]
    vway = plan.chunk_way[vchunk]
    my_lo, my_hi = plan.way_range(way)
    halo = torch.unique(torch.cat([plan.halo_fwd(c, way) for c in range(plan.num_chunks)]))  # rows others send

    def slots(ids: torch.Tensor) -> torch.Tensor:
        """History rows of vertex ids: own rows first, then the halo rows (sorted)."""
        mine = (ids >= my_lo) & (ids < my_hi)
        if halo.numel() == 0:
            assert bool(mine.all()), "a foreign row this way reads is not in its halo"
            return ids - my_lo
        pos = torch.searchsorted(halo, ids).clamp_(max=halo.numel() - 1)
        assert bool((mine | (halo[pos] == ids)).all()), "a foreign row this way reads is not in its halo"
        return torch.where(mine, ids - my_lo, (my_hi - my_lo) + pos)

    units = []
    for j, chunks in enumerate(groups[way]):
        lo, hi = plan.chunk_range(chunks[0])[0], plan.chunk_range(chunks[-1])[1]
        rows = torch.arange(lo, hi)
        ext = in_neighbours(csr, rows)
        ext = ext[(ext < lo) | (ext >= hi)]
        u = Unit(
            index=j,
            chunks=chunks,
            lo=lo,
            hi=hi,
            a_in=sub_operator(csr, rows, rows),
            a_ext=sub_operator(csr, rows, ext),
            ext=ext,
            ext_slot=slots(ext),
            ext_unit=vunit[ext],
            ext_own=vway[ext] == way,
            own=slice(lo - my_lo, hi - my_lo),
            train=train_mask[lo:hi].nonzero().flatten(),
            segments=tuple((c, plan.chunk_range(c)[1] - plan.chunk_range(c)[0]) for c in chunks),
        )
        for w2 in range(W):
            if w2 != way:
                u.send_fwd[w2] = torch.cat([plan.halo_fwd(c, w2) for c in chunks]) - lo
                u.send_bwd[w2] = torch.cat([plan.halo_bwd(c, w2) for c in chunks]) - lo
        units.append(_on_device(u, device))
    remotes = {}
    for w2 in range(W):
        if w2 == way:
            continue
        for j, chunks in enumerate(groups[w2]):
            fwd = torch.cat([plan.halo_fwd(c, way) for c in chunks])
            bwd = torch.cat([plan.halo_bwd(c, way) for c in chunks])
            tgt = in_neighbours(csr, bwd)
            tgt = tgt[(tgt >= my_lo) & (tgt < my_hi)]
            rem = Remote(fwd, slots(fwd), bwd, sub_operator(csr, bwd, tgt), tgt, tgt - my_lo, vunit[tgt])
            remotes[(w2, j)] = _on_device(rem, device)
    in_edges = plan.block_counts.sum(1)
    costs = torch.zeros(len(groups[0]), dtype=torch.int64)
    for w in range(W):
        for j, chunks in enumerate(groups[w]):
            costs[j] += int(in_edges[torch.tensor(chunks)].sum())
    return Layout(units, remotes, costs, my_hi - my_lo, (my_hi - my_lo) + halo.numel())
