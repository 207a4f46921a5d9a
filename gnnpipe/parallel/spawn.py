"""Run a function in k local worker processes (gloo on CPU) with a hard timeout.

Used by the tests and by experiments that need several workers without torchrun. Each worker gets the
environment torchrun would give it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), runs
``fn(*args)`` and sends back its return value or its error. The parent never hangs: after ``timeout_s`` (or
as soon as one worker fails, plus a grace period) every remaining worker is killed, and a
:class:`SpawnError` says which ranks failed and how.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from dataclasses import dataclass

import torch.multiprocessing as mp

from gnnpipe.parallel.nodes import block_nodes

__all__ = ["SpawnError", "WorkerResult", "free_port", "run_workers"]


class SpawnError(RuntimeError):
    pass


@dataclass
class WorkerResult:
    rank: int
    ok: bool
    value: object = None
    error: str = ""
    exitcode: int | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args, queue, threads: int, log_dir: str | None, node: int) -> None:
    if log_dir is not None:  # this worker's stdout and stderr (incl. C++ and os._exit paths) to rank<k>.log
        fd = os.open(os.path.join(log_dir, f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GROUP_RANK=str(node),  # the node, as torchrun's agent sets it (DESIGN §4)
    )
    import torch

    torch.set_num_threads(threads)
    try:
        # by value (plain pickle): torch's queue reducers would share tensor memory, which dies with this process
        queue.put((rank, True, pickle.dumps(fn(*args)), ""))
    except BaseException as e:  # report everything, including CommError and SystemExit
        queue.put((rank, False, None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"))
        raise SystemExit(1) from None


def _start(procs, threads: int, force: bool) -> None:
    """Start ``procs`` with ``OMP_NUM_THREADS`` = ``threads`` (unless the caller set it and ``force`` is off), as
    torchrun does: OpenMP reads it once when it loads, before ``torch.set_num_threads`` can run, and the native
    kernels' OpenMP (``csrc/``) would otherwise start one thread per core in every worker."""
    before = os.environ.get("OMP_NUM_THREADS")
    if force or before is None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        for p in procs:
            p.start()
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


def run_workers(
    fn,
    world: int,
    *args,
    timeout_s: float = 240.0,
    grace_s: float = 60.0,
    check: bool = True,
    log_dir: str | None = None,
    threads: int | None = None,
    nodes: int = 1,
) -> list[WorkerResult]:
    """Run ``fn(*args)`` on ``world`` workers; return their results in rank order.

    ``fn`` must be importable (module level). With ``check`` a failed or killed worker raises SpawnError
    naming the ranks; without it, the caller inspects each WorkerResult (e.g. to test failure handling).
    ``log_dir``: send each worker's stdout/stderr to ``log_dir/rank<k>.log``. ``threads``: each worker's
    intra-op and OpenMP threads (default: its share of the cores, OpenMP's only where the caller's environment
    does not set ``OMP_NUM_THREADS``). ``nodes``: pretend the workers run on that many nodes, ``world / nodes``
    consecutive ranks each (torchrun's ``GROUP_RANK``): bytes by link count as on such a cluster.
    """
    node_of = block_nodes(world, nodes)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    force = threads is not None
    threads = max(1, threads if force else (os.cpu_count() or 1) // world)
    procs = [
        ctx.Process(target=_entry, args=(r, world, port, fn, args, queue, threads, log_dir, node_of[r]), daemon=True)
        for r in range(world)
    ]
    _start(procs, threads, force)
    results: dict[int, WorkerResult] = {}
    deadline = time.monotonic() + timeout_s
    first_failure: float | None = None
    try:
        while len(results) < world:
            now = time.monotonic()
            limit = deadline if first_failure is None else min(deadline, first_failure + grace_s)
            if now > limit:
                break
            try:
                rank, ok, value, err = queue.get(timeout=0.2)
                results[rank] = WorkerResult(rank, ok, pickle.loads(value) if ok else None, err)
                if not ok and first_failure is None:
                    first_failure = time.monotonic()
            except Exception:  # queue.Empty: look for workers that died without reporting
                for r, p in enumerate(procs):
                    if r not in results and p.exitcode is not None:
                        time.sleep(0.2)  # its message may still be in flight
                        if queue.empty():
                            results[r] = WorkerResult(
                                r, False, error=f"exited with code {p.exitcode} without a result", exitcode=p.exitcode
                            )
                            first_failure = first_failure or time.monotonic()
    finally:
        for p in procs:
            p.join(timeout=5 if len(results) == world else 0.1)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        queue.close()
    for r, p in enumerate(procs):
        if r not in results:
            results[r] = WorkerResult(
                r, False, error=f"no result within the time limit (killed, exit code {p.exitcode})", exitcode=p.exitcode
            )
        else:
            results[r].exitcode = p.exitcode
    ordered = [results[r] for r in range(world)]
    if check and not all(r.ok for r in ordered):
        lines = [f"rank {r.rank}: {r.error.strip()}" for r in ordered if not r.ok]
        raise SpawnError(f"{sum(not r.ok for r in ordered)} of {world} workers failed:\n" + "\n".join(lines))
    return ordered
