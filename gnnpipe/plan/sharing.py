"""What ``N`` workers sharing this machine cost beyond their one-worker compute (DESIGN §10): a short probe.

The one-worker calibration sees neither messages nor neighbours. This probe starts the ``N`` workers a run
will start (at the threads each gets) and measures, through ``Comm`` as the engine uses it:

* ``compute_factor``: main-thread CPU seconds of a fixed aggregation-like block (gather, matmul, scatter-add
  on ``[rows, width]``, a worker's share of the graph) while all ``N`` compute at once, over the same block
  computed alone (the others wait).
  Cache and memory-bandwidth sharing, and the cache refills after context switches when ``N`` > cores, slow
  every action; the one-worker calibration cannot see it.
* ``msg_cpu``: CPU seconds of the process (main thread and gloo's threads) per message end (a send or a
  receive), as ``a + per_byte * bytes``: packing the rows (``index_select``), posting, gloo's socket work,
  waking up, unpacking. Rounds of block + ring exchange (send to the next rank, receive from the previous);
  the process CPU of a round less the block's main-thread CPU, over the round's two message ends.
* ``allreduce``: wall seconds of an all-reduce of all ``N`` after they meet (``a + per_byte * bytes``, at two
  sizes): the weight all-reduce's cost on this machine.
* ``one_way_s`` and ``exchange_s``: ranks 0 and 1 send each other 64 KiB, each round after 2 ms of compute
  (as the engine's messages come between steps), while the others wait: the mean one-way time of a round trip
  (stage messages) and the mean wall time of an exchange, both sending at once (halo exchanges). Both hold
  the two message ends' CPU. After compute they take longer than an idle ping-pong: here 0.5 ms one way and
  1.6 ms an exchange, against 0.1 and 0.25 ms back to back.
* ``wake_s``: the one-way rounds again while the others compute without pause; the mean grows by what a
  worker blocked on a message waits for a core once the message is there, when every core is busy (the
  scheduler's time slice: about 3 ms here). With ``N`` no larger than the cores it stays near 0.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from gnnpipe.plan.costs import Fit, Sharing

__all__ = ["probe_sharing"]

_MSG_BYTES = (4 * 64, 64 * 1024, 512 * 1024)  # a few rows, a Cora chunk's halo, a large stage message
_AR_BYTES = (8, 1 << 20)
_PAIR_BYTES = 64 * 1024  # the pair's messages: a Cora chunk's halo or stage message
_GAP_S = 2e-3  # compute before each ping-pong round: long enough that a woken worker does not preempt at once


def _block(x, w, idx, out):
    """An aggregation-like step: ``out[idx] += x[idx] @ w`` (x: [rows, width])."""
    out.index_add_(0, idx, x.index_select(0, idx) @ w)


def _sharing_worker(world: int, rows: int, width: int, reps: int) -> dict:
    import torch
    import torch.distributed as dist

    from gnnpipe.parallel.comm import Comm
    from gnnpipe.parallel.dims import ParallelDims

    comm = Comm.init(ParallelDims(world, 1, world, (1,)), timeout_s=60.0)
    me, ranks = comm.rank, list(range(world))
    g = torch.Generator().manual_seed(me)
    x, w = torch.randn(rows, width, generator=g), torch.randn(width, width, generator=g)
    idx, out = torch.randint(0, rows, (4 * rows,), generator=g), torch.zeros(rows, width)
    small = idx[: 4 * min(rows, 2048)] % min(rows, 2048)  # the message rounds' block: a small chunk's step

    def sync() -> None:
        comm.all_reduce_sum(torch.zeros(1), kind="control", group_ranks=ranks)

    def blocks(n: int) -> float:
        c0 = time.thread_time()
        for _ in range(n):
            _block(x, w, idx, out)
        return (time.thread_time() - c0) / n

    n_blocks = int(min(max(0.25 / max(blocks(2), 1e-6), 3), reps))  # about 0.25 s of blocks per measurement
    n_blocks = int(comm.all_gather_object(n_blocks)[0])
    alone = []
    for r in ranks:  # each alone in turn while the others wait
        sync()
        if r == me:
            alone.append(blocks(n_blocks))
        sync()
    together = blocks(n_blocks)
    msg: dict[int, float] = {}
    nxt, prv = (me + 1) % world, (me - 1) % world
    for nbytes in _MSG_BYTES:
        n = max(nbytes // (4 * width), 1)
        sel, buf = torch.arange(n) % rows, torch.empty(n, width)
        sync()
        p0, busy = time.process_time(), 0.0
        for _ in range(reps):
            c0 = time.thread_time()
            _block(x, w, small, out)
            busy += time.thread_time() - c0
            comm.exchange({nxt: x.index_select(0, sel)}, {prv: buf}, kind="control")
            out[sel] += buf  # unpacking into the rows that use it
        msg[n * 4 * width] = (time.process_time() - p0 - busy) / reps / 2
    pair = (comm, me, world, x, w, small, out)
    exchange = _ping_pong(*pair, seconds=0.5, others_compute=False, both=True)
    one_way = _ping_pong(*pair, seconds=0.5, others_compute=False, both=False)
    busy = _ping_pong(*pair, seconds=0.5, others_compute=True, both=False)
    ar: dict[int, float] = {}
    for nbytes in _AR_BYTES:
        t = torch.zeros(max(nbytes // 4, 1))
        walls = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            walls.append(time.perf_counter() - t0)
        ar[t.numel() * 4] = statistics.median(walls)
    comm.close()
    return {
        "alone": alone[0],
        "together": together,
        "msg": msg,
        "allreduce": ar,
        "wake": busy - one_way,
        "one_way": one_way,
        "exchange": exchange,
    }


def _ping_pong(comm, me, world, x, w, small, out, *, seconds: float, others_compute: bool, both: bool) -> float:
    """The mean time of ranks 0 and 1's messages, each round after 2 ms of blocks, over ``seconds``; the others
    wait or compute meanwhile (a little longer than the pair goes on). ``both``: a round is one exchange, both
    sending and receiving at once, as a halo exchange (its wall time); else a round trip, one way at a time, as
    stage messages go (half of it). All ranks return rank 0's figure."""
    import torch

    ranks = list(range(world))
    comm.all_reduce_sum(torch.zeros(1), kind="control", group_ranks=ranks)
    times: list[float] = []
    if me in (0, 1):
        peer = 1 - me
        go, theirs = torch.ones(_PAIR_BYTES // 4), torch.ones(_PAIR_BYTES // 4)
        t_end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < _GAP_S:  # a worker's step between two messages
                _block(x, w, small, out)
            go[0] = float(time.perf_counter() < t_end) if me == 0 else 1.0  # rank 0 says whether more follow
            t0 = time.perf_counter()
            if both:
                comm.exchange({peer: go}, {peer: theirs}, kind="control")
            elif me == 0:
                comm.exchange({peer: go}, {}, kind="control")
                comm.exchange({}, {peer: theirs}, kind="control")
            else:
                comm.exchange({}, {peer: theirs}, kind="control")
                comm.exchange({peer: go}, {}, kind="control")
            times.append((time.perf_counter() - t0) / (1 if both else 2))
            if (go if me == 0 else theirs)[0].item() == 0.0:
                break
    elif others_compute:
        t_end = time.perf_counter() + seconds * 1.5 + 0.05
        while time.perf_counter() < t_end:
            _block(x, w, small, out)
    res = comm.all_gather_object(statistics.mean(times) if times else 0.0)
    return float(res[0])


def _line(points: dict[int, float]) -> Fit:
    """``a + per_byte * bytes`` through the points (least squares, both coefficients kept >= 0)."""
    b = np.array(sorted(points), dtype=float)
    y = np.array([points[k] for k in sorted(points)])
    slope, a = np.polyfit(b, y, 1) if len(b) > 1 else (0.0, float(y[0]))
    slope = max(float(slope), 0.0)
    a = max(float(np.mean(y - slope * b)), 0.0)
    return Fit(a, slope, 0.0)


def probe_sharing(workers: int, threads: int, *, rows: int = 2048, width: int = 64, reps: int = 40) -> Sharing:
    """Run the probe on ``workers`` local gloo workers at ``threads`` threads each, intra-op and OpenMP, as
    torchrun gives a run's workers (a few seconds). ``rows`` and
    ``width``: the compute block's size, a worker's share of the graph at the model's width (so that it
    touches as much memory as the engine's steps do); capped at 2**18 rows."""
    rows = max(min(rows, 1 << 18), 64)
    from gnnpipe.parallel.spawn import run_workers

    res = [r.value for r in run_workers(_sharing_worker, workers, workers, rows, width, reps, threads=threads)]
    factor = statistics.mean(r["together"] / max(r["alone"], 1e-9) for r in res)
    msg = {k: statistics.mean(r["msg"][k] for r in res) for k in res[0]["msg"]}
    ar = {k: statistics.mean(r["allreduce"][k] for r in res) for k in res[0]["allreduce"]}
    return Sharing(
        workers=workers,
        compute_factor=max(factor, 1.0),
        msg_cpu=_line(msg),
        allreduce=_line(ar),
        wake_s=max(res[0]["wake"], 0.0),
        one_way_s=res[0]["one_way"],
        exchange_s=res[0]["exchange"],
        pair_bytes=_PAIR_BYTES,
    )
