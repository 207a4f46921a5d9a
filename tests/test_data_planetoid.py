"""Planetoid raw files (the real Cora / CiteSeer shipped in datasets/planetoid) load with the known sizes."""

from __future__ import annotations

import os
import pickle
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


def test_equals_pygs_reader(repo_datasets):
    """The restricted reader gives exactly what PyG's ``read_planetoid_data`` (plain ``pickle.load``) gives."""
    pyg_io = pytest.importorskip("torch_geometric.io")
    from gnnpipe.data.graph import Graph

    for name, pyg_name in (("cora", "Cora"), ("citeseer", "CiteSeer")):
        data = pyg_io.read_planetoid_data(str(repo_datasets / "planetoid" / pyg_name / "raw"), name)
        src, dst = data.edge_index
        ref = Graph.from_edges(name, src, dst, data.x.float(), data.y.long(), data.train_mask, data.val_mask,
                               data.test_mask, int(data.y.max()) + 1)  # fmt: skip
        g = load_planetoid(repo_datasets, name)
        for f in ("indptr", "indices", "x", "y", "train_mask", "val_mask", "test_mask"):
            assert getattr(g, f).dtype == getattr(ref, f).dtype and torch.equal(getattr(g, f), getattr(ref, f)), f


class _RunsCode:
    """A pickle payload: unpickling it calls ``fn(*args)``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _crafted_cora(tmp_path, repo_datasets, suffix: str, payload) -> None:
    shutil.copytree(repo_datasets / "planetoid" / "Cora", tmp_path / "planetoid" / "Cora")
    (tmp_path / "planetoid" / "Cora" / "raw" / f"ind.cora.{suffix}").write_bytes(pickle.dumps(payload, protocol=2))


@pytest.mark.parametrize("suffix", ["x", "graph"])
@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "nested"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, repo_datasets, suffix, how):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    payload = {
        "os.system": _RunsCode(os.system, cmd),
        "builtins.exec": _RunsCode(exec, f"open({str(marker)!r}, 'w').close()"),
        "nested": {0: [1, 2], 1: [_RunsCode(os.system, cmd)]},  # the call hides inside an allowed container
    }[how]
    _crafted_cora(tmp_path, repo_datasets, suffix, payload)
    with pytest.raises(GraphError, match=rf"ind\.cora\.{suffix}: refused to load: the pickle references"):
        load_planetoid(tmp_path, "cora")
    assert not marker.exists()
    pickle.loads((tmp_path / "planetoid" / "Cora" / "raw" / f"ind.cora.{suffix}").read_bytes())
    assert marker.exists()  # the file was live: plain pickle.load runs it


@pytest.mark.parametrize(
    "suffix, content, fragment",
    [
        ("x", b"\x80\x02not a pickle", "not a readable Planetoid pickle"),
        ("x", pickle.dumps([1, 2, 3], protocol=2), "expected a numpy array or scipy csr_matrix"),
        ("graph", pickle.dumps([1, 2, 3], protocol=2), "expected a dict of adjacency lists"),
        ("graph", pickle.dumps({0: [99999]}, protocol=2), "out of range"),
        ("test.index", b"\xff\xfe1\n", "one vertex id"),
    ],
)
def test_malformed_raw_files_are_graph_errors(tmp_path, repo_datasets, suffix, content, fragment):
    shutil.copytree(repo_datasets / "planetoid" / "Cora", tmp_path / "planetoid" / "Cora")
    (tmp_path / "planetoid" / "Cora" / "raw" / f"ind.cora.{suffix}").write_bytes(content)
    with pytest.raises(GraphError, match=fragment):
        load_planetoid(tmp_path, "cora")
