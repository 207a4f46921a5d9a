"""Smoke test of experiments/bench_single.py on a ~2k-node graph, so the benchmark cannot rot.

Also the check that makes its comparison meaningful: with dropout 0 and copied weights, our GCNII and the
PyG ``GCN2Conv`` network give the same logits.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from gnnpipe.data import load_graph, write_npz
from gnnpipe.models.ops import RowCtx

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    if str(REPO) not in sys.path:  # the experiments package sits beside gnnpipe and is not installed
        sys.path.insert(0, str(REPO))
    return importlib.import_module("experiments.bench_single")


def small(bench, **kw):
    fields = dict(nodes=2000, edges=20000, layers=16, hidden=32, features=16, classes=4, epochs=1, warmup=0)
    fields.update(kw)
    return bench.BenchConfig(**fields, memory_epochs=1)


@pytest.mark.parametrize("generator", ["powerlaw", "sbm"])
def test_same_logits_with_copied_weights_and_no_dropout(bench, generator):
    cfg = small(bench, dropout=0.0, generator=generator)
    graph = bench.make_graph(cfg)
    ours, pyg = (bench.make_side(name, cfg, graph) for name in bench.SIDES)
    # training mode (the timed path; with p = 0 every dropout is the identity) ...
    logits = ours.model.forward_full(ours.x, ours.op, RowCtx(training=True, seed=0, epoch=0))
    pyg.model.train()
    ref = pyg.model(pyg.x, pyg.adj_t)
    assert logits.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
    # ... and eval mode, the check the benchmark itself prints
    assert bench.logits_difference({"ours": ours, "pyg": pyg}) < 1e-4


def test_pyg_adjacency_is_our_gcn_operator(bench):
    from experiments.pyg_gcnii import pyg_adjacency

    graph = bench.make_graph(small(bench))
    adj = pyg_adjacency(graph, torch.float64)
    assert adj.layout == torch.sparse_csr
    indptr, indices, values = graph.norm_values("gcn")
    torch.testing.assert_close(adj.crow_indices(), indptr)
    torch.testing.assert_close(adj.col_indices(), indices)
    torch.testing.assert_close(adj.values(), values)


def test_benchmark_writes_results_and_prints_ratio_last(bench, tmp_path, capsys):
    cfg = small(bench)
    result = bench.run_benchmark(cfg, tmp_path, memory=False, command="test")
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio=\d+\.\d\d", lines[-1])
    assert float(lines[-1].split("=")[1]) == pytest.approx(result["ratio"], abs=0.006)
    assert result["max_logit_difference"] < 1e-4
    saved = json.loads((tmp_path / "bench_single.json").read_text())
    assert saved["ratio"] == pytest.approx(result["ratio"])
    rows = (tmp_path / "bench_single.csv").read_text().strip().splitlines()
    assert rows[0] == "epoch,side,seconds,cpu_seconds" and len(rows) == 1 + 2 * cfg.epochs
    assert (tmp_path / "bench_single.png").stat().st_size > 0


def test_writes_only_with_save_or_out(bench, tmp_path, monkeypatch, capsys):
    """Without --save or --out the benchmark prints and writes nothing (issue 22: benches never dirty the tree)."""
    assert (bench.parse_args([])[1].out, bench.parse_args([])[1].save) == (None, False)
    assert bench.parse_args(["--save"])[1].save and bench.parse_args(["--out", "x"])[1].out == Path("x")
    with pytest.raises(SystemExit):
        bench.parse_args(["--save", "--out", "x"])
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    bench.run_benchmark(small(bench, layers=2, nodes=300, edges=2000), None, memory=False, command="test")
    assert sorted(tmp_path.rglob("*")) == before and "wrote" not in capsys.readouterr().out


def test_memory_child_runs_in_process_on_the_saved_graph_and_its_arguments_round_trip(bench, tmp_path):
    cfg = small(bench, layers=2)
    assert bench.parse_args(bench._bench_args(cfg))[0] == cfg  # what measure_memory hands its child
    graph = bench.make_graph(cfg)
    path = write_npz(graph, tmp_path / "graph.npz")  # as run_benchmark hands it to the children
    back = load_graph(bench.saved_graph(path))
    for key in ("indptr", "indices", "x", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(back, key), getattr(graph, key)), key
    for side in bench.SIDES:
        mem = bench.memory_child(side, cfg, path)
        assert mem["peak_rss"] >= mem["graph_rss"] > 0
        assert mem["peak_growth"] == mem["peak_rss"] - mem["graph_rss"]
