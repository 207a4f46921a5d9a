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

__all__ = ["Unit", "Remote", "Layout", "build_layout", "chunk_groups", "exact_groups", "prepare_operators"]


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
    ext_slot: torch.Tensor  # [X] their rows in the evaluation buffer (see Layout)
    ext_hslot: torch.Tensor  # [X] their rows in the history
    ext_unit: torch.Tensor  # [X] local unit index (in its own way) of each ext vertex
    store_pos: torch.Tensor  # rows of the unit (relative) that some chunk reads: kept in the history ...
    store_slot: torch.Tensor  # ... at these history rows
    own: slice  # this unit's rows in the way-local x / y and evaluation buffer
    train: torch.Tensor  # [T] training rows, relative to lo
    segments: tuple[tuple[int, int], ...]  # (chunk, rows) in row order: dropout masks are keyed per chunk
    # a_ext with its columns at their history rows (forward only): A_ext @ H[ext_hslot] without the gather; None
    # where the history cannot be read in place (a separate snapshot, or a narrower history dtype)
    a_hist: SparseOp | None = None
    send_fwd: dict[int, torch.Tensor] = field(default_factory=dict)  # peer way -> rows (rel.) of z sent
    send_bwd: dict[int, torch.Tensor] = field(default_factory=dict)  # peer way -> rows (rel.) of grad(m) sent
    # Own-way units this unit reads, as (unit, s, e): ``ext[s:e]`` are that unit's rows (ext is sorted and units
    # are id ranges, so each is one range); ``readers`` is the same relation seen from the unit read.
    targets: list[tuple[int, int, int]] = field(default_factory=list)
    # (reading unit c, s, e, rows): c's ext[s:e] are this unit's ``rows`` (relative to lo)
    readers: list[tuple[int, int, int, torch.Tensor]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.hi - self.lo


@dataclass
class Remote:
    """Unit ``index`` of another way, as this worker sees it."""

    fwd_ids: torch.Tensor  # rows of its z this worker receives (halo_fwd toward this way)
    fwd_slot: torch.Tensor  # ... their rows in the evaluation buffer
    fwd_hslot: torch.Tensor  # ... and in the history
    bwd_ids: torch.Tensor  # rows of its grad(m) this worker receives (halo_bwd toward this way)
    r_op: SparseOp  # Ahat[bwd_ids, tgt]: how those gradient rows reach this way's vertices
    tgt: torch.Tensor  # this way's vertices those rows read (sorted)
    tgt_ranges: list[tuple[int, int, int]]  # (this way's unit, s, e): tgt[s:e] are that unit's rows


@dataclass
class Layout:
    """A way's units, what it knows of the other ways' units, and the rows of its per-row buffers (DESIGN §7):

    - history (``hist_rows``): only the rows some chunk of this way reads from outside itself -- its own
      boundary rows and the other ways' rows it reads (sorted ids). Rows nobody reads are never stored.
    - evaluation buffer (``num_slots``): this way's rows ``[0, rows)`` in plan order, then its halo rows."""

    units: list[Unit]
    remotes: dict[tuple[int, int], Remote]  # (peer way, unit index) -> remote unit
    costs: torch.Tensor  # [P] in-edges per unit index summed over ways (for degree order)
    rows: int  # this way's vertices
    num_slots: int  # rows + halo rows
    hist_rows: int


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
        elif isinstance(v, list) and v and isinstance(v[0], tuple):  # (unit, s, e[, rows]) tuples
            setattr(obj, f.name, [tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in t) for t in v])
    return obj


def _positions(sorted_ids: torch.Tensor, ids: torch.Tensor, what: str) -> torch.Tensor:
    """Index of every id of ``ids`` in ``sorted_ids`` (each must be there)."""
    if ids.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    pos = torch.searchsorted(sorted_ids, ids).clamp_(max=max(sorted_ids.numel() - 1, 0))
    assert sorted_ids.numel() and bool((sorted_ids[pos] == ids).all()), f"a row is missing from {what}"
    return pos


def _members(sorted_ids: torch.Tensor, rows: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions within ``rows`` of the rows in ``sorted_ids``, their indices there)."""
    where = torch.isin(rows, sorted_ids).nonzero().flatten()
    return where, _positions(sorted_ids, rows[where], what)


def _unit_ranges(ids: torch.Tensor, bounds: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(unit, s, e)`` for every unit of this way with rows in the sorted ``ids``: ``ids[s:e]`` are its rows
    (``bounds``: the units' first rows, then the way's end)."""
    cuts = torch.searchsorted(ids, bounds).tolist()
    return [(t, cuts[t], cuts[t + 1]) for t in range(len(cuts) - 1) if cuts[t + 1] > cuts[t]]


