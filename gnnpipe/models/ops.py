"""Row-wise pieces every engine shares: keyed dropout, init; and the aggregation operator (``SparseOp``, defined
in :mod:`gnnpipe.models.sparse`, re-exported here).

Dropout saves a bool keep-mask (1 byte per element) for its backward instead of a float one; the native
backend draws it straight into bytes from torch's own random stream (same masks, no float32 array).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gnnpipe import kernels
from gnnpipe.models.sparse import SparseOp

__all__ = ["SparseOp", "RowCtx", "keyed_generator", "init_linear_", "masked_scale"]


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
