"""Layer -> stage balancing: which consecutive GNN layers each pipeline stage runs.

``split_layers(L, S)`` gives equal counts; with a per-layer cost vector it returns the contiguous split that
minimises the most expensive stage (the pipeline's throughput bound), computed exactly by dynamic programming.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["split_layers", "stage_bounds"]


def split_layers(num_layers: int, num_stages: int, *, costs: Sequence[float] | None = None) -> list[int]:
    """Number of consecutive layers per stage, ``[S]`` positive ints summing to ``L``.

    Without ``costs``: equal counts, the remainder going one each to the first stages (``10, 4 -> 3,3,2,2``).
    With ``costs: [L]`` (non-negative): a split minimising the maximum stage cost. Among the optimal splits
    it takes the one with the smallest sum of squared stage costs, then the smallest sum of squared layer
    counts, then the largest first stage (then second, ...). So equal costs give the equal split, and the
    result is deterministic. Ties in float costs are judged up to a relative 1e-9.
    """
    for name, v in (("num_layers", num_layers), ("num_stages", num_stages)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if num_stages > num_layers:
        raise ValueError(
            f"cannot split {num_layers} layers into {num_stages} stages: every stage needs at least one layer "
            f"(use stages <= {num_layers})"
        )
    if costs is None:
        base, extra = divmod(num_layers, num_stages)
        return [base + (1 if s < extra else 0) for s in range(num_stages)]
    c = np.asarray(costs, dtype=np.float64)
    if c.shape != (num_layers,):
        raise ValueError(f"costs must have one entry per layer ({num_layers}), got shape {tuple(c.shape)}")
    if not np.isfinite(c).all() or (c < 0).any():
        raise ValueError(f"costs must be finite and non-negative, got {list(costs)}")
    return _min_max_split(c, num_stages)


def stage_bounds(counts: Sequence[int]) -> list[tuple[int, int]]:
    """Layer ranges ``[(begin, end), ...]`` of consecutive stages with ``counts`` layers each."""
    if any(n < 0 for n in counts):
        raise ValueError(f"layer counts must be non-negative, got {list(counts)}")
    out, begin = [], 0
    for n in counts:
        out.append((begin, begin + n))
        begin += n
    return out


def _min_max_split(costs: np.ndarray, num_stages: int) -> list[int]:
    """Exact DP. Phase 1: the optimal bottleneck. Phase 2: the tie-breaks among bottleneck-optimal splits."""
    L, S = costs.size, num_stages
    prefix = np.concatenate([[0.0], np.cumsum(costs)])
    # seg[i, j] = cost of layers i..j-1 as one stage (i < j), +inf elsewhere. Both phases read these exact
    # float values, so the bottleneck found in phase 1 is feasible in phase 2 without any tolerance.
    seg = np.where(np.triu(np.ones((L + 1, L + 1), dtype=bool), k=1), prefix[None, :] - prefix[:, None], np.inf)

    # Phase 1: best[j] = least possible max stage cost over splits of layers 0..j-1 into s stages.
    best = seg[0].copy()
    for _ in range(2, S + 1):
        best = np.maximum(best[:, None], seg).min(axis=0)
    bound = best[L]

    # Phase 2 over suffixes: (sum of squared costs, sum of squared counts) for layers i..L-1 in s stages,
    # every stage cost <= bound; choice[s][i] = end of the first of those stages.
    tol = 1e-9 * max(float(prefix[-1]) ** 2, math.ulp(1.0))
    j_all = np.arange(L + 1)
    g_cost = np.full(L + 1, np.inf)
    g_cost[L] = 0.0
    g_cnt = np.full(L + 1, np.inf)
    g_cnt[L] = 0.0
    choice = np.zeros((S + 1, L + 1), dtype=np.int64)
    for s in range(1, S + 1):
        new_cost = np.full(L + 1, np.inf)
        new_cnt = np.full(L + 1, np.inf)
        for i in range(L):
            ok = (seg[i] <= bound) & np.isfinite(g_cost)
            if not ok.any():
                continue
            cand_cost = np.where(ok, seg[i] ** 2 + g_cost, np.inf)
            cand_cnt = np.where(ok, (j_all - i) ** 2 + g_cnt, np.inf)
            near = cand_cost <= cand_cost.min() + tol
            cand_cnt = np.where(near, cand_cnt, np.inf)
            j = int(np.flatnonzero(cand_cnt == cand_cnt.min())[-1])  # largest j: earlier stages take more
            choice[s, i] = j
            new_cost[i], new_cnt[i] = cand_cost[j], cand_cnt[j]
        g_cost, g_cnt = new_cost, new_cnt

    counts, i = [], 0
    for s in range(S, 0, -1):
        j = int(choice[s, i])
        counts.append(j - i)
        i = j
    assert i == L and all(n >= 1 for n in counts), (counts, L)
    return counts
