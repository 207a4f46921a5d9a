"""experiments/bench_compress.py: every run it launches is a valid config with the degrees and setting it names."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import bench_compress  # noqa: E402

from gnnpipe.config import load_config  # noqa: E402


def test_every_run_is_a_valid_config():
    exps = bench_compress.experiments(3)
    assert len({e.name for e in exps}) == len(exps) == len(bench_compress.SETTINGS) * len(bench_compress.STRATEGIES)
    for e in exps:
        cfg = load_config(bench_compress.REPO / e.config, list(e.overrides))
        strategy, how = e.name.split("-")
        p = cfg.parallel
        assert (p.ways, p.stages, p.chunks) == bench_compress.STRATEGIES[strategy] and p.compress == how
        assert cfg.dataset.name == "cora" and cfg.model.arch == "gcnii" and cfg.train.epochs == 3


def test_ratios_are_against_the_uncompressed_run_of_the_same_strategy():
    runs = (("pipeline", "none", 400), ("pipeline", "int8", 100), ("graph", "none", 90), ("graph", "bf16", 45))
    rows = [{"strategy": s, "compress": c, "traffic_bytes": b} for s, c, b in runs]
    bench_compress.add_ratios(rows)
    assert [r["ratio_vs_none"] for r in rows] == [1.0, 4.0, 1.0, 2.0]


def test_outputs_are_written(tmp_path):
    rows = [
        {"strategy": st, "compress": how, "traffic_bytes": 2**20 // (i + 1), "test_acc": 0.8}
        for st in bench_compress.STRATEGIES
        for i, how in enumerate(bench_compress.SETTINGS)
    ]
    bench_compress.write_outputs(rows, {"epochs": 3}, tmp_path)
    assert (tmp_path / "compress.csv").read_text().startswith("strategy,compress,traffic_bytes,test_acc")
    assert (tmp_path / "compress.png").stat().st_size > 0
