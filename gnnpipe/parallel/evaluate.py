"""Exact full-graph evaluation through the stages (DESIGN §3, §7): no worker holds more than its own layers.

Each stage evaluates its layers for all of its way's rows, layer by layer: every unit's ``z`` of a layer is
computed (and its halo rows exchanged with the other ways) before any unit aggregates, so every read is
fresh -- the single-device forward, chunk by chunk. The stage receives its input rows from the previous
stage unit by unit and sends its output on the same way; the last stage scores its rows and every worker
gets the summed counts. Memory: the way's rows of ``h`` (and ``h0``, ``r``) plus one ``[N, d]`` buffer of the
current layer's ``z``; ``h`` is dropped once every unit's ``z`` exists and the next layer's ``h`` takes its place.
All of it is allocated for the evaluation and freed after it.
"""

from __future__ import annotations

import torch

from gnnpipe.models.ops import RowCtx
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.layout import Layout
from gnnpipe.parallel.schedule import Action, eval_schedule
from gnnpipe.parallel.transfer import Transfers
from gnnpipe.train.metrics import Accuracies, from_counts, score_counts

__all__ = ["Evaluator"]


class Evaluator:
    def __init__(
        self,
        model,
        transfers: Transfers,
        layout: Layout,
        *,
        x: torch.Tensor | None,
        y: torch.Tensor | None,
        masks: tuple[torch.Tensor, ...] | None,
    ):
        self.m, self.tx, self.layout = model, transfers, layout
        self.x, self.y, self.masks = x, y, masks
        self.ctx = RowCtx(training=False)
        self._peak_buffers = 0

    def buffer_bytes(self) -> int:
        """Largest bytes of evaluation buffers held at once (reported in the memory section)."""
        return self._peak_buffers

    def run(self, dims: ParallelDims, executed: list[Action] | None = None) -> Accuracies:
        """Run this worker's :func:`eval_schedule`; collective."""
        units = self.layout.units
        n_way = self.layout.rows
        d = self.m.dims
        stage = self.tx.stage
        width_in = d.boundary_widths[self.m.lo - 1] if self.m.lo > 0 else None
        self.h = torch.empty(n_way, width_in, dtype=self.tx.dtype, device=self.tx.comm.device) if width_in else None
        self.h0 = (
            torch.empty(n_way, d.h0_width, dtype=self.tx.dtype, device=self.tx.comm.device) if d.h0_width else None
        )
        self.h_next = self.z = self.r = None
        self.counts = torch.zeros(3, 3, dtype=torch.float64)
        for act in eval_schedule(len(units), dims=dims, stage=stage):
            getattr(self, act.op.value)(act)
            if executed is not None:
                executed.append(act)
        self.h = self.h0 = self.h_next = self.z = self.r = None
        return from_counts(self.counts)

    def _track(self) -> None:
        held = sum(
            t.numel() * t.element_size() for t in (self.h, self.h0, self.h_next, self.z, self.r) if t is not None
        )
        self._peak_buffers = max(self._peak_buffers, held)

    def _advance(self, act: Action) -> None:
        """At the first unit of a layer (or of the output): the previous layer's output becomes the input."""
        if act.chunk == 0 and self.h_next is not None:
            self.h, self.h_next = self.h_next, None

    # ------------------------------------------------------------------ input
    def eval_encode(self, act: Action) -> None:
        u = self.layout.units[act.chunk]
        h, h0 = self.m.encoder(self.x[u.own], self.ctx)
        if self.h is None:
            self.h = torch.empty(self.x.shape[0], h.shape[1], dtype=h.dtype, device=h.device)
        self.h[u.own] = h
        if h0 is not None:
            self.h0[u.own] = h0

    def eval_recv(self, act: Action) -> None:
        u = self.layout.units[act.chunk]
        shapes = [(u.n, self.h.shape[1])] + ([(u.n, self.h0.shape[1])] if self.h0 is not None else [])
        got = self.tx.recv_stage(self.tx.stage - 1, shapes, f"eval c{u.index}", kind="eval", layer=self.m.lo)
        self.h[u.own] = got[0]
        if self.h0 is not None:
            self.h0[u.own] = got[1]

    # ------------------------------------------------------------------ layers
    def eval_pre(self, act: Action) -> None:
        self._advance(act)
        k, u = act.layer - self.m.lo, self.layout.units[act.chunk]
        layer = self.m.layers[k]
        z, r = layer.pre(self.h[u.own], self.ctx)
        if act.chunk == 0:  # this layer's buffers (h_next only once h is no longer needed, at the first agg)
            self.z = torch.zeros(self.layout.num_slots, z.shape[1], dtype=z.dtype, device=z.device)
            self.r = torch.empty(self.h.shape[0], r.shape[1], dtype=r.dtype, device=r.device) if r is not None else None
            self._track()
        self.z[u.own] = z
        if r is not None:
            self.r[u.own] = r

    def eval_halo(self, act: Action) -> None:
        u = self.layout.units[act.chunk]
        got = self.tx.halo(self.layout, u, act.layer, self.z[u.own], forward=True, kind="eval")
        for w2, rows in got.items():
            self.z[self.layout.remotes[(w2, u.index)].fwd_slot] = rows

    def eval_agg(self, act: Action) -> None:
        k, u = act.layer - self.m.lo, self.layout.units[act.chunk]
        if self.h_next is None:  # every unit's z of this layer exists: h has served, its memory goes to h_next
            rows, dtype = self.h.shape[0], self.z.dtype
            self.h = None
            self.h_next = torch.empty(rows, self.m.layers[k].out_width, dtype=dtype, device=self.z.device)
            self._track()
        m = u.a_in @ self.z[u.own] + u.a_ext @ self.z[u.ext_slot]
        rows = u.own
        r = self.r[rows] if self.r is not None else None
        h0 = self.h0[rows] if self.h0 is not None else None
        self.h_next[rows] = self.m.layers[k].post(m, r, h0, self.ctx)

    # ------------------------------------------------------------------ output
    def eval_send(self, act: Action) -> None:
        self._advance(act)
        self.z = self.r = None
        u = self.layout.units[act.chunk]
        out = [self.h[u.own]] + ([self.h0[u.own]] if self.h0 is not None else [])
        self.tx.send_stage(self.tx.stage + 1, out, f"eval c{u.index}", kind="eval", layer=self.m.lo)

    def eval_head(self, act: Action) -> None:
        self._advance(act)
        self.z = self.r = None
        u = self.layout.units[act.chunk]
        rows = u.own
        logits = self.m.head(self.h[rows], self.ctx)
        self.counts += score_counts(logits.cpu(), self.y[rows].cpu(), tuple(m[rows].cpu() for m in self.masks))

    def eval_reduce(self, act: Action) -> None:
        self.tx.finish_sends()
        out = self.counts.to(self.tx.comm.device)
        self.tx.comm.all_reduce_sum(out, kind="eval", group_ranks=list(range(self.tx.dims.world_size)))
        self.counts = out.cpu()
