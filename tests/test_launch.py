"""launch.sh end to end: torchrun with 2 workers, the optional mpirun path when MPI is installed, failures (one
line, the failing worker's exit code, nothing left running), signals, and workers per node."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "experiments" / "configs" / "default.yaml"


def launch(tmp_path: Path, *extra: str, mpirun: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "GNNPIPE_PYTHON": sys.executable, "GNNPIPE_CACHE": str(tmp_path / "cache")}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    metrics = tmp_path / "m.json"
    cmd = ["./launch.sh", *(["--mpirun"] if mpirun else []), str(CFG), "train.epochs=3", "train.eval_every=3",
           f"log.dir={tmp_path / 'runs'}", "--metrics-out", str(metrics), *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc, json.loads(metrics.read_text())


def test_launch_torchrun_two_stage_pipeline(tmp_path):
    proc, m = launch(tmp_path)
    assert proc.stdout.count("Epoch 0000") == 3  # only rank 0 prints epoch lines
    assert m["comm_bytes_per_epoch"] == m["comm_bytes_per_epoch_analytic"] and m["comm_bytes_per_epoch"]["layer"] > 0
    assert len(m["peak_memory_bytes"]) == 2 and m["config"]["parallel"]["stages"] == 2
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert {p.name for p in run_dir.glob("rank*.log")} == {"rank0.log", "rank1.log"}


def test_launch_refuses_a_bad_config_before_starting_workers(tmp_path):
    env = {**os.environ, "GNNPIPE_PYTHON": sys.executable}
    proc = subprocess.run(["./launch.sh", str(CFG), "parallel.stages=0"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "parallel.stages" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("mpirun") is None or importlib.util.find_spec("mpi4py") is None,
                    reason="optional mpirun path: needs Open MPI and mpi4py (pip install gnnpipe[mpi])")  # fmt: skip
def test_launch_mpirun(tmp_path):
    _, m = launch(tmp_path, "--", "--oversubscribe", mpirun=True)
    assert m["comm_bytes_per_epoch"] == m["comm_bytes_per_epoch_analytic"]


# ---------------------------------------------------------------------------------------------- failures
TINY = ["dataset.name=sbm", "dataset.num_nodes=400", "dataset.num_features=16", "dataset.num_classes=4",
        "model.layers=4", "model.hidden=16", "parallel.chunks=4", "train.eval_every=100000"]  # fmt: skip


def _launch_bg(tmp_path: Path, *args: str, **env_extra: str) -> subprocess.Popen:
    env = {**os.environ, "GNNPIPE_PYTHON": sys.executable, "GNNPIPE_CACHE": str(tmp_path / "cache"),
           "PYTHONUNBUFFERED": "1", **env_extra}  # fmt: skip
    cmd = ["./launch.sh", str(CFG), *TINY, f"log.dir={tmp_path / 'runs'}", *args]
    out, err = open(tmp_path / "out.txt", "w"), open(tmp_path / "err.txt", "w")  # noqa: SIM115
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)


def _the_one_line(tmp_path: Path) -> str:
    err = (tmp_path / "err.txt").read_text()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    return lines[0]


def _no_worker_left(tmp_path: Path) -> bool:
    marker = f"log.dir={tmp_path / 'runs'}"
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0


def test_launch_bad_dataset_is_exit_2_with_one_line(tmp_path):
    proc = _launch_bg(tmp_path, "dataset.num_nodes=3", "dataset.avg_degree=1", "dataset.num_classes=2")
    assert proc.wait(timeout=180) == 2
    line = _the_one_line(tmp_path)
    assert line.startswith("gnnpipe train: error: rank 0 (way 0, stage 0, layers 0-1) failed in setup: ")
    assert "parallel.chunks = 4 but the graph has 3 vertices" in line
    assert _no_worker_left(tmp_path)


def test_launch_keeps_the_failing_workers_exit_code_and_line_within_10s(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    inject = (Path(__file__).parent / "test_reliability.py").read_text().split('INJECT = """\\\n')[1].split('"""')[0]
    (site / "sitecustomize.py").write_text(inject)  # rank 1 raises at epoch 3 (the workers import it at start)
    marker = tmp_path / "failed_at"
    proc = _launch_bg(tmp_path, "train.epochs=100000", PYTHONPATH=str(site), GNNPIPE_TEST_FAIL=f"1:3:{marker}")
    assert proc.wait(timeout=240) == 1
    after = time.time() - float(marker.read_text())
    assert after < 10.0, f"launcher exited {after:.1f}s after the failure"
    line = _the_one_line(tmp_path)
    assert "rank 1 (way 0, stage 1, layers 2-3) failed in epoch 3 (train): RuntimeError: injected failure" in line
    assert _no_worker_left(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_launch_signal_ends_every_process_within_5s(tmp_path, sig):
    proc = _launch_bg(tmp_path, "train.epochs=100000")
    deadline = time.monotonic() + 180
    while "Epoch 00002" not in (tmp_path / "out.txt").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 128 + sig
    while not _no_worker_left(tmp_path):
        assert time.monotonic() - t0 < 5.0, "a worker outlived the launcher by 5 s"
        time.sleep(0.05)
    assert time.monotonic() - t0 < 5.0
    assert f"interrupted by {sig.name}" in _the_one_line(tmp_path)


def _fake_python(tmp_path: Path, world: int) -> Path:
    """A stand-in for python that answers world-size and prints the argv launch.sh gives torchrun."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nif [ "$2" = gnnpipe ] && [ "$3" = world-size ]; then echo {world}; exit 0; fi\n'
                    'shift 2\necho "$@"\n')  # fmt: skip
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(
    "world, extra, expect",
    [
        (4, ["--nnodes=2", "--node_rank=0"], "--nnodes=2 --node_rank=0 --nproc_per_node=2 -m gnnpipe train"),
        (4, ["--nnodes", "4"], "--nnodes 4 --nproc_per_node=1 -m gnnpipe train"),
        (4, ["--nnodes=2:2"], "--nnodes=2:2 --nproc_per_node=2 -m"),
        (4, ["--nnodes=2", "--nproc-per-node=2"], "--nnodes=2 --nproc-per-node=2 -m gnnpipe train"),
        (2, [], "--standalone --nproc_per_node=2 -m gnnpipe train"),
    ],
)
def test_launch_starts_world_over_nnodes_workers_per_node(tmp_path, world, extra, expect):
    env = {**os.environ, "GNNPIPE_PYTHON": str(_fake_python(tmp_path, world))}
    proc = subprocess.run(["./launch.sh", str(CFG), "--", *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and expect in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--nnodes=3"], "--nnodes=3 does not divide the 4 workers"),
        (["--nnodes=1:2"], "an elastic range cannot work"),
        (["--nnodes=2", "--nproc_per_node=4"], "= 8 workers, but parallel.ways * parallel.stages = 4"),
        (["--nnodes=zero"], "expected a positive integer"),
    ],
)
def test_launch_refuses_a_node_count_that_does_not_fit(tmp_path, extra, fragment):
    env = {**os.environ, "GNNPIPE_PYTHON": str(_fake_python(tmp_path, 4))}
    proc = subprocess.run(["./launch.sh", str(CFG), "--", *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- multi-node rendezvous
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rendezvous_that_never_completes_ends_with_one_line_within_the_timeout(tmp_path):
    """Node 0 of a 2-node job alone (its node 1 never comes), and a node 1 whose node 0 is not there (nothing
    listens at the endpoint): each ends within the rendezvous timeout (plus launch.sh's start), with one line
    naming the endpoint and what to check, and no C++ frames."""
    timeout = 5
    env = {**os.environ, "GNNPIPE_PYTHON": sys.executable, "GNNPIPE_CACHE": str(tmp_path / "cache")}
    procs = {}
    t0 = time.monotonic()
    for node in (0, 1):
        port = _free_port()
        torchrun = ["--nnodes=2", f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}",
                    f"--rdzv-conf=timeout={timeout}"]  # fmt: skip
        cmd = ["./launch.sh", str(CFG), *TINY, f"log.dir={tmp_path / 'runs'}", "--", *torchrun]
        procs[node] = (port, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True))  # fmt: skip
    for node, (port, proc) in procs.items():
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - t0
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == 1 and len(lines) == 1, err[-3000:]
        assert lines[0].startswith(f"launch.sh: rendezvous at 127.0.0.1:{port} failed (node_rank {node} of 2 nodes"), (
            err
        )
        assert f"--master_addr=127.0.0.1 --master_port={port}" in lines[0] and f"timeout ({timeout}s" in lines[0]
        assert "frame #" not in out + err and "Traceback" not in err
        # launch.sh's own start (world-size, importing torch) is ~5-15 s on a loaded 2-core machine
        assert took < timeout + 25, f"node {node} ended {took:.1f}s after the start (rendezvous timeout {timeout}s)"
        print(f"node_rank {node} alone: one line after {took:.1f}s")
    assert _no_worker_left(tmp_path)
