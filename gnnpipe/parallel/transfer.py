"""A worker's transfers, timed: stage-to-stage rows and halo exchanges among the ways of a stage (DESIGN §4).

Every transfer goes through :class:`~gnnpipe.parallel.comm.Comm` (which counts the bytes); this module adds
what an engine needs around it: which rank a (way, stage) is, receive buffers of the right shapes, timing
into the epoch breakdown and the trace, and non-blocking sends that are retired as soon as the next send
goes out, so at most one send per direction holds its buffer alive.

``parallel.compress`` (``parallel/codec.py``) is applied here and nowhere else: :meth:`Transfers._encode` is
the one place a training message (kind ``layer`` or ``graph``) is compressed before ``comm.py`` sends and
counts it, :meth:`Transfers._decode` the one place a received one is expanded. Evaluation (kind ``eval``) is
never compressed: it is exact.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from gnnpipe.parallel import codec
from gnnpipe.parallel.comm import Comm
from gnnpipe.parallel.layout import Layout, Unit
from gnnpipe.profile.trace import Tracer
from gnnpipe.train.executor import BREAKDOWN_KEYS

__all__ = ["Clock", "Transfers", "COMPRESSED_KINDS"]

COMPRESSED_KINDS = ("layer", "graph")  # training traffic; eval stays exact


def _one_message(wires: list[torch.Tensor]) -> bool:
    """Whether a stage transfer's wire tensors go as one flat message: several of one dtype. Sender and receiver
    decide alike (the same shapes and codec give the same wire dtypes)."""
    return len(wires) > 1 and len({w.dtype for w in wires}) == 1


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

    def __init__(self, comm: Comm, clock: Clock, dtype: torch.dtype, *, compress: str = "none", seed: int = 0):
        self.comm, self.clock, self.dtype = comm, clock, dtype
        self.compress, self.seed = compress, seed
        self.epoch, self._messages = 0, 0  # int8's rounding noise is keyed by (seed, epoch, rank, message)
        self.dims = comm.dims
        self.way, self.stage = comm.way, comm.stage
        self._pending: dict[int, list] = {}  # peer -> works of the last non-blocking send to it
        self._pending_bytes: dict[int, int] = {}
        self.max_in_flight = 0  # largest bytes of send + receive buffers alive at once (memory report)

    def begin_epoch(self, epoch: int) -> None:
        """Restart the message counter: an epoch's int8 rounding depends only on (seed, epoch, rank, message)."""
        self.epoch, self._messages = epoch, 0

    def _codec(self, kind: str) -> str:
        return self.compress if kind in COMPRESSED_KINDS else "none"

    def _encode(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        """The one place a message is compressed: ``t: [R, d]`` -> what comm.py sends (and counts)."""
        how = self._codec(kind)
        if how == "none":
            return t.contiguous()
        gen = None
        if how == "int8":
            gen = torch.Generator(device=t.device)
            gen.manual_seed(codec.message_seed(self.seed, self.epoch, self.comm.rank, self._messages))
            self._messages += 1
        return codec.encode(t.contiguous(), how, gen)

    def _decode(self, wire: torch.Tensor, shape: tuple[int, int], kind: str) -> torch.Tensor:
        """The one place a received message is expanded back to ``[R, d]`` of the model's dtype."""
        return codec.decode(wire, shape, self._codec(kind), self.dtype)

    def _wire(self, shape: tuple[int, int], kind: str) -> torch.Tensor:
        return codec.wire_buffer(shape, self._codec(kind), self.dtype, self.comm.device)

    def _in_flight(self, extra: int) -> None:
        self.max_in_flight = max(self.max_in_flight, sum(self._pending_bytes.values()) + extra)

    def send_stage(self, to_stage: int, tensors: list[torch.Tensor], what: str, *, kind: str, layer: int) -> None:
        """Post rows to the same way's ``to_stage``; the previous send to it is retired first."""
        peer = self.dims.rank(self.way, to_stage)
        with self.clock.phase("comm_layer", f"send {what} -> stage {to_stage}"):
            self.comm.wait_all(self._pending.pop(peer, []))
            wires = [self._encode(t, kind) for t in tensors]
            if _one_message(wires):  # h with GCNII's h0
                wires = [torch.cat([w.reshape(-1) for w in wires])]
            self._pending_bytes[peer] = sum(t.numel() * t.element_size() for t in wires)
            self._in_flight(0)
            self._pending[peer] = self.comm.exchange({peer: wires}, {}, kind=kind, layer=layer, wait=False)

    def recv_stage(
        self, from_stage: int, shapes: list[tuple[int, int]], what: str, *, kind: str, layer: int, bubble: bool = False
    ) -> list[torch.Tensor]:
        """Rows of the given shapes from the same way's ``from_stage``. Waiting for the first chunk of a phase
        is the pipeline's fill bubble (the neighbour is still computing), so it is booked as ``bubble``."""
        peer = self.dims.rank(self.way, from_stage)
        bufs = [self._wire(shape, kind) for shape in shapes]
        wire = bufs
        if _one_message(bufs):  # sent as one message (send_stage): views of it
            flat = bufs[0].new_empty(sum(b.numel() for b in bufs))
            bufs = [v.view(b.shape) for v, b in zip(flat.split([b.numel() for b in bufs]), bufs, strict=True)]
            wire = [flat]
        self._in_flight(sum(b.numel() * b.element_size() for b in bufs))
        with self.clock.phase("bubble" if bubble else "comm_layer", f"recv {what} <- stage {from_stage}"):
            self.comm.exchange({}, {peer: wire}, kind=kind, layer=layer)
        return [self._decode(b, shape, kind) for b, shape in zip(bufs, shapes, strict=True)]

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
        sends, recvs, shapes = {}, {}, {}
        width = rows.shape[1]
        for w2 in range(self.dims.ways):
            if w2 == self.way:
                continue
            idx = unit.send_fwd[w2] if forward else unit.send_bwd[w2]
            rem = lay.remotes[(w2, unit.index)]
            n = (rem.fwd_ids if forward else rem.bwd_ids).numel()
            peer = self.dims.rank(w2, self.stage)
            shapes[w2] = (peer, n)
            sends[peer] = self._encode(rows[idx], kind)
            recvs[peer] = self._wire((n, width), kind)
        with self.clock.phase("comm_graph", f"graph {'fwd' if forward else 'bwd'} L{layer}"):
            self.comm.exchange(sends, recvs, kind=kind, layer=layer)
        return {w2: self._decode(recvs[peer], (rem_n, width), kind) for w2, (peer, rem_n) in shapes.items()}
