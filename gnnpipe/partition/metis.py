"""Vertex partitioning into ``k`` parts: METIS (pymetis), random or contiguous, with an on-disk cache.

`partition` returns the part id of every vertex (``int64 [N]``); every part is non-empty. The chunk plan
(`chunker.py`) turns those ids into contiguous vertex ranges.

METIS needs a symmetric graph without self-loops, so the in-edge CSR of `Graph` is symmetrised here (an edge
in either direction makes two vertices adjacent); the graph itself is never modified.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from gnnpipe.data.graph import Graph

__all__ = [
    "METHODS",
    "VERTEX_WEIGHTS",
    "atomic_write",
    "cache_name",
    "check_options",
    "fill_empty_parts",
    "partition",
]

METHODS = ("metis", "metis_kway", "random", "contiguous")
VERTEX_WEIGHTS = (None, "degree")


def partition(
    graph: Graph,
    k: int,
    *,
    method: str = "metis",
    seed: int = 0,
    vertex_weights: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Split the vertices of ``graph`` into ``k`` non-empty parts.

    method: ``metis`` (METIS recursive bisection), ``metis_kway`` (METIS k-way), ``random`` (a seeded random
    order cut into ``k`` balanced runs) or ``contiguous`` (vertex-id order cut into ``k`` balanced runs).
    Recursive bisection is the default because its part ids are hierarchical (parts ``[0, k/2)`` are one
    side of the first bisection, and so on), so the contiguous chunk blocks that form the ways are
    themselves well-cut. On the graphs we measured (1M-vertex power-law, 200k-vertex SBM, k = 4..64) it cut
    fewer edges than k-way and ran up to 3x faster. The authors' partitioner called pymetis's default, i.e.
    ``metis_kway`` for ``k > 8`` and ``metis`` otherwise. Both METIS methods run with ``Options(seed=seed)``
    and are deterministic.
    vertex_weights: ``None`` (every vertex weighs 1) or ``degree`` (a vertex weighs ``1 + in_degree``: the
    row work plus the aggregation work it causes), balanced by every method. On power-law graphs, unit
    weights can leave the in-edge (aggregation) load very uneven across parts; ``degree`` evens it out.
    cache_dir: if given, the result is stored as ``<structure_hash>_k<k>_<method>_s<seed>_<vw>.npy`` and read
    back on the next call with the same arguments (an unreadable or inconsistent file is recomputed).

    Returns ``parts: [N] int64`` with values in ``[0, k)``, each value used at least once.
    """
    n = graph.num_nodes
    _check_args(n, k, method, vertex_weights)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / cache_name(graph.structure_hash(), k, method, seed, vertex_weights)
        cached = _load_cached(path, n, k)
        if cached is not None:
            return cached
    parts = _compute(graph, k, method, seed, vertex_weights)
    if path is not None:
        atomic_write(path, lambda f: np.save(f, parts.numpy(), allow_pickle=False))
    return parts


def cache_name(structure_hash: str, k: int, method: str, seed: int, vertex_weights: str | None) -> str:
    """File name of a cached partition: ``<structure_hash>_k<k>_<method>_s<seed>_<vw>.npy``."""
    return f"{structure_hash}_k{k}_{method}_s{seed}_{vertex_weights or 'none'}.npy"


def fill_empty_parts(parts: torch.Tensor, k: int) -> torch.Tensor:
    """Make every part of ``parts: [N] int64`` non-empty (requires ``k <= N``), in place; returns ``parts``.

    METIS may leave parts empty on tiny or disconnected graphs. For each empty part, in increasing id order,
    the highest-id vertex of the currently largest part (smallest id among equals) moves into it. Only a
    handful of vertices move, so the loop runs over parts, never over vertices.
    """
    sizes = torch.bincount(parts, minlength=k)
    for p in torch.nonzero(sizes == 0).flatten().tolist():
        donor = int(torch.argmax(sizes))  # first maximum: deterministic
        v = int(torch.nonzero(parts == donor)[-1])
        parts[v] = p
        sizes[donor] -= 1
        sizes[p] += 1
    return parts


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that readers see either the old or the complete new content, never a torn one.

    ``write`` receives a binary file object of a temporary file in the same directory, which then replaces
    ``path`` (``os.replace`` is atomic on POSIX). Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------- internals
