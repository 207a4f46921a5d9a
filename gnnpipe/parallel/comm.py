"""The only module that calls ``torch.distributed``: process groups, counted transfers, timeouts, liveness.

Every byte an engine moves goes through :class:`Comm`, which counts it by (kind, layer, peer, direction).
Kinds: ``layer`` (stage to stage), ``graph`` (halo rows among ways of a stage), ``weight`` (gradient
all-reduce, counted as a ring all-reduce: 2(W-1)/W of the buffer per worker, sent to its ring successor in
the group), ``eval`` (evaluation) and ``control`` (setup checks, losses). Only layer/graph/weight are training
volume. Setup learns every rank's node (``node_of_rank``), so bytes also split by link: intra/inter-node.

A worker that fails, dies or is interrupted must not leave the others hanging (``parallel/liveness.py``): a
watchdog thread beats a heartbeat in the rendezvous store, reads the others' and the failure board, and takes
SIGINT/SIGTERM. A worker that fails publishes one line (:meth:`Comm.fail`) and tears down with no collective;
every other worker reads it within a heartbeat and exits. Communication errors and timeouts are turned into
:class:`CommError` naming the peer.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.liveness import EXIT_PEER, Watchdog, await_end, claim_end
from gnnpipe.parallel.nodes import LINKS, link_of, node_indices, node_key

__all__ = ["Comm", "CommError", "KINDS", "TRAIN_KINDS"]

KINDS = ("layer", "graph", "weight", "eval", "control")
TRAIN_KINDS = ("layer", "graph", "weight")
EXIT_PEER_LOST = EXIT_PEER


class CommError(RuntimeError):
    """A transfer failed or timed out; the message names the peer and what was being moved. ``exit_code``: 17
    (a peer is gone or stuck), 2 for a world that does not match the config, 1 for a group that cannot form."""

    def __init__(self, message: str, exit_code: int = EXIT_PEER):
        super().__init__(message)
        self.exit_code = exit_code


def _env_rank_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables, else from Open MPI's (mpirun)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "OMPI_COMM_WORLD_RANK" in env:
        rank, world = int(env["OMPI_COMM_WORLD_RANK"]), int(env["OMPI_COMM_WORLD_SIZE"])
        local = int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", 0))
        if "MASTER_ADDR" not in env:  # rank 0's host, shared through MPI
            import socket

            from mpi4py import MPI  # optional dependency: pip install gnnpipe[mpi]

            addr = MPI.COMM_WORLD.bcast(socket.gethostname() if rank == 0 else None, root=0)
            os.environ["MASTER_ADDR"] = addr
        os.environ.setdefault("MASTER_PORT", "29512")
        return rank, world, local
    return 0, 1, 0


_WATCHDOG: Watchdog | None = None


class Comm:
    """Counted, time-limited communication for one worker of a ``ways x stages`` grid."""

    def __init__(self, dims: ParallelDims, rank: int, device: torch.device, timeout_s: float = 120.0):
        self.dims, self.rank, self.device = dims, rank, device
        self.local_rank = 0  # rank within this host (set by init from the launcher)
        self.via_host = False  # gloo with CUDA tensors: stage transfers through host memory
        self.way, self.stage = dims.coords(rank)
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.bytes: dict[tuple[str, int, int, str], float] = defaultdict(float)
        self.watchdog: Watchdog | None = None
        self.failed = False  # set by fail(): teardown must not wait on anyone
        self.log: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None  # (kind, to, from) when recording
        # sub-groups: every rank must create every group, in the same order
        self.stage_group = self.way_group = None
        if dims.world_size > 1:
            for s in range(dims.stages):
                g = dist.new_group(dims.stage_ranks(s), timeout=self.timeout)
                if s == self.stage:
                    self.stage_group = g
            for w in range(dims.ways):
                g = dist.new_group(dims.way_ranks(w), timeout=self.timeout)
                if w == self.way:
                    self.way_group = g
        try:  # the node of every rank (DESIGN §4): bytes by link
            key = node_key(rank, dims.world_size)
        except ValueError as e:
            raise CommError(str(e), exit_code=2) from None
        self.node_of_rank = node_indices(self.all_gather_object(key))

    # ------------------------------------------------------------------ setup / teardown
    @classmethod
    def init(
        cls,
        dims: ParallelDims,
        *,
        device: str = "cpu",
        timeout_s: float = 120.0,
        heartbeat_s: float = 1.0,
        dead_after_s: float = 6.0,
        backend: str = "auto",
    ) -> Comm:
        """Join the process group from the launcher's environment; check the world matches the config.

        ``backend`` auto: NCCL on CUDA, gloo on CPU. gloo with CUDA tensors stages every transfer through host
        memory (so several workers may share one GPU, e.g. a one-GPU check of a multi-worker run)."""
        rank, world, local = _env_rank_world()
        if world != dims.world_size:
            raise CommError(
                f"launched with {world} worker(s) but parallel.ways * parallel.stages = {dims.ways} * {dims.stages}"
                f" = {dims.world_size}; start {dims.world_size} workers (./launch.sh does)",
                exit_code=2,
            )
        dev = torch.device(device)
        if dev.type == "cuda":
            dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
            torch.cuda.set_device(dev)
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        try:
            if world > 1 and not dist.is_initialized():
                timeout = datetime.timedelta(seconds=timeout_s)
                dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
            comm = cls(dims, rank, dev, timeout_s)
            comm.local_rank = local
            comm.via_host = dev.type == "cuda" and backend == "gloo"
            if world > 1:
                comm._start_watchdog(heartbeat_s, dead_after_s)
        except Exception as e:  # before the watchdog: every worker meets the same error here, none waits
            why = " ".join(f"{type(e).__name__}: {e}".split())[:600]
            raise CommError(f"rank {rank}: joining the {backend} group of {world} workers failed: {why}", 1) from None
        return comm

    def _start_watchdog(self, heartbeat_s: float, dead_after_s: float) -> None:
        global _WATCHDOG
        if _WATCHDOG is not None and _WATCHDOG.is_alive():  # one per process, shared by every Comm
            self.watchdog = _WATCHDOG
            return
        # torchrun's agent keeps its store across elastic restarts: each attempt gets its own keys
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"attempt{attempt}/", dist.distributed_c10d._get_default_store())
        store.set(f"gnnpipe/hb/{self.rank}", "0")
        dist.barrier()  # every heartbeat key exists before anyone watches
        hosts = self.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"  # else torchrun's
        wd = Watchdog(
            store, self.rank, self.dims.world_size, heartbeat_s, dead_after_s, describe=self.dims.describe,
            hosts_store=hosts,
        )  # fmt: skip
        wd.take_signals()  # SIGINT/SIGTERM end this worker within a heartbeat, even inside a transfer
        self.watchdog = _WATCHDOG = wd
        wd.start()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A step that may hold the GIL for long (METIS, preparing the dataset): this worker's heartbeat is
        marked busy, so the others do not take its silence for a hang (a peer that dies meanwhile still ends
        the others through the barrier that follows)."""
        wd = self.watchdog
        if wd is None:
            yield
            return
        wd.pause()
        try:
            yield
        finally:
            wd.resume()

    def close(self) -> None:
        """A clean end: a barrier (every worker got here), then the process group goes. After :meth:`fail`,
        nothing: a barrier would wait for peers that are themselves stuck waiting for this worker."""
        if self.failed:
            return
        if self.dims.world_size > 1 and dist.is_initialized():
            try:
                dist.barrier()
            finally:
                if self.watchdog is not None:
                    self.watchdog.finish()
                dist.destroy_process_group()

    def fail(self, line: str, code: int) -> tuple[str, int, bool]:
        """This worker failed (``line``: rank, phase, error): publish it, or learn that another worker failed
        first. Returns ``(line, exit code, root)`` to report: this worker's own (``root``), or the first
        failure's, with :data:`EXIT_PEER_LOST`. No collective; the caller reports and exits (the watchdog
        makes sure it does, within ``liveness.BACKSTOP_S``)."""
        self.failed = True
        if not claim_end("main", code):
            await_end(code)  # the watchdog is already ending this process (a peer's failure, a signal)
        wd = self.watchdog
        if wd is None or self.dims.world_size == 1:
            return line, code, True
        try:
            first = wd.board.publish(line)
            if first is None:
                wd.board.wait_read(1.5 * wd.interval + 0.2)  # a watchdog reads it within one interval
        except Exception:  # the store is gone (its host died): nobody to tell
            first = None
        self._abort_group()
        if first is None:
            return line, code, True
        return f"{self.dims.describe(self.rank)} stopped: {first}", EXIT_PEER_LOST, False

    @staticmethod
    def _abort_group() -> None:
        """Tear the process group down without a collective, without waiting on it: pending transfers to or
        from this worker fail at once on the peers instead of timing out."""

        def destroy() -> None:
            try:
                dist.destroy_process_group()
            except Exception:
                pass

        if dist.is_initialized():
            t = threading.Thread(target=destroy, daemon=True, name="gnnpipe-abort")
            t.start()
            t.join(timeout=1.0)

    # ------------------------------------------------------------------ counting
    def _count(self, kind: str, layer: int, peer: int, direction: str, nbytes: float) -> None:
        assert kind in KINDS, kind
        self.bytes[(kind, layer, peer, direction)] += nbytes

    def sent_by_link(self) -> dict[str, dict[str, float]]:
        """Bytes sent so far by kind and link: ``intra`` (to a peer on this node) or ``inter`` (DESIGN §4)."""
        out = {k: dict.fromkeys(LINKS, 0.0) for k in KINDS}
        for (kind, _l, peer, d), b in self.bytes.items():
            if d == "send":
                out[kind][link_of(self.node_of_rank, self.rank, peer)] += b
        return out

    def sent_by_kind(self) -> dict[str, float]:
        out = dict.fromkeys(KINDS, 0.0)
        for (kind, _l, _p, d), b in self.bytes.items():
            if d == "send":
                out[kind] += b
        return out

    # ------------------------------------------------------------------ point to point
    def _wait(self, work, what: str) -> None:
        try:
            ok = work.wait(self.timeout)
        except Exception as e:
            raise CommError(f"rank {self.rank}: {what} failed: {type(e).__name__}: {str(e)[:300]}") from None
        if ok is False:
            raise CommError(f"rank {self.rank}: {what} timed out after {self.timeout.total_seconds():.0f}s")

    def exchange(
        self,
        sends: dict[int, torch.Tensor | list[torch.Tensor]],
        recvs: dict[int, torch.Tensor | list[torch.Tensor]],
        *,
        kind: str,
        layer: int = -1,
        wait: bool = True,
    ) -> list:
        """Post all sends and receives (batched p2p, safe for NCCL and gloo); wait unless ``wait=False``.

        A peer may get a list of tensors (sent as separate messages, matched in order: no concatenated copy).
        Returns the pending works when not waiting (pass them to :meth:`wait_all`).
        """
        if self.log is not None:
            self.log.append((kind, tuple(sorted(sends)), tuple(sorted(recvs))))
        assert wait or not (recvs and self.via_host), "host-staged receives must wait (they copy back)"
        ops, peers, staged = [], [], []
        for direction, table, fn in (("send", sends, dist.isend), ("recv", recvs, dist.irecv)):
            for peer, ts in table.items():
                for t in ts if isinstance(ts, list) else [ts]:
                    self._count(kind, layer, peer, direction, t.numel() * t.element_size())
                    wire = t
                    if self.via_host:  # gloo moves host memory: a CPU copy out, or a CPU buffer to copy back
                        wire = t.cpu() if direction == "send" else torch.empty(t.shape, dtype=t.dtype)
                        staged.append((t, wire, direction))
                    ops.append(dist.P2POp(fn, wire, peer))
                    peers.append(f"{direction} {kind} {'to' if direction == 'send' else 'from'} rank {peer}")
        if not ops:
            return []
        try:  # one message (a stage transfer) needs no coalescing: post it directly, cheaper per message
            works = [ops[0].op(ops[0].tensor, ops[0].peer)] if len(ops) == 1 else dist.batch_isend_irecv(ops)
        except Exception as e:
            raise CommError(f"rank {self.rank}: posting {', '.join(peers)} failed: {e}") from None
        pending = [(w, what, staged) for w, what in zip(works, peers, strict=True)]  # staged: kept alive
        if wait:
            self.wait_all(pending)
            for t, wire, direction in staged:
                if direction == "recv":
                    t.copy_(wire)
            return []
        return pending

    def wait_all(self, pending: list) -> None:
        for work, what, _staged in pending:
            self._wait(work, what)

    # ------------------------------------------------------------------ collectives
    def all_reduce_sum(self, t: torch.Tensor, *, kind: str, group_ranks: list[int], group=None) -> None:
        """In-place sum over ``group_ranks``; counted as a ring all-reduce, 2(n-1)/n of the buffer per worker."""
        n = len(group_ranks)
        if self.log is not None:
            self.log.append((kind, tuple(group_ranks), tuple(group_ranks)))
        if n == 1:
            return
        succ = group_ranks[(group_ranks.index(self.rank) + 1) % n]  # the ring's link this worker's share takes
        self._count(kind, -1, succ, "send", 2.0 * (n - 1) / n * t.numel() * t.element_size())
        wire = t.cpu() if self.via_host else t
        try:
            work = dist.all_reduce(wire, group=group, async_op=True)
        except Exception as e:
            raise CommError(f"rank {self.rank}: {self._with_peers(group_ranks)} failed: {e}") from None
        self._wait(work, self._with_peers(group_ranks))
        if wire is not t:
            t.copy_(wire)

    def _with_peers(self, group_ranks: list[int]) -> str:
        """An all-reduce named by the peers it waits on (one of them failing is what ends it)."""
        return "all-reduce with " + ", ".join(f"rank {r}" for r in group_ranks if r != self.rank)

    def all_gather_object(self, obj: object) -> list:
        """Small Python objects from every worker (setup checks, counters): control traffic, not counted."""
        if self.dims.world_size == 1:
            return [obj]
        out: list = [None] * self.dims.world_size
        try:
            dist.all_gather_object(out, obj)
        except Exception as e:
            raise CommError(f"rank {self.rank}: all_gather_object failed: {e}") from None
        return out

    def check_same(self, what: str, value: object) -> None:
        """Raise on every worker if workers disagree on ``value`` (e.g. plan and shapes): never hang later."""
        values = self.all_gather_object(value)
        bad = [r for r, v in enumerate(values) if v != values[0]]
        if bad:
            raise CommError(
                f"workers disagree on {what}: rank 0 has {values[0]!r}, rank {bad[0]} has {values[bad[0]]!r}"
            )
