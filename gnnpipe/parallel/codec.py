"""The wire codec of ``parallel.compress``: row blocks in, one flat wire tensor out, and back (DESIGN §4).

Pure tensor code (no communication): :class:`~gnnpipe.parallel.transfer.Transfers` encodes every training
message of kind ``layer`` or ``graph`` right before it goes to ``comm.py`` and decodes it right after it
arrives; ``comm.py`` counts the wire tensor's bytes, so what is counted is exactly what is sent.

Settings, for a block ``x: [R, d]`` of the model's dtype (float32 or float64; the setting applies whatever it
is, so a float64 run with ``bf16`` moves 2 bytes per element):

- ``none``: the block itself (no copy); decoding returns the received buffer: bit-for-bit today's run.
- ``bf16`` / ``fp16``: plain casts, ``[R, d]`` of 2-byte elements. ``fp16`` would overflow above 65504:
  finite values are clamped to +-65504 (inf and NaN pass unchanged, so the non-finite guard still sees them);
  values below fp16's smallest subnormal (6e-8) flush to 0. ``bf16`` keeps float32's range, 8 mantissa bits.
- ``int8``: one scale per row, ``s = maxabs(row) / 127`` rounded *up* to bfloat16, and ``q = floor(x / s + u)``
  with ``u ~ U[0, 1)`` (stochastic rounding: ``E[q s] = x``), ``q`` in [-127, 127]. Error per element
  ``< s <= maxabs / 127 * (1 + 2^-7)``. The wire is one uint8 tensor ``[2 R + R d]``: the ``R`` bfloat16
  scales first (so they are 2-byte aligned), then the ``R d`` int8 values. The scale is bfloat16, not float16:
  2 bytes like float16, but with float32's exponent range, because gradient rows (the loss is divided by the
  number of training vertices) often have ``maxabs / 127`` below float16's normal range (6e-5), where its
  precision collapses. A row with a non-finite value decodes as NaN. The uniform draws come from a generator
  the *sender* seeds (:func:`message_seed`: run seed, epoch, sender rank, message counter): runs are
  reproducible and the receiver only dequantises.
"""

from __future__ import annotations

import torch

__all__ = ["COMPRESS", "SCALE_BYTES", "decode", "encode", "message_seed", "row_bytes", "wire_buffer"]

COMPRESS = ("none", "bf16", "fp16", "int8")
SCALE_DTYPE = torch.bfloat16
SCALE_BYTES = 2  # one bfloat16 scale per int8 row
FP16_MAX = 65504.0
_CAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _check(compress: str) -> None:
    if compress not in COMPRESS:
        raise ValueError(f"compress must be one of {' | '.join(COMPRESS)}, got {compress!r}")


def row_bytes(width: int, itemsize: int, compress: str) -> int:
    """Bytes one row of ``width`` elements of an ``itemsize``-byte dtype takes on the wire (DESIGN §4)."""
    _check(compress)
    if compress == "none":
        return width * itemsize
    if compress == "int8":
        return width + SCALE_BYTES
    return 2 * width


def message_seed(seed: int, epoch: int, rank: int, counter: int) -> int:
    """The stochastic-rounding seed of one message: (run seed, epoch, sender rank, per-message counter) hashed
    FNV-style into [0, 2^63), with a salt that keeps it apart from the dropout keys."""
    h = 1469598103934665603
    for k in (0xC0DEC, seed, epoch, rank, counter):
        h = ((h ^ (int(k) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def _round_up_bf16(s: torch.Tensor) -> torch.Tensor:
    """``s`` (positive or 0) as bfloat16, rounded up where rounding to nearest went down (finite values)."""
    b = s.to(SCALE_DTYPE)
    low = (b.to(s.dtype) < s) & torch.isfinite(b)
    if bool(low.any()):
        bits = b.view(torch.int16)  # positive bfloat16 values are ordered like their bit patterns
        b = torch.where(low, bits + 1, bits).view(SCALE_DTYPE)
    return b


def encode(x: torch.Tensor, compress: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x: [R, d]`` -> the wire tensor. ``generator`` (on ``x``'s device) draws int8's rounding noise."""
    _check(compress)
    if compress == "none":
        return x
    if compress in _CAST:
        if compress == "fp16":
            x = torch.where(torch.isinf(x), x, x.clamp(-FP16_MAX, FP16_MAX))
        return x.to(_CAST[compress])
    rows, width = x.shape
    amax = x.abs().amax(dim=1) if width else x.new_zeros(rows)
    scale = _round_up_bf16(amax / 127.0)
    s = scale.to(x.dtype)
    v = x / torch.where(s > 0, s, torch.ones_like(s))[:, None]
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    q = torch.floor(v + u).clamp_(-127, 127)
    q = torch.where(torch.isfinite(q), q, torch.zeros_like(q)).to(torch.int8)
    wire = torch.empty(rows * (SCALE_BYTES + width), dtype=torch.uint8, device=x.device)
    wire[: rows * SCALE_BYTES].copy_(scale.view(torch.uint8))
    wire[rows * SCALE_BYTES :].copy_(q.view(torch.uint8).reshape(-1))
    return wire


def wire_buffer(shape: tuple[int, int], compress: str, dtype: torch.dtype, device) -> torch.Tensor:
    """An empty receive buffer for an encoded ``[R, d]`` block of ``dtype``."""
    _check(compress)
    rows, width = shape
    if compress == "none":
        return torch.empty(rows, width, dtype=dtype, device=device)
    if compress in _CAST:
        return torch.empty(rows, width, dtype=_CAST[compress], device=device)
    return torch.empty(rows * (SCALE_BYTES + width), dtype=torch.uint8, device=device)


def decode(wire: torch.Tensor, shape: tuple[int, int], compress: str, dtype: torch.dtype) -> torch.Tensor:
    """The wire tensor of an ``[R, d]`` block -> the block as ``dtype`` (``none``: the buffer itself)."""
    _check(compress)
    if compress == "none":
        return wire
    if compress in _CAST:
        return wire.to(dtype)
    rows, width = shape
    scale = wire[: rows * SCALE_BYTES].view(SCALE_DTYPE).to(dtype)
    q = wire[rows * SCALE_BYTES :].view(torch.int8).reshape(rows, width)
    return q.to(dtype) * scale[:, None]
