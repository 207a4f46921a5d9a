"""The distributed engine: one code path for any ``ways x stages x chunks`` grid (DESIGN §1, §3, §4).

Worker ``(way w, stage s)`` holds layers ``[lo, hi)`` of the model (stage 0 also the encoder, the last stage
the head and loss) and runs, per epoch, the schedule of ``schedule.worker_schedule``: forward of its way's
chunks in this epoch's order, then backward in reverse order, then one weight all-reduce among the ways of
its stage and one Adam step.

Per layer and chunk the computation is cut at the aggregation, the only step that reads other vertices:
``z, r = pre(h)`` -> exchange halo rows of ``z`` with the other ways of this stage -> ``m = A_in z + A_ext e``
(``e``: fresh or historical rows from :class:`History`) -> ``h' = post(m, r, h0)``. The backward is explicit
per layer, so the order DESIGN §3 requires is visible: gradient of ``m`` -> exchange the halo rows of it
(pull style, as the authors' system) -> other ways' contributions and this way's earlier readers' pushed
gradient (``History.G``) are added -> back through ``pre``.

Graph parallelism (S = 1, C = W) and the pipeline (W = 1) are the two edges of this code.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.models.deep import build_model, chunk_loss
from gnnpipe.models.ops import RowCtx, SparseOp
from gnnpipe.parallel.blocks import in_neighbours, sub_operator
from gnnpipe.parallel.comm import TRAIN_KINDS, Comm
from gnnpipe.parallel.history import History
from gnnpipe.parallel.schedule import position_order, worker_schedule
from gnnpipe.partition.chunker import ChunkPlan
from gnnpipe.partition.stages import split_layers, stage_bounds
from gnnpipe.profile.trace import Tracer, write_chrome_trace
from gnnpipe.train.executor import EpochStats, Executor, make_optimizer, peak_memory_bytes, resolve_dtype
from gnnpipe.train.metrics import Accuracies, accuracies

__all__ = ["Engine", "stage_layer_counts"]


def stage_layer_counts(cfg: ExperimentConfig) -> list[int]:
    p = cfg.parallel
    if isinstance(p.stage_split, list):
        return list(p.stage_split)
    # "cost": every layer of our models costs the same (one aggregation + one dense map), so equal split
    return split_layers(cfg.model.layers, p.stages)


@dataclass
class _Unit:
    """Rows this way processes at one position: one chunk, or (exact epochs) all the way's chunks."""

    index: int  # local unit index within the way (the position order permutes these)
    chunks: list[int]
    lo: int
    hi: int
    a_in: SparseOp  # Ahat[rows, rows]
    a_ext: SparseOp  # Ahat[rows, ext]
    ext: torch.Tensor  # [X] sorted out-of-unit in-neighbours (any way)
    ext_unit: torch.Tensor  # [X] local unit index (in its own way) of each ext vertex
    a_own: SparseOp  # Ahat[rows, own_ext]: the part of a_ext that lies in this way
    own_ext: torch.Tensor
    own_ext_unit: torch.Tensor
    train: torch.Tensor  # [T] training rows, relative to lo
    segments: tuple[tuple[int, int], ...]  # (chunk, rows) in row order: dropout masks are keyed per chunk
    send_fwd: dict[int, torch.Tensor] = field(default_factory=dict)  # peer way -> rows (rel.) sent forward
    send_bwd: dict[int, torch.Tensor] = field(default_factory=dict)  # peer way -> rows (rel.) of grad(m) sent

    @property
    def n(self) -> int:
        return self.hi - self.lo


@dataclass
class _Remote:
    """Unit ``index`` of another way, as this worker sees it."""

    fwd_ids: torch.Tensor  # rows of its z this worker receives (halo_fwd toward this way)
    bwd_ids: torch.Tensor  # rows of its grad(m) this worker receives (halo_bwd toward this way)
    r_op: SparseOp  # Ahat[bwd_ids, tgt]
    tgt: torch.Tensor  # this way's vertices those rows read
    tgt_unit: torch.Tensor


@dataclass
class _Layout:
    units: list[_Unit]
    remotes: dict[tuple[int, int], _Remote]  # (peer way, unit index) -> remote unit
    costs: torch.Tensor  # [P] in-edges per unit index summed over ways (for degree order)


