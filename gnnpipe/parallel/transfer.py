"""A worker's transfers, timed: stage-to-stage rows and halo exchanges among the ways of a stage (DESIGN §4).

Every transfer goes through :class:`~gnnpipe.parallel.comm.Comm` (which counts the bytes); this module adds
what an engine needs around it: which rank a (way, stage) is, receive buffers of the right shapes, timing
into the epoch breakdown and the trace, and non-blocking sends that are retired as soon as the next send
goes out, so at most one send per direction holds its buffer alive.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from gnnpipe.parallel.comm import Comm
from gnnpipe.parallel.layout import Layout, Unit
from gnnpipe.profile.trace import Tracer
from gnnpipe.train.executor import BREAKDOWN_KEYS

__all__ = ["Clock", "Transfers"]


class Clock:
    """Seconds per breakdown key of the current epoch, and (when enabled) trace spans."""

    def __init__(self, rank: int):
        self.t = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
        self.tracer = Tracer(rank, enabled=False)

    def reset(self) -> None:
        self.t = dict.fromkeys(BREAKDOWN_KEYS, 0.0)

    @contextmanager
    def phase(self, key: str, name: str):
        t0 = time.perf_counter()
        with self.tracer.span(name, "compute" if key == "compute" else "comm"):
            yield
        self.t[key] += time.perf_counter() - t0


class Transfers:
    """Stage and halo transfers of worker (way, stage)."""

    def __init__(self, comm: Comm, clock: Clock, dtype: torch.dtype):
        self.comm, self.clock, self.dtype = comm, clock, dtype
        self.dims = comm.dims
        self.way, self.stage = comm.way, comm.stage
        self._pending: dict[int, list] = {}  # peer -> works of the last non-blocking send to it
        self._pending_bytes: dict[int, int] = {}
        self.max_in_flight = 0  # largest bytes of send + receive buffers alive at once (memory report)

    def _in_flight(self, extra: int) -> None:
        self.max_in_flight = max(self.max_in_flight, sum(self._pending_bytes.values()) + extra)

    def send_stage(self, to_stage: int, tensors: list[torch.Tensor], what: str, *, kind: str, layer: int) -> None:
        """Post rows to the same way's ``to_stage``; the previous send to it is retired first."""
        peer = self.dims.rank(self.way, to_stage)
        with self.clock.phase("comm_layer", f"send {what} -> stage {to_stage}"):
            self.comm.wait_all(self._pending.pop(peer, []))
            self._pending_bytes[peer] = sum(t.numel() * t.element_size() for t in tensors)
            self._in_flight(0)
            self._pending[peer] = self.comm.exchange(
                {peer: [t.contiguous() for t in tensors]}, {}, kind=kind, layer=layer, wait=False
            )

    def recv_stage(
        self, from_stage: int, shapes: list[tuple[int, int]], what: str, *, kind: str, layer: int, bubble: bool = False
    ) -> list[torch.Tensor]:
        """Rows of the given shapes from the same way's ``from_stage``. Waiting for the first chunk of a phase
        is the pipeline's fill bubble (the neighbour is still computing), so it is booked as ``bubble``."""
        peer = self.dims.rank(self.way, from_stage)
        bufs = [torch.empty(a, b, dtype=self.dtype, device=self.comm.device) for a, b in shapes]
        self._in_flight(sum(a * b for a, b in shapes) * bufs[0].element_size())
        with self.clock.phase("bubble" if bubble else "comm_layer", f"recv {what} <- stage {from_stage}"):
            self.comm.exchange({}, {peer: bufs}, kind=kind, layer=layer)
        return bufs

    def finish_sends(self) -> None:
        with self.clock.phase("comm_layer", "wait sends"):
            for works in self._pending.values():
                self.comm.wait_all(works)
        self._pending.clear()
        self._pending_bytes.clear()

    def halo(
        self, lay: Layout, unit: Unit, layer: int, rows: torch.Tensor, *, forward: bool, kind: str = "graph"
    ) -> dict[int, torch.Tensor]:
        """Send ``rows``' halo rows (z forward, grad(m) backward) of ``unit`` to the other ways of this stage;
        return what each of them sent for its unit of the same index, by peer way."""
        if self.dims.ways == 1:
            return {}
        sends, recvs = {}, {}
        width = rows.shape[1]
        for w2 in range(self.dims.ways):
            if w2 == self.way:
                continue
            idx = unit.send_fwd[w2] if forward else unit.send_bwd[w2]
            rem = lay.remotes[(w2, unit.index)]
            n = (rem.fwd_ids if forward else rem.bwd_ids).numel()
            peer = self.dims.rank(w2, self.stage)
            sends[peer] = rows[idx].contiguous()
            recvs[peer] = torch.empty(n, width, dtype=rows.dtype, device=rows.device)
        with self.clock.phase("comm_graph", f"graph {'fwd' if forward else 'bwd'} L{layer}"):
            self.comm.exchange(sends, recvs, kind=kind, layer=layer)
        return {w2: recvs[self.dims.rank(w2, self.stage)] for w2 in range(self.dims.ways) if w2 != self.way}
