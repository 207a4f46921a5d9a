"""Planetoid raw files (the real Cora / CiteSeer shipped in datasets/planetoid) load with the known sizes."""

from __future__ import annotations

import shutil

import pytest
import torch

from gnnpipe.data import GraphError, load_graph
from gnnpipe.data.planetoid import load_planetoid

SIZES = {  # nodes, directed edges, features, classes, train/val/test of the public split
    "cora": (2708, 10556, 1433, 7, 140, 500, 1000),
    "citeseer": (3327, 9104, 3703, 6, 120, 500, 1000),
}


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("undirected", [False, True])
def test_planetoid_sizes(name, undirected, dataset_cfg):
    g = load_graph(dataset_cfg(name=name, undirected=undirected))
    n, e, f, c, tr, va, te = SIZES[name]
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == (n, e, f, c)
    assert (int(g.train_mask.sum()), int(g.val_mask.sum()), int(g.test_mask.sum())) == (tr, va, te)
    assert g.x.dtype == torch.float32 and g.y.dtype == torch.int64
    assert g.name == name


def test_cora_public_split_and_symmetry(dataset_cfg):
    g = load_graph(dataset_cfg(name="cora"))
    assert torch.equal(torch.nonzero(g.train_mask).reshape(-1), torch.arange(140))
    assert not (g.train_mask & g.test_mask).any()
    src, dst = g.edges()
    assert bool((src != dst).all())
    back = torch.sort(src * g.num_nodes + dst).values
    assert torch.equal(back, torch.sort(dst * g.num_nodes + src).values)  # every edge has its reverse


def test_feature_norm_rows_sum_to_one(dataset_cfg):
    g = load_graph(dataset_cfg(name="cora", feature_norm=True))
    s = g.x.sum(1)
    assert torch.allclose(s[s != 0], torch.ones_like(s[s != 0]))


def test_pyg_layout_root_accepted(tmp_path, repo_datasets):
    shutil.copytree(repo_datasets / "planetoid" / "Cora", tmp_path / "Cora")
    g = load_planetoid(tmp_path, "cora")
    assert g.num_nodes == 2708
    assert not (tmp_path / "Cora" / "processed").exists()  # nothing written next to the raw files


def test_missing_planetoid_names_expected_path(tmp_path, dataset_cfg):
    with pytest.raises(GraphError, match=r"PubMed.*raw files not found.*planetoid/PubMed/raw"):
        load_graph(dataset_cfg(name="pubmed", root=str(tmp_path)))


def test_incomplete_planetoid_names_missing_file(tmp_path, repo_datasets):
    shutil.copytree(repo_datasets / "planetoid" / "Cora", tmp_path / "planetoid" / "Cora")
    (tmp_path / "planetoid" / "Cora" / "raw" / "ind.cora.tx").unlink()
    with pytest.raises(GraphError, match=r"lacks ind\.cora\.tx"):
        load_planetoid(tmp_path, "cora")
