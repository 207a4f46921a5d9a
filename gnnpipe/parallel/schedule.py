"""The epoch as data: the ordered actions of every worker (pure; no processes, no tensors but the order).

The engine's epoch loop executes exactly this list, action by action (DESIGN §5), so what the tests check here
is the program that runs. One training epoch of worker (way, stage), the authors' synchronous GPipe-style
epoch (DESIGN §3): for each position i = 0..P-1 the way's chunk ``order[i]`` goes forward through the stage's
layers, then backward at positions P-1..0, then the epoch's collectives and one optimizer step.

Per chunk and layer the forward is cut at the aggregation (the only step that reads other vertices):
``PRE`` (z = pre(h)), ``HALO`` (exchange z's halo rows with the other ways of the stage; only when ways > 1),
``AGG`` (m = A z + A_ext e with fresh or historical e, then h' = post(m, ...)). The backward mirrors it:
``AGG_B`` (gradient of m), ``HALO_B`` (exchange it), ``PRE_B`` (A^T, cross-chunk pushes, back through pre).
With ``recompute`` a chunk's backward starts with ``RECOMPUTE`` (its forward again, from the saved stage
input and aggregation results).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.models.ops import keyed_generator
from gnnpipe.parallel.dims import ParallelDims

__all__ = [
    "Op",
    "Action",
    "COMM_OPS",
    "BACKWARD_OPS",
    "position_order",
    "worker_schedule",
    "eval_schedule",
    "format_schedule",
    "schedule_tables",
]

_ORDER_SITE = 0x0DE5  # keeps the order RNG stream apart from dropout streams with the same (seed, epoch)


class Op(StrEnum):
    RECV_ACT = "recv_act"  # activations (h, and h0) of a chunk from the previous stage
    ENCODE = "encode"  # first stage: input projection of the chunk's features
    PRE = "pre"  # z = pre(h) for one layer; z rows go into the history
    HALO = "halo"  # z's halo rows to / from the other ways of this stage
    AGG = "agg"  # m = A z + A_ext e (fresh / historical), h = post(m, ...)
    LOSS = "loss"  # last stage: head and the chunk's loss
    SEND_ACT = "send_act"
    RECV_GRAD = "recv_grad"  # gradient of the chunk's stage output from the next stage
    RECOMPUTE = "recompute"  # rebuild the chunk's forward from its saved input (parallel.recompute)
    LOSS_B = "loss_b"
    AGG_B = "agg_b"  # back through post: the gradient of m
    HALO_B = "halo_b"  # m-gradient halo rows to / from the other ways (pull style)
    PRE_B = "pre_b"  # A^T, pushes along fresh cross-chunk reads, back through pre
    ENCODE_B = "encode_b"
    SEND_GRAD = "send_grad"
    REDUCE_LOSS = "reduce_loss"  # all workers: sum of chunk losses (the end-of-epoch drain)
    ALLREDUCE = "allreduce"  # weight gradients among the ways of the stage
    STEP = "step"  # one optimizer step
    EVAL_RECV = "eval_recv"  # evaluation: a chunk's full-graph rows from the previous stage
    EVAL_ENCODE = "eval_encode"
    EVAL_PRE = "eval_pre"
    EVAL_HALO = "eval_halo"
    EVAL_AGG = "eval_agg"
    EVAL_SEND = "eval_send"
    EVAL_HEAD = "eval_head"  # last stage: logits -> correct counts per split
    EVAL_REDUCE = "eval_reduce"  # all workers: the counts


COMM_OPS = frozenset(
    {
        Op.RECV_ACT,
        Op.SEND_ACT,
        Op.RECV_GRAD,
        Op.SEND_GRAD,
        Op.HALO,
        Op.HALO_B,
        Op.REDUCE_LOSS,
        Op.ALLREDUCE,
        Op.EVAL_RECV,
        Op.EVAL_SEND,
        Op.EVAL_HALO,
        Op.EVAL_REDUCE,
    }
)


@dataclass(frozen=True)
class Action:
    """One step of a worker. ``pos``: position in this epoch's order; ``chunk``: local chunk (unit) index
    within the way; ``layer``: global GNN layer index. -1 where it does not apply."""

    op: Op
    pos: int = -1
    chunk: int = -1
    layer: int = -1

    def __str__(self) -> str:
        args = [f"{self.pos}:{self.chunk}" if self.pos >= 0 else (f"c{self.chunk}" if self.chunk >= 0 else "")]
        if self.layer >= 0:
            args.append(f"L{self.layer}")
        inner = " ".join(a for a in args if a)
        return f"{self.op.value}({inner})" if inner else self.op.value


def position_order(num_local: int, *, epoch: int, seed: int, mode: str, costs: torch.Tensor | None = None) -> list[int]:
    """Local chunk index processed at each position of ``epoch``.

    mode ``random``: a permutation drawn from a generator keyed by (seed, epoch) -- the same on every worker
    without communication. ``fixed``: 0..P-1 every epoch. ``degree``: by decreasing ``costs`` (e.g. in-edges of
    the chunks at that local index, summed over ways), ties by index: high-degree-first.
    """
    if mode == "random":
        g = keyed_generator(seed, epoch, _ORDER_SITE)
        return torch.randperm(num_local, generator=g).tolist()
    if mode == "fixed":
        return list(range(num_local))
    if mode == "degree":
        if costs is None or costs.numel() != num_local:
            raise ValueError("chunk_order 'degree' needs one cost per local chunk")
        return sorted(range(num_local), key=lambda j: (-float(costs[j]), j))
    raise ValueError(f"unknown chunk order {mode!r}; allowed: random, fixed, degree")


def _chunk_forward(dims: ParallelDims, stage: int, pos: int, c: int) -> list[Action]:
    head = Action(Op.ENCODE if dims.is_first(stage) else Op.RECV_ACT, pos, c)
    tail = Action(Op.LOSS if dims.is_last(stage) else Op.SEND_ACT, pos, c)
    return [head, *_layer_steps(dims, stage, pos, c, backward=False), tail]


def _chunk_backward(dims: ParallelDims, stage: int, pos: int, c: int, recompute: bool) -> list[Action]:
    if dims.is_last(stage):  # the gradient starts at the loss, which needs the (recomputed) forward
        head = [Op.RECOMPUTE, Op.LOSS_B] if recompute else [Op.LOSS_B]
    else:  # the gradient arrives from the next stage
        head = [Op.RECV_GRAD, Op.RECOMPUTE] if recompute else [Op.RECV_GRAD]
    tail = Action(Op.ENCODE_B if dims.is_first(stage) else Op.SEND_GRAD, pos, c)
    return [*(Action(op, pos, c) for op in head), *_layer_steps(dims, stage, pos, c, backward=True), tail]


_LAYER_STEPS = {False: (Op.PRE, Op.HALO, Op.AGG), True: (Op.AGG_B, Op.HALO_B, Op.PRE_B)}


def _layer_steps(dims: ParallelDims, stage: int, pos: int, c: int, *, backward: bool) -> list[Action]:
    """Chunk ``c``'s per-layer actions on ``stage`` in execution order: PRE, HALO, AGG per layer upwards, or
    the mirror, AGG_B, HALO_B, PRE_B per layer downwards. One way exchanges no halo."""
    lo, hi = dims.layer_range(stage)
    layers = reversed(range(lo, hi)) if backward else range(lo, hi)
    ops = [op for op in _LAYER_STEPS[backward] if dims.ways > 1 or op not in (Op.HALO, Op.HALO_B)]
    return [Action(op, pos, c, layer) for layer in layers for op in ops]


def worker_schedule(order: list[int], *, dims: ParallelDims, stage: int, recompute: bool = False) -> list[Action]:
    """Every action of the worker holding ``stage`` in one training epoch with chunk ``order``."""
    acts: list[Action] = []
    for pos, c in enumerate(order):
        acts += _chunk_forward(dims, stage, pos, c)
    for pos in reversed(range(len(order))):
        acts += _chunk_backward(dims, stage, pos, order[pos], recompute)
    acts.append(Action(Op.REDUCE_LOSS))
    if dims.ways > 1:
        acts.append(Action(Op.ALLREDUCE))
    acts.append(Action(Op.STEP))
    return acts


def eval_schedule(num_units: int, *, dims: ParallelDims, stage: int) -> list[Action]:
    """Exact full-graph evaluation (DESIGN §3), layer by layer: every unit's ``z`` of a layer is computed (and
    its halo rows exchanged) before any unit aggregates, so every read is fresh. Stages run one after another."""
    lo, hi = dims.layer_range(stage)
    units = range(num_units)
    acts = [Action(Op.EVAL_ENCODE if dims.is_first(stage) else Op.EVAL_RECV, chunk=j) for j in units]
    for layer in range(lo, hi):
        for j in units:
            acts.append(Action(Op.EVAL_PRE, chunk=j, layer=layer))
            if dims.ways > 1:
                acts.append(Action(Op.EVAL_HALO, chunk=j, layer=layer))
        acts += [Action(Op.EVAL_AGG, chunk=j, layer=layer) for j in units]
    acts += [Action(Op.EVAL_HEAD if dims.is_last(stage) else Op.EVAL_SEND, chunk=j) for j in units]
    acts.append(Action(Op.EVAL_REDUCE))
    return acts


def _phase(a: Action) -> str:
    if a.op.value.startswith("eval"):
        return "eval:"
    if a.pos < 0:
        return "epoch end:"
    return f"{'B' if a.op in BACKWARD_OPS else 'F'} pos {a.pos:>3} chunk {a.chunk:>3}:"


def format_schedule(acts: list[Action]) -> str:
    """One line per chunk phase (forward / backward of a position, epoch end, evaluation), actions in order."""
    lines: list[str] = []
    last = None
    for a in acts:
        head = _phase(a)
        if head != last:
            lines.append(head)
            last = head
        name = a.op.value.removeprefix("eval_") + (f"[c{a.chunk}]" if head == "eval:" and a.chunk >= 0 else "")
        lines[-1] += f" {name}{a.layer}" if a.layer >= 0 else f" {name}"
    return "\n".join(lines)


BACKWARD_OPS = frozenset(
    {Op.RECV_GRAD, Op.RECOMPUTE, Op.LOSS_B, Op.AGG_B, Op.HALO_B, Op.PRE_B, Op.ENCODE_B, Op.SEND_GRAD}
)


def schedule_tables(
    cfg: ExperimentConfig, *, epoch: int, costs: torch.Tensor | None = None, evaluation: bool = False
) -> str:
    """Every worker's actions in ``epoch`` of ``cfg`` (``costs``: per local chunk, for the degree order)."""
    dims = ParallelDims.from_config(cfg)
    p = cfg.parallel
    exact = epoch < p.warmup_exact_epochs
    order = [0] if exact else position_order(
        dims.chunks_per_way, epoch=epoch, seed=cfg.train.seed, mode=p.chunk_order, costs=costs
    )  # fmt: skip
    out = [f"epoch {epoch}: {dims.ways} way(s) x {dims.stages} stage(s), {dims.chunks} chunks; order {order}"]
    for rank in range(dims.world_size):
        stage = dims.coords(rank)[1]
        acts = worker_schedule(order, dims=dims, stage=stage, recompute=p.recompute)
        if evaluation:
            acts = acts + eval_schedule(1 if exact else dims.chunks_per_way, dims=dims, stage=stage)
        out += ["", f"{dims.describe(rank)}: {len(acts)} actions", format_schedule(acts)]
    return "\n".join(out)
