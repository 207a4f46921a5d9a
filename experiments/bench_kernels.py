# .venv/bin/python experiments/bench_kernels.py --nodes 100000 --edges 2000000 --dim 128 --rounds 10
"""Aggregation SpMM, forward + backward, beside the memory-bandwidth bound measured in the same run.

``m = Ahat @ z`` with ``Ahat`` the GCN-normalised adjacency of a synthetic graph (float32, ``z: [N, d]``),
then ``dz = Ahat^T @ dm``. Sides:

* ``torch_csr``    -- ``torch.sparse.mm`` on a CSR tensor with torch's own autograd (rebuilds ``A^T`` per call);
* ``pyg``          -- ``torch_geometric.utils.spmm`` on the same CSR tensor (what PyG's ``GCN2Conv`` calls with a
                      sparse adjacency; it dispatches to ``torch.sparse.mm``);
* ``torch_path``   -- our :class:`SparseOp` on the torch backend (``A^T`` built once, or ``A`` when symmetric);
* ``ours``         -- our :class:`SparseOp` on the native backend (``gnnpipe._C``).

Bound (DRAM read bandwidth): the bytes one SpMM must move -- the gathered rows ``E·d·4``, the column indices
and values ``E·(8 + 4)``, the output ``N·d·4`` and the index pointer ``(N+1)·8`` -- twice (forward, then the
backward's ``A^T``, the same counts), timed at the *read* rate measured in the same run by a streaming read
(``x.sum()`` over a float32 array of at least 256 MB, far beyond the last-level cache; the output's writes are
timed at that rate too, which favours the bound). Where ``z`` (``N·d·4``) fits in the last-level cache, the
gathered rows can come from the cache: the *cache-resident floor* counts ``z`` read once, the output written
once and the indices, values and index pointer, at the same rate, so a ratio below 1.0 is read against it.
Rounds interleave the streaming read and every side (rotating order) so load from other jobs hits all alike; we
report medians. The bound's bytes are listed, then the last line: ``ratio=<ours / read-bandwidth bound>``.

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


def time_read(x: torch.Tensor) -> float:
    """Seconds of one streaming read of ``x`` (a sum: reads every byte once, writes nothing)."""
    t0 = time.perf_counter()
    x.sum()
    return time.perf_counter() - t0


def llc_bytes() -> int | None:
    """The last-level cache of CPU 0 (Linux sysfs), or None where it cannot be read."""
    best = None
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, size = int((d / "level").read_text()), (d / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        value = int(size.rstrip("KMG")) * scale
        if best is None or level > best[0]:
            best = (level, value)
    return best[1] if best else None


def spmm_bytes(n: int, nnz: int, dim: int, *, cached: bool, index_bytes: int = 8, value_bytes: int = 4) -> dict:
    """Bytes one float32 SpMM ``[N, N] @ [N, d]`` must move, by part. ``cached``: ``z`` read once (it stays in the
    last-level cache) instead of one row per nonzero."""
    return {
        "gathered_rows" if not cached else "z_once": (n if cached else nnz) * dim * 4,
        "indices_values": nnz * (index_bytes + value_bytes),
        "output": n * dim * 4,
        "indptr": (n + 1) * index_bytes,
    }


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
    stream = torch.ones(max(nnz * bench.dim, 64 * 2**20), dtype=torch.float32)  # >= 256 MB, past the LLC
    stream.sum()

    rows: list[dict] = []
    names = list(sides)
    for r in range(bench.warmup + bench.rounds):
        read = time_read(stream)
        times = {}
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name] = time_side(sides[name], z, gy)
        if r >= bench.warmup:
            row = {"round": r - bench.warmup, "read_s": read}
            for name, t in times.items():
                row[f"{name}_fwd_s"], row[f"{name}_bwd_s"] = t.fwd, t.total - t.fwd
            rows.append(row)
        line = f"{'warm-up' if r < bench.warmup else 'round'} {r}: read {read:.3f} s"
        print(line + "".join(f"  {k} {t.fwd:.3f}+{t.bwd:.3f} s" for k, t in times.items()), flush=True)
    stream_bytes = stream.numel() * 4
    del stream

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    read_rate = stream_bytes / med("read_s")  # bytes/s of a streaming read, in this run
    ib, vb = indices.element_size(), 4
    dram = spmm_bytes(n, nnz, bench.dim, cached=False, index_bytes=ib, value_bytes=vb)
    cached = spmm_bytes(n, nnz, bench.dim, cached=True, index_bytes=ib, value_bytes=vb)
    bound = 2.0 * sum(dram.values()) / read_rate  # forward + backward (A^T: the same counts)
    llc = llc_bytes()
    z_fits = llc is not None and n * bench.dim * 4 <= llc
    result: dict = {
        "command": command,
        "config": asdict(bench),
        "threads": torch.get_num_threads(),
        "nnz": nnz,
        "bytes_per_spmm": dram,
        "bytes_per_spmm_cache_resident": cached,
        "read_rate_gb_s": read_rate / 1e9,
        "stream_bytes": stream_bytes,
        "llc_bytes": llc,
        "z_fits_llc": z_fits,
        "bound_fwd_bwd_s": bound,
        "cache_floor_fwd_bwd_s": 2.0 * sum(cached.values()) / read_rate,
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
    result["ratio_vs_cache_floor"] = ours / result["cache_floor_fwd_bwd_s"]
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


def _parts(parts: dict) -> str:
    return " + ".join(f"{k} {v / 1e6:.1f} MB" for k, v in parts.items()) + f" = {sum(parts.values()) / 1e6:.1f} MB"


def report(result: dict) -> None:
    """The sides against the bound; the bound's bytes and the cache-resident floor last (before ``ratio=``)."""
    for name, m in result["median_s"].items():
        print(
            f"{name:>10}: fwd {m['fwd']:.3f} s  bwd {m['bwd']:.3f} s  fwd+bwd {m['fwd_bwd']:.3f} s  "
            f"= {m['over_bound']:.2f} x bound"
        )
    print(
        f"ours vs torch path: {result['speedup_vs_torch_path']:.2f}x faster; "
        f"vs torch CSR autograd: {result['speedup_vs_torch_csr']:.2f}x"
    )
    rate = result["read_rate_gb_s"]
    print(f"read rate: {rate:.1f} GB/s (streaming x.sum() over {result['stream_bytes'] / 1e6:.0f} MB, this run)")
    floor = "" if result["z_fits_llc"] else " (z does not fit in the last-level cache: not reachable)"
    llc = "unknown" if result["llc_bytes"] is None else f"{result['llc_bytes'] / 1e6:.0f} MB"
    print(
        f"cache-resident floor (z {result['config']['nodes'] * result['config']['dim'] * 4 / 1e6:.0f} MB, last-level "
        f"cache {llc}), per SpMM: {_parts(result['bytes_per_spmm_cache_resident'])}; x 2 at the read rate: "
        f"{result['cache_floor_fwd_bwd_s']:.4f} s fwd+bwd; ours = {result['ratio_vs_cache_floor']:.2f} x floor{floor}"
    )
    print(
        f"read-bandwidth bound, per SpMM: {_parts(result['bytes_per_spmm'])}; x 2 (fwd + bwd) at {rate:.1f} GB/s: "
        f"{result['bound_fwd_bwd_s']:.4f} s"
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
