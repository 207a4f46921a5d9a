"""Vertex partitioning: non-empty parts, METIS input, determinism, disk cache."""

from __future__ import annotations

import numpy as np
import pymetis
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gnnpipe.data.graph import Graph
from gnnpipe.partition import partition
from gnnpipe.partition.metis import cache_name, fill_empty_parts


def make_graph(n: int, edges: list[tuple[int, int]]) -> Graph:
    src = torch.tensor([e[0] for e in edges], dtype=torch.int64)
    dst = torch.tensor([e[1] for e in edges], dtype=torch.int64)
    masks = [torch.zeros(n, dtype=torch.bool)] * 3
    return Graph.from_edges("g", src, dst, torch.zeros(n, 1), torch.zeros(n, dtype=torch.int64), *masks, num_classes=1)


def path_graph(n: int) -> Graph:
    return make_graph(n, [(i, i + 1) for i in range(n - 1)])


@st.composite
def graphs_and_k(draw):
    n = draw(st.integers(1, 40))
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    return make_graph(n, edges), draw(st.integers(1, n))


@settings(max_examples=80, deadline=None)
@given(
    graphs_and_k(), st.sampled_from(["metis", "metis_kway", "random", "contiguous"]), st.sampled_from([None, "degree"])
)
def test_every_part_is_non_empty(case, method, vw):
    g, k = case
    parts = partition(g, k, method=method, vertex_weights=vw)
    assert parts.dtype == torch.int64 and parts.shape == (g.num_nodes,)
    assert torch.equal(torch.unique(parts), torch.arange(k))
    assert torch.equal(parts, partition(g, k, method=method, vertex_weights=vw))  # deterministic


def test_metis_empty_parts_are_filled():
    # METIS leaves parts empty on a 10-vertex path split 10 ways; every chunk must still get a vertex
    parts = partition(path_graph(10), 10)
    assert sorted(parts.tolist()) == list(range(10))


def test_fill_empty_parts_is_deterministic():
    parts = torch.tensor([0, 0, 0, 2, 2, 0])
    # empty part 1 takes the last vertex (5) of the largest part 0; empty part 3 then takes vertex 2 of part 0
    assert fill_empty_parts(parts.clone(), 4).tolist() == [0, 0, 3, 2, 2, 1]


def test_metis_sees_symmetric_graph_without_self_loops(monkeypatch):
    g = make_graph(5, [(0, 1), (1, 0), (1, 2), (3, 3), (4, 2), (4, 2)])
    seen = {}
    real = pymetis.part_graph

    def spy(k, adjacency=None, **kwargs):
        seen["adj"], seen["kwargs"] = adjacency, kwargs
        return real(k, adjacency=adjacency, **kwargs)

    monkeypatch.setattr(pymetis, "part_graph", spy)
    partition(g, 2, seed=7, vertex_weights="degree")
    assert seen["kwargs"]["recursive"] is True  # "metis" = recursive bisection
    partition(g, 2, method="metis_kway", seed=7, vertex_weights="degree")
    assert seen["kwargs"]["recursive"] is False
    adj = seen["adj"]
    assert isinstance(adj, pymetis.CSRAdjacency)
    xadj, adjncy = np.asarray(adj.adj_starts), np.asarray(adj.adjacent)
    neigh = [adjncy[xadj[v] : xadj[v + 1]].tolist() for v in range(5)]
    assert neigh == [[1], [0, 2], [1, 4], [], [2]]
    assert seen["kwargs"]["options"].seed == 7
    assert np.asarray(seen["kwargs"]["vweights"]).tolist() == [2, 2, 4, 2, 1]  # 1 + in-degree


def test_k_one_skips_metis(monkeypatch):
    monkeypatch.setattr(pymetis, "part_graph", lambda *a, **k: pytest.fail("METIS called for k=1"))
    assert partition(path_graph(5), 1).tolist() == [0] * 5


def test_argument_errors():
    g = path_graph(4)
    with pytest.raises(ValueError, match="cannot split 4 vertices into k=5"):
        partition(g, 5)
    with pytest.raises(ValueError, match="positive integer"):
        partition(g, 0)
    with pytest.raises(ValueError, match="unknown partition method 'spectral'"):
        partition(g, 2, method="spectral")
    with pytest.raises(ValueError, match="unknown vertex_weights"):
        partition(g, 2, vertex_weights="edges")


def test_contiguous_and_random_are_balanced():
    g = path_graph(103)
    for method in ("contiguous", "random"):
        sizes = torch.bincount(partition(g, 10, method=method))
        assert int(sizes.max() - sizes.min()) <= 1
    assert partition(g, 10, method="contiguous").tolist() == sorted(partition(g, 10, method="contiguous").tolist())
    assert not torch.equal(partition(g, 10, method="random", seed=0), partition(g, 10, method="random", seed=1))
    # degree weights: a heavy vertex (high in-degree) gets a part nearly to itself
    star = make_graph(20, [(i, 0) for i in range(1, 20)])
    parts = partition(star, 2, method="contiguous", vertex_weights="degree")
    assert parts.tolist() == [0] + [1] * 19


def test_metis_quality_on_two_cliques():
    edges = [(i, j) for i in range(6) for j in range(6) if i != j]
    edges += [(i + 6, j + 6) for i, j in edges] + [(0, 6)]
    for method in ("metis", "metis_kway"):
        parts = partition(make_graph(12, edges), 2, method=method)
        assert len(set(parts[:6].tolist())) == 1 and len(set(parts[6:].tolist())) == 1


def test_cache_hit_returns_identical_parts(tmp_path, monkeypatch):
    g = make_graph(50, [(i, (i * 7 + 3) % 50) for i in range(50)] + [(i, i + 1) for i in range(49)])
    first = partition(g, 4, seed=3, cache_dir=tmp_path)
    path = tmp_path / cache_name(g.structure_hash(), 4, "metis", 3, None)
    assert path.name == f"{g.structure_hash()}_k4_metis_s3_none.npy" and path.exists()
    monkeypatch.setattr(pymetis, "part_graph", lambda *a, **k: pytest.fail("cache missed"))
    assert torch.equal(partition(g, 4, seed=3, cache_dir=tmp_path), first)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind
    monkeypatch.undo()

    path.write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="unreadable partition cache"):
        assert torch.equal(partition(g, 4, seed=3, cache_dir=tmp_path), first)
    np.save(path, np.zeros(50, dtype=np.int64))  # wrong content: part 1..3 empty
    with pytest.warns(UserWarning, match="inconsistent partition cache"):
        assert torch.equal(partition(g, 4, seed=3, cache_dir=tmp_path), first)
