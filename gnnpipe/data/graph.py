"""The `Graph` every other module consumes.

A graph is stored once, as the CSR of its *in*-edges: row ``v`` of the CSR lists the sources ``u`` of the
edges ``u -> v``, i.e. the CSR of the adjacency matrix ``A[v, u] = 1``. That is the layout aggregation
reads (``m[v] = sum_u Ahat[v, u] * z[u]``) and the layout chunk plans slice by rows.

Labels are ``int64 [N]`` for single-label data (``-1`` marks an unlabelled vertex) or ``float32 [N, C]``
multi-hot for multi-label data. Splits are boolean masks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

__all__ = ["Graph", "GraphError", "csr_from_edges"]


class GraphError(ValueError):
    """A graph (or a file holding one) violates an invariant; the message says which and where."""


def csr_from_edges(src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """In-edge CSR of the edges ``src[i] -> dst[i]``: rows are destinations, sorted by (dst, src).

    Returns ``indptr: [N+1] int64`` and ``indices: [E] int64`` (the sources).
    """
    src = src.to(torch.int64)
    dst = dst.to(torch.int64)
    key = dst * num_nodes + src
    order = torch.argsort(key)
    indices = src[order].contiguous()
    counts = torch.bincount(dst, minlength=num_nodes)
    indptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr, indices


@dataclass
class Graph:
    """A graph with vertex features, labels and splits.

    indptr: [N+1] int64, indices: [E] int64 -- in-edge CSR (row v = sources of edges into v).
    x: [N, F] float32. y: [N] int64 (single-label, -1 = none) or [N, C] float32 (multi-label).
    train_mask / val_mask / test_mask: [N] bool.
    """

    name: str
    indptr: torch.Tensor
    indices: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(
        cls,
        name: str,
        src: torch.Tensor,
        dst: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        train_mask: torch.Tensor,
        val_mask: torch.Tensor,
        test_mask: torch.Tensor,
        num_classes: int | None = None,
    ) -> Graph:
        n = x.shape[0]
        indptr, indices = csr_from_edges(src, dst, n)
        if num_classes is None:
            num_classes = int(y.shape[1]) if y.dim() == 2 else int(y.max().item()) + 1 if y.numel() else 0
        g = cls(name, indptr, indices, x, y, train_mask, val_mask, test_mask, num_classes)
        g.validate()
        return g

    # ------------------------------------------------------------------ basic facts
    @property
    def num_nodes(self) -> int:
        return int(self.indptr.numel() - 1)

    @property
    def num_edges(self) -> int:
        return int(self.indices.numel())

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def multi_label(self) -> bool:
        return self.y.dim() == 2

    def in_degree(self) -> torch.Tensor:
        """[N] int64: number of in-edges of every vertex."""
        return self.indptr[1:] - self.indptr[:-1]

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(src, dst) of every edge, in CSR order. Both [E] int64."""
        dst = torch.repeat_interleave(torch.arange(self.num_nodes), self.in_degree())
        return self.indices, dst

    def validate(self) -> None:
        """Check every invariant once, at the boundary; raise GraphError naming the broken one."""
        n = self.num_nodes
        where = f"graph {self.name!r}"
        if self.indptr.dtype != torch.int64 or self.indices.dtype != torch.int64:
            raise GraphError(f"{where}: indptr/indices must be int64")
        if self.indptr[0].item() != 0 or self.indptr[-1].item() != self.indices.numel():
            raise GraphError(f"{where}: indptr must start at 0 and end at the number of edges")
        if n and bool((self.indptr[1:] < self.indptr[:-1]).any()):
            raise GraphError(f"{where}: indptr must be non-decreasing")
        if self.indices.numel() and (int(self.indices.min()) < 0 or int(self.indices.max()) >= n):
            bad = self.indices[(self.indices < 0) | (self.indices >= n)][0].item()
            raise GraphError(f"{where}: edge endpoint {bad} out of range [0, {n})")
        if self.x.dim() != 2 or self.x.shape[0] != n:
            raise GraphError(f"{where}: features have shape {tuple(self.x.shape)}, expected [{n}, F]")
        if self.y.shape[0] != n:
            raise GraphError(f"{where}: labels have {self.y.shape[0]} rows but the graph has {n} vertices")
        if self.y.dim() == 1 and self.y.numel() and int(self.y.max()) >= self.num_classes:
            raise GraphError(f"{where}: label {int(self.y.max())} >= num_classes {self.num_classes}")
        for mname in ("train_mask", "val_mask", "test_mask"):
            m = getattr(self, mname)
            if m.dtype != torch.bool or m.shape != (n,):
                raise GraphError(f"{where}: {mname} must be bool [{n}], got {m.dtype} {tuple(m.shape)}")

    def content_hash(self) -> str:
        """Stable hex digest of structure, features, labels and splits (cached)."""
        if "hash" not in self._cache:
            h = hashlib.sha256()
            for t in (self.indptr, self.indices, self.x, self.y, self.train_mask, self.val_mask, self.test_mask):
                t = t.contiguous()
                h.update(str((t.dtype, tuple(t.shape))).encode())
                h.update(t.numpy().tobytes())
            self._cache["hash"] = h.hexdigest()[:32]
        return self._cache["hash"]

    def structure_hash(self) -> str:
        """Digest of the edge structure only: what partitions and chunk plans depend on."""
        if "shash" not in self._cache:
            h = hashlib.sha256()
            for t in (self.indptr, self.indices):
                h.update(t.contiguous().numpy().tobytes())
            self._cache["shash"] = h.hexdigest()[:32]
        return self._cache["shash"]

    # ------------------------------------------------------------------ transforms
    def permute(self, perm: torch.Tensor) -> Graph:
        """Relabel vertices: new id of old vertex ``v`` is ``perm[v]``. Returns a new Graph."""
        n = self.num_nodes
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(n)
        src, dst = self.edges()
        return Graph.from_edges(
            self.name,
            perm[src],
            perm[dst],
            self.x[inv],
            self.y[inv],
            self.train_mask[inv],
            self.val_mask[inv],
            self.test_mask[inv],
            self.num_classes,
        )

    def to_undirected(self) -> Graph:
        """Symmetrise, drop self-loops and duplicate edges (the authors' preprocessing)."""
        src, dst = self.edges()
        keep = src != dst
        src, dst = src[keep], dst[keep]
        a, b = torch.minimum(src, dst), torch.maximum(src, dst)
        key = torch.unique(a * self.num_nodes + b)
        a, b = key // self.num_nodes, key % self.num_nodes
        indptr, indices = csr_from_edges(torch.cat([a, b]), torch.cat([b, a]), self.num_nodes)
        return Graph(
            self.name,
            indptr,
            indices,
            self.x,
            self.y,
            self.train_mask,
            self.val_mask,
            self.test_mask,
            self.num_classes,
        )

    def row_normalized_features(self) -> Graph:
        """Features divided by their row sum (rows summing to 0 stay 0), as ``--feature_pre 1`` does."""
        s = self.x.sum(1, keepdim=True)
        x = torch.where(s != 0, self.x / torch.where(s != 0, s, torch.ones_like(s)), torch.zeros_like(self.x))
        return Graph(
            self.name,
            self.indptr,
            self.indices,
            x,
            self.y,
            self.train_mask,
            self.val_mask,
            self.test_mask,
            self.num_classes,
        )

    # ------------------------------------------------------------------ aggregation operators
    def norm_values(self, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised adjacency ``Ahat`` of an aggregation kind, as (indptr, indices, values float64).

        kind ``gcn``: ``D^-1/2 (A + I) D^-1/2`` with ``D = in_degree + 1`` (self-loops added).
        kind ``mean``: ``D^-1 A`` with ``D = in_degree`` (no self-loop; isolated rows are zero).
        kind ``sum``: ``A``.
        """
        key = ("norm", kind)
        if key in self._cache:
            return self._cache[key]
        n = self.num_nodes
        deg = self.in_degree()
        if kind == "gcn":
            src, dst = self.edges()
            loops = torch.arange(n)
            indptr, indices = csr_from_edges(torch.cat([src, loops]), torch.cat([dst, loops]), n)
            dst2 = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
            dinv = (deg.to(torch.float64) + 1.0).rsqrt()
            values = dinv[dst2] * dinv[indices]
        elif kind == "mean":
            indptr, indices = self.indptr, self.indices
            inv = torch.where(deg > 0, 1.0 / deg.clamp(min=1).to(torch.float64), torch.zeros(n, dtype=torch.float64))
            values = torch.repeat_interleave(inv, deg)
        elif kind == "sum":
            indptr, indices = self.indptr, self.indices
            values = torch.ones(self.num_edges, dtype=torch.float64)
        else:
            raise ValueError(f"unknown aggregation kind {kind!r}; allowed: gcn, mean, sum")
        self._cache[key] = (indptr, indices, values)
        return self._cache[key]
