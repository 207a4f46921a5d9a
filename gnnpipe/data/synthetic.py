"""Seeded synthetic graphs: an SBM whose features carry the class (accuracy means something) and a
Chung-Lu power-law graph for scale tests. Both are undirected, without self-loops or duplicate edges,
generated with vectorised numpy in O(N + E) memory, and split 60/20/20 at random (seeded).

``avg_degree`` is the average in-degree of the symmetrised graph, so the graph has about
``num_nodes * avg_degree`` directed edges (``num_nodes * avg_degree / 2`` undirected pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gnnpipe.data.common import random_split_masks
from gnnpipe.data.graph import Graph, GraphError

__all__ = ["SyntheticSpec", "powerlaw_graph", "sbm_graph"]

_MAX_ROUNDS = 20


@dataclass(frozen=True)
class SyntheticSpec:
    """What every generator is asked for (the ``dataset.*`` keys of the same names): ``num_nodes`` vertices
    in ``num_classes`` classes, about ``num_nodes * avg_degree`` directed edges, ``num_features`` wide
    features; ``seed`` fixes the graph, the features and the split. Each generator adds its own shape knobs."""

    num_nodes: int = 2000
    num_classes: int = 4
    avg_degree: float = 10.0
    num_features: int = 64
    seed: int = 0

    def check(self, name: str) -> None:
        """Raise GraphError naming dataset ``name``, the key and what is allowed, for a spec no graph can meet."""
        n = self.num_nodes
        if n < 2:
            raise GraphError(f"dataset {name!r}: num_nodes = {n}, expected >= 2")
        if not 0 < self.avg_degree <= n - 1:
            raise GraphError(f"dataset {name!r}: avg_degree = {self.avg_degree}, expected in (0, num_nodes - 1]")
        if self.num_features < 1:
            raise GraphError(f"dataset {name!r}: num_features = {self.num_features}, expected >= 1")
        if not 1 <= self.num_classes <= n:
            raise GraphError(f"dataset {name!r}: num_classes = {self.num_classes}, expected in [1, num_nodes]")

    @property
    def num_pairs(self) -> int:
        """Distinct undirected pairs to draw: each becomes two directed edges."""
        return int(round(self.num_nodes * self.avg_degree / 2))


def _unique_pairs(
    sample: Callable[[int], tuple[np.ndarray, np.ndarray]], target: int, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw candidate pairs until ``target`` distinct non-loop undirected pairs exist (or rounds run out).

    ``sample(m)`` returns m candidate pairs ``(u, v)``; returns ``(a, b)`` with ``a < b``, each ``[<= target]``.
    """
    keys = np.empty(0, dtype=np.int64)
    for _ in range(_MAX_ROUNDS):
        need = target - keys.size
        if need <= 0:
            break
        u, v = sample(int(need * 1.05) + 16)
        keep = u != v
        u, v = u[keep], v[keep]
        keys = np.sort(np.concatenate([keys, np.minimum(u, v) * n + np.maximum(u, v)]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # np.unique hashes: 10x slower here
    if keys.size > target:  # drop a random surplus, not the largest ids
        keys = np.sort(rng.choice(keys, size=target, replace=False))
    return keys // n, keys % n


def _graph(name: str, spec: SyntheticSpec, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> Graph:
    """Symmetric Graph with both directions of every pair ``(a[i], b[i])`` and a seeded 60/20/20 split."""
    src = torch.from_numpy(np.concatenate([a, b]))
    dst = torch.from_numpy(np.concatenate([b, a]))
    train, val, test = random_split_masks(spec.num_nodes, spec.seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    return Graph.from_edges(name, src, dst, x_t, y_t, train, val, test, spec.num_classes)


def sbm_graph(spec: SyntheticSpec, *, intra_fraction: float = 0.8, feature_signal: float = 1.0) -> Graph:
    """Stochastic block model: ``num_classes`` near-equal blocks at random ids, label = block.

    ``intra_fraction`` of the sampled edges join two vertices of the same block (uniform over intra-block
    pairs), the rest join different blocks (uniform over inter-block pairs). Features ``x: [N, F]`` float32 =
    class mean + N(0, 1) noise, class means drawn from N(0, 2 / F) per coordinate (times ``feature_signal``),
    so two class means lie about 2 noise standard deviations apart whatever F is: a nearest-class-mean
    classifier on features alone is clearly better than chance but far from perfect, and neighbour
    aggregation helps. ``y: [N]`` int64.
    """
    spec.check("sbm")
    if not 0.0 <= intra_fraction <= 1.0:
        raise GraphError(f"dataset 'sbm': intra_fraction = {intra_fraction}, expected in [0, 1]")
    rng = np.random.default_rng(spec.seed)
    n, k, num_features = spec.num_nodes, spec.num_classes, spec.num_features
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    y = rng.permutation(np.repeat(np.arange(k, dtype=np.int64), sizes))
    members = np.argsort(y, kind="stable")  # vertex ids grouped by block
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    p_intra = sizes.astype(np.float64) ** 2 / np.sum(sizes.astype(np.float64) ** 2)
    p_size = sizes / n
    frac = intra_fraction if k > 1 else 1.0

    def pick(blocks: np.ndarray) -> np.ndarray:
        return members[offsets[blocks] + (rng.random(blocks.size) * sizes[blocks]).astype(np.int64)]

    def sample(m: int) -> tuple[np.ndarray, np.ndarray]:
        mi = rng.binomial(m, frac)
        a = rng.choice(k, size=mi, p=p_intra)
        u_in, v_in = pick(a), pick(a)
        a = rng.choice(k, size=m - mi, p=p_size)
        b = rng.choice(k, size=m - mi, p=p_size)
        for _ in range(64):  # resample the other block until it differs (k >= 2 here when m - mi > 0)
            same = a == b
            if not same.any():
                break
            b[same] = rng.choice(k, size=int(same.sum()), p=p_size)
        keep = a != b
        return np.concatenate([u_in, pick(a[keep])]), np.concatenate([v_in, pick(b[keep])])

    a, b = _unique_pairs(sample, spec.num_pairs, n, rng)
    scale = feature_signal * np.sqrt(2.0 / num_features)
    means = (rng.standard_normal((k, num_features)) * scale).astype(np.float32)
    x = means[y] + rng.standard_normal((n, num_features), dtype=np.float32)
    return _graph("sbm", spec, a, b, x, y)


def powerlaw_graph(spec: SyntheticSpec, *, exponent: float = 2.5) -> Graph:
    """Chung-Lu graph whose expected degrees follow a power law ``P(d) ~ d^-exponent``.

    Expected degree of the i-th heaviest vertex ``~ (i + 1)^(-1 / (exponent - 1))``, scaled to mean
    ``avg_degree`` and capped at ``sqrt(N * avg_degree)`` (Chung-Lu's ``d_i d_j <= sum(d)``). Both endpoints
    of an edge are drawn independently with probability proportional to the expected degree, vertices are
    placed at random ids, and pairs are drawn until ``N * avg_degree / 2`` distinct ones exist.
    ``x: [N, F]`` float32 N(0, 1) noise; ``y: [N]`` int64 = degree bucket (the heaviest ``N / C`` vertices
    are class 0, ...). 1M vertices / 10M directed edges take about 6 s on 2 CPU cores.
    """
    spec.check("powerlaw")
    if exponent <= 1.0:
        raise GraphError(f"dataset 'powerlaw': exponent = {exponent}, expected > 1")
    rng = np.random.default_rng(spec.seed)
    n, avg_degree = spec.num_nodes, spec.avg_degree
    w = np.arange(1, n + 1, dtype=np.float64) ** (-1.0 / (exponent - 1.0))
    w *= avg_degree * n / w.sum()
    w = np.minimum(w, np.sqrt(n * avg_degree))
    w /= w.sum()
    perm = rng.permutation(n)
    ids = np.arange(n, dtype=np.int64)

    def sample(m: int) -> tuple[np.ndarray, np.ndarray]:
        # endpoint counts per vertex are multinomial(m, w): O(N + m), no per-edge CDF search
        u = np.repeat(ids, rng.multinomial(m, w))
        v = rng.permutation(np.repeat(ids, rng.multinomial(m, w)))
        return perm[u], perm[v]

    a, b = _unique_pairs(sample, spec.num_pairs, n, rng)
    y = np.empty(n, dtype=np.int64)
    y[perm] = np.arange(n, dtype=np.int64) * spec.num_classes // n
    x = rng.standard_normal((n, spec.num_features), dtype=np.float32)
    return _graph("powerlaw", spec, a, b, x, y)
