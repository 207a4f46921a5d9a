"""OGB node-property datasets from a local root, tested on tiny files written in OGB's own on-disk layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gnnpipe.data import GraphError, load_graph
from gnnpipe.data.ogb import load_ogb, ogb_meta

N = 12
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [8, 9], [10, 11], [11, 0], [2, 2]])


def _csv(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(np.asarray(array)).to_csv(path, header=False, index=False, compression="gzip")


def _splits(d: Path, split: str) -> None:
    for part, ids in (("train", range(0, 6)), ("valid", range(6, 9)), ("test", range(9, 12))):
        _csv(d / "split" / split / f"{part}.csv.gz", np.array(list(ids))[:, None])


def write_arxiv_like(root: Path) -> np.ndarray:
    """ogbn-arxiv layout: csv, directed edges, node features, one int label column, split 'time'."""
    d = root / "ogbn_arxiv"
    rng = np.random.default_rng(0)
    feat = rng.standard_normal((N, 4)).astype(np.float32)
    _csv(d / "raw" / "edge.csv.gz", EDGES)
    _csv(d / "raw" / "num-node-list.csv.gz", np.array([[N]]))
    _csv(d / "raw" / "num-edge-list.csv.gz", np.array([[len(EDGES)]]))
    _csv(d / "raw" / "node-feat.csv.gz", feat)
    _csv(d / "raw" / "node-label.csv.gz", (np.arange(N) % 5)[:, None])
    _csv(d / "raw" / "node_year.csv.gz", np.full((N, 1), 2020))
    _splits(d, "time")
    return feat


def test_arxiv_layout(tmp_path):
    feat = write_arxiv_like(tmp_path)
    g = load_ogb(tmp_path, "ogbn-arxiv")
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == (N, len(EDGES), 4, 40)
    assert torch.allclose(g.x, torch.from_numpy(feat), atol=1e-6)
    assert torch.equal(g.y, torch.arange(N) % 5)
    assert int(g.train_mask.sum()) == 6 and int(g.val_mask.sum()) == 3 and int(g.test_mask.sum()) == 3
    src, dst = g.edges()
    assert set(zip(src.tolist(), dst.tolist(), strict=True)) == {tuple(e) for e in EDGES.tolist()}


def test_load_graph_symmetrises(tmp_path, dataset_cfg):
    write_arxiv_like(tmp_path)
    g = load_graph(dataset_cfg(name="ogbn-arxiv", root=str(tmp_path)))
    assert g.num_edges == 2 * (len(EDGES) - 1)  # self-loop dropped, every edge doubled


def test_proteins_layout_multilabel_inverse_edges(tmp_path):
    d = tmp_path / "ogb" / "ogbn_proteins"  # the <root>/ogb/<name> layout is accepted as well
    edge_feat = np.tile(np.arange(len(EDGES), dtype=np.float32)[:, None], (1, 8))
    labels = (np.arange(N * 112).reshape(N, 112) % 3 == 0).astype(np.int64)
    _csv(d / "raw" / "edge.csv.gz", EDGES)
    _csv(d / "raw" / "num-node-list.csv.gz", np.array([[N]]))
    _csv(d / "raw" / "num-edge-list.csv.gz", np.array([[len(EDGES)]]))
    _csv(d / "raw" / "edge-feat.csv.gz", edge_feat)
    _csv(d / "raw" / "node-label.csv.gz", labels)
    _splits(d, "species")
    g = load_ogb(tmp_path, "ogbn-proteins")
    assert g.num_edges == 2 * len(EDGES)  # add_inverse_edge
    assert g.multi_label and g.num_classes == 112 and torch.equal(g.y, torch.from_numpy(labels).float())
    # vertex 1 has in-edges 0 (0->1) and 1 (reverse of 1->2): mean edge feature 0.5
    assert torch.allclose(g.x[1], torch.full((8,), 0.5))


def test_papers_binary_layout_nan_labels(tmp_path):
    d = tmp_path / "ogbn_papers100M"
    (d / "raw").mkdir(parents=True)
    feat = np.ones((N, 3), dtype=np.float32)
    np.savez(
        d / "raw" / "data.npz",
        edge_index=EDGES.T,
        num_nodes_list=np.array([N]),
        num_edges_list=np.array([len(EDGES)]),
        node_feat=feat,
    )
    labels = np.full((N, 1), np.nan)
    labels[:6, 0] = np.arange(6)
    np.savez(d / "raw" / "node-label.npz", node_label=labels)
    _splits(d, "time")
    g = load_ogb(tmp_path, "ogbn-papers100M")
    assert g.num_classes == 172 and g.y.dtype == torch.int64
    assert torch.equal(g.y[:6], torch.arange(6)) and bool((g.y[6:] == -1).all())


def test_missing_dataset_names_expected_path(tmp_path):
    with pytest.raises(GraphError, match=r"ogbn-products.*not found.*ogbn_products/raw"):
        load_ogb(tmp_path, "ogbn-products")


def test_unknown_and_hetero(tmp_path):
    with pytest.raises(GraphError, match=r"unknown OGB dataset 'ogbn-nope'.*ogbn-arxiv"):
        load_ogb(tmp_path, "ogbn-nope")
    with pytest.raises(GraphError, match=r"heterogeneous"):
        load_ogb(tmp_path, "ogbn-mag")
    assert ogb_meta("ogbn-arxiv")["split"] == "time"


def test_bad_files_named(tmp_path):
    write_arxiv_like(tmp_path)
    raw = tmp_path / "ogbn_arxiv" / "raw"
    _csv(raw / "node-label.csv.gz", np.zeros((N - 1, 1), dtype=np.int64))
    with pytest.raises(GraphError, match=r"node-label has 11 rows, expected 12"):
        load_ogb(tmp_path, "ogbn-arxiv")
    write_arxiv_like(tmp_path)
    _csv(raw / "edge.csv.gz", np.array([[0, N]]))
    with pytest.raises(GraphError, match=r"edge\.csv\.gz: an edge endpoint is out of range"):
        load_ogb(tmp_path, "ogbn-arxiv")
    write_arxiv_like(tmp_path)
    (tmp_path / "ogbn_arxiv" / "split" / "time" / "valid.csv.gz").unlink()
    with pytest.raises(GraphError, match=r"valid\.csv\.gz.* not found"):
        load_ogb(tmp_path, "ogbn-arxiv")
    write_arxiv_like(tmp_path)
    (raw / "node-feat.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(GraphError, match=r"node-feat\.csv\.gz: cannot parse"):
        load_ogb(tmp_path, "ogbn-arxiv")


def test_never_imports_ogb(tmp_path):
    """Importing ``ogb`` starts a PyPI version check; the loader must read the files without it."""
    write_arxiv_like(tmp_path)
    code = (
        "import sys; from gnnpipe.data.ogb import load_ogb; "
        f"g = load_ogb({str(tmp_path)!r}, 'ogbn-arxiv'); assert 'ogb' not in sys.modules, 'ogb imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
