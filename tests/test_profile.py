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


def test_profile_splits_the_bytes_by_link_for_nodes(tmp_path, monkeypatch, capsys):
    """``--nodes 2`` on 4 workers: every kind's analytic bytes split into intra/inter-node for the configured
    placement; a 4-stage pipeline crosses at 1 of its 3 boundaries; placement ways moves a hybrid's halos and
    all-reduce inside the nodes; 3 nodes for 4 workers is one line and exit 2."""
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    base = ["--layers", "4", "--hidden", "8", "--workers", "4", "--nodes", "2"]
    tables = {}
    for placement in ("stages", "ways"):
        out_json = tmp_path / f"{placement}.json"
        rc = main(
            ["profile", "--dataset", "sbm", *SBM, f"parallel.placement={placement}", *base, "--json", str(out_json)]
        )
        assert rc == 0 and "inter-node (2 nodes, placement " in capsys.readouterr().out
        tables[placement] = json.loads(out_json.read_text())["strategies"]
    for rows in tables.values():
        for r in rows.values():
            for kind, total in r["analytic"].items():
                assert r["by_link"][kind]["intra"] + r["by_link"][kind]["inter"] == total
    pipe = tables["stages"]["pipeline"]
    assert pipe["by_link"]["layer"]["inter"] * 3 == pipe["analytic"]["layer"] > 0
    hyb_s, hyb_w = tables["stages"]["hybrid"], tables["ways"]["hybrid"]
    assert (
        hyb_s["by_link"]["graph"]["inter"] == hyb_s["analytic"]["graph"] > 0 and hyb_s["by_link"]["layer"]["inter"] == 0
    )
    assert hyb_w["by_link"]["graph"]["inter"] == 0 and hyb_w["by_link"]["layer"]["inter"] == hyb_w["analytic"]["layer"]
    rc = main(["profile", "--dataset", "sbm", *SBM, *base[:-1], "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--nodes 3" in err, err
