"""``.npz`` graphs: round trip, the Shchur et al. sparse layout with a seeded split, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gnnpipe.data import GraphError, read_npz, write_npz


@pytest.mark.parametrize("multi_label", [False, True])
def test_round_trip(tmp_path, small_graph, assert_same_graph, multi_label):
    g = small_graph(multi_label=multi_label)
    path = write_npz(g, tmp_path / "g.npz")
    back = read_npz(path)
    assert_same_graph(g, back)
    assert back.name == "g"


def _shchur(path, n=30, f=8, c=3, seed=0, **extra):
    """A file as distributed by Shchur et al.: sparse adjacency and attributes, int labels, no split."""
    rng = np.random.default_rng(seed)
    adj = sp.random(n, n, density=0.1, format="csr", random_state=seed, data_rvs=lambda k: np.ones(k))
    attr = sp.random(n, f, density=0.3, format="csr", random_state=seed + 1)
    labels = rng.integers(0, c, n)
    np.savez(
        path,
        adj_data=adj.data,
        adj_indices=adj.indices,
        adj_indptr=adj.indptr,
        adj_shape=np.array(adj.shape),
        attr_data=attr.data,
        attr_indices=attr.indices,
        attr_indptr=attr.indptr,
        attr_shape=np.array(attr.shape),
        labels=labels,
        **extra,
    )
    return adj, attr, labels


def test_shchur_layout_and_seeded_split(tmp_path):
    adj, attr, labels = _shchur(tmp_path / "s.npz")
    g = read_npz(tmp_path / "s.npz", seed=3)
    assert g.num_nodes == 30 and g.num_edges == adj.nnz
    assert torch.allclose(g.x, torch.from_numpy(attr.toarray()).float())
    assert torch.equal(g.y, torch.from_numpy(labels))
    coo = adj.tocoo()
    src, dst = g.edges()
    assert sorted(zip(src.tolist(), dst.tolist(), strict=True)) == sorted(
        zip(coo.row.tolist(), coo.col.tolist(), strict=True)
    )
    counts = (int(g.train_mask.sum()), int(g.val_mask.sum()), int(g.test_mask.sum()))
    assert counts == (18, 6, 6)
    assert bool((g.train_mask | g.val_mask | g.test_mask).all())
    again = read_npz(tmp_path / "s.npz", seed=3)
    other = read_npz(tmp_path / "s.npz", seed=4)
    assert torch.equal(again.train_mask, g.train_mask)
    assert not torch.equal(other.train_mask, g.train_mask)


def test_stored_index_split(tmp_path):
    _shchur(tmp_path / "s.npz", idx_train=np.arange(5), idx_val=np.arange(5, 9), idx_test=np.arange(9, 30))
    g = read_npz(tmp_path / "s.npz")
    assert torch.equal(torch.nonzero(g.train_mask).reshape(-1), torch.arange(5))
    assert int(g.test_mask.sum()) == 21


def test_dense_features_and_edge_index(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        edge_index=np.array([[0, 1, 2], [1, 2, 0]]),
        features=np.eye(3, dtype=np.float64),
        labels=np.array([0, 1, 1]),
    )
    g = read_npz(tmp_path / "d.npz")
    assert g.num_edges == 3 and g.x.dtype == torch.float32 and g.num_classes == 2


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"labels": np.arange(29)}, r"labels have 29 rows, but the adjacency has 30"),
        ({"idx_train": np.arange(3)}, r"has idx_train but not all of idx_train, idx_val, idx_test"),
        (
            {"train_idx": np.array([31]), "val_idx": np.array([1]), "test_idx": np.array([2])},
            r"train_idx: vertex id 31 out of range",
        ),
        ({"adj_shape": np.array([30, 31])}, r"square"),
        ({"adj_indptr": np.arange(5)}, r"adj_indptr has \(5,\) entries, expected 31"),
        ({"attr_shape": np.array([29, 8])}, r"attr_indptr has .* expected 30|features have 29 rows"),
        ({"labels": np.array(["a"] * 30)}, r"labels have dtype"),
    ],
)
def test_bad_npz_names_file(tmp_path, extra, match):
    path = tmp_path / "bad.npz"
    adj, attr, labels = _shchur(path)
    with np.load(path) as z:
        keys = {k: z[k] for k in z.files}
    keys.update(extra)
    np.savez(path, **keys)
    with pytest.raises(GraphError, match=match) as info:
        read_npz(path)
    assert "bad.npz" in str(info.value)


def test_missing_keys_and_pickles(tmp_path):
    np.savez(tmp_path / "nofeat.npz", edge_index=np.zeros((2, 0), dtype=np.int64), labels=np.zeros(3))
    with pytest.raises(GraphError, match=r"nofeat\.npz: no features"):
        read_npz(tmp_path / "nofeat.npz")
    np.savez(tmp_path / "noadj.npz", attr_matrix=np.zeros((3, 2)))
    with pytest.raises(GraphError, match=r"noadj\.npz: no adjacency"):
        read_npz(tmp_path / "noadj.npz")
    np.savez(tmp_path / "obj.npz", labels=np.array([{"a": 1}], dtype=object))
    with pytest.raises(GraphError, match=r"obj\.npz: not a readable \.npz without pickles"):
        read_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(GraphError, match=r"junk\.npz"):
        read_npz(tmp_path / "junk.npz")
    with pytest.raises(GraphError, match=r"absent\.npz.* not found"):
        read_npz(tmp_path / "absent.npz")
