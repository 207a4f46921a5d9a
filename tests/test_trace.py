"""A 4-worker hybrid run writes a Chrome/Perfetto trace with one track per worker and a summary per worker."""

from __future__ import annotations

import json

from dist_workers import run_training_job

from gnnpipe.parallel.spawn import run_workers


def test_four_worker_trace_and_breakdown(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    cfg = {
        "dataset": {"name": "sbm", "num_nodes": 400, "avg_degree": 8.0, "num_features": 16, "num_classes": 4},
        "model": {"arch": "gcnii", "layers": 4, "hidden": 16},
        "parallel": {"ways": 2, "stages": 2, "chunks": 4},
        "train": {"epochs": 4, "eval_every": 2, "warmup_epochs": 1},
        "log": {"dir": str(tmp_path / "runs"), "trace": True, "progress": False},
    }
    results = run_workers(run_training_job, 4, cfg, timeout_s=300, nodes=2)  # as 2 nodes x 2 workers
    summary = results[0].value
    assert len(summary["breakdown_per_worker_s"]) == 4
    assert summary["comm_bytes_per_epoch"] == summary["comm_bytes_per_epoch_analytic"]
    # bytes by link: a way's 2 stages share a node, so stage boundaries stay inside it, halos and weights cross
    assert summary["nodes"] == [0, 0, 1, 1]
    link = summary["bytes_by_link"]
    for kind, total in summary["comm_bytes_per_epoch"].items():
        assert link[kind]["measured"] == link[kind]["analytic"], (kind, link)
        assert link[kind]["measured"]["intra" if kind == "layer" else "inter"] == total > 0, (kind, link)
    (run_dir,) = list((tmp_path / "runs").iterdir())
    printed = (run_dir / "rank0.log").read_text()
    assert "Nodes: node0 ranks 0-1, node1 ranks 2-3" in printed
    assert "Communication per epoch by link, cluster-wide (measured | analytic):" in printed
    assert "  graph   inter-node " in printed and "  layer   intra-node " in printed
    assert sorted(p.name for p in run_dir.glob("rank*.log")) == [f"rank{r}.log" for r in range(4)]
    trace = json.loads((run_dir / "trace.json").read_text())
    events = trace["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {
        r: f"rank {r} (way {r // 2}, stage {r % 2}, layers {2 * (r % 2)}-{2 * (r % 2) + 1})" for r in range(4)
    }
    spans = [e for e in events if e["ph"] == "X"]
    for r in range(4):
        mine = [e for e in spans if e["pid"] == r]
        assert any(e["cat"] == "compute" and e["name"].startswith("F c") for e in mine)
        assert any(e["cat"] == "compute" and e["name"].startswith("B c") for e in mine)
        assert any(e["cat"] == "comm" and e["name"].startswith("graph fwd") for e in mine)
        assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in mine)
    stage0 = [e["name"] for e in spans if e["pid"] == 0]
    assert any(n.startswith("send act") for n in stage0) and any(n.startswith("recv grad") for n in stage0)
