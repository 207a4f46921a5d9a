# .venv/bin/python experiments/bench_kernels.py --nodes 100000 --edges 2000000 --dim 128 --rounds 10
"""Aggregation SpMM, forward + backward, beside the memory-bandwidth bound measured in the same run.

``m = Ahat @ z`` with ``Ahat`` the GCN-normalised adjacency of a synthetic graph (float32, ``z: [N, d]``),
then ``dz = Ahat^T @ dm``. Sides:

* ``torch_csr``    -- ``torch.sparse.mm`` on a CSR tensor with torch's own autograd (rebuilds ``A^T`` per call);
* ``pyg``          -- ``torch_geometric.utils.spmm`` on the same CSR tensor (what PyG's ``GCN2Conv`` calls with a
                      sparse adjacency; it dispatches to ``torch.sparse.mm``);
* ``torch_path``   -- our :class:`SparseOp` on the torch backend (``A^T`` built once, or ``A`` when symmetric);
* ``ours``         -- our :class:`SparseOp` on the native backend (``gnnpipe._C``).

Bound: every SpMM reads ``E`` rows of ``d`` float32 values (``E·d·4`` bytes); at best that runs at the copy
rate, measured by copying an array of exactly that size (``dst.copy_(src)``, both float32 ``[E·d]``), so the
forward + backward bound is twice the copy time. Rounds interleave the copy and every side (rotating order) so
load from other jobs hits all alike; we report medians. Last line: ``ratio=<ours / bound>`` (fwd + bwd).

Writes nothing unless asked: ``--save`` writes ``experiments/results/kernels/``; ``--out DIR`` a fresh folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from gnnpipe import kernels  # noqa: E402
from gnnpipe.config import DatasetConfig  # noqa: E402
from gnnpipe.data import load_graph  # noqa: E402
from gnnpipe.models.ops import SparseOp  # noqa: E402

SIDES = ("torch_csr", "pyg", "torch_path", "ours")
SAVE_DIR = REPO / "experiments" / "results" / "kernels"


@dataclass(frozen=True)
class KernelBench:
    nodes: int = 100_000
    edges: int = 2_000_000  # directed edges of the symmetrised graph (avg degree E/N), before self-loops
    dim: int = 128
    generator: str = "powerlaw"
    rounds: int = 10  # timed rounds
    warmup: int = 2  # untimed rounds first
    seed: int = 0
    threads: int = 0  # 0: torch's default


def make_operator(bench: KernelBench) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(indptr, indices, values float64, N)`` of ``Ahat = D^-1/2 (A + I) D^-1/2`` of the synthetic graph."""
    cfg = DatasetConfig(
        name=bench.generator,
        num_nodes=bench.nodes,
        avg_degree=bench.edges / bench.nodes,
        num_features=4,
        num_classes=2,
        seed=bench.seed,
    )
    graph = load_graph(cfg)
    return (*graph.norm_values("gcn"), graph.num_nodes)


Side = Callable[[torch.Tensor], torch.Tensor]  # z (requires grad) -> Ahat @ z, differentiable


def make_sides(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, n: int) -> dict[str, Side]:
    """One differentiable ``z -> Ahat @ z`` per side, float32."""
    from torch_geometric.utils import spmm as pyg_spmm

    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = torch.sparse_csr_tensor(indptr, indices, values.float(), size=(n, n), check_invariants=False)
    op = SparseOp(indptr, indices, values, n)

    def torch_path(z: torch.Tensor) -> torch.Tensor:
        with kernels.use("torch"):
            return op @ z

    def ours(z: torch.Tensor) -> torch.Tensor:
        with kernels.use("native"):
            return op @ z

    sides: dict[str, Side] = {
        "torch_csr": lambda z: torch.sparse.mm(csr, z),
        "pyg": lambda z: pyg_spmm(csr, z, reduce="sum"),
        "torch_path": torch_path,
        "ours": ours,
    }
    for side in sides.values():  # build cached operators outside the timed rounds
        side(torch.zeros(n, 1, requires_grad=True)).sum().backward()
    return sides


@dataclass(frozen=True)
class Timing:
    fwd: float
    bwd: float

    @property
    def total(self) -> float:
        return self.fwd + self.bwd


def time_side(side: Side, z: torch.Tensor, gy: torch.Tensor) -> Timing:
    t0 = time.perf_counter()
    out = side(z)
    t1 = time.perf_counter()
    (gz,) = torch.autograd.grad(out, z, gy)
    t2 = time.perf_counter()
    del out, gz
    return Timing(t1 - t0, t2 - t1)


def time_copy(src: torch.Tensor, dst: torch.Tensor) -> float:
    t0 = time.perf_counter()
    dst.copy_(src)
    return time.perf_counter() - t0


def check_agreement(sides: dict[str, Side], z: torch.Tensor, gy: torch.Tensor) -> dict[str, float]:
    """Max |side - torch_csr| of the forward output and of the gradient (float32 rounding only)."""
    ref_out = sides["torch_csr"](z)
    (ref_grad,) = torch.autograd.grad(ref_out, z, gy)
    ref_out = ref_out.detach()
    diffs = {}
    for name, side in sides.items():
        out = side(z)
        (grad,) = torch.autograd.grad(out, z, gy)
        out = out.detach()
        diffs[name] = max(float((out - ref_out).abs().max()), float((grad - ref_grad).abs().max()))
    return diffs