class Engine(Executor):
    """Executes the epoch of DESIGN §3 on ``ways * stages`` workers. Collective: every worker calls every method."""

    def __init__(self, cfg: ExperimentConfig, graph: Graph, plan: ChunkPlan, comm: Comm):
        p = cfg.parallel
        if plan.num_chunks != p.chunks or plan.num_ways != p.ways:
            raise ValueError(
                f"plan has (chunks={plan.num_chunks}, ways={plan.num_ways}), config ({p.chunks}, {p.ways})"
            )
        self.cfg, self.plan, self.comm = cfg, plan, comm
        self.W, self.S, self.P = p.ways, p.stages, plan.chunks_per_way
        self.way, self.stage = comm.way, comm.stage
        self.is_logger = comm.rank == 0
        self.world_size = comm.topo.world_size
        self.device, self.dtype = comm.device, resolve_dtype(cfg.train.dtype)
        self.graph = plan.permute(graph)
        g = self.graph
        model = build_model(cfg.model, g.num_features, g.num_classes, seed=cfg.train.seed, multi_label=g.multi_label)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.counts = stage_layer_counts(cfg)
        self.bounds = stage_bounds(self.counts)
        self.lo, self.hi = self.bounds[self.stage]
        self.first, self.last = self.stage == 0, self.stage == self.S - 1
        self.layers = list(model.layers[self.lo : self.hi])
        self.params = model.stage_parameters(self.lo, self.hi)
        self.optimizer = make_optimizer(self.params, cfg, model)
        self.dims = model.dims()
        self.csr = g.norm_values(model.agg_kind)
        self.x = g.x.to(self.device, self.dtype) if self.first or self.is_logger else None
        self.y = g.y.to(self.device)
        self.num_train = int(g.train_mask.sum())
        self.hist = History(
            g.num_nodes,
            self.dims.agg_widths[self.lo : self.hi],
            period=p.history_period,
            momentum=p.history_momentum,
            dtype=self.dtype,
            device=self.device,
        )
        self.layout = self._layout([[[w * self.P + j] for j in range(self.P)] for w in range(self.W)])
        self._exact_layout: _Layout | None = None
        self.full_op: SparseOp | None = SparseOp(*self.csr, g.num_nodes) if self.is_logger else None
        self.epoch_bytes: dict[str, float] = dict.fromkeys(TRAIN_KINDS, 0.0)
        self.record_grads = False
        self.last_grads: dict[str, torch.Tensor] = {}
        self._pending: list = []
        self._t = dict.fromkeys(("compute", "comm_layer", "comm_graph", "weight_sync", "bubble"), 0.0)
        self.tracer = Tracer(comm.rank, enabled=False)
        self._trace_epochs = 3 if cfg.log.trace else 0  # record this many epochs after the warm-up
        # every worker derived its shapes from (plan, config): agreeing on those means agreeing on every shape
        comm.check_same(
            "plan and model",
            (plan.graph_hash, plan.num_chunks, plan.num_ways, self.counts, self.dims, cfg.train.dtype, cfg.model),
        )

    # ------------------------------------------------------------------ setup
    def _rank(self, way: int, stage: int) -> int:
        return self.comm.topo.rank(way, stage)

    def _layout(self, groups: list[list[list[int]]]) -> _Layout:
        """Units for a grouping of chunks: ``groups[w][j]`` = chunks of way w processed as its unit j."""
        plan, W = self.plan, self.W
        unit_of_chunk = torch.empty(plan.num_chunks, dtype=torch.int64)
        for w in range(W):
            for j, chunks in enumerate(groups[w]):
                unit_of_chunk[torch.tensor(chunks)] = j
        vunit = unit_of_chunk[plan.vertex_chunk()]
        vway = plan.vertex_way()
        units = []
        for j, chunks in enumerate(groups[self.way]):
            lo, hi = plan.chunk_range(chunks[0])[0], plan.chunk_range(chunks[-1])[1]
            rows = torch.arange(lo, hi)
            ext = in_neighbours(self.csr, rows)
            ext = ext[(ext < lo) | (ext >= hi)]
            own = ext[vway[ext] == self.way]
            u = _Unit(
                index=j,
                chunks=chunks,
                lo=lo,
                hi=hi,
                a_in=sub_operator(self.csr, rows, rows),
                a_ext=sub_operator(self.csr, rows, ext),
                ext=ext,
                ext_unit=vunit[ext],
                a_own=sub_operator(self.csr, rows, own),
                own_ext=own,
                own_ext_unit=vunit[own],
                train=self.graph.train_mask[lo:hi].nonzero().flatten(),
                segments=tuple((c, plan.chunk_range(c)[1] - plan.chunk_range(c)[0]) for c in chunks),
            )
            for w2 in range(W):
                if w2 != self.way:
                    u.send_fwd[w2] = torch.cat([plan.halo_fwd(c, w2) for c in chunks]) - lo
                    u.send_bwd[w2] = torch.cat([plan.halo_bwd(c, w2) for c in chunks]) - lo
            units.append(self._on_device(u))
        remotes = {}
        my_lo, my_hi = plan.way_range(self.way)
        for w2 in range(W):
            if w2 == self.way:
                continue
            for j, chunks in enumerate(groups[w2]):
                fwd = torch.cat([plan.halo_fwd(c, self.way) for c in chunks])
                bwd = torch.cat([plan.halo_bwd(c, self.way) for c in chunks])
                tgt = in_neighbours(self.csr, bwd)
                tgt = tgt[(tgt >= my_lo) & (tgt < my_hi)]
                rem = _Remote(fwd, bwd, sub_operator(self.csr, bwd, tgt), tgt, vunit[tgt])
                remotes[(w2, j)] = self._on_device(rem)
        in_edges = plan.block_counts.sum(1)
        costs = torch.zeros(len(groups[0]), dtype=torch.int64)
        for w in range(W):
            for j, chunks in enumerate(groups[w]):
                costs[j] += int(in_edges[torch.tensor(chunks)].sum())
        return _Layout(units, remotes, costs)

    def _on_device(self, obj):
        """Move a unit's / remote's index tensors to the compute device (indices must live with the data)."""
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, torch.Tensor):
                setattr(obj, f.name, v.to(self.device))
            elif isinstance(v, dict):
                setattr(obj, f.name, {k: t.to(self.device) for k, t in v.items()})
        return obj

    def exact_layout(self) -> _Layout:
        """All of a way's chunks as one unit: every read is fresh (warm-up epochs of exact training)."""
        if self._exact_layout is None:
            self._exact_layout = self._layout([[list(range(w * self.P, (w + 1) * self.P))] for w in range(self.W)])
        return self._exact_layout

    # ------------------------------------------------------------------ communication helpers
    @contextmanager
    def _phase(self, key: str, name: str):
        """Time a phase into the epoch breakdown (``key``) and, when tracing, into the timeline."""
        t0 = time.perf_counter()
        with self.tracer.span(name, "compute" if key == "compute" else "comm"):
            yield
        self._t[key] += time.perf_counter() - t0

    def _timed(self, key: str, name: str, fn, *args, **kwargs):
        with self._phase(key, name):
            return fn(*args, **kwargs)

    def _graph_exchange(self, lay: _Layout, unit: _Unit, layer: int, rows: torch.Tensor, *, forward: bool) -> dict:
        """Send ``rows``' halo rows to the other ways of this stage; return what they sent, by peer way."""
        if self.W == 1:
            return {}
        sends, recvs = {}, {}
        width = rows.shape[1]
        for w2 in range(self.W):
            if w2 == self.way:
                continue
            idx = unit.send_fwd[w2] if forward else unit.send_bwd[w2]
            rem = lay.remotes[(w2, unit.index)]
            n = (rem.fwd_ids if forward else rem.bwd_ids).numel()
            peer = self._rank(w2, self.stage)
            sends[peer] = rows[idx].contiguous()
            recvs[peer] = torch.empty(n, width, dtype=rows.dtype, device=rows.device)
        self._timed(
            "comm_graph",
            f"graph {'fwd' if forward else 'bwd'} L{layer}",
            self.comm.exchange,
            sends,
            recvs,
            kind="graph",
            layer=layer,
        )
        return {w2: recvs[self._rank(w2, self.stage)] for w2 in range(self.W) if w2 != self.way}

    def _stage_send(self, to_stage: int, tensors: list[torch.Tensor], what: str) -> None:
        peer = self._rank(self.way, to_stage)
        flat = torch.cat([t.reshape(-1) for t in tensors]) if len(tensors) > 1 else tensors[0].contiguous()
        self._pending += self._timed(
            "comm_layer",
            f"send {what} -> stage {to_stage}",
            self.comm.exchange,
            {peer: flat},
            {},
            kind="layer",
            layer=self.lo,
            wait=False,
        )

    def _stage_recv(self, from_stage: int, shapes: list[tuple[int, int]], bubble: bool, what: str):
        """Receive a chunk's rows from a neighbouring stage. Waiting for the first chunk of a phase is the
        pipeline's fill bubble (the neighbour is still computing), so it is booked as ``bubble``."""
        peer = self._rank(self.way, from_stage)
        buf = torch.empty(sum(a * b for a, b in shapes), dtype=self.dtype, device=self.device)
        self._timed(
            "bubble" if bubble else "comm_layer",
            f"recv {what} <- stage {from_stage}",
            self.comm.exchange,
            {},
            {peer: buf},
            kind="layer",
            layer=self.lo,
        )
        out, off = [], 0
        for a, b in shapes:
            out.append(buf[off : off + a * b].view(a, b))
            off += a * b
        return out

    def _boundary_shapes(self, unit: _Unit, layer_index: int) -> list[tuple[int, int]]:
        """Shapes crossing the boundary before ``layer_index``: h rows (and h0 rows)."""
        width = self.dims.boundary_widths[layer_index - 1]
        shapes = [(unit.n, width)]
        if self.dims.h0_width:
            shapes.append((unit.n, self.dims.h0_width))
        return shapes

    # ------------------------------------------------------------------ one chunk, forward and backward
    def _forward(self, lay: _Layout, unit: _Unit, pos: int, pos_of: torch.Tensor, ctx: RowCtx, first_pos: bool):
        rec: dict = {"layers": []}
        tag = f"c{unit.index}"
        if self.first:
            with self._phase("compute", f"F {tag} encoder"):
                h_enc, h0_enc = self.model.encoder(self.x[unit.lo : unit.hi], ctx)
                rec["enc"] = h_enc
                h = h_enc.detach().requires_grad_(h_enc.requires_grad)
                h0 = h0_enc.detach().requires_grad_() if h0_enc is not None else None
        else:
            got = self._stage_recv(self.stage - 1, self._boundary_shapes(unit, self.lo), first_pos, f"act {tag}")
            h = got[0].clone().requires_grad_()
            h0 = got[1].clone().requires_grad_() if len(got) > 1 else None
        rec["h0"] = h0
        fresh = pos_of[unit.ext_unit] <= pos  # other ways' units at this position are fresh too
        for k, layer in enumerate(self.layers):
            with self._phase("compute", f"F {tag} L{self.lo + k} pre"):
                h_in = h if k == 0 else h.detach().requires_grad_()
                z, r = layer.pre(h_in, ctx)
                zd = z.detach()
                self.hist.write(k, slice(unit.lo, unit.hi), zd)
            for w2, rows in self._graph_exchange(lay, unit, self.lo + k, zd, forward=True).items():
                self.hist.write(k, lay.remotes[(w2, unit.index)].fwd_ids, rows)
            with self._phase("compute", f"F {tag} L{self.lo + k} agg+post"):
                e = self.hist.pull(k, unit.ext, fresh)
                m = (unit.a_in @ zd + unit.a_ext @ e).requires_grad_()
                r_leaf = r.detach().requires_grad_() if r is not None else None
                h = layer.post(m, r_leaf, h0, ctx)
                rec["layers"].append((h_in, z, r, r_leaf, m, h))
        if self.last:
            with self._phase("compute", f"F {tag} head+loss"):
                head_in = h.detach().requires_grad_()
                logits = self.model.head(head_in, ctx)
                rec["head_in"] = head_in
                rec["loss"] = chunk_loss(logits[unit.train], self.y[unit.lo : unit.hi][unit.train], self.num_train)
        else:
            self._stage_send(self.stage + 1, [h.detach()] + ([h0.detach()] if h0 is not None else []), f"act {tag}")
        return rec

    def _backward(self, lay: _Layout, unit: _Unit, pos: int, pos_of: torch.Tensor, rec: dict, first_pos: bool):
        scale = self.cfg.parallel.cross_chunk_grad_scale
        h0 = rec["h0"]
        tag = f"c{unit.index}"
        if self.last:
            with self._phase("compute", f"B {tag} head+loss"):
                rec["loss"].backward()
                g = rec["head_in"].grad
        else:
            got = self._stage_recv(self.stage + 1, self._boundary_shapes(unit, self.hi), first_pos, f"grad {tag}")
            g = got[0]
            if h0 is not None:
                h0.grad = got[1].clone()
        own_fresh = pos_of[unit.own_ext_unit] < pos
        for k in reversed(range(len(self.layers))):
            h_in, z, r, r_leaf, m, out = rec["layers"][k]
            with self._phase("compute", f"B {tag} L{self.lo + k} post"):
                torch.autograd.backward(out, g)
                gm = m.grad
            received = self._graph_exchange(lay, unit, self.lo + k, gm, forward=False)
            with self._phase("compute", f"B {tag} L{self.lo + k} agg+pre"):
                for w2, rows in received.items():  # other ways' reads of this way's rows at this position
                    rem = lay.remotes[(w2, unit.index)]
                    rpos = pos_of[rem.tgt_unit]
                    factor = torch.where(rpos == pos, 1.0, torch.where(rpos < pos, scale, 0.0))
                    factor = factor.to(device=self.device, dtype=self.dtype)
                    self.hist.push(k, rem.tgt, rem.r_op.t_matmul(rows) * factor[:, None])
                gz = unit.a_in.t_matmul(gm) + self.hist.pending(k, slice(unit.lo, unit.hi))
                if own_fresh.any():  # this way's earlier chunks read fresh: push their (scaled) gradient
                    ge = unit.a_own.t_matmul(gm)
                    self.hist.push(k, unit.own_ext[own_fresh], scale * ge[own_fresh])
                if r is not None:
                    torch.autograd.backward([z, r], [gz, r_leaf.grad])
                else:
                    torch.autograd.backward(z, gz)
                g = h_in.grad
        if self.first:
            h_enc = rec["enc"]
            if h_enc.requires_grad:
                with self._phase("compute", f"B {tag} encoder"):
                    torch.autograd.backward(h_enc, g if h0 is None else g + h0.grad)
        else:
            g0 = [h0.grad if h0.grad is not None else torch.zeros_like(h0)] if h0 is not None else []
            self._stage_send(self.stage - 1, [g] + g0, f"grad {tag}")

    # ------------------------------------------------------------------ epoch
    def train_epoch(self, epoch: int) -> EpochStats:
        p = self.cfg.parallel
        t_start = time.perf_counter()
        before = self.comm.sent_by_kind()
        self._t = dict.fromkeys(self._t, 0.0)
        tracing = self._trace_epochs > 0 and epoch >= self.cfg.train.warmup_epochs
        self.tracer.enabled = tracing
        if tracing:
            self._trace_epochs -= 1
        exact = epoch < p.warmup_exact_epochs
        lay = self.exact_layout() if exact else self.layout
        order = (
            [0]
            if exact
            else position_order(self.P, epoch=epoch, seed=self.cfg.train.seed, mode=p.chunk_order, costs=lay.costs)
        )
        pos_of = torch.empty(len(order), dtype=torch.int64, device=self.device)
        pos_of[torch.tensor(order, device=self.device)] = torch.arange(len(order), device=self.device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        recs: dict[int, dict] = {}
        losses = []
        for act in worker_schedule(order, stage=self.stage, num_stages=self.S):
            unit = lay.units[act.chunk]
            if act.op == "F":
                ctx = RowCtx(training=True, seed=self.cfg.train.seed, epoch=epoch, segments=unit.segments)
                recs[act.pos] = self._forward(lay, unit, act.pos, pos_of, ctx, first_pos=act.pos == 0)
                if self.last:
                    losses.append(recs[act.pos]["loss"].detach())
            elif act.op == "B":
                self._backward(lay, unit, act.pos, pos_of, recs.pop(act.pos), first_pos=act.pos == len(order) - 1)
            # send/recv actions are performed inside F and B, where the data is produced and consumed
        self._timed("comm_layer", "wait sends", self.comm.wait_all, self._pending)
        self._pending = []
        loss = torch.stack(losses).sum() if losses else torch.zeros((), dtype=self.dtype, device=self.device)
        loss = loss.reshape(1).to(torch.float64)
        # the first collective after the backward: waiting here for the slowest worker is the drain bubble
        self._timed(
            "bubble",
            "epoch end (drain)",
            self.comm.all_reduce_sum,
            loss,
            kind="control",
            group_ranks=list(range(self.world_size)),
        )
        self._sync_and_step()
        self.hist.end_epoch(epoch)
        after = self.comm.sent_by_kind()
        self.epoch_bytes = {k: after[k] - before[k] for k in TRAIN_KINDS}
        dt = time.perf_counter() - t_start
        stats = EpochStats(loss=float(loss), time=dt, breakdown=dict(self._t))
        return stats

    def _sync_and_step(self) -> None:
        grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in self.params]
        if self.W > 1:
            flat = torch.cat([gr.reshape(-1) for gr in grads])
            group = [self._rank(w, self.stage) for w in range(self.W)]
            self._timed(
                "weight_sync",
                "all-reduce weight grads",
                self.comm.all_reduce_sum,
                flat,
                kind="weight",
                group_ranks=group,
                group=self.comm.stage_group,
            )
            off = 0
            for q, gr in zip(self.params, grads, strict=True):
                q.grad = flat[off : off + gr.numel()].view_as(gr).clone()
                off += gr.numel()
        if self.record_grads:
            self.last_grads = {n: q.grad.detach().clone() for n, q in self.named_stage_parameters().items()}
        self.optimizer.step()

    # ------------------------------------------------------------------ evaluation and state
    def gather_model(self) -> None:
        """Bring every stage's current weights into rank 0's model (way 0 of each stage sends)."""
        for s in range(1, self.S):
            lo, hi = self.bounds[s]
            params = self.model.stage_parameters(lo, hi)
            src = self._rank(0, s)
            if self.comm.rank == src:
                flat = torch.cat([q.detach().reshape(-1) for q in params])
                self.comm.exchange({0: flat}, {}, kind="eval")
            elif self.is_logger:
                flat = torch.empty(sum(q.numel() for q in params), dtype=self.dtype, device=self.device)
                self.comm.exchange({}, {src: flat}, kind="eval")
                torch.nn.utils.vector_to_parameters(flat, params)

    @torch.no_grad()
    def evaluate(self) -> Accuracies:
        """Exact full-graph inference on rank 0 with all stages' weights; the result is shared with everyone."""
        self.gather_model()
        out = torch.zeros(3, dtype=torch.float64, device=self.device)
        if self.is_logger:
            self.model.eval()
            logits = self.model.forward_full(self.x, self.full_op, RowCtx(training=False))
            g = self.graph
            acc = accuracies(logits.cpu(), g.y, (g.train_mask, g.val_mask, g.test_mask))
            out = torch.tensor([acc.train, acc.val, acc.test], dtype=torch.float64, device=self.device)
        self.comm.all_reduce_sum(out, kind="eval", group_ranks=list(range(self.world_size)))
        return Accuracies(*out.tolist())

    def named_stage_parameters(self) -> dict[str, torch.nn.Parameter]:
        """This worker's parameters under their names in the whole model."""
        own = {id(q) for q in self.params}
        return {n: q for n, q in self.model.named_parameters() if id(q) in own}

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {str(i): q.detach().clone() for i, q in enumerate(self.params)}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, q in enumerate(self.params):
                q.copy_(state[str(i)])

    def comm_bytes_per_epoch(self) -> dict[str, dict[str, int]]:
        per_rank = self.comm.all_gather_object(self.epoch_bytes)
        measured = {k: int(round(sum(r[k] for r in per_rank))) for k in TRAIN_KINDS}
        return {"measured": measured, "analytic": self.analytic_bytes()}

    def analytic_bytes(self) -> dict[str, int]:
        from gnnpipe.profile.volumes import volume_of

        vol = volume_of(self.cfg, self.graph, self.plan, self.model)
        return {"layer": vol.layer, "graph": vol.graph, "weight": vol.weight}

    def peak_memory(self) -> list[int]:
        return [int(v) for v in self.comm.all_gather_object(peak_memory_bytes(self.device))]

    def gather(self, obj: object) -> list:
        return self.comm.all_gather_object(obj)

    def write_artifacts(self, run_dir) -> None:
        """With ``log.trace``: one Chrome/Perfetto trace of the recorded epochs, all workers, on rank 0."""
        if not self.cfg.log.trace:
            return
        events = self.comm.all_gather_object(self.tracer.events)
        if self.is_logger:
            topo = self.comm.topo
            names = [f"rank {r} (way {topo.coords(r)[0]}, stage {topo.coords(r)[1]})" for r in range(self.world_size)]
            write_chrome_trace(Path(run_dir) / "trace.json", events, names)

    def memory_report(self) -> dict[str, int]:
        """Bytes this stage holds for activations (Z), history (H, if separate) and gradient buffers (G)."""
        return self.hist.nbytes()

    def close(self) -> None:
        self.comm.close()
