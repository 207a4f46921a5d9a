"""The engine's action list, costed (DESIGN §10): every worker's ``worker_schedule`` as simulator tasks.

Each action of :func:`gnnpipe.parallel.schedule.worker_schedule` becomes one :class:`Task`: compute actions
take the calibrated seconds of their op and layer for the chunk's rows and in-edges; stage sends and
receives carry exactly the rows the engine sends (``rows * (boundary width + h0 width) * b``, or the wire
bytes of ``parallel.compress``: ``codec.row_bytes``); halo exchanges the plan's ``halo_fwd`` / ``halo_bwd``
rows at the layer's aggregation width; the epoch end is the
loss all-reduce over all workers (the drain), the weight all-reduce over the ways of a stage and the step.
:class:`Geometry` is what a chunk plan contributes: per-chunk rows, in-edges and halo counts, per-way history
rows (DESIGN §7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gnnpipe.models.deep import ModelDims
from gnnpipe.parallel.codec import row_bytes
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.schedule import Op, worker_schedule
from gnnpipe.partition.plan import ChunkPlan
from gnnpipe.plan.costs import Calibration
from gnnpipe.plan.simulate import Task, Wire

__all__ = ["Geometry", "geometry", "worker_tasks", "all_tasks"]

_COMPUTE = {Op.ENCODE, Op.PRE, Op.AGG, Op.LOSS, Op.LOSS_B, Op.AGG_B, Op.PRE_B, Op.ENCODE_B}


@dataclass(frozen=True)
class Geometry:
    """Sizes of one chunk plan: ``rows[c]``, ``edges[c]`` (in-edges of chunk c), ``halo_fwd[c][w2]`` and
    ``halo_bwd[c][w2]`` (rows chunk c sends to way w2 forward / backward), per way ``hist_rows`` (rows its
    history stores)."""

    num_nodes: int
    ways: int
    rows: tuple[int, ...]
    edges: tuple[int, ...]
    halo_fwd: tuple[tuple[int, ...], ...]
    halo_bwd: tuple[tuple[int, ...], ...]
    hist_rows: tuple[int, ...]

    @property
    def chunks(self) -> int:
        return len(self.rows)

    def way_rows(self, w: int) -> int:
        p = self.chunks // self.ways
        return sum(self.rows[w * p : (w + 1) * p])

    def way_edges(self, w: int) -> int:
        p = self.chunks // self.ways
        return sum(self.edges[w * p : (w + 1) * p])


def geometry(plan: ChunkPlan) -> Geometry:
    """The sizes of ``plan`` the cost and memory models need (as ``parallel/layout.py`` derives them)."""
    C, W = plan.num_chunks, plan.num_ways
    fwd = tuple(tuple(plan.halo_fwd(c, w2).numel() for w2 in range(W)) for c in range(C))
    bwd = tuple(tuple(plan.halo_bwd(c, w2).numel() for w2 in range(W)) for c in range(C))
    hist = []
    for w in range(W):
        empty = torch.empty(0, dtype=torch.int64)
        hist.append(int(torch.unique(torch.cat([empty] + [plan.ext(c) for c in plan.chunks_of_way(w)])).numel()))
    counts = plan.block_counts.sum(1)
    return Geometry(
        num_nodes=plan.num_nodes,
        ways=W,
        rows=tuple(int(x) for x in plan.chunk_sizes()),
        edges=tuple(int(x) for x in counts),
        halo_fwd=fwd,
        halo_bwd=bwd,
        hist_rows=tuple(hist),
    )


def _collective_s(cal: Calibration, n: int, nbytes: float, world: int) -> float:
    """A ring all-reduce of ``nbytes`` over ``n`` workers: 2(n-1) steps of a 1/n share each; a step costs what
    the all-reduce measured over the ``world`` workers sharing this machine shows (``plan/sharing.py``), else
    the link's latency and bandwidth."""
    if n <= 1:
        return 0.0
    sharing = cal.shared_by(world)
    step, per_byte = sharing.ring_step() if sharing else (cal.link.latency_s, 1.0 / cal.link.bandwidth)
    return 2 * (n - 1) * (step + nbytes / n * per_byte)


