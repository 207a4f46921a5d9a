"""experiments/bench_network.py: the crossover it reports, and (slow, needs namespaces) its --quick run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.bench_network import RUNS, crossover

ROOT = Path(__file__).resolve().parents[1]


def test_crossover_interpolates_in_log_rate():
    # graph / pipeline: 0.5 at 10000 Mbit/s, 2.0 at 100 Mbit/s -> equal (1.0) halfway in log(rate): 1000
    got = crossover([(100.0, 2.0), (10000.0, 0.5)])
    assert got is not None and math.isclose(got, 1000.0, rel_tol=1e-9)
    assert crossover([(50.0, 3.0), (200.0, 2.0), (1000.0, 1.5)]) is None  # the pipeline wins everywhere
    assert crossover([(50.0, 0.9), (200.0, 0.8)]) is None  # graph parallelism wins everywhere
    # the first crossing from slow to fast links
    assert math.isclose(crossover([(10.0, 4.0), (100.0, 1.0), (1000.0, 0.5)]), 100.0)


def test_runs_cover_the_issue_grid():
    faithful = {k: v[1:] for k, v in RUNS.items() if v[0] == "faithful"}
    assert faithful == {"graph": (2, 1, 2), "pipe_c4": (1, 2, 4), "pipe_c16": (1, 2, 16)}
    over = {v[1:] for v in RUNS.values() if v[0] == "oversubscribed"}
    assert over == {(4, 1, 4), (1, 4, 16), (2, 2, 8)}
    assert all(w * s in (2, 4) for _, w, s, _ in RUNS.values())


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_quick_prints_the_ratio_last(tmp_path):
    proc = subprocess.run([sys.executable, "experiments/bench_network.py", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio=") and float(last.split("=")[1]) > 1.0, last
    assert (tmp_path / "network.csv").exists() and (tmp_path / "network.png").exists()
