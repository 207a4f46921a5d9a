"""One chunk through one stage: the forward and backward actions of the schedule (DESIGN §3, §5).

Each method executes one :class:`~gnnpipe.parallel.schedule.Action` on the chunk's :class:`ChunkRecord`. Per
layer the forward is cut at the aggregation (``pre`` -> halo -> ``agg``), and so is the explicit backward
(``agg_b`` -> halo -> ``pre_b``), which makes the order DESIGN §3 requires visible: the gradient of ``m`` is
exchanged among the ways, other ways' and later readers' gradient (``GradInbox``) is added to the chunk's
own, then it goes back through ``pre``.

Memory (DESIGN §7): a layer keeps only what autograd saved plus handles; the storage of tensors autograd does
not need (``z``, ``m``, ``r``) is released as soon as the forward has used it. With ``recompute`` the
forward runs without autograd and keeps only the chunk's stage input and each layer's aggregation result
``m`` -- exactly what the forward read from its neighbours, fresh or historical -- and ``RECOMPUTE`` rebuilds
the layers from them before the backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from gnnpipe.models.deep import ModelDims, chunk_loss
from gnnpipe.models.ops import RowCtx
from gnnpipe.models.sparse import add_blocks
from gnnpipe.parallel.history import GradInbox, History
from gnnpipe.parallel.layout import Layout, Unit
from gnnpipe.parallel.schedule import Action
from gnnpipe.parallel.transfer import Clock, Transfers

__all__ = ["ChunkRecord", "LayerRecord", "StageModel", "ChunkSteps", "release"]


def release(t: torch.Tensor | None, *keep: torch.Tensor | None) -> None:
    """Free ``t``'s storage while keeping the tensor (autograd needs only its metadata and grad_fn), unless it
    shares storage with one of ``keep`` (e.g. dropout with p = 0 returns its input itself)."""
    if t is None or t.untyped_storage().size() == 0:
        return
    ptr = t.untyped_storage().data_ptr()
    if any(k is not None and k.untyped_storage().data_ptr() == ptr for k in keep):
        return
    t.untyped_storage().resize_(0)


@dataclass
class StageModel:
    """The modules of one stage: encoder on the first, head on the last, GNN layers ``[lo, hi)``."""

    encoder: nn.Module | None
    layers: list[nn.Module]
    head: nn.Module | None
    lo: int
    hi: int
    dims: ModelDims


@dataclass
class LayerRecord:
    """One layer of one chunk: the handles its explicit backward needs."""

    h_in: torch.Tensor  # leaf input (its .grad is the layer's input gradient)
    z: torch.Tensor | None = None  # aggregation input (storage released after aggregating)
    zd: torch.Tensor | None = None  # z detached (the rows aggregated; dropped after the aggregation)
    r: torch.Tensor | None = None  # row-wise term of post, graph-attached (storage released)
    r_leaf: torch.Tensor | None = None
    m: torch.Tensor | None = None  # aggregation result, leaf
    out: torch.Tensor | None = None
    received: dict[int, torch.Tensor] = field(default_factory=dict)  # halo rows of this step, by peer way


@dataclass
class ChunkRecord:
    """A chunk's state on this stage between its actions (forward at ``pos``, then backward)."""

    unit: Unit
    pos: int
    fresh: torch.Tensor  # [X] bool: ext rows read fresh (their chunk is at a position <= pos)
    ctx: RowCtx
    h: torch.Tensor | None = None  # current activation (forward) -- the stage input before layer lo
    h0: torch.Tensor | None = None  # GCNII initial residual (leaf)
    stage_in: torch.Tensor | None = None  # recompute: the stage input rows
    enc_out: torch.Tensor | None = None  # first stage: encoder output (graph-attached)
    layers: list[LayerRecord | None] = field(default_factory=list)
    # recompute, per layer: (rows, values) of the aggregation's stale part (read from history), nonzero rows only
    m_saved: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    head_in: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    reach: tuple[int, torch.Tensor | None] | None = None  # backward: see ChunkSteps._keep_for_readers
    g: torch.Tensor | None = None  # current gradient (backward)
    gm: torch.Tensor | None = None  # gradient of the current layer's m