def run(bench: KernelBench, command: str) -> tuple[dict, list[dict]]:
    if kernels._import_native()[0] is None:
        raise SystemExit(f"bench_kernels: the native kernels are not available: {kernels._import_native()[1]}")
    t0 = time.perf_counter()
    indptr, indices, values, n = make_operator(bench)
    nnz = int(indices.numel())
    print(f"graph: {bench.generator} N={n} nnz(Ahat)={nnz} d={bench.dim} ({time.perf_counter() - t0:.1f} s)")
    sides = make_sides(indptr, indices, values, n)
    g = torch.Generator().manual_seed(bench.seed)
    z = torch.randn(n, bench.dim, generator=g).requires_grad_()
    gy = torch.randn(n, bench.dim, generator=g)
    diffs = check_agreement(sides, z, gy)
    print("max |side - torch_csr| (output, grad): " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    src = torch.ones(nnz * bench.dim, dtype=torch.float32)  # E·d·4 bytes: what one SpMM gathers
    dst = torch.empty_like(src)
    dst.copy_(src)

    rows: list[dict] = []
    names = list(sides)
    for r in range(bench.warmup + bench.rounds):
        copy = time_copy(src, dst)
        times = {}
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name] = time_side(sides[name], z, gy)
        if r >= bench.warmup:
            row = {"round": r - bench.warmup, "copy_s": copy}
            for name, t in times.items():
                row[f"{name}_fwd_s"], row[f"{name}_bwd_s"] = t.fwd, t.total - t.fwd
            rows.append(row)
        line = f"{'warm-up' if r < bench.warmup else 'round'} {r}: copy {copy:.3f} s"
        print(line + "".join(f"  {k} {t.fwd:.3f}+{t.bwd:.3f} s" for k, t in times.items()), flush=True)
    del src, dst

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    copy_med = med("copy_s")
    bound = 2.0 * copy_med  # forward + backward: two gathers of E·d·4 bytes
    result: dict = {
        "command": command,
        "config": asdict(bench),
        "threads": torch.get_num_threads(),
        "nnz": nnz,
        "bytes_per_spmm": nnz * bench.dim * 4,
        "copy_rate_gb_s": nnz * bench.dim * 4 / copy_med / 1e9,
        "bound_fwd_bwd_s": bound,
        "kernels": kernels.describe(),
        "max_difference_vs_torch_csr": diffs,
        "versions": {"torch": torch.__version__},
        "median_s": {},
    }
    for name in SIDES:
        fwd, bwd = med(f"{name}_fwd_s"), med(f"{name}_bwd_s")
        total = statistics.median(row[f"{name}_fwd_s"] + row[f"{name}_bwd_s"] for row in rows)
        result["median_s"][name] = {"fwd": fwd, "bwd": bwd, "fwd_bwd": total, "over_bound": total / bound}
    ours = result["median_s"]["ours"]["fwd_bwd"]
    result["speedup_vs_torch_path"] = result["median_s"]["torch_path"]["fwd_bwd"] / ours
    result["speedup_vs_torch_csr"] = result["median_s"]["torch_csr"]["fwd_bwd"] / ours
    result["ratio"] = ours / bound
    return result, rows


def write_results(out: Path, result: dict, rows: list[dict]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "bench_kernels.json", out / "bench_kernels.csv"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return [json_path, csv_path]


def report(result: dict) -> None:
    print(
        f"bound (2 x copy of {result['bytes_per_spmm'] / 1e9:.2f} GB at {result['copy_rate_gb_s']:.1f} GB/s): "
        f"{result['bound_fwd_bwd_s']:.3f} s fwd+bwd"
    )
    for name, m in result["median_s"].items():
        print(
            f"{name:>10}: fwd {m['fwd']:.3f} s  bwd {m['bwd']:.3f} s  fwd+bwd {m['fwd_bwd']:.3f} s  "
            f"= {m['over_bound']:.2f} x bound"
        )
    print(
        f"ours vs torch path: {result['speedup_vs_torch_path']:.2f}x faster; "
        f"vs torch CSR autograd: {result['speedup_vs_torch_csr']:.2f}x"
    )


def parse_args(argv: list[str] | None) -> tuple[KernelBench, argparse.Namespace]:
    d = KernelBench()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=d.nodes)
    p.add_argument("--edges", type=int, default=d.edges, help="directed edges after symmetrisation")
    p.add_argument("--dim", type=int, default=d.dim, help="feature width d")
    p.add_argument("--generator", choices=("powerlaw", "sbm"), default=d.generator)
    p.add_argument("--rounds", type=int, default=d.rounds, help="timed rounds")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed rounds first")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="0: torch's default")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--save", action="store_true", help=f"write results to {SAVE_DIR.relative_to(REPO)}/")
    where.add_argument("--out", type=Path, help="write results to this folder (must not exist or be empty)")
    a = p.parse_args(argv)
    if a.nodes < 2 or a.edges < 1 or a.dim < 1 or a.rounds < 1 or a.warmup < 0 or a.threads < 0:
        p.error("need --nodes >= 2, --edges >= 1, --dim >= 1, --rounds >= 1, --warmup >= 0, --threads >= 0")
    if a.out is not None and a.out.exists() and (not a.out.is_dir() or any(a.out.iterdir())):
        p.error(f"--out {a.out}: exists and is not an empty folder; pick a fresh one")
    bench = KernelBench(a.nodes, a.edges, a.dim, a.generator, a.rounds, a.warmup, a.seed, a.threads)
    return bench, a


def main(argv: list[str] | None = None) -> dict:
    bench, a = parse_args(argv)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    args = sys.argv[1:] if argv is None else argv
    result, rows = run(bench, " ".join([".venv/bin/python", "experiments/bench_kernels.py", *args]))
    report(result)
    out = SAVE_DIR if a.save else a.out
    if out is not None:
        for path in write_results(out, result, rows):
            print(f"wrote {path}")
    print(f"ratio={result['ratio']:.2f}")
    return result


if __name__ == "__main__":
    main()
