"""experiments/bench_memory.py: every run it would launch is a valid config with the degrees it names."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import bench_memory  # noqa: E402

from gnnpipe.config import load_config  # noqa: E402
from gnnpipe.parallel.dims import ParallelDims  # noqa: E402


@pytest.mark.parametrize("preset", sorted(bench_memory.PRESETS))
def test_every_run_is_a_valid_config(preset):
    args = argparse.Namespace(**bench_memory.PRESETS[preset])
    runs = bench_memory.runs_for(preset)
    assert runs and len({name for name, _, _ in runs}) == len(runs)
    for name, generator, par in runs:
        cfg = load_config(bench_memory.REPO / bench_memory.CONFIG, bench_memory.overrides(args, generator, par))
        ways, stages, chunks, rc, *hist = par.split()
        dims = ParallelDims.from_config(cfg)
        assert (dims.ways, dims.stages, dims.chunks) == (int(ways), int(stages), int(chunks)), name
        assert cfg.parallel.recompute == (rc == "true") == ("recompute" in name)
        assert cfg.dataset.num_nodes == args.nodes and cfg.model.layers == args.layers
        assert cfg.parallel.history_dtype == (hist[0] if hist else "auto") and ("bf16" in name) == bool(hist), name


def test_the_issue_preset_covers_what_the_issue_asks():
    names = [name for name, _, _ in bench_memory.runs_for("issue")]
    for want in ("single device", "pipeline S=2", "pipeline S=4", "graph W=4", "hybrid 2x2"):
        assert any(n.startswith(want) for n in names), want
    # each parallel strategy with and without recompute, and S=4 again with a bfloat16 history
    assert sum("recompute" in n and "bf16" not in n for n in names) == 4