def check_options(method: str, vertex_weights: str | None) -> None:
    """Raise ValueError unless ``method`` is in METHODS and ``vertex_weights`` in VERTEX_WEIGHTS."""
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; allowed: {', '.join(METHODS)}")
    if vertex_weights not in VERTEX_WEIGHTS:
        raise ValueError(f"unknown vertex_weights {vertex_weights!r}; allowed: None, 'degree'")


def _check_args(n: int, k: int, method: str, vertex_weights: str | None) -> None:
    check_options(method, vertex_weights)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"number of parts k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"cannot split {n} vertices into k={k} non-empty parts; use k <= {n}")


def _weights(graph: Graph, vertex_weights: str | None) -> torch.Tensor:
    """[N] int64 vertex weights (all >= 1)."""
    if vertex_weights == "degree":
        return graph.in_degree() + 1
    return torch.ones(graph.num_nodes, dtype=torch.int64)


def _compute(graph: Graph, k: int, method: str, seed: int, vertex_weights: str | None) -> torch.Tensor:
    n = graph.num_nodes
    if k == 1:
        return torch.zeros(n, dtype=torch.int64)
    w = _weights(graph, vertex_weights)
    if method == "contiguous":
        parts = _balanced_runs(w, k)
    elif method == "random":
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        parts = torch.empty(n, dtype=torch.int64)
        parts[order] = _balanced_runs(w[order], k)
    else:
        parts = _metis(graph, k, seed, w if vertex_weights is not None else None, recursive=method == "metis")
    return fill_empty_parts(parts, k)


def _balanced_runs(w: torch.Tensor, k: int) -> torch.Tensor:
    """Cut a sequence of vertex weights ``w: [N]`` into ``k`` non-empty runs of about equal total weight.

    A vertex goes to the run its weight midpoint falls into (exact integer arithmetic); the cut points are
    then made strictly increasing so that no run is empty. Returns ``[N] int64`` run ids.
    """
    n = w.numel()
    cum = torch.cumsum(w, 0)
    total = int(cum[-1])
    # midpoint of vertex i, times 2k: k * (cum_i + cum_{i-1}); run c starts where it reaches 2 * total * c.
    mid2k = k * (2 * cum - w)
    targets = 2 * total * torch.arange(1, k, dtype=torch.int64)
    cuts = torch.cat([torch.zeros(1, dtype=torch.int64), torch.searchsorted(mid2k, targets), torch.tensor([n])])
    idx = torch.arange(k + 1)
    cuts = torch.cummax(cuts - idx, 0).values + idx  # strictly increasing, cuts[0] stays 0
    cuts = torch.minimum(cuts, n - k + idx)  # leave room for the remaining runs, cuts[k] stays n
    return torch.repeat_interleave(torch.arange(k), cuts[1:] - cuts[:-1])


def _symmetric_csr(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """METIS input: ``xadj: [N+1]``, ``adjncy: [2M]`` int64 of the symmetrised graph without self-loops."""
    n = graph.num_nodes
    src, dst = graph.edges()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    key = torch.unique(torch.cat([src * n + dst, dst * n + src]))  # sorted by (row, col), deduplicated
    rows, cols = key // n, key % n
    del key
    xadj = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=n), 0, out=xadj[1:])
    return xadj.numpy(), cols.numpy()


def _metis(graph: Graph, k: int, seed: int, w: torch.Tensor | None, *, recursive: bool) -> torch.Tensor:
    import pymetis  # imported lazily: only the METIS method needs it

    xadj, adjncy = _symmetric_csr(graph)
    result = pymetis.part_graph(
        k,
        adjacency=pymetis.CSRAdjacency(xadj, adjncy),
        vweights=None if w is None else w.numpy(),
        options=pymetis.Options(seed=seed),
        recursive=recursive,
    )
    parts = np.asarray(result.vertex_part).astype(np.int64, copy=False)
    return torch.from_numpy(parts.copy())


def _load_cached(path: Path, n: int, k: int) -> torch.Tensor | None:
    """The cached partition at ``path``, or None if absent; a corrupt or inconsistent file is ignored."""
    if not path.exists():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(f"ignoring unreadable partition cache {path}: {exc}", stacklevel=3)
        return None
    ok = arr.dtype == np.int64 and arr.shape == (n,)
    if ok and n:
        ok = int(arr.min()) >= 0 and int(arr.max()) < k and bool((np.bincount(arr, minlength=k) > 0).all())
    if not ok:
        warnings.warn(f"ignoring inconsistent partition cache {path} (expected {n} part ids in [0, {k}))", stacklevel=3)
        return None
    return torch.from_numpy(arr)
