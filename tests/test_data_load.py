"""``load_graph`` dispatch and preprocessing, dataset names, and the datasets/convert.py CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from gnnpipe.data import (
    DATASET_NAMES,
    GraphError,
    dataset_name_allowed,
    load_graph,
    read_binary,
    read_npz,
    write_binary,
    write_npz,
)

REPO = Path(__file__).resolve().parents[1]


def test_names():
    assert set(DATASET_NAMES) == {"cora", "citeseer", "pubmed", "sbm", "powerlaw", "binary", "npz"}
    assert dataset_name_allowed("ogbn-arxiv") and dataset_name_allowed("cora")
    assert not dataset_name_allowed("ogbn-") and not dataset_name_allowed("Cora")


def test_unknown_name(dataset_cfg):
    with pytest.raises(GraphError, match=r"dataset.name = 'reddit' is unknown; allowed: cora"):
        load_graph(dataset_cfg(name="reddit"))


@pytest.mark.parametrize("name", ["binary", "npz"])
def test_file_datasets_need_path(dataset_cfg, name):
    with pytest.raises(GraphError, match=rf"dataset.name = '{name}' needs dataset.path"):
        load_graph(dataset_cfg(name=name))


def test_missing_path_is_clear(tmp_path, dataset_cfg):
    with pytest.raises(GraphError, match=r"binary dataset: directory .*missing_dir.* not found"):
        load_graph(dataset_cfg(name="binary", path=str(tmp_path / "missing_dir")))
    with pytest.raises(GraphError, match=r"npz dataset: file .*missing\.npz.* not found"):
        load_graph(dataset_cfg(name="npz", path=str(tmp_path / "missing.npz")))


def test_binary_and_npz_through_load_graph(tmp_path, small_graph, dataset_cfg, assert_same_graph):
    g = small_graph()
    write_binary(g, tmp_path / "b")
    write_npz(g, tmp_path / "g.npz")
    raw_b = load_graph(dataset_cfg(name="binary", path=str(tmp_path / "b"), undirected=False))
    assert_same_graph(g, raw_b)
    und = load_graph(dataset_cfg(name="npz", path=str(tmp_path / "g.npz"), feature_norm=True))
    assert_same_graph(und, g.to_undirected().row_normalized_features())


def test_with_real_dataset_config():
    config = pytest.importorskip("gnnpipe.config")
    g = load_graph(config.DatasetConfig(name="sbm", num_nodes=200, avg_degree=4.0))
    assert g.num_nodes == 200


def _convert_module():
    spec = importlib.util.spec_from_file_location("convert", REPO / "datasets" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_planetoid_to_binary(tmp_path, dataset_cfg, assert_same_graph, capsys):
    convert = _convert_module()
    src = REPO / "datasets" / "planetoid" / "Cora"
    assert convert.main(["--from", "planetoid", "--src", str(src), "--to", "binary", "--out", str(tmp_path)]) == 0
    assert "cora: 2708 vertices, 10556 edges" in capsys.readouterr().out
    back = read_binary(tmp_path)
    assert_same_graph(load_graph(dataset_cfg(name="cora")), back)


def test_convert_npz_to_binary_and_errors(tmp_path, small_graph, capsys):
    convert = _convert_module()
    g = small_graph()
    write_npz(g, tmp_path / "g.npz")
    args = ["--from", "npz", "--src", str(tmp_path / "g.npz"), "--out", str(tmp_path / "b"), "--directed"]
    assert convert.main(args) == 0
    assert torch.equal(read_binary(tmp_path / "b").indices, read_npz(tmp_path / "g.npz").indices)
    assert convert.main(["--from", "ogb", "--src", str(tmp_path), "--name", "ogbn-arxiv", "--out", "x"]) == 2
    assert "ogbn_arxiv/raw" in capsys.readouterr().err
