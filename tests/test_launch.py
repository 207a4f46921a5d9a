"""launch.sh end to end: torchrun with 2 workers, and the optional mpirun path when MPI is installed."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
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
