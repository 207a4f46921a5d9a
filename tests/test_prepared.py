"""The prepared graph: permuted once, stored beside its plan, memory-mapped by every worker."""

from __future__ import annotations

import torch

from gnnpipe.config import load_config
from gnnpipe.data import load_graph
from gnnpipe.partition.prepared import open_prepared, prepare, prepared_dir
from gnnpipe.train.run import plan_for

SBM = ["dataset.name=sbm", "dataset.num_nodes=300", "dataset.num_features=8", "parallel.chunks=4", "parallel.ways=2"]


def test_prepared_graph_is_the_permuted_graph_and_its_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path))
    cfg = load_config(None, SBM)
    path = prepare(cfg, tmp_path)
    assert path == prepared_dir(cfg, tmp_path) and path.is_dir()
    graph, plan = open_prepared(path)
    want = plan_for(cfg, load_graph(cfg.dataset))
    assert plan == want
    ref = want.permute(load_graph(cfg.dataset))
    for name in ("indptr", "indices", "x", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(graph, name), getattr(ref, name)), name
    assert prepare(cfg, tmp_path) == path  # the second call finds it
    assert not list(tmp_path.glob(".prepared*"))  # no temporary left behind


def test_another_config_gets_another_directory(tmp_path):
    a = load_config(None, SBM)
    b = load_config(None, [*SBM, "dataset.seed=1"])
    c = load_config(None, [*SBM, "parallel.chunks=6", "parallel.ways=1"])
    assert len({prepared_dir(x, tmp_path) for x in (a, b, c)}) == 3
    assert prepared_dir(a, tmp_path) == prepared_dir(load_config(None, [*SBM, "model.layers=3"]), tmp_path)
