"""The distributed engine: one code path for any ``ways x stages x chunks`` grid (DESIGN §1, §3, §5).

Worker ``(way w, stage s)`` holds layers ``[lo, hi)`` of the model (stage 0 also the encoder, the last stage
the head and loss), its way's rows of the graph (as a :class:`Layout`) and its stage's history. An epoch is a
dispatcher over :func:`worker_schedule`: every action runs, in order, through the method named after it
(:class:`ChunkSteps` for a chunk's forward and backward, this class for the epoch's collectives). Evaluation
runs :func:`eval_schedule` the same way (:class:`Evaluator`). Graph parallelism (S = 1, C = W) and the
pipeline (W = 1) are the two edges of this code.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import time
from pathlib import Path

import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.memory import MemoryProbe, SavedTensors
from gnnpipe.models.deep import build_model
from gnnpipe.models.ops import RowCtx
from gnnpipe.parallel.comm import TRAIN_KINDS, Comm
from gnnpipe.parallel.evaluate import Evaluator
from gnnpipe.parallel.history import GradInbox, History, history_dtype, separate_snapshot
from gnnpipe.parallel.layout import Layout, build_layout, chunk_groups, exact_groups, prepare_operators
from gnnpipe.parallel.nodes import LINKS
from gnnpipe.parallel.schedule import BACKWARD_OPS, Action, Op, position_order, worker_schedule
from gnnpipe.parallel.state import StageState
from gnnpipe.parallel.step import ChunkRecord, ChunkSteps, StageModel
from gnnpipe.parallel.transfer import Clock, Transfers
from gnnpipe.partition.chunker import ChunkPlan
from gnnpipe.profile.trace import write_chrome_trace
from gnnpipe.train.executor import EpochStats, make_optimizer, resolve_dtype
from gnnpipe.train.metrics import Accuracies

__all__ = ["Engine"]

_STEP_OPS = {
    Op.RECV_ACT: "recv_act", Op.ENCODE: "encode", Op.PRE: "pre", Op.HALO: "halo", Op.AGG: "agg",
    Op.LOSS: "loss", Op.SEND_ACT: "send_act", Op.RECV_GRAD: "recv_grad", Op.RECOMPUTE: "recompute_chunk",
    Op.LOSS_B: "loss_b", Op.AGG_B: "agg_b", Op.HALO_B: "halo_b", Op.PRE_B: "pre_b", Op.ENCODE_B: "encode_b",
    Op.SEND_GRAD: "send_grad",
}  # fmt: skip


@contextlib.contextmanager
def _no_automatic_gc():
    """No cyclic garbage collection inside an epoch: the epoch makes many small objects (actions, records), and a
    collection triggered among them scans the whole heap at a random action, on one worker, stalling the others
    (torchtitan's ``GarbageCollection`` does the same per step). Young objects are collected at the epoch's end."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
            gc.collect(1)


class Engine(StageState):
    """Executes the epoch of DESIGN §3 on ``ways * stages`` workers. Collective: every worker calls every method."""

    def __init__(
        self, cfg: ExperimentConfig, graph: Graph, plan: ChunkPlan, comm: Comm, probe: MemoryProbe | None = None
    ):
        dims = comm.dims
        if plan.num_chunks != dims.chunks or plan.num_ways != dims.ways:
            raise ValueError(
                f"plan has (chunks={plan.num_chunks}, ways={plan.num_ways}), dims ({dims.chunks}, {dims.ways})"
            )
        self.cfg, self.comm, self.dims = cfg, comm, dims
        self.way, self.stage = comm.way, comm.stage
        self.is_logger = comm.rank == 0
        self.world_size = dims.world_size
        self.device, self.dtype = comm.device, resolve_dtype(cfg.train.dtype)
        self.probe = probe or MemoryProbe(self.device)
        p = cfg.parallel
        lo, hi = dims.layer_range(self.stage)
        first, last = dims.is_first(self.stage), dims.is_last(self.stage)
        model = build_model(
            cfg.model, graph.num_features, graph.num_classes, seed=cfg.train.seed, multi_label=graph.multi_label
        )
        model = model.to(device=self.device, dtype=self.dtype)
        self.stage_model = StageModel(
            model.encoder if first else None,
            list(model.layers[lo:hi]),
            model.head if last else None,
            lo,
            hi,
            model.dims(),
        )
        agg_kind = model.agg_kind
        own = {id(q) for q in model.stage_parameters(lo, hi)}
        self.named_params = {n: q for n, q in model.named_parameters() if id(q) in own}  # this stage's only
        self.params = list(self.named_params.values())
        self.optimizer = make_optimizer(self.params, cfg, model)
        del model  # other stages' weights are never used here

        # the graph (already in the plan's order): this way's rows only; everything else is dropped after setup
        g = graph
        csr = g.norm_values(agg_kind)
        self.row0, row1 = plan.way_range(self.way)
        hist_dtype = history_dtype(p.history_dtype, self.dtype)
        # the forward reads the history in place unless it is a separate snapshot or narrower than the model
        direct = not separate_snapshot(p.history_period, p.history_momentum) and hist_dtype == self.dtype
        direct = direct and not p.recompute
        self.layout = build_layout(
            plan, csr, g.train_mask, way=self.way, groups=chunk_groups(plan), device=self.device, direct_history=direct
        )
        self._exact: Layout | None = None
        if p.warmup_exact_epochs > 0:
            self._exact = build_layout(
                plan, csr, g.train_mask, way=self.way, groups=exact_groups(plan), device=self.device,
                direct_history=direct,
            )  # fmt: skip
        for lay in (self.layout, self._exact):
            if lay is not None:
                prepare_operators(lay, self.dtype, self.device)
        x = g.x[self.row0 : row1].to(self.device, self.dtype) if first else None
        y = g.y[self.row0 : row1].to(self.device) if last else None
        self.masks = (
            tuple(m[self.row0 : row1].to(self.device) for m in (g.train_mask, g.val_mask, g.test_mask))
            if last
            else None
        )
        num_train = int(g.train_mask.sum())
        self.plan_digest = plan_digest = (plan.graph_hash, hashlib.sha256(plan.perm.numpy().tobytes()).hexdigest()[:16])
        del g, csr
        self.hist = History(
            self.layout.hist_rows, self.stage_model.dims.agg_widths[lo:hi], period=p.history_period,
            momentum=p.history_momentum, dtype=hist_dtype, device=self.device,
            grad_rows=0, compute_dtype=self.dtype,
        )  # fmt: skip
        self.inbox = GradInbox()
        self.clock = Clock(comm.rank)
        self.tx = Transfers(comm, self.clock, self.dtype, compress=p.compress, seed=cfg.train.seed)
        self.steps = ChunkSteps(
            self.stage_model, self.hist, self.inbox, self.tx, self.clock, x=x, y=y, num_train=num_train,
            scale=p.cross_chunk_grad_scale, recompute=p.recompute,
        )  # fmt: skip
        self.evaluator = Evaluator(self.stage_model, self.tx, self.layout, x=x, y=y, masks=self.masks)
        self.epoch_bytes: dict[str, float] = dict.fromkeys(TRAIN_KINDS, 0.0)
        self.link_bytes = {k: dict.fromkeys(LINKS, 0.0) for k in TRAIN_KINDS}  # the last epoch's, by link
        self.record_grads = False
        self.last_grads: dict[str, torch.Tensor] = {}
        self.executed: list[Action] | None = None  # set to [] to record every action run (lockstep tests)
        self._trace_epochs = 3 if cfg.log.trace else 0  # record this many epochs after the warm-up
        self._losses: list[torch.Tensor] = []
        self._loss_sum = torch.zeros(1, dtype=torch.float64, device=self.device)
        # every worker derived its shapes from (plan, config): agreeing on those means agreeing on every shape
        comm.check_same(
            "plan and model",
            (plan_digest, plan.num_chunks, plan.num_ways, dims, self.stage_model.dims, cfg.train.dtype, cfg.model),
        )
        self.memory_phase("setup")

    # ------------------------------------------------------------------ the epoch: a dispatcher
    def schedule(self, epoch: int) -> tuple[Layout, list[int], list[Action]]:
        """The layout, chunk order and action list of ``epoch`` on this worker: exactly what runs."""
        p = self.cfg.parallel
        exact = epoch < p.warmup_exact_epochs
        lay = self._exact if exact else self.layout
        order = [0] if exact else position_order(
            self.dims.chunks_per_way, epoch=epoch, seed=self.cfg.train.seed, mode=p.chunk_order, costs=lay.costs
        )  # fmt: skip
        return lay, order, worker_schedule(order, dims=self.dims, stage=self.stage, recompute=p.recompute)

    def train_epoch(self, epoch: int) -> EpochStats:
        with _no_automatic_gc():
            return self._train_epoch(epoch)

    def _train_epoch(self, epoch: int) -> EpochStats:
        t_start = time.perf_counter()
        before = self.comm.sent_by_link()
        self.clock.reset()
        self.tx.begin_epoch(epoch)
        tracing = self._trace_epochs > 0 and epoch >= self.cfg.train.warmup_epochs
        self.clock.tracer.enabled = tracing
        self._trace_epochs -= int(tracing)
        lay, order, actions = self.schedule(epoch)
        pos_of = torch.empty(len(order), dtype=torch.int64, device=self.device)
        pos_of[torch.tensor(order, device=self.device)] = torch.arange(len(order), device=self.device)
        steps = self.steps
        steps.layout, steps.pos_list, steps.tx_positions = lay, pos_of.tolist(), len(order)
        for mod in (steps.m.encoder, *steps.m.layers, steps.m.head):
            if mod is not None:
                mod.train()
        self.optimizer.zero_grad(set_to_none=True)
        self._losses = []
        recs: dict[int, ChunkRecord] = {}
        # measured in the first two epochs run (a fresh run's first reads an all-zero history: with recompute
        # it keeps no stale part then)
        saved = SavedTensors(exclude=(steps.x,)) if self.saved_epochs < 2 else None
        self.saved_epochs += 1
        with saved or contextlib.nullcontext():
            self._run(actions, recs, lay, pos_of, epoch, saved)
        assert not recs, f"chunks left unfinished: {sorted(recs)}"
        self.hist.end_epoch(epoch)
        self.inbox.end_epoch()
        after = self.comm.sent_by_link()
        self.link_bytes = {k: {ln: after[k][ln] - before[k][ln] for ln in after[k]} for k in TRAIN_KINDS}
        self.epoch_bytes = {k: sum(self.link_bytes[k].values()) for k in TRAIN_KINDS}
        return EpochStats(loss=float(self._loss_sum), time=time.perf_counter() - t_start, breakdown=dict(self.clock.t))

    def _run(self, actions, recs, lay, pos_of, epoch, saved) -> None:
        """Execute ``actions`` in order: chunk actions on their record, epoch-end actions on the engine."""
        steps = self.steps
        for act in actions:
            if saved is not None and act.op in BACKWARD_OPS:  # end of the forward: everything saved is alive
                for rec in recs.values():
                    saved.add(rec.stage_in, rec.h0, *(t for kept in rec.m_saved for t in kept))
                before = self.saved_bytes or {"saved_for_backward": 0, "dropout_masks": 0}
                self.saved_bytes = {
                    "saved_for_backward": max(saved.bytes, before["saved_for_backward"]),
                    "dropout_masks": max(saved.mask_bytes, before["dropout_masks"]),
                }
                saved = None
            if act.op in _STEP_OPS:
                rec = recs.get(act.pos)
                if rec is None:
                    unit = lay.units[act.chunk]
                    ctx = RowCtx(training=True, seed=self.cfg.train.seed, epoch=epoch, segments=unit.segments)
                    rec = recs[act.pos] = ChunkRecord(unit, act.pos, pos_of[unit.ext_unit] <= act.pos, ctx)
                getattr(steps, _STEP_OPS[act.op])(rec, act)
                if act.op == Op.LOSS:
                    self._losses.append(rec.loss.detach())
                if act.op in (Op.ENCODE_B, Op.SEND_GRAD):
                    del recs[act.pos]  # the chunk is done on this stage
            else:
                getattr(self, act.op.value)(act)
            if self.executed is not None:
                self.executed.append(act)

    # ------------------------------------------------------------------ epoch-end actions
    def reduce_loss(self, act: Action) -> None:
        """The first collective after the backward: waiting here for the slowest worker is the drain bubble."""
        self.tx.finish_sends()
        loss = (
            torch.stack(self._losses).sum() if self._losses else torch.zeros((), dtype=self.dtype, device=self.device)
        )
        self._loss_sum = loss.reshape(1).to(torch.float64)
        with self.clock.phase("bubble", "epoch end (drain)"):
            self.comm.all_reduce_sum(self._loss_sum, kind="control", group_ranks=list(range(self.world_size)))

    def allreduce(self, act: Action) -> None:
        """Sum the weight gradients over the ways of this stage (one flat buffer)."""
        grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in self.params]
        flat = torch.cat([gr.reshape(-1) for gr in grads])
        with self.clock.phase("weight_sync", "all-reduce weight grads"):
            self.comm.all_reduce_sum(
                flat, kind="weight", group_ranks=self.dims.stage_ranks(self.stage), group=self.comm.stage_group
            )
        off = 0
        for q, gr in zip(self.params, grads, strict=True):
            q.grad = flat[off : off + gr.numel()].view_as(gr).clone()
            off += gr.numel()

    def step(self, act: Action) -> None:
        for q in self.params:
            if q.grad is None:
                q.grad = torch.zeros_like(q)
        if self.record_grads:
            self.last_grads = {n: q.grad.detach().clone() for n, q in self.named_params.items()}
        self.optimizer.step()
        if not self.probe.phases.get("train"):
            self.memory_phase("train")  # the first epoch's peak: activations, history, buffers

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> Accuracies:
        """Exact full-graph inference through the stages (layer by layer, every read fresh); every worker gets
        the result."""
        acc = self.evaluator.run(self.dims, self.executed)
        if not self.probe.phases.get("eval"):
            self.memory_phase("eval")
        return acc

    # ------------------------------------------------------------------ reporting
    def comm_bytes_per_epoch(self) -> dict[str, int]:
        """Bytes of the last training epoch, cluster-wide, by kind, as counted by comm.py (the analytic twin
        comes from the profiler: :func:`gnnpipe.profile.volumes.volume_of`)."""
        per_rank = self.comm.all_gather_object(self.epoch_bytes)
        return {k: int(round(sum(r[k] for r in per_rank))) for k in TRAIN_KINDS}

    def comm_bytes_by_link(self) -> dict[str, dict[str, int]]:
        """The same, split by whether the two ranks share a node (DESIGN §4): ``{kind: {intra, inter}}``."""
        per_rank = self.comm.all_gather_object(self.link_bytes)
        return {k: {ln: int(round(sum(r[k][ln] for r in per_rank))) for ln in d} for k, d in self.link_bytes.items()}

    def node_of_rank(self) -> list[int]:
        return list(self.comm.node_of_rank)

    def peak_memory(self) -> list[int]:
        """Every worker's peak resident memory since its probe started (the largest phase peak)."""
        return [int(v) for v in self.comm.all_gather_object(self.probe.overall_peak())]

    def gather(self, obj: object) -> list:
        return self.comm.all_gather_object(obj)

    def write_artifacts(self, run_dir) -> None:
        """With ``log.trace``: one Chrome/Perfetto trace of the recorded epochs, all workers, on rank 0."""
        if not self.cfg.log.trace:
            return
        events = self.comm.all_gather_object(self.clock.tracer.events)
        if self.is_logger:
            names = [self.dims.describe(r) for r in range(self.world_size)]
            write_chrome_trace(Path(run_dir) / "trace.json", events, names)

    def close(self) -> None:
        self.comm.close()
