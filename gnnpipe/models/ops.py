"""Kernels every engine shares: sparse aggregation with a precomputed transpose, keyed dropout, init.

Aggregation ``m = Ahat @ z`` is the only operation that reads other vertices (DESIGN §3). Its backward is
``dz = Ahat^T @ dm``; torch's generic sparse backward rebuilds ``Ahat^T`` on every call, so
:class:`SparseOp` builds it once, or reuses ``Ahat`` itself when ``Ahat`` is symmetric (GCN normalisation of
an undirected graph); chunk blocks with external columns and mean aggregation keep a transpose.

Two backends run the same math (:mod:`gnnpipe.kernels`): torch's ``torch.sparse.mm`` on CSR tensors, or the
C++ row kernels of ``gnnpipe._C`` (csrc/: OpenMP over rows, vectorised over features, int32 indices) for CPU
float32/float64 tensors: forward + backward 3.4-3.9x faster than the torch path on 100k vertices / 2M edges,
d = 128, near the memory-bandwidth bound (``experiments/bench_kernels.py``).
Dropout saves a bool keep-mask (1 byte per element) for its backward instead of a float one; the native
backend draws it straight into bytes from torch's own random stream (same masks, no float32 array).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from gnnpipe import kernels

__all__ = ["SparseOp", "RowCtx", "keyed_generator", "init_linear_", "masked_scale"]

_INT32_MAX = 2**31 - 1


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


_Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (indptr int64, indices, values)


class _SpMM(torch.autograd.Function):
    """torch backend: ``A @ z`` with ``A^T`` given (not rebuilt by autograd)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, a: torch.Tensor, at: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.at = at
        return torch.sparse.mm(a, z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return torch.sparse.mm(ctx.at, grad.contiguous()), None, None


class _NativeSpMM(torch.autograd.Function):
    """native backend: ``A @ z`` and ``A^T @ grad`` by the CSR row kernel of gnnpipe._C (``mod``)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, mod, a: _Arrays, at: _Arrays, num_rows: int, num_cols: int):  # type: ignore[override]
        ctx.mod, ctx.at, ctx.num_cols = mod, at, num_cols
        return mod.spmm(*a, z.contiguous(), num_rows)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.mod.spmm(*ctx.at, grad.contiguous(), ctx.num_cols), None, None, None, None, None


class SparseOp:
    """A fixed sparse matrix ``A: [R, K]`` applied as ``A @ z`` (``z: [K, d]`` -> ``[R, d]``), differentiable in z.

    Built from CSR arrays (values in float64; cast once per dtype/device on first use). ``A^T`` (for the
    backward) is built once; when ``A`` is square and equal to its transpose, ``A`` serves as both.
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, num_cols: int):
        self.shape = (int(indptr.numel() - 1), int(num_cols))
        self._arrays = (indptr.to(torch.int64), indices.to(torch.int64), values.to(torch.float64))
        # Built on first use. A symmetric operator keeps no transpose: None stands for "A^T is A" in the caches
        # (so memory reports, which sum what an operator holds, do not count A twice).
        self._symmetric: bool | None = None
        self._t: _Arrays | None = None  # A^T as int64/float64 arrays, unless symmetric
        self._built: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._native: dict[torch.dtype, tuple[_Arrays, _Arrays | None]] = {}
        self._nnz = int(indices.numel())
        self._only: tuple[torch.dtype, torch.device] | None = None  # set by prepare(): the one form kept

    @property
    def nnz(self) -> int:
        return self._nnz

    def prepare(self, dtype: torch.dtype, device: torch.device) -> None:
        """Build the operator for ``(dtype, device)`` now (with the backend that will run it) and drop the
        int64/float64 source arrays: afterwards the operator serves only that dtype and device. An engine calls
        this at setup, so its graph structure is built once, counted at setup, and held in one form only."""
        if self.nnz and self._only is None:
            probe = torch.empty(0, dtype=dtype, device=device)
            if kernels.native_ok(probe) is not None:
                self.native_arrays(dtype)
            else:
                self.matrices(dtype, torch.device(device))
            self._arrays = self._t = None
        self._only = (dtype, torch.device(device))

    def _check_prepared(self, dtype: torch.dtype, device: torch.device) -> None:
        if self._only is not None and self._arrays is None and (dtype, torch.device(device)) != self._only:
            raise RuntimeError(
                f"this operator was prepared for {self._only[0]} on {self._only[1]} and dropped its source; "
                f"it cannot serve {dtype} on {device}"
            )

    @property
    def symmetric(self) -> bool:
        """Whether ``A == A^T`` exactly (then the backward reuses ``A``)."""
        if self._symmetric is None:
            indptr, indices, values = self._arrays
            t = _transpose_csr(indptr, indices, values, self.shape[1])
            self._symmetric = (
                self.shape[0] == self.shape[1]
                and torch.equal(t[0], indptr)
                and torch.equal(t[1], indices)
                and torch.equal(t[2], values)
            )
            self._t = None if self._symmetric else t
        return self._symmetric

    def _transposed(self) -> _Arrays:
        """``A^T`` as int64/float64 CSR arrays (``A``'s own arrays when symmetric)."""
        if self.symmetric:
            return self._arrays
        assert self._t is not None
        return self._t

    def matrices(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """torch backend: ``(A, A^T)`` as sparse CSR tensors (the same tensor twice when symmetric)."""
        key = (dtype, device)
        if key not in self._built:
            self._check_prepared(dtype, device)
            indptr, indices, values = self._arrays
            a = _csr(indptr, indices, values.to(dtype), self.shape).to(device)
            at = None
            if not self.symmetric:
                t = self._transposed()
                at = _csr(t[0], t[1], t[2].to(dtype), (self.shape[1], self.shape[0])).to(device)
            self._built[key] = (a, at)
        a, at = self._built[key]
        return a, (a if at is None else at)

    def native_arrays(self, dtype: torch.dtype) -> tuple[_Arrays, _Arrays]:
        """native backend: ``(A, A^T)`` as (indptr int64, indices int32 where they fit, values in ``dtype``)."""
        if dtype not in self._native:
            self._check_prepared(dtype, torch.device("cpu"))

            def compact(arrays: _Arrays, num_cols: int) -> _Arrays:
                indptr, indices, values = arrays
                idx_dtype = torch.int32 if num_cols <= _INT32_MAX else torch.int64
                return indptr.contiguous(), indices.to(idx_dtype).contiguous(), values.to(dtype).contiguous()

            a = compact(self._arrays, self.shape[1])
            self._native[dtype] = (a, None if self.symmetric else compact(self._transposed(), self.shape[0]))
        a, at = self._native[dtype]
        return a, (a if at is None else at)

    def _native_for(self, t: torch.Tensor):
        """gnnpipe._C if ``t`` runs on the native kernels, None for the torch path. A prepared operator (sources
        dropped) runs in the one form it kept, whatever backend is selected now."""
        if self._arrays is None:
            return kernels.extension() if t.device.type == "cpu" and t.dtype in self._native else None
        return kernels.native_ok(t)

    def _apply(self, x: torch.Tensor, *, transpose: bool) -> torch.Tensor:
        """``A @ x`` (or ``A^T @ x``), differentiable in ``x`` when it requires grad."""
        rows, cols = self.shape[::-1] if transpose else self.shape
        if x.shape[0] != cols:
            raise ValueError(f"{'gradient' if transpose else 'aggregation input'} has {x.shape[0]} rows, "
                             f"operator {'A^T' if transpose else 'A'} expects {cols}")  # fmt: skip
        if self.nnz == 0:
            return x.new_zeros(rows, x.shape[1])
        native = self._native_for(x)
        if native is not None:
            fwd, bwd = self.native_arrays(x.dtype)
        else:
            fwd, bwd = self.matrices(x.dtype, x.device)
        if transpose:
            fwd, bwd = bwd, fwd
        grad = x.requires_grad and torch.is_grad_enabled()
        if native is not None:
            if grad:
                return _NativeSpMM.apply(x, native, fwd, bwd, rows, cols)
            return native.spmm(*fwd, x.contiguous(), rows)
        return _SpMM.apply(x, fwd, bwd) if grad else torch.sparse.mm(fwd, x.contiguous())

    def __matmul__(self, z: torch.Tensor) -> torch.Tensor:
        return self._apply(z, transpose=False)

    def t_matmul(self, g: torch.Tensor) -> torch.Tensor:
        """``A^T @ g`` (``g: [R, d]`` -> ``[K, d]``): the aggregation backward."""
        return self._apply(g, transpose=True)

    def t_matmul_rows(self, g: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Rows ``[lo, hi)`` of ``A^T @ g`` (``g: [R, d]`` -> ``[hi - lo, d]``), the others not computed; no
        autograd (the explicit backward's gradient for one block of columns of ``A``)."""
        assert g.shape[0] == self.shape[0], f"gradient has {g.shape[0]} rows, A^T expects {self.shape[0]}"
        rows = hi - lo
        if self.nnz == 0 or rows <= 0:
            return g.new_zeros(max(rows, 0), g.shape[1])
        native = self._native_for(g)
        if native is not None:  # the kernel reads rows through indptr alone: a view of A^T's rows suffices
            indptr, indices, values = self.native_arrays(g.dtype)[1]
            return native.spmm(indptr[lo : hi + 1], indices, values, g.contiguous(), rows)
        at = self.matrices(g.dtype, g.device)[1]
        crow, col, val = at.crow_indices(), at.col_indices(), at.values()
        s, e = int(crow[lo]), int(crow[hi])
        return torch.sparse.mm(_csr(crow[lo : hi + 1] - s, col[s:e], val[s:e], (rows, self.shape[0])), g.contiguous())


def _key_seed(*key: int) -> int:
    """The seed of :func:`keyed_generator` for ``key`` (FNV-style hash, in [0, 2^63))."""
    h = 1469598103934665603
    for k in key:
        h = ((h ^ (int(k) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of ints, so random masks depend only on their key."""
    g = torch.Generator()
    g.manual_seed(_key_seed(*key))
    return g


_native_masks: bool | None = None  # does gnnpipe._C.keep_mask reproduce torch.rand here? (checked once)


def _native_mask_fn():
    """``gnnpipe._C.keep_mask`` when the native backend is on and draws exactly torch's masks, else None.

    The native mask replays torch's CPU random stream (csrc/dropout.cpp); a check against ``torch.rand`` at
    first use guards against a torch whose stream differs, so masks never depend on the backend.
    """
    global _native_masks
    mod = kernels.native()
    if mod is None:
        return None
    if _native_masks is None:
        _native_masks = all(
            torch.equal(mod.keep_mask(_key_seed(*key), n, p), torch.rand(n, generator=keyed_generator(*key)) >= p)
            for key in ((0, 0, 0, 0), (3, 1, 4, 1))
            for n in (1, 625, 1300)
            for p in (0.5, 0.6)
        )
    return mod.keep_mask if _native_masks else None


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

    def _mask(self, chunk: int, shape: tuple[int, ...], p: float, site: int, device=None) -> torch.Tensor:
        """Keep-mask (bool) of one chunk: the elements whose uniform draw is >= p.

        On CUDA the draw comes from a CUDA generator seeded with the same key, on the GPU: the same masks
        wherever (and on however many stages) the rows run on GPUs, but other bits than on the CPU."""
        if device is not None and torch.device(device).type == "cuda":
            g = torch.Generator(device=device)
            g.manual_seed(_key_seed(self.seed, self.epoch, site, chunk))
            return torch.rand(shape, generator=g, dtype=torch.float32, device=device) >= p
        native = _native_mask_fn()
        if native is not None and 0.0 <= p < 1.0:  # same bits, drawn straight into bytes (no float32 array)
            return native(_key_seed(self.seed, self.epoch, site, chunk), math.prod(shape), p).view(shape)
        g = keyed_generator(self.seed, self.epoch, site, chunk)
        return torch.rand(shape, generator=g, dtype=torch.float32) >= p

    def keep_mask(self, shape: tuple[int, ...], p: float, site: int, device=None) -> torch.Tensor:
        """Bool keep-mask ``[rows, ...]`` of dropout site ``site`` for these rows (on ``device``; default CPU)."""
        if self.segments:
            return torch.cat([self._mask(c, (n, *shape[1:]), p, site, device) for c, n in self.segments])
        return self._mask(self.chunk, tuple(shape), p, site, device)

    def dropout(self, x: torch.Tensor, p: float, site: int) -> torch.Tensor:
        if not self.training or p == 0.0:
            return x
        keep = self.keep_mask(tuple(x.shape), p, site, x.device if x.is_cuda else None).to(x.device)
        return _Dropout.apply(x, keep, 1.0 / (1.0 - p))


def masked_scale(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * (keep ? scale : 0)`` with ``keep`` bool, rounded exactly as ``x * (keep.to(x.dtype) * scale)``."""
    native = kernels.native_ok(x)
    if native is not None:
        return native.masked_scale(x, keep, scale)
    return x.mul(keep).mul_(scale)  # (x * 1) * s == x * s and (x * 0) * s == x * 0: same bits


class _Dropout(torch.autograd.Function):
    """Dropout with a given keep-mask; saves the bool mask (1 byte/element), not a float one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return masked_scale(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return masked_scale(grad, keep, ctx.scale), None, None


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
