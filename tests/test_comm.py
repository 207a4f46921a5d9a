"""Failure handling of the communication layer: a dead worker never leaves the others hanging."""

from __future__ import annotations

import os
import time

import pytest
from dist_workers import train_then_die

from gnnpipe.parallel.comm import CommError
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.spawn import run_workers

CFG = {
    "dataset": {"name": "sbm", "num_nodes": 400, "avg_degree": 8.0, "num_features": 16, "num_classes": 4},
    "model": {"arch": "gcnii", "layers": 6, "hidden": 16, "dropout": 0.0},
    "parallel": {"ways": 1, "stages": 3, "chunks": 6, "timeout_s": 50.0},
    "train": {"epochs": 1000, "eval_every": 1000},
}


def test_rank_layout():
    dims = ParallelDims(ways=3, stages=4, chunks=6, layer_counts=(2, 2, 1, 1))
    assert dims.world_size == 12
    assert [dims.rank(w, s) for w in range(3) for s in range(4)] == list(range(12))
    assert dims.coords(6) == (1, 2)


def test_killed_worker_makes_every_other_worker_exit_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    t0 = time.monotonic()
    results = run_workers(train_then_die, 3, CFG, 1, 2, timeout_s=120, grace_s=60, check=False, log_dir=str(tmp_path))
    elapsed = time.monotonic() - t0
    assert results[1].exitcode == -9  # the victim was SIGKILLed
    for r in (0, 2):
        res = results[r]
        assert not res.ok and res.exitcode not in (0, None), f"rank {r} did not fail: {res}"
        said = res.error + (tmp_path / f"rank{r}.log").read_text()
        assert "rank 1" in said, f"rank {r} did not name the lost rank:\n{said[-2000:]}"
    assert elapsed < 60 + 15  # within 60 s of the kill (+ process start-up)


def test_workers_refuse_a_world_that_does_not_match_the_config(monkeypatch):
    from gnnpipe.parallel.comm import Comm

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(CommError, match="launched with 3 worker"):
        Comm.init(ParallelDims(ways=2, stages=2, chunks=2, layer_counts=(1, 1)))


def test_host_staged_transfers_arrive_exactly():
    """parallel.backend=gloo on CUDA stages transfers through host memory; the same path, forced on CPU."""
    from dist_workers import staged_exchange

    results = [r.value for r in run_workers(staged_exchange, 2, timeout_s=120)]
    for me in (0, 1):
        peer = 1 - me
        assert results[me] == [[[float(peer)] * 2] * 3, [0.0 + peer, 1.0 + peer], [7.0 + peer] * 4, [3.0]]


def test_spawned_workers_get_one_share_of_the_cores_as_omp_threads_unless_the_caller_set_it(monkeypatch):
    """Default: a share of the cores, the caller's OMP_NUM_THREADS kept; ``threads=`` sets both."""
    from dist_workers import omp_threads

    share = max(1, (os.cpu_count() or 1) // 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [r.value for r in run_workers(omp_threads, 2)] == [(str(share), share)] * 2
    assert "OMP_NUM_THREADS" not in os.environ  # the parent's environment is left as it was
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert [r.value[0] for r in run_workers(omp_threads, 2)] == ["3", "3"]
    assert [r.value for r in run_workers(omp_threads, 2, threads=1)] == [("1", 1)] * 2  # asked for: it wins
    assert os.environ["OMP_NUM_THREADS"] == "3"  # and the caller's value is back
