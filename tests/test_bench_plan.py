"""experiments/bench_plan.py: its runs are valid configs covering what issue 14 asks; its outputs are written."""

from __future__ import annotations

import json

import pytest

from experiments import bench_plan
from gnnpipe.config import load_config
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.plan.search import strategy_name


def test_runs_cover_the_issue():
    total = 0
    for graph, runs in bench_plan.RUNS.items():
        kinds = {strategy_name(w, s) for w, s, _ in runs}
        assert kinds == {"graph", "pipeline", "hybrid"}, graph
        for w, s, c in runs:
            cfg = load_config(bench_plan.REPO / bench_plan.CONFIG, bench_plan.overrides(graph, w, s, c, 8, 3))
            dims = ParallelDims.from_config(cfg)
            assert (dims.ways, dims.stages, dims.chunks) == (w, s, c)
            assert cfg.train.warmup_epochs == 3 and cfg.train.epochs == 8
        total += len(runs)
    assert total >= 8
    big = load_config(bench_plan.REPO / bench_plan.CONFIG, bench_plan.overrides("powerlaw100k", 1, 2, 4, 8, 3))
    assert big.dataset.num_nodes >= 100_000


def test_outputs_are_written(tmp_path):
    rows = [
        {"graph": g, "ways": 1, "stages": 2, "chunks": 4, "strategy": "pipeline", "pred_epoch_s": p,
         "meas_epoch_s": m, "err_epoch": p / m - 1, "pred_peak_max": 4e8, "meas_peak_max": 4.1e8,
         "err_peak_max": -0.02, "bytes_equal": True}
        for g, p, m in (("cora", 0.1, 0.12), ("powerlaw100k", 1.0, 0.9))
    ]  # fmt: skip
    bench_plan.write_outputs(rows, {"epochs": 8}, tmp_path)
    assert json.loads((tmp_path / "plan.json").read_text())["runs"][0]["graph"] == "cora"
    assert (tmp_path / "plan.csv").read_text().startswith("graph,ways,stages,chunks")
    assert (tmp_path / "plan.png").stat().st_size > 0


def test_repeated_runs_combine_into_medians():
    def run(t, peaks, nbytes=None):
        return {"epoch_time_s": t, "epoch_times_s": [t, t], "peak_memory_bytes": peaks,
                "bytes": nbytes or {"layer": 10}, "procs_running": 2.0}  # fmt: skip

    m = bench_plan.combine([run(0.3, [5, 9]), run(0.1, [7, 8]), run(0.2, [6, 10])])
    assert m["epoch_time_s"] == 0.2 and m["runs_s"] == [0.3, 0.1, 0.2] and len(m["epoch_times_s"]) == 6
    assert m["peak_memory_bytes"] == [6, 9] and m["bytes"] == {"layer": 10}
    with pytest.raises(SystemExit, match="differ between repeats"):
        bench_plan.combine([run(0.1, [1]), run(0.1, [1], {"layer": 11})])
