"""`gnnpipe partition` and `gnnpipe profile`: strategy tables, JSON shape, measured == analytic."""

from __future__ import annotations

import json

from gnnpipe.cli import main
from gnnpipe.config import config_from_dict
from gnnpipe.profile.volumes import strategies_for

SBM = ["dataset.num_nodes=300", "dataset.avg_degree=8", "dataset.num_features=16"]


def test_strategies_at_a_worker_count():
    cfg = config_from_dict({"model": {"layers": 32}, "parallel": {"ways": 2, "stages": 4, "chunks": 16}})
    got = {(s.name, s.ways, s.stages, s.chunks) for s in strategies_for(cfg, 8)}
    assert got == {("graph", 8, 1, 8), ("pipeline", 1, 8, 32), ("hybrid", 2, 4, 16)}
    shallow = config_from_dict({"model": {"layers": 2}})
    assert {s.name for s in strategies_for(shallow, 4)} == {"graph", "hybrid"}  # no 4-stage pipeline for 2 layers


def test_partition_command_prints_plan_and_volumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    rc = main(["partition", "--dataset", "sbm", *SBM, "--chunks", "8", "--ways", "2", "--layers", "8",
               "--workers", "4", "--out", str(tmp_path / "plan")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "chunks=8 ways=2" in out and "graph 4x1 C=4" in out and "pipeline 1x4 C=16" in out
    assert "hybrid 2x2" in out
    assert (tmp_path / "plan").is_dir()


def test_profile_measures_what_it_predicts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    out_json = tmp_path / "profile.json"
    rc = main(["profile", "--dataset", "sbm", *SBM, "--layers", "4", "--hidden", "8", "--workers", "2",
               "--measure", "1", "--json", str(out_json)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    data = json.loads(out_json.read_text())
    assert data["workers"] == 2 and set(data["strategies"]) == {"graph", "pipeline"}
    for name, row in data["strategies"].items():
        assert set(row["analytic"]) == {"layer", "graph", "weight"}
        assert row["measured"] == row["analytic"], name
        assert len(row["measured_per_worker"]) == 2
    assert data["strategies"]["pipeline"]["analytic"]["layer"] > 0
    assert data["strategies"]["graph"]["analytic"]["graph"] > 0