def build_layout(
    plan: ChunkPlan,
    csr: Csr,
    train_mask: torch.Tensor,
    *,
    way: int,
    groups: list[list[list[int]]],
    device: torch.device,
    direct_history: bool = False,
) -> Layout:
    """Units of ``way`` for a grouping of chunks (``groups[w][j]`` = chunks of way w processed as unit j).

    ``csr``: the permuted, normalised in-edge CSR (new ids); ``train_mask``: [N] bool in new ids. History rows
    are the same for every grouping (they come from the chunks), so exact and chunked epochs share a history.
    ``direct_history``: also build each unit's ``a_hist`` (the forward then aggregates straight from the history).
    """
    W = plan.num_ways
    unit_of_chunk = torch.empty(plan.num_chunks, dtype=torch.int64)
    for w in range(W):
        for j, chunks in enumerate(groups[w]):
            unit_of_chunk[torch.tensor(chunks)] = j
    vchunk = plan.vertex_chunk()
    vunit = unit_of_chunk[vchunk]
    my_lo, my_hi = plan.way_range(way)
    mine = plan.chunks_of_way(way)
    halo = torch.unique(torch.cat([plan.halo_fwd(c, way) for c in range(plan.num_chunks)]))  # rows others send
    read = torch.unique(torch.cat([plan.ext(c) for c in mine]))  # rows this way's chunks read: the history

    def eval_slots(ids: torch.Tensor) -> torch.Tensor:
        """Evaluation buffer rows: this way's rows first, then the halo rows (sorted)."""
        own = (ids >= my_lo) & (ids < my_hi)
        out = ids - my_lo
        out[~own] = (my_hi - my_lo) + _positions(halo, ids[~own], "the halo")
        return out

    units = []
    for j, chunks in enumerate(groups[way]):
        lo, hi = plan.chunk_range(chunks[0])[0], plan.chunk_range(chunks[-1])[1]
        rows = torch.arange(lo, hi)
        ext = in_neighbours(csr, rows)
        ext = ext[(ext < lo) | (ext >= hi)]
        store_pos, store_slot = _members(read, rows, "the history")
        u = Unit(
            index=j, chunks=chunks, lo=lo, hi=hi,
            a_in=sub_operator(csr, rows, rows), a_ext=sub_operator(csr, rows, ext),
            ext=ext, ext_slot=eval_slots(ext), ext_hslot=_positions(read, ext, "the history"),
            ext_unit=vunit[ext], store_pos=store_pos, store_slot=store_slot,
            own=slice(lo - my_lo, hi - my_lo), train=train_mask[lo:hi].nonzero().flatten(),
            segments=tuple((c, plan.chunk_range(c)[1] - plan.chunk_range(c)[0]) for c in chunks),
        )  # fmt: skip
        if direct_history:
            u.a_hist = u.a_ext.with_columns(u.ext_hslot, read.numel())
        for w2 in range(W):
            if w2 != way:
                u.send_fwd[w2] = torch.cat([plan.halo_fwd(c, w2) for c in chunks]) - lo
                u.send_bwd[w2] = torch.cat([plan.halo_bwd(c, w2) for c in chunks]) - lo
        units.append(u)
    bounds = torch.tensor([u.lo for u in units] + [units[-1].hi]) if units else torch.zeros(1, dtype=torch.int64)
    for c, u in enumerate(units):
        u.targets = [t for t in _unit_ranges(u.ext, bounds) if t[0] != c]
        for t, s, e in u.targets:
            units[t].readers.append((c, s, e, u.ext[s:e] - units[t].lo))
    units = [_on_device(u, device) for u in units]
    remotes = {}
    for w2 in range(W):
        if w2 == way:
            continue
        for j, chunks in enumerate(groups[w2]):
            fwd = torch.cat([plan.halo_fwd(c, way) for c in chunks])
            bwd = torch.cat([plan.halo_bwd(c, way) for c in chunks])
            tgt = in_neighbours(csr, bwd)
            tgt = tgt[(tgt >= my_lo) & (tgt < my_hi)]
            rem = Remote(
                fwd_ids=fwd, fwd_slot=eval_slots(fwd), fwd_hslot=_positions(read, fwd, "the history"),
                bwd_ids=bwd, r_op=sub_operator(csr, bwd, tgt), tgt=tgt,
                tgt_ranges=_unit_ranges(tgt, bounds),
            )  # fmt: skip
            remotes[(w2, j)] = _on_device(rem, device)
    in_edges = plan.block_counts.sum(1)
    costs = torch.zeros(len(groups[0]), dtype=torch.int64)
    for w in range(W):
        for j, chunks in enumerate(groups[w]):
            costs[j] += int(in_edges[torch.tensor(chunks)].sum())
    return Layout(units, remotes, costs, my_hi - my_lo, (my_hi - my_lo) + halo.numel(), read.numel())


def prepare_operators(layout: Layout, dtype: torch.dtype, device: torch.device) -> None:
    """Build every aggregation operator of ``layout`` in its one compute form now (DESIGN §7)."""
    for u in layout.units:
        for op in (u.a_in, u.a_ext, u.a_hist):
            if op is not None:
                op.prepare(dtype, device)
    for rem in layout.remotes.values():
        rem.r_op.prepare(dtype, device)
