"""Fixtures shared by the test modules (stateless factories, so session-scoped and usable with hypothesis)."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gnnpipe.data.graph import Graph

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_datasets() -> Path:
    """The repository's ``datasets/`` directory (holds the real Planetoid raw files)."""
    return REPO_ROOT / "datasets"


@pytest.fixture(scope="session")
def dataset_cfg() -> Callable[..., types.SimpleNamespace]:
    """Factory of dataset configs with the fields and defaults of ``gnnpipe.config.DatasetConfig``."""

    def make(**overrides: object) -> types.SimpleNamespace:
        fields = dict(
            name="cora",
            root=str(REPO_ROOT / "datasets"),
            path=None,
            feature_norm=False,
            undirected=True,
            num_nodes=2000,
            avg_degree=10.0,
            num_features=64,
            num_classes=4,
            seed=0,
        )
        unknown = set(overrides) - set(fields)
        assert not unknown, f"unknown dataset config fields {unknown}"
        fields.update(overrides)
        return types.SimpleNamespace(**fields)

    return make


@pytest.fixture(scope="session")
def small_graph() -> Callable[..., Graph]:
    """Factory of a small random directed graph (duplicate edges and self-loops possible).

    ``multi_label``: y is ``[N, C]`` multi-hot float32 instead of ``[N]`` int64 with some -1 (unlabelled).
    Masks are disjoint and leave some vertices in no split.
    """

    def make(n: int = 40, e: int = 160, f: int = 5, c: int = 3, *, multi_label: bool = False, seed: int = 0) -> Graph:
        g = torch.Generator().manual_seed(seed)
        src = torch.randint(0, n, (e,), generator=g)
        dst = torch.randint(0, n, (e,), generator=g)
        x = torch.randn(n, f, generator=g)
        if multi_label:
            y = (torch.rand(n, c, generator=g) < 0.4).float()
            y[0] = 1.0  # at least one row with several ones
        else:
            y = torch.randint(0, c, (n,), generator=g)
            y[::7] = -1
        code = torch.randint(0, 4, (n,), generator=g)
        return Graph.from_edges("small", src, dst, x, y, code == 0, code == 1, code == 2, c)

    return make


def _assert_same_graph(a: Graph, b: Graph) -> None:
    assert torch.equal(a.indptr, b.indptr)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.x, b.x)
    assert a.y.dtype == b.y.dtype and torch.equal(a.y, b.y)
    for m in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(a, m), getattr(b, m)), m
    assert a.num_classes == b.num_classes


@pytest.fixture(scope="session")
def assert_same_graph() -> Callable[[Graph, Graph], None]:
    """Asserts two graphs have the same structure, features, labels (and dtype), splits and class count."""
    return _assert_same_graph
