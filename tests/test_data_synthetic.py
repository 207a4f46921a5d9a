"""Synthetic graphs: seeded, near the requested size, undirected and simple; SBM features carry the class."""

from __future__ import annotations

import pytest
import torch

from gnnpipe.data import GraphError, SyntheticSpec, load_graph, powerlaw_graph, sbm_graph

GENERATORS = {"sbm": sbm_graph, "powerlaw": powerlaw_graph}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_per_seed(name):
    make = GENERATORS[name]
    a, b, c = make(SyntheticSpec(seed=1)), make(SyntheticSpec(seed=1)), make(SyntheticSpec(seed=2))
    assert a.content_hash() == b.content_hash()
    assert a.structure_hash() != c.structure_hash()
    assert not torch.equal(a.x, c.x) and not torch.equal(a.train_mask, c.train_mask)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize(("n", "deg"), [(2000, 10.0), (500, 3.0), (3000, 25.0)])
def test_size_and_simple_undirected(name, n, deg):
    g = GENERATORS[name](SyntheticSpec(num_nodes=n, avg_degree=deg, num_features=7, num_classes=5))
    assert g.num_nodes == n and g.num_features == 7 and g.num_classes == 5
    assert abs(g.num_edges - n * deg) <= 0.02 * n * deg
    src, dst = g.edges()
    assert bool((src != dst).all())
    assert g.to_undirected().structure_hash() == g.structure_hash()  # symmetric, no duplicates
    assert set(g.y.unique().tolist()) == set(range(5))
    counts = [int(m.sum()) for m in (g.train_mask, g.val_mask, g.test_mask)]
    assert counts == [round(0.6 * n), round(0.2 * n), n - round(0.6 * n) - round(0.2 * n)]


def test_sbm_homophily_and_informative_features():
    g = sbm_graph(SyntheticSpec(num_nodes=4000, num_classes=4, avg_degree=10.0, num_features=64, seed=0))
    src, dst = g.edges()
    homophily = (g.y[src] == g.y[dst]).float().mean().item()
    assert 0.75 < homophily < 0.85
    # nearest class mean, fitted on train, scored on test: clearly above chance (0.25), far from perfect
    means = torch.stack([g.x[g.train_mask & (g.y == k)].mean(0) for k in range(4)])
    pred = torch.cdist(g.x[g.test_mask], means).argmin(1)
    acc = (pred == g.y[g.test_mask]).float().mean().item()
    assert 0.4 < acc < 0.95
    # one round of neighbour averaging makes it easier: the graph carries signal too
    agg = torch.zeros_like(g.x).index_add_(0, dst, g.x[src]) / g.in_degree().clamp(min=1).unsqueeze(1).float()
    means_agg = torch.stack([agg[g.train_mask & (g.y == k)].mean(0) for k in range(4)])
    acc_agg = (torch.cdist(agg[g.test_mask], means_agg).argmin(1) == g.y[g.test_mask]).float().mean().item()
    assert acc_agg > acc + 0.1


def test_powerlaw_heavy_tail():
    g = powerlaw_graph(SyntheticSpec(num_nodes=20000, avg_degree=10.0, seed=0))
    deg = g.in_degree().float()
    assert deg.max().item() > 20 * deg.mean().item()
    assert torch.median(deg).item() < deg.mean().item()
    assert g.y[deg.argmax()].item() == 0  # heaviest degree bucket


def test_load_graph_synthetic(dataset_cfg):
    g = load_graph(dataset_cfg(name="sbm", num_nodes=300, avg_degree=4.0, num_features=6, num_classes=3, seed=5))
    assert g.content_hash() == sbm_graph(SyntheticSpec(300, 3, 4.0, 6, 5)).content_hash()
    p = load_graph(dataset_cfg(name="powerlaw", num_nodes=300, avg_degree=4.0, feature_norm=True))
    assert p.num_nodes == 300


def test_powerlaw_100k_is_fast():
    import time

    t = time.perf_counter()
    g = powerlaw_graph(SyntheticSpec(num_nodes=100_000, avg_degree=10.0, num_features=16))
    assert time.perf_counter() - t < 10.0
    assert abs(g.num_edges - 1_000_000) <= 20_000


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"num_nodes": 1}, r"num_nodes = 1"),
        ({"avg_degree": 0.0}, r"avg_degree = 0.0"),
        ({"num_features": 0}, r"num_features = 0"),
        ({"num_classes": 0}, r"num_classes = 0"),
    ],
)
def test_bad_parameters(kw, match):
    for make in GENERATORS.values():
        with pytest.raises(GraphError, match=match):
            make(SyntheticSpec(**kw))