def worker_tasks(
    order: list[int],
    *,
    dims: ParallelDims,
    rank: int,
    geo: Geometry,
    cal: Calibration,
    model: ModelDims,
    stage_params: list[int],
    itemsize: int,
    recompute: bool = False,
    compress: str = "none",
    wire: Wire | None = None,
) -> list[Task]:
    """The tasks of worker ``rank`` in one training epoch with chunk ``order`` (local indices). With a measured
    :class:`~gnnpipe.plan.costs.Sharing` for this many workers, compute takes its ``compute_factor`` and every
    message end adds its CPU (``overhead`` tasks: the sends' before they are posted, the receives' after). On
    several nodes (``wire``) the simulator sends crossing messages over the nodes' link; a collective whose ring
    crosses it adds, per ring step, the link's latency and its share of the bytes at the link's rate, with every
    stage's ring that crosses at the same time (the epoch end) sharing it; the loss all-reduce adds the link's
    latency per tree level over the nodes."""
    way, stage = dims.coords(rank)
    lo, hi = dims.layer_range(stage)
    P = dims.chunks_per_way
    h0 = model.h0_width
    sharing = cal.shared_by(dims.world_size)
    factor = sharing.compute_factor if sharing else 1.0
    out: list[Task] = []

    def overhead(messages: int, nbytes: float) -> None:
        if sharing is not None and messages:
            out.append(Task("compute", sharing.msg_s(messages, nbytes), label="message cpu", overhead=True))

    for act in worker_schedule(order, dims=dims, stage=stage, recompute=recompute):
        c = way * P + act.chunk if act.chunk >= 0 else -1
        n, e = (geo.rows[c], geo.edges[c]) if c >= 0 else (0, 0)
        op = act.op
        if op in _COMPUTE:
            out.append(Task("compute", cal.seconds(op.value, act.layer, n, e) * factor, label=str(act)))
        elif op == Op.RECOMPUTE:
            fit = cal.fits.get("recompute")
            fwd = sum(cal.seconds(o, lyr, n, e) for lyr in range(lo, hi) for o in ("pre", "agg"))
            sec = fit.seconds(n, e) if fit else fwd
            out.append(Task("compute", sec * factor, label=str(act)))
        elif op in (Op.RECV_ACT, Op.SEND_ACT, Op.RECV_GRAD, Op.SEND_GRAD):
            to_next = op in (Op.SEND_ACT, Op.RECV_GRAD)
            peer = dims.rank(way, stage + 1 if to_next else stage - 1)
            width = model.boundary_widths[(hi if to_next else lo) - 1]
            per_row = row_bytes(width, itemsize, compress) + (row_bytes(h0, itemsize, compress) if h0 else 0)
            messages = 1  # h and GCNII's h0 go as one message (Transfers.send_stage packs them)
            if op in (Op.SEND_ACT, Op.SEND_GRAD):
                overhead(messages, n * per_row)
                out.append(Task("send", peers=(peer,), nbytes=(n * per_row,), label="layer"))
            else:
                first = act.pos == (0 if op == Op.RECV_ACT else P - 1)
                out.append(Task("recv", peers=(peer,), bubble=first, label="layer"))
                overhead(messages, n * per_row)
        elif op in (Op.HALO, Op.HALO_B):
            table = geo.halo_fwd if op == Op.HALO else geo.halo_bwd
            others = [w2 for w2 in range(dims.ways) if w2 != way]
            per_row = row_bytes(model.agg_widths[act.layer], itemsize, compress)
            sizes = tuple(table[c][w2] * per_row for w2 in others)
            peers = tuple(dims.rank(w2, stage) for w2 in others)
            overhead(len(others), sum(sizes))
            out.append(Task("exchange", peers=peers, nbytes=sizes, label="graph"))
            overhead(len(others), sum(table[w2 * P + act.chunk][way] * per_row for w2 in others))
        elif op == Op.REDUCE_LOSS:
            out.append(Task("flush", label="layer"))
            world = tuple(range(dims.world_size))
            if sharing is not None:
                sec = sharing.allreduce.seconds(8, 0)
            else:
                sec = 2 * math.ceil(math.log2(max(len(world), 1))) * cal.link.latency_s if len(world) > 1 else 0.0
            if wire is not None:
                sec += 2 * math.ceil(math.log2(len(set(wire.node_of)))) * wire.latency_s
            out.append(Task("collective", sec, peers=world, bubble=True, label="control"))
        elif op == Op.ALLREDUCE:
            ranks = tuple(dims.stage_ranks(stage))
            sec = _collective_s(cal, len(ranks), stage_params[stage] * itemsize, dims.world_size)
            if wire is not None and _ring_crosses(wire, ranks):
                sharing_rings = sum(_ring_crosses(wire, dims.stage_ranks(s)) for s in range(dims.stages))
                share = stage_params[stage] * itemsize / len(ranks)
                sec += 2 * (len(ranks) - 1) * (wire.latency_s + sharing_rings * share / wire.bandwidth)
            out.append(Task("collective", sec, peers=ranks, label="weight"))
        elif op == Op.STEP:
            sec = cal.step_per_elem_s * stage_params[stage] * factor + cal.epoch_overhead_s
            out.append(Task("compute", sec, label="step"))
        else:
            raise ValueError(f"no cost for action {act}")
    return out


def _ring_crosses(wire: Wire, ranks) -> bool:
    ranks = list(ranks)
    return len(ranks) > 1 and any(wire.crosses(a, b) for a, b in zip(ranks, ranks[1:] + ranks[:1], strict=True))


def all_tasks(order: list[int], **kw) -> list[list[Task]]:
    """Every worker's tasks (rank order) for one epoch."""
    dims: ParallelDims = kw["dims"]
    return [worker_tasks(order, rank=r, **kw) for r in range(dims.world_size)]
