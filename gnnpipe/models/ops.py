"""Kernels every engine shares: sparse aggregation with a precomputed transpose, keyed dropout, init.

Aggregation ``m = Ahat @ z`` is the only operation that reads other vertices (DESIGN §3). Its backward is
``dz = Ahat^T @ dm``; torch's generic sparse backward rebuilds ``Ahat^T`` on every call, so
:class:`SparseOp` builds both CSR matrices once and reuses them (a measurable win over PyG's
``torch.sparse_csr`` path, see ``experiments/bench_single.py``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

__all__ = ["SparseOp", "RowCtx", "keyed_generator", "init_linear_"]


def _csr(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we use only the stable mm path
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(indptr, indices, values, size=shape, check_invariants=False)


def _transpose_csr(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, num_cols: int):
    """CSR of the transpose, built with a stable sort (deterministic)."""
    rows = torch.repeat_interleave(torch.arange(indptr.numel() - 1), indptr[1:] - indptr[:-1])
    order = torch.argsort(indices * (indptr.numel() - 1) + rows, stable=True)
    t_indices = rows[order]
    t_values = values[order]
    t_indptr = torch.zeros(num_cols + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(indices, minlength=num_cols), 0, out=t_indptr[1:])
    return t_indptr, t_indices, t_values


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, a: torch.Tensor, at: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.at = at
        return torch.sparse.mm(a, z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return torch.sparse.mm(ctx.at, grad.contiguous()), None, None


class SparseOp:
    """A fixed sparse matrix ``A: [R, K]`` applied as ``A @ z`` (``z: [K, d]`` -> ``[R, d]``), differentiable in z.

    Built from CSR arrays (values in float64; cast once per dtype/device on first use).
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, num_cols: int):
        self.shape = (int(indptr.numel() - 1), int(num_cols))
        self._arrays = (indptr.to(torch.int64), indices.to(torch.int64), values.to(torch.float64))
        self._built: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def nnz(self) -> int:
        return int(self._arrays[1].numel())

    def matrices(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device)
        if key not in self._built:
            indptr, indices, values = self._arrays
            t = _transpose_csr(indptr, indices, values, self.shape[1])
            a = _csr(indptr, indices, values.to(dtype), self.shape).to(device)
            at = _csr(t[0], t[1], t[2].to(dtype), (self.shape[1], self.shape[0])).to(device)
            self._built[key] = (a, at)
        return self._built[key]

    def __matmul__(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[0] != self.shape[1]:
            raise ValueError(f"aggregation input has {z.shape[0]} rows, operator expects {self.shape[1]}")
        a, at = self.matrices(z.dtype, z.device)
        if self.nnz == 0:
            return z.new_zeros(self.shape[0], z.shape[1])
        if z.requires_grad:
            return _SpMM.apply(z, a, at)
        return torch.sparse.mm(a, z)

    def t_matmul(self, g: torch.Tensor) -> torch.Tensor:
        """``A^T @ g`` (``g: [R, d]`` -> ``[K, d]``): the aggregation backward, without autograd."""
        if g.shape[0] != self.shape[0]:
            raise ValueError(f"gradient has {g.shape[0]} rows, operator has {self.shape[0]}")
        if self.nnz == 0:
            return g.new_zeros(self.shape[1], g.shape[1])
        _, at = self.matrices(g.dtype, g.device)
        return torch.sparse.mm(at, g.contiguous())


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of ints, so random masks depend only on their key."""
    h = 1469598103934665603
    for k in key:
        h = ((h ^ (int(k) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    g = torch.Generator()
    g.manual_seed(h)
    return g


@dataclass(frozen=True)
class RowCtx:
    """What a row-wise computation needs to know besides its input.

    Dropout masks are keyed by (seed, epoch, site, chunk), so they do not depend on which worker or stage
    computes them (DESIGN §3): the same rows get the same mask wherever they run.
    """

    training: bool
    seed: int = 0
    epoch: int = 0
    chunk: int = 0
    # rows made of several chunks: ((chunk, num_rows), ...) in row order; overrides ``chunk``
    segments: tuple[tuple[int, int], ...] = ()

    def _mask(self, chunk: int, shape: tuple[int, ...], p: float, site: int) -> torch.Tensor:
        g = keyed_generator(self.seed, self.epoch, site, chunk)
        return torch.rand(shape, generator=g, dtype=torch.float32).ge_(p)

    def dropout(self, x: torch.Tensor, p: float, site: int) -> torch.Tensor:
        if not self.training or p == 0.0:
            return x
        if self.segments:
            keep = torch.cat([self._mask(c, (n, *x.shape[1:]), p, site) for c, n in self.segments])
        else:
            keep = self._mask(self.chunk, tuple(x.shape), p, site)
        return x * keep.to(device=x.device, dtype=x.dtype).mul_(1.0 / (1.0 - p))


def init_linear_(weight: torch.Tensor, bias: torch.Tensor | None, scheme: str, g: torch.Generator) -> None:
    """Initialise a ``[out, in]`` weight in place.

    ``xavier``: U(-r, r) with r = sqrt(5 / (fan_in + fan_out)) (the authors' system; note 5, not 6), bias 0.
    ``pytorch``: torch.nn.Linear's default (kaiming-uniform weight, U(+-1/sqrt(fan_in)) bias).
    """
    fan_out, fan_in = weight.shape
    with torch.no_grad():
        if scheme == "xavier":
            r = math.sqrt(5.0 / (fan_in + fan_out))
            weight.copy_(torch.rand(weight.shape, generator=g, dtype=torch.float64) * 2 * r - r)
            if bias is not None:
                bias.zero_()
        elif scheme == "pytorch":
            r = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            weight.copy_(torch.rand(weight.shape, generator=g, dtype=torch.float64) * 2 * r - r)
            if bias is not None:
                bias.copy_(torch.rand(bias.shape, generator=g, dtype=torch.float64) * 2 * r - r)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}; allowed: xavier, pytorch")
