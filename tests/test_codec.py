"""The wire codec of parallel.compress on its own (no processes): sizes, error bounds, unbiasedness, keys."""

from __future__ import annotations

import pytest
import torch

from gnnpipe.parallel import codec


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def roundtrip(x: torch.Tensor, how: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    wire = codec.encode(x, how, gen(seed))
    buf = codec.wire_buffer(tuple(x.shape), how, x.dtype, x.device)
    assert buf.shape == wire.shape and buf.dtype == wire.dtype  # the receiver allocates what the sender sends
    buf.copy_(wire)
    return wire, codec.decode(buf, tuple(x.shape), how, x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("how", codec.COMPRESS)
def test_wire_bytes_are_row_bytes(how, dtype):
    for rows, width in ((0, 5), (1, 1), (7, 3), (33, 64)):
        x = torch.randn(rows, width, dtype=dtype)
        wire, y = roundtrip(x, how)
        itemsize = x.element_size()
        assert wire.numel() * wire.element_size() == rows * codec.row_bytes(width, itemsize, how)
        assert y.shape == x.shape and y.dtype == dtype


def test_none_is_the_tensor_itself():
    x = torch.randn(4, 3, dtype=torch.float64)
    assert codec.encode(x, "none") is x
    assert codec.decode(x, (4, 3), "none", torch.float64) is x


def test_row_bytes_formula():
    assert codec.row_bytes(64, 4, "none") == 256
    assert codec.row_bytes(64, 8, "bf16") == codec.row_bytes(64, 4, "fp16") == 128
    assert codec.row_bytes(64, 4, "int8") == 64 + 2  # payload + one bfloat16 scale
    with pytest.raises(ValueError, match="int4"):
        codec.row_bytes(8, 4, "int4")


def test_int8_error_is_within_one_step_of_the_row_scale():
    """|x - decode(encode(x))| < maxabs(row)/127 (scale rounded up to bfloat16: factor 1 + 2^-7) per element,
    for rows of very different magnitudes, including gradient-sized ones far below float16's range."""
    torch.manual_seed(0)
    mags = torch.logspace(-12, 6, 40, dtype=torch.float64)[:, None]
    for dtype in (torch.float32, torch.float64):
        x = (torch.randn(40, 50, dtype=torch.float64) * mags).to(dtype)
        _, y = roundtrip(x, "int8", seed=3)
        amax = x.abs().amax(dim=1, keepdim=True)
        bound = amax / 127 * (1 + 2**-7) * (1 + 1e-6)
        assert bool(((y - x).abs() <= bound).all())
        assert bool((y.abs() <= amax * (1 + 2**-7) * (1 + 1e-6)).all())


def test_int8_stochastic_rounding_is_unbiased():
    """The mean of many independent encodings converges to x (deterministic rounding would not: 0.3 of a step
    always rounds to 0). Fixed seeds; tolerance 5 standard errors of a step's Bernoulli noise."""
    x = torch.tensor([[127.0, 0.3, -0.3, 50.7, -99.5, 1.0, 0.0]], dtype=torch.float64)  # scale exactly 1
    n = 4000
    acc = torch.zeros_like(x)
    for k in range(n):
        acc += roundtrip(x, "int8", seed=k)[1]
    mean = acc / n
    tol = 5 * 0.5 / n**0.5
    assert float((mean - x).abs().max()) < tol, mean
    assert float((mean - x).abs()[0, 1]) < tol  # 0.3 of a step: biased rounding would give 0.3 of error


def test_int8_is_reproducible_and_keyed():
    x = torch.randn(20, 16)
    assert torch.equal(roundtrip(x, "int8", seed=7)[0], roundtrip(x, "int8", seed=7)[0])
    assert not torch.equal(roundtrip(x, "int8", seed=7)[0], roundtrip(x, "int8", seed=8)[0])
    keys = {codec.message_seed(1, e, r, m) for e in range(3) for r in range(4) for m in range(50)}
    assert len(keys) == 3 * 4 * 50
    assert codec.message_seed(1, 2, 3, 4) == codec.message_seed(1, 2, 3, 4)


def test_int8_special_rows():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, float("inf"), 2.0], [float("nan"), 1.0, 0.0], [3.0, -3.0, 1.5]])
    _, y = roundtrip(x, "int8")
    assert torch.equal(y[0], torch.zeros(3))  # a zero row stays exactly zero
    assert bool(y[1].isnan().all()) and bool(y[2].isnan().all())  # non-finite rows stay visible to the guard
    assert float((y[3] - x[3]).abs().max()) <= 3.0 / 127 * (1 + 2**-7)  # a finite row: within one step


def test_casts():
    x = torch.tensor([[1e5, -7e4, 1.0 / 3, float("inf")], [1e-9, 2.0, float("nan"), -float("inf")]])
    _, h = roundtrip(x, "fp16")
    assert h[0, 0] == 65504.0 and h[0, 1] == -65504.0  # clamped, not overflowed to inf
    assert h[0, 3] == float("inf") and h[1, 3] == -float("inf") and bool(h[1, 2].isnan())  # non-finite kept
    _, b = roundtrip(x, "bf16")
    assert torch.allclose(b[0, :3], x[0, :3], rtol=2**-8) and b[1, 0] > 0  # float32's range, 8 bits
    for how in ("bf16", "fp16"):
        y = roundtrip(torch.tensor([[0.1, 2.5]], dtype=torch.float64), how)[1]
        assert y.dtype == torch.float64 and torch.allclose(y, torch.tensor([[0.1, 2.5]], dtype=torch.float64), 1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_on_cuda_matches_its_bounds_and_is_reproducible():
    """The codec runs where the tensors are (the sender's generator on the GPU): same sizes, same bounds."""
    x = torch.randn(300, 64, device="cuda") * torch.logspace(-9, 3, 300, device="cuda")[:, None]
    outs = []
    for _ in range(2):
        g = torch.Generator(device="cuda")
        g.manual_seed(codec.message_seed(1, 0, 0, 0))
        wire = codec.encode(x, "int8", g)
        assert wire.is_cuda and wire.numel() == 300 * codec.row_bytes(64, 4, "int8")
        outs.append(codec.decode(wire, (300, 64), "int8", torch.float32))
    assert torch.equal(outs[0], outs[1])
    amax = x.abs().amax(dim=1, keepdim=True)
    assert bool(((outs[0] - x).abs() <= amax / 127 * (1 + 2**-7) * (1 + 1e-6)).all())
    for how in ("bf16", "fp16"):
        y = codec.decode(codec.encode(x, how), (300, 64), how, torch.float32)
        assert y.is_cuda and y.shape == x.shape
