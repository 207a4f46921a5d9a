"""Aggregation and dropout kernels: both backends (torch, native gnnpipe._C) against a dense reference.

Operators cover the shapes the engine builds: empty rows, isolated vertices, power-law hubs, symmetric GCN
normalisation (backward reuses A) and rectangular chunk blocks with external columns (backward uses A^T).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gnnpipe import kernels
from gnnpipe.data.graph import Graph, csr_from_edges
from gnnpipe.models import ops
from gnnpipe.models.ops import RowCtx, SparseOp, keyed_generator
from gnnpipe.models.sparse import add_blocks

HAS_NATIVE = kernels._import_native()[0] is not None
BACKENDS = [
    "torch",
    pytest.param("native", marks=pytest.mark.skipif(not HAS_NATIVE, reason="gnnpipe._C not built")),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with kernels.use(request.param) as b:
        assert b.name == request.param
        yield request.param


def _op(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, num_cols: int) -> SparseOp:
    return SparseOp(indptr, indices, values, num_cols)


def _dense(op: SparseOp) -> torch.Tensor:
    indptr, indices, values = op._arrays
    rows = torch.repeat_interleave(torch.arange(op.shape[0]), indptr[1:] - indptr[:-1])
    a = torch.zeros(op.shape, dtype=torch.float64)
    a.index_put_((rows, indices), values, accumulate=True)
    return a


def random_block(rows: int, cols: int, nnz: int, seed: int, *, empty_every: int = 5, hub: bool = True) -> SparseOp:
    """A ``[rows, cols]`` operator: every ``empty_every``-th row empty, columns past ``cols // 2`` are
    'external' (few reads), and (``hub``) one row and one column with many nonzeros (power-law hubs)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, rows, (nnz,), generator=g)
    c = torch.randint(0, cols, (nnz,), generator=g)
    if hub:
        r = torch.cat([r, torch.zeros(nnz // 2, dtype=torch.int64), torch.arange(rows)])
        c = torch.cat([c, torch.randint(0, cols, (nnz // 2,), generator=g), torch.full((rows,), cols - 1)])
    keep = r % empty_every != 1
    indptr, indices = csr_from_edges(c[keep], r[keep], rows)  # rows are "destinations"
    values = torch.rand(indices.numel(), generator=g, dtype=torch.float64) + 0.1
    return _op(indptr, indices, values, cols)


def gcn_operator(n: int, e: int, seed: int) -> SparseOp:
    """Symmetric GCN normalisation of an undirected random graph with isolated vertices."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n // 2, (e,), generator=g) * 2  # odd vertices are isolated (self-loop only)
    dst = torch.randint(0, n // 2, (e,), generator=g) * 2
    graph = Graph.from_edges(
        "t", src, dst, torch.zeros(n, 1), torch.zeros(n, dtype=torch.int64), *[torch.zeros(n, dtype=torch.bool)] * 3, 1
    ).to_undirected()
    return _op(*graph.norm_values("gcn"), n)


OPERATORS = {
    "square": lambda: random_block(50, 50, 300, seed=1),
    "external_cols": lambda: random_block(30, 70, 200, seed=2),  # a chunk block: more columns than rows
    "tall": lambda: random_block(70, 20, 200, seed=3),
    "all_empty_but_one": lambda: random_block(40, 40, 2, seed=4, empty_every=1, hub=False),
    "gcn_symmetric": lambda: gcn_operator(60, 150, seed=5),
}


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize("d", [1, 5, 16, 37, 64, 130])
def test_forward_and_transpose_match_dense(backend, name, d):
    op = OPERATORS[name]()
    a = _dense(op)
    g = torch.Generator().manual_seed(d)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        z = torch.randn(op.shape[1], d, generator=g, dtype=torch.float64)
        y = torch.randn(op.shape[0], d, generator=g, dtype=torch.float64)
        torch.testing.assert_close((op @ z.to(dtype)).double(), a @ z, rtol=tol, atol=tol)
        torch.testing.assert_close(op.t_matmul(y.to(dtype)).double(), a.t() @ y, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize("prepared", [False, True])
def test_transpose_row_block_matches_dense(backend, name, prepared):
    """``t_matmul_rows(g, lo, hi)`` is rows [lo, hi) of ``A^T g``, for every block (incl. empty and whole)."""
    op = OPERATORS[name]()
    a = _dense(op)
    if prepared:
        op.prepare(torch.float64, torch.device("cpu"))
    K = op.shape[1]
    y = torch.randn(op.shape[0], 7, generator=torch.Generator().manual_seed(K), dtype=torch.float64)
    full = a.t() @ y
    for lo, hi in ((0, K), (0, 1), (K // 3, 2 * K // 3), (K - 1, K), (K // 2, K // 2)):
        got = op.t_matmul_rows(y, lo, hi)
        assert got.shape == (hi - lo, 7)
        torch.testing.assert_close(got, full[lo:hi], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize("prepared", [False, True])
def test_transpose_row_block_on_compact_rows(backend, name, prepared):
    """With ``columns`` (A^T's columns renumbered into the kept rows of a compact ``g``, the others at a zero row),
    ``t_matmul_rows`` equals the same block of ``A^T g`` when ``g`` is zero outside the kept rows."""
    op = OPERATORS[name]()
    a = _dense(op)
    if prepared:
        op.prepare(torch.float64, torch.device("cpu"))
    R, K = op.shape
    kept = torch.arange(0, R, 3)  # every third row of A
    y = torch.randn(R, 5, generator=torch.Generator().manual_seed(R), dtype=torch.float64)
    y_zeroed = torch.zeros_like(y).index_copy_(0, kept, y[kept])
    compact = torch.cat([y[kept], y.new_zeros(1, 5)])
    tcols = op.t_columns(torch.float64, torch.device("cpu"))
    renumber = torch.full((R,), kept.numel(), dtype=tcols.dtype)
    renumber[kept] = torch.arange(kept.numel(), dtype=tcols.dtype)
    columns = renumber[tcols.long()]
    full = a.t() @ y_zeroed
    for lo, hi in ((0, K), (K // 3, 2 * K // 3), (K - 1, K)):
        got = op.t_matmul_rows(compact, lo, hi, columns=columns)
        torch.testing.assert_close(got, full[lo:hi], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_blocks_equals_one_pull_at_a_time(backend, dtype):
    """``add_blocks`` (one native call for many blocks) adds ``alpha * A^T[lo:hi] g`` into the given rows, block
    after block (rows shared between blocks accumulate), as the per-block path does; bad indices are refused."""
    ops = [OPERATORS[n]() for n in ("square", "external_cols", "tall", "all_empty_but_one", "gcn_symmetric")]
    for op in ops:
        op.prepare(dtype, torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    out0 = torch.randn(90, 6, generator=g, dtype=torch.float64).to(dtype)
    blocks, expect = [], out0.double().clone()
    for i, op in enumerate(ops):
        R, K = op.shape
        lo, hi = K // 4, K - i  # a row block of A^T
        y = torch.randn(R, 6, generator=g, dtype=torch.float64)
        rows = torch.randperm(90, generator=g)[: hi - lo]  # distinct within a block, shared across blocks
        blocks.append((op, lo, hi, y.to(dtype), None, rows))
        expect.index_add_(0, rows, 0.5 * (op.t_matmul_rows(y, lo, hi) if dtype == torch.float64 else
                                          op.t_matmul_rows(y.to(dtype), lo, hi).double()))  # fmt: skip
    out = out0.clone()
    add_blocks(out, blocks, 0.5)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.double(), expect, rtol=tol, atol=tol)
    if HAS_NATIVE and backend == "native":
        mod = kernels.extension()
        op = ops[0]
        indptr, indices, values = op.native_arrays(dtype)[1]
        bad = indices.clone()
        bad[0] = op.shape[0] + 7  # an index past g's rows
        with pytest.raises(RuntimeError, match="outside g"):
            mod.add_blocks(out, [indptr], [bad], [values], [torch.zeros(op.shape[0], 6, dtype=dtype)],
                           [torch.arange(op.shape[1])], 1.0)  # fmt: skip
        with pytest.raises(RuntimeError, match="outside out"):
            mod.add_blocks(out, [indptr], [indices], [values], [torch.zeros(op.shape[0], 6, dtype=dtype)],
                           [torch.arange(op.shape[1]) + 90], 1.0)  # fmt: skip


@pytest.mark.parametrize("name", list(OPERATORS))
def test_with_columns_reads_the_buffer_in_place(backend, name):
    """``A.with_columns(map, M) @ buf`` is ``A @ buf[map]`` bit for bit; it has no transpose and no autograd."""
    op = OPERATORS[name]()
    K = op.shape[1]
    g = torch.Generator().manual_seed(K)
    col_map = torch.randperm(3 * K, generator=g)[:K]  # injective, into a buffer 3x as tall
    view = op.with_columns(col_map, 3 * K)
    view.prepare(torch.float32, torch.device("cpu"))
    buf = torch.randn(3 * K, 6, generator=g)
    assert torch.equal(view @ buf, op @ buf[col_map])
    with pytest.raises(RuntimeError, match="forward-only"):
        view.t_matmul(torch.randn(op.shape[0], 6))
    if view.nnz:
        with pytest.raises(RuntimeError, match="forward-only"):
            view @ buf.requires_grad_()


@pytest.mark.parametrize("name", list(OPERATORS))
def test_gradcheck_float64(backend, name):
    op = OPERATORS[name]()
    z = torch.randn(op.shape[1], 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: op @ t, (z,))
    y = torch.randn(op.shape[0], 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: op.t_matmul(t), (y,))


def test_non_contiguous_input_and_no_grad(backend):
    op = OPERATORS["external_cols"]()
    z = torch.randn(9, op.shape[1], dtype=torch.float64).t()  # [K, 9], not contiguous
    torch.testing.assert_close(op @ z, _dense(op) @ z)
    with torch.no_grad():
        torch.testing.assert_close(op @ z.requires_grad_(), _dense(op) @ z.detach())


def test_empty_operator_and_empty_rows(backend):
    op = _op(torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0), 6)
    assert torch.equal(op @ torch.ones(6, 3), torch.zeros(3, 3))
    assert torch.equal(op.t_matmul(torch.ones(3, 2)), torch.zeros(6, 2))
    none = _op(torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0), 5)
    assert (none @ torch.ones(5, 2)).shape == (0, 2)


def test_large_powerlaw_operator_parallel_path(backend):
    """Big enough for the threaded path of the native kernel (balanced parts, hub rows)."""
    n = 3000
    g = torch.Generator().manual_seed(0)
    w = torch.arange(1, n + 1, dtype=torch.float64).pow(-1.2)  # power-law column and row popularity
    c = torch.multinomial(w, 40 * n, replacement=True, generator=g)
    r = torch.multinomial(w, 40 * n, replacement=True, generator=g)
    indptr, indices = csr_from_edges(c, r, n)
    op = _op(indptr, indices, torch.rand(indices.numel(), generator=g, dtype=torch.float64), n)
    z = torch.randn(n, 48, generator=g, dtype=torch.float64, requires_grad=True)
    a = _dense(op)
    out = op @ z
    # hub rows sum thousands of terms: a dense matmul adds them in another order (float64: ~1e-11 apart)
    torch.testing.assert_close(out, a @ z.detach(), rtol=1e-10, atol=1e-10)
    gy = torch.randn_like(out)
    out.backward(gy)
    torch.testing.assert_close(z.grad, a.t() @ gy, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not HAS_NATIVE, reason="gnnpipe._C not built")
def test_backends_agree_float32():
    op = gcn_operator(400, 3000, seed=9)
    z = torch.randn(400, 128)
    with kernels.use("torch"):
        ref = op @ z
    with kernels.use("native"):
        out = op @ z
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_symmetric_operator_reuses_itself():
    sym = OPERATORS["gcn_symmetric"]()
    assert sym.symmetric
    a, at = sym.matrices(torch.float32, torch.device("cpu"))
    assert a is at
    na, nat = sym.native_arrays(torch.float32)
    assert na is nat and na[1].dtype == torch.int32 and na[2].dtype == torch.float32
    assert sym._t is None and sym._native[torch.float32][1] is None  # no second copy held
    for name in ("square", "external_cols", "tall"):
        op = OPERATORS[name]()
        assert not op.symmetric
        a, at = op.native_arrays(torch.float64)
        assert a is not at and at[0].numel() == op.shape[1] + 1


@pytest.mark.parametrize("prepared_with", BACKENDS)
@pytest.mark.parametrize("used_with", BACKENDS)
def test_prepared_operator_keeps_its_form_across_backends(prepared_with, used_with):
    op = OPERATORS["external_cols"]()
    a = _dense(op)
    with kernels.use(prepared_with):
        op.prepare(torch.float64, torch.device("cpu"))
    assert op._arrays is None
    z = torch.randn(op.shape[1], 6, dtype=torch.float64, requires_grad=True)
    with kernels.use(used_with):
        out = op @ z
        torch.testing.assert_close(out, a @ z.detach())
        gy = torch.randn_like(out)
        out.backward(gy)
        torch.testing.assert_close(z.grad, a.t() @ gy)
        torch.testing.assert_close(op.t_matmul(gy), a.t() @ gy)
        with pytest.raises(RuntimeError, match="prepared for torch.float64"):
            op @ z.detach().float()


def test_mean_aggregation_is_not_symmetric():
    g = torch.Generator().manual_seed(0)
    src, dst = torch.randint(0, 20, (60,), generator=g), torch.randint(0, 20, (60,), generator=g)
    graph = Graph.from_edges(
        "t",
        src,
        dst,
        torch.zeros(20, 1),
        torch.zeros(20, dtype=torch.int64),
        *[torch.zeros(20, dtype=torch.bool)] * 3,
        1,
    ).to_undirected()
    assert SparseOp(*graph.norm_values("gcn"), 20).symmetric
    assert not SparseOp(*graph.norm_values("mean"), 20).symmetric


# ---------------------------------------------------------------------------------------------- dropout
def _old_dropout(ctx: RowCtx, x: torch.Tensor, p: float, site: int) -> torch.Tensor:
    """The float-mask dropout these kernels replaced: the masks and values must stay bit-identical."""

    def mask(chunk, shape):
        return torch.rand(shape, generator=keyed_generator(ctx.seed, ctx.epoch, site, chunk), dtype=torch.float32).ge_(
            p
        )

    if ctx.segments:
        keep = torch.cat([mask(c, (n, *x.shape[1:])) for c, n in ctx.segments])
    else:
        keep = mask(ctx.chunk, tuple(x.shape))
    return x * keep.to(device=x.device, dtype=x.dtype).mul_(1.0 / (1.0 - p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.6, 0.85])
def test_dropout_bit_identical_to_float_mask(backend, dtype, p):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(37, 19, generator=g, dtype=dtype)
    x[0, 0], x[1, 1], x[2, 2] = float("inf"), float("nan"), -0.0
    for ctx in (
        RowCtx(training=True, seed=4, epoch=3, chunk=2),
        RowCtx(training=True, seed=4, epoch=3, segments=((5, 10), (1, 20), (7, 7))),
    ):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        new, old = ctx.dropout(xa, p, site=11), _old_dropout(ctx, xb, p, site=11)
        assert torch.equal(new.isnan(), old.isnan())
        assert torch.equal(new.nan_to_num().view(-1).view(torch.uint8), old.nan_to_num().view(-1).view(torch.uint8))
        gy = torch.randn(x.shape, generator=g, dtype=dtype)
        new.backward(gy)
        old.backward(gy)
        assert torch.equal(xa.grad.view(torch.uint8), xb.grad.view(torch.uint8))


@pytest.mark.skipif(not HAS_NATIVE, reason="gnnpipe._C not built")
@pytest.mark.parametrize("n", [0, 1, 623, 624, 625, 1249, 20000])
def test_native_keep_mask_replays_torch_rand(n):
    native = kernels._import_native()[0]
    for key in ((0, 0, 0, 0), (9, 8, 7, 6), (2**40, 1, 2, 3)):
        for p in (0.0, 0.25, 0.6, 0.999):
            ref = torch.rand(n, generator=keyed_generator(*key), dtype=torch.float32) >= p
            assert torch.equal(native.keep_mask(ops._key_seed(*key), n, p), ref)


def test_dropout_falls_back_to_torch_masks_if_native_stream_differs(monkeypatch):
    monkeypatch.setattr(ops, "_native_masks", False)
    x = torch.randn(30, 7, dtype=torch.float64)
    ctx = RowCtx(training=True, seed=2, epoch=1, chunk=3)
    assert torch.equal(ctx.dropout(x, 0.4, site=5), _old_dropout(ctx, x, 0.4, site=5))


def test_dropout_saves_a_byte_mask(backend):
    saved: list[torch.Tensor] = []
    x = torch.randn(64, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = RowCtx(training=True, seed=1).dropout(x, 0.5, site=0)
    assert [t.dtype for t in saved] == [torch.bool] and saved[0].element_size() == 1
    y.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 2.0}


def test_dropout_eval_and_p0_are_identity():
    x = torch.randn(4, 3)
    assert RowCtx(training=False).dropout(x, 0.5, site=0) is x
    assert RowCtx(training=True).dropout(x, 0.0, site=0) is x


# ---------------------------------------------------------------------------------------------- selection
def test_use_restores_previous_backend():
    before = kernels.backend()
    with kernels.use("torch") as b:
        assert b.name == "torch" and kernels.native() is None
    assert kernels.backend() == before


def test_missing_extension_falls_back_or_errors(monkeypatch):
    monkeypatch.setattr(kernels, "_import_result", (None, "gnnpipe._C not importable (test)"))
    with kernels.use("auto") as b:
        assert b.name == "torch" and "not importable (test)" in b.reason
        op = OPERATORS["square"]()
        z = torch.randn(50, 4, dtype=torch.float64)
        torch.testing.assert_close(op @ z, _dense(op) @ z)
    with pytest.raises(kernels.KernelError, match="native kernels but gnnpipe._C not importable"):
        with kernels.use("native"):
            pass
    with pytest.raises(kernels.KernelError, match="allowed: auto, torch, native"):
        with kernels.use("fast"):
            pass


def _resolve_from_env(monkeypatch, value: str) -> str:
    monkeypatch.setenv(kernels.ENV, value)
    monkeypatch.setattr(kernels, "_forced", None)
    monkeypatch.setattr(kernels, "_resolved", None)
    return kernels.describe()


def test_env_selects_backend(monkeypatch):
    assert _resolve_from_env(monkeypatch, "torch") == "kernels: torch: forced by GNNPIPE_KERNELS=torch"
    line = _resolve_from_env(monkeypatch, "")
    assert line.startswith("kernels: native" if HAS_NATIVE else "kernels: torch: gnnpipe._C not importable")
    if HAS_NATIVE:
        assert _resolve_from_env(monkeypatch, "Native").endswith("forced by GNNPIPE_KERNELS=native")
    assert _resolve_from_env(monkeypatch, "bogus").startswith("kernels: error: GNNPIPE_KERNELS=bogus: 'bogus' is not")


def test_info_prints_the_backend():
    env = {**os.environ, kernels.ENV: "torch"}
    r = subprocess.run(
        [sys.executable, "-m", "gnnpipe", "info"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stderr
    assert "kernels: torch: forced by GNNPIPE_KERNELS=torch" in r.stdout


# ---------------------------------------------------------------------------------------------- CUDA (gpu_check.sh)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@CUDA
@pytest.mark.parametrize("name", ["external_cols", "gcn_symmetric"])
def test_cuda_aggregation_matches_dense(name):
    op = OPERATORS[name]()
    a = _dense(op)
    z = torch.randn(op.shape[1], 33, dtype=torch.float64)
    zc = z.cuda().requires_grad_()
    out = op @ zc
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), a @ z)
    gy = torch.randn(op.shape[0], 33, dtype=torch.float64)
    out.backward(gy.cuda())
    torch.testing.assert_close(zc.grad.cpu(), a.t() @ gy)
    torch.testing.assert_close(op.t_matmul(gy.cuda()).cpu(), a.t() @ gy)


@CUDA
def test_cuda_dropout_masks_are_keyed_and_drawn_on_the_gpu():
    """On CUDA the masks come from CUDA generators with the same keys (drawing them on the CPU made a GCNII
    epoch 62x slower than PyG's on an H200): the same mask every time, a chunk's mask whatever rows it is
    processed with, so results still do not depend on the number of stages."""
    x = torch.randn(50, 16).cuda()
    ctx = RowCtx(training=True, seed=5, epoch=1, segments=((0, 20), (3, 30)))
    a = ctx.dropout(x, 0.3, site=2)
    assert a.is_cuda and torch.equal(a, ctx.dropout(x, 0.3, site=2))
    alone = RowCtx(training=True, seed=5, epoch=1, chunk=3).dropout(x[20:], 0.3, site=2)
    assert torch.equal(a[20:], alone)
    kept = (a != 0).float().mean().item()
    assert 0.6 < kept < 0.8