class ChunkSteps:
    """The training actions of one worker. ``x``/``y`` hold only this way's rows (a unit's ``own`` slice)."""

    def __init__(
        self,
        model: StageModel,
        hist: History,
        inbox: GradInbox,
        transfers: Transfers,
        clock: Clock,
        *,
        x: torch.Tensor | None,
        y: torch.Tensor | None,
        num_train: int,
        scale: float,
        recompute: bool,
    ):
        self.m, self.hist, self.inbox, self.tx, self.clock = model, hist, inbox, transfers, clock
        self.x, self.y, self.num_train = x, y, num_train
        self.scale, self.recompute = scale, recompute
        self.stage = transfers.stage
        self.first, self.last = model.encoder is not None, model.head is not None
        self.layout: Layout | None = None  # set by the epoch loop (chunked or exact layout)
        self.pos_list: list[int] = []  # position of each unit this epoch (set by the epoch loop)

    def _k(self, a: Action) -> int:
        return a.layer - self.m.lo

    def _shapes(self, unit: Unit, layer_index: int) -> list[tuple[int, int]]:
        """Rows crossing the stage boundary before ``layer_index``: h (and h0)."""
        shapes = [(unit.n, self.m.dims.boundary_widths[layer_index - 1])]
        if self.m.dims.h0_width:
            shapes.append((unit.n, self.m.dims.h0_width))
        return shapes

    # ------------------------------------------------------------------ forward
    def encode(self, rec: ChunkRecord, a: Action) -> None:
        u = rec.unit
        with self.clock.phase("compute", f"F c{u.index} encoder"), torch.set_grad_enabled(not self.recompute):
            h, h0 = self.m.encoder(self.x[u.own], rec.ctx)
        rec.enc_out = h
        rec.h = h.detach().requires_grad_(h.requires_grad)
        rec.h0 = h0.detach().requires_grad_() if h0 is not None else None

    def recv_act(self, rec: ChunkRecord, a: Action) -> None:
        got = self.tx.recv_stage(
            self.stage - 1, self._shapes(rec.unit, self.m.lo), f"act c{rec.unit.index}",
            kind="layer", layer=self.m.lo, bubble=rec.pos == 0,
        )  # fmt: skip
        rec.h = got[0].requires_grad_()
        rec.h0 = got[1].requires_grad_() if len(got) > 1 else None
        if self.recompute:
            rec.stage_in = rec.h

    def pre(self, rec: ChunkRecord, a: Action) -> None:
        k, u = self._k(a), rec.unit
        with self.clock.phase("compute", f"F c{u.index} L{a.layer} pre"), torch.set_grad_enabled(not self.recompute):
            h_in = rec.h if k == 0 or self.recompute else rec.h.detach().requires_grad_()
            z, r = self.m.layers[k].pre(h_in, rec.ctx)
            lr = LayerRecord(h_in=h_in, z=z, zd=z.detach(), r=r)
            self.hist.push(k, u.store_slot, lr.zd[u.store_pos])
        rec.layers.append(lr)

    def halo(self, rec: ChunkRecord, a: Action) -> None:
        lr = rec.layers[self._k(a)]
        for w2, rows in self.tx.halo(self.layout, rec.unit, a.layer, lr.zd, forward=True).items():
            self.hist.push(self._k(a), self.layout.remotes[(w2, rec.unit.index)].fwd_hslot, rows)

    def agg(self, rec: ChunkRecord, a: Action) -> None:
        k, u = self._k(a), rec.unit
        lr = rec.layers[k]
        with (
            self.clock.phase("compute", f"F c{u.index} L{a.layer} agg+post"),
            torch.set_grad_enabled(not self.recompute),
        ):
            if self.recompute:
                m, m_stale = self._aggregate_split(k, rec, lr.zd)
                rows = (m_stale != 0).any(1).nonzero().flatten()  # rows whose stale part is not exactly 0
                rec.m_saved.append((rows, m_stale[rows].to(self.hist.dtype)))
                rec.h = self.m.layers[k].post(m, lr.r, rec.h0, rec.ctx)
                rec.layers[k] = None  # nothing else is kept (not even the layer's input: recompute rebuilds it)
                return
            if u.a_hist is not None:  # the history read in place (rows of chunks done this epoch are fresh)
                m = u.a_in @ lr.zd + u.a_hist @ self.hist.Z[k]
            else:
                m = u.a_in @ lr.zd + u.a_ext @ self.hist.pull(k, u.ext_hslot, rec.fresh)
            rec.h = self._post_with_grad(k, lr, m, rec)

    def _aggregate_split(
        self, k: int, rec: ChunkRecord, z: torch.Tensor, stale: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``m = A_in z + A_ext e_fresh + m_stale`` and ``m_stale = A_ext e_stale``, the part read from rows not
        yet computed this epoch (their history). With recompute the forward keeps only ``m_stale``'s nonzero
        rows (in the history's dtype: with a bfloat16 history the stale part is rounded as the history is, in
        the forward too); the rebuild passes them as ``stale`` and re-reads the fresh rows, which have not
        changed since (a row is stored once per epoch), so it computes the very same ``m``, bit for bit."""
        u = rec.unit
        e = self.hist.pull(k, u.ext_hslot, rec.fresh)
        e_fresh = torch.where(rec.fresh[:, None], e, 0)
        if stale is None:  # rounded as the history is stored (a no-op unless parallel.history_dtype is narrower)
            m_stale = (u.a_ext @ (e - e_fresh)).to(self.hist.dtype).to(e.dtype)
        else:
            m_stale = z.new_zeros(u.n, e.shape[1])
            m_stale[stale[0]] = stale[1].to(m_stale.dtype)
        return u.a_in @ z + u.a_ext @ e_fresh + m_stale, m_stale

    def _post_with_grad(self, k: int, lr: LayerRecord, m: torch.Tensor, rec: ChunkRecord) -> torch.Tensor:
        """``h' = post(m, r, h0)`` with ``m`` and ``r`` as leaves (the layer's explicit backward starts from their
        gradients); then the storage of ``z``, ``m`` and ``r``, which autograd does not keep, is released."""
        lr.m = m.requires_grad_()
        lr.r_leaf = lr.r.detach().requires_grad_() if lr.r is not None else None
        lr.out = self.m.layers[k].post(lr.m, lr.r_leaf, rec.h0, rec.ctx)
        lr.zd = None
        release(lr.z, lr.h_in, rec.h0)
        release(lr.m)
        release(lr.r, lr.h_in)
        return lr.out

    def _head_loss(self, rec: ChunkRecord, h: torch.Tensor) -> None:
        """The chunk's loss from its last layer's output ``h`` (``head_in`` is the leaf its backward starts at)."""
        u = rec.unit
        rec.head_in = h.detach().requires_grad_()
        y = self.y[u.own]
        rec.loss = chunk_loss(self.m.head(rec.head_in, rec.ctx)[u.train], y[u.train], self.num_train)

    def loss(self, rec: ChunkRecord, a: Action) -> None:
        with (
            self.clock.phase("compute", f"F c{rec.unit.index} head+loss"),
            torch.set_grad_enabled(not self.recompute),
        ):
            self._head_loss(rec, rec.h)
        if self.recompute:
            rec.head_in = None

    def send_act(self, rec: ChunkRecord, a: Action) -> None:
        out = [rec.h.detach()] + ([rec.h0.detach()] if rec.h0 is not None else [])
        self.tx.send_stage(self.stage + 1, out, f"act c{rec.unit.index}", kind="layer", layer=self.m.lo)
        if self.recompute:
            rec.h = None

    # ------------------------------------------------------------------ backward
    def recv_grad(self, rec: ChunkRecord, a: Action) -> None:
        got = self.tx.recv_stage(
            self.stage + 1, self._shapes(rec.unit, self.m.hi), f"grad c{rec.unit.index}",
            kind="layer", layer=self.m.lo, bubble=rec.pos == self.tx_positions - 1,
        )  # fmt: skip
        rec.g = got[0]
        if rec.h0 is not None:
            rec.h0.grad = got[1]

    def recompute_chunk(self, rec: ChunkRecord, a: Action) -> None:
        """Rebuild the chunk's forward with autograd from the saved input, the fresh rows (unchanged since the
        forward) and the saved stale part of each aggregation, so the backward sees the very same values."""
        u = rec.unit
        with self.clock.phase("compute", f"R c{u.index} recompute"):
            if self.first:  # rec.h0 stays: the same values, and it holds the gradient later stages sent for it
                rec.enc_out, _ = self.m.encoder(self.x[u.own], rec.ctx)
                h = rec.enc_out.detach().requires_grad_(rec.enc_out.requires_grad)
            else:
                h = rec.stage_in
            rec.layers = []
            for k, layer in enumerate(self.m.layers):
                h_in = h if k == 0 else h.detach().requires_grad_()
                z, r = layer.pre(h_in, rec.ctx)
                lr = LayerRecord(h_in=h_in, z=z, r=r)
                with torch.no_grad():
                    m = self._aggregate_split(k, rec, z.detach(), stale=rec.m_saved[k])[0]
                rec.m_saved[k] = None
                h = self._post_with_grad(k, lr, m, rec)
                rec.layers.append(lr)
            rec.m_saved = []
            if self.last:
                self._head_loss(rec, h)

    def loss_b(self, rec: ChunkRecord, a: Action) -> None:
        with self.clock.phase("compute", f"B c{rec.unit.index} head+loss"):
            rec.loss.backward()
            rec.g = rec.head_in.grad
        rec.loss = rec.head_in = None

    def agg_b(self, rec: ChunkRecord, a: Action) -> None:
        lr = rec.layers[self._k(a)]
        with self.clock.phase("compute", f"B c{rec.unit.index} L{a.layer} post"):
            torch.autograd.backward(lr.out, rec.g)
            rec.gm = lr.m.grad
        lr.out = lr.m = None

    def halo_b(self, rec: ChunkRecord, a: Action) -> None:
        rec.layers[self._k(a)].received = self.tx.halo(self.layout, rec.unit, a.layer, rec.gm, forward=False)

    def pre_b(self, rec: ChunkRecord, a: Action) -> None:
        """The aggregation's backward into ``z``: the chunk's own gradient plus what its fresh readers sent -- other
        ways' readers at this position now, earlier ones through the inbox, and this way's later chunks (whose
        ``g(m)`` the inbox kept) block by block, scaled -- then back through ``pre``."""
        k, u = self._k(a), rec.unit
        lr, gm, units, inbox = rec.layers[k], rec.gm, self.layout.units, self.inbox
        pos, scale = self.pos_list, self.scale
        with self.clock.phase("compute", f"B c{u.index} L{a.layer} agg+pre"):
            gz = u.a_in.t_matmul(gm)
            for w2, rows in lr.received.items():  # other ways' reads of this way's rows at this position
                rem = self.layout.remotes[(w2, u.index)]
                g = rem.r_op.t_matmul(rows)
                for t, s, e in rem.tgt_ranges:  # later chunks' backward is done: their share is dropped
                    if t == u.index:
                        gz.index_add_(0, rem.tgt[s:e] - u.lo, g[s:e])
                    elif pos[t] < rec.pos:
                        inbox.post(k, t, rem.tgt[s:e] - units[t].lo, scale * g[s:e])
            for rows, values in inbox.take(k, u.index):
                gz.index_add_(0, rows, values)
            # this way's chunks that read u fresh (after it) have run their backward: their blocks, in one call
            pulls = [(units[c].a_ext, s, e, *inbox.use(k, c), rows) for c, s, e, rows in u.readers if pos[c] > rec.pos]
            add_blocks(gz, pulls, scale)
            self._keep_for_readers(rec, k, gm)
            if lr.r is not None:
                torch.autograd.backward([lr.z, lr.r], [gz, lr.r_leaf.grad])
            else:
                torch.autograd.backward(lr.z, gz)
            rec.g = lr.h_in.grad
        rec.gm = None
        rec.layers[k] = None  # this layer is done: drop its handles

    def _keep_for_readers(self, rec: ChunkRecord, k: int, gm: torch.Tensor) -> None:
        """Keep the rows of ``gm`` that read own units still to run their backward (read fresh: earlier
        positions). Which rows those are is the same for every layer: worked out at the chunk's first ``pre_b``."""
        u = rec.unit
        if rec.reach is None:
            waiting = [(s, e) for t, s, e in u.targets if self.pos_list[t] < rec.pos]
            rows = self.inbox.reaching_rows(u.index, u.a_ext, u.n, waiting, gm) if waiting else None
            rec.reach = (len(waiting), rows)
        uses, rows = rec.reach
        if uses:
            kept = gm if rows is None else torch.cat([gm[rows], gm.new_zeros(1, gm.shape[1])])
            self.inbox.keep(k, u.index, kept, uses)

    def encode_b(self, rec: ChunkRecord, a: Action) -> None:
        if rec.enc_out.requires_grad:
            with self.clock.phase("compute", f"B c{rec.unit.index} encoder"):
                g = rec.g if rec.h0 is None else rec.g + rec.h0.grad
                torch.autograd.backward(rec.enc_out, g)

    def send_grad(self, rec: ChunkRecord, a: Action) -> None:
        g0 = []
        if rec.h0 is not None:
            g0 = [rec.h0.grad if rec.h0.grad is not None else torch.zeros_like(rec.h0)]
        self.tx.send_stage(self.stage - 1, [rec.g] + g0, f"grad c{rec.unit.index}", kind="layer", layer=self.m.lo)
