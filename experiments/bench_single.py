# .venv/bin/python experiments/bench_single.py --nodes 100000 --edges 2000000 --layers 16 --hidden 128 --epochs 10
"""Single-device epoch time and peak memory: our GCNII vs the same model built from PyG's ``GCN2Conv``.

Both sides train the same architecture on the same graph (one of our synthetic generators), with the same
weights at the start, dropout rate, dtype (float32) and thread count:

    h0 = relu(Linear(drop(x)));  h = h0;  L times: h = relu(conv(drop(h), h0));  logits = Linear(drop(h))

and one epoch is forward + cross-entropy on the training vertices + backward + Adam step.
Ours is :class:`gnnpipe.train.executor.SingleDeviceExecutor` (a :class:`SparseOp` with a precomputed
transpose for the backward). PyG's is ``GCN2Conv(shared_weights=True, normalize=False)`` given the GCN-
normalised adjacency as a ``torch.sparse_csr`` tensor, its fastest path without torch-sparse: ``propagate``
sees a sparse tensor and calls ``message_and_aggregate`` -> ``torch_geometric.utils.spmm`` ->
``torch.sparse.mm``. (The ``edge_index`` path gathers and scatters [E, d] messages: several times slower.)

Timing: both sides live in one process and alternate (ours, PyG, PyG, ours, ...) after warm-up epochs, so
load from other jobs hits both alike; we report medians. Memory: each side runs alone in a child process
that loads the saved graph, then trains; we report its peak RSS (VmHWM) and the growth of the peak
over the RSS after loading the graph (what the side itself needs: operator, activations, optimizer).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torch_geometric
from torch import nn
from torch_geometric.nn import GCN2Conv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from gnnpipe.config import DatasetConfig, ExperimentConfig, ModelConfig, TrainConfig  # noqa: E402
from gnnpipe.data import load_graph  # noqa: E402
from gnnpipe.data.graph import Graph  # noqa: E402
from gnnpipe.models.deep import DeepGNN, build_model  # noqa: E402
from gnnpipe.train.executor import SingleDeviceExecutor  # noqa: E402

SIDES = ("ours", "pyg")
DEFAULT_OUT = REPO / "experiments" / "results" / "bench_single"


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures. ``edges``: directed edges of the symmetrised graph (avg degree E/N)."""

    nodes: int = 100_000
    edges: int = 2_000_000
    layers: int = 16
    hidden: int = 128
    features: int = 128
    classes: int = 16
    dropout: float = 0.5
    epochs: int = 10  # timed epochs per side
    warmup: int = 2  # untimed epochs per side before them
    memory_epochs: int = 2  # epochs each memory child trains
    generator: str = "powerlaw"
    seed: int = 0
    threads: int = 0  # 0: torch's default

    def experiment(self) -> ExperimentConfig:
        """The project config of our side; the PyG side reads the same model and optimiser settings."""
        return ExperimentConfig(
            dataset=DatasetConfig(
                name=self.generator,
                num_nodes=self.nodes,
                avg_degree=self.edges / self.nodes,
                num_features=self.features,
                num_classes=self.classes,
                seed=self.seed,
            ),
            model=ModelConfig(arch="gcnii", layers=self.layers, hidden=self.hidden, dropout=self.dropout),
            train=TrainConfig(device="cpu", dtype="float32", seed=self.seed),
        )


# ---------------------------------------------------------------------------------------------- PyG side
class PygGCNII(nn.Module):
    """The GCNII of ``build_model(arch="gcnii")`` written with PyG's ``GCN2Conv`` (PyG's example network)."""

    def __init__(
        self, in_dim: int, hidden: int, num_classes: int, layers: int, dropout: float, alpha: float, lam: float
    ):
        super().__init__()
        self.p = dropout
        self.encoder = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(
            GCN2Conv(hidden, alpha=alpha, theta=lam, layer=i + 1, shared_weights=True, normalize=False)
            for i in range(layers)
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, adj_t: torch.Tensor) -> torch.Tensor:
        """``x: [N, F]``, ``adj_t``: [N, N] sparse CSR, row v = in-edges of v. Returns logits ``[N, C]``."""
        h = h0 = torch.relu(self.encoder(F.dropout(x, self.p, self.training)))
        for conv in self.convs:
            h = torch.relu(conv(F.dropout(h, self.p, self.training), h0, adj_t))
        return self.head(F.dropout(h, self.p, self.training))


def pyg_adjacency(graph: Graph, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as PyG builds it (``gcn_norm``), as a ``torch.sparse_csr`` ``adj_t``."""
    src, dst = graph.edges()
    edge_index, weight = gcn_norm(torch.stack([src, dst]), None, graph.num_nodes, add_self_loops=True, dtype=dtype)
    with warnings.catch_warnings():  # "sparse CSR support is in beta", "invariant checks disabled"
        warnings.simplefilter("ignore", UserWarning)
        # adj_t[target, source]: rows are destinations, as MessagePassing expects of a sparse adjacency
        return to_torch_csr_tensor(edge_index.flip(0), weight, size=(graph.num_nodes, graph.num_nodes))


def copy_weights(ours: DeepGNN, ref: PygGCNII) -> None:
    """Give ``ref`` the weights of ``ours`` (GCN2Conv computes ``s @ weight1``, we ``s @ W^T``)."""
    with torch.no_grad():
        ref.encoder.weight.copy_(ours.encoder.lin.weight)
        ref.encoder.bias.copy_(ours.encoder.lin.bias)
        for layer, conv in zip(ours.layers, ref.convs, strict=True):
            conv.weight1.copy_(layer.lin.weight.t())
        ref.head.weight.copy_(ours.head.lin.weight)
        ref.head.bias.copy_(ours.head.lin.bias)


class PygTrainer:
    """Full-graph training of :class:`PygGCNII`, one epoch as the executor does it (same optimiser)."""

    def __init__(self, cfg: ExperimentConfig, graph: Graph, weights_from: DeepGNN):
        m = cfg.model
        self.model = PygGCNII(graph.num_features, m.hidden, graph.num_classes, m.layers, m.dropout, m.alpha, m.lam)
        copy_weights(weights_from, self.model)
        self.adj_t = pyg_adjacency(graph)
        self.x = graph.x.to(torch.float32)
        self.y = graph.y
        self.train_idx = graph.train_mask.nonzero().flatten()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.x, self.adj_t)
        loss = F.cross_entropy(logits[self.train_idx], self.y[self.train_idx])
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        self.model.eval()
        return self.model(self.x, self.adj_t)


# ---------------------------------------------------------------------------------------------- both sides
def make_graph(bench: BenchConfig) -> Graph:
    return load_graph(bench.experiment().dataset)


def make_side(name: str, bench: BenchConfig, graph: Graph):
    """A trainer with ``train_epoch(epoch)`` and ``logits()``; both sides start from the same weights."""
    cfg = bench.experiment()
    if name == "ours":
        return SingleDeviceExecutor(cfg, graph)
    if name == "pyg":
        ours = build_model(cfg.model, graph.num_features, graph.num_classes, seed=cfg.train.seed)
        return PygTrainer(cfg, graph, ours)
    raise ValueError(f"unknown side {name!r}; allowed: {', '.join(SIDES)}")


def logits_difference(sides: dict) -> float:
    """Max |ours - PyG| of the eval-mode logits (no dropout), ``[N, C]`` each; sides share weights."""
    return float((sides["ours"].logits() - sides["pyg"].logits()).abs().max())


@dataclass(frozen=True)
class EpochTime:
    wall: float  # seconds
    cpu: float  # CPU seconds of the process (all threads): less sensitive than wall time to other jobs


def time_interleaved(sides: dict, warmup: int, epochs: int) -> dict[str, list[EpochTime]]:
    """Timed epochs per side; rounds alternate the order (AB, BA, ...) so neither side always goes first."""
    times: dict[str, list[EpochTime]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(warmup + epochs):
        line = f"{'warm-up' if r < warmup else 'timed'} epoch {r if r < warmup else r - warmup}:"
        for name in names if r % 2 == 0 else names[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            sides[name].train_epoch(r)
            t = EpochTime(wall=time.perf_counter() - t0, cpu=time.process_time() - c0)
            if r >= warmup:
                times[name].append(t)
            line += f"  {name} {t.wall:.3f} s (cpu {t.cpu:.3f} s)"
        print(line, flush=True)
    return times


# ---------------------------------------------------------------------------------------------- memory
def _status_bytes(key: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key} field")


def _peak_rss_bytes() -> int:
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss starts at the parent's RSS (the kernel carries the
    # old address space's high-water mark into the signal struct), so a child spawned by a big parent would
    # report the parent's size. VmHWM belongs to the child's own address space.
    return max(_status_bytes("VmHWM"), _status_bytes("VmRSS"))


def save_graph(graph: Graph, path: Path) -> None:
    fields = ("indptr", "indices", "x", "y", "train_mask", "val_mask", "test_mask")
    torch.save({"name": graph.name, "num_classes": graph.num_classes, **{k: getattr(graph, k) for k in fields}}, path)


def load_saved_graph(path: Path) -> Graph:
    d = torch.load(path)
    g = Graph(
        d["name"],
        d["indptr"],
        d["indices"],
        d["x"],
        d["y"],
        d["train_mask"],
        d["val_mask"],
        d["test_mask"],
        d["num_classes"],
    )
    g.validate()
    return g


def memory_child(side: str, bench: BenchConfig, graph_file: Path) -> dict[str, int]:
    """Run in a fresh process: load the graph, build one side, train; return its peak memory in bytes."""
    graph = load_saved_graph(graph_file)
    base = _status_bytes("VmRSS")
    trainer = make_side(side, bench, graph)
    for epoch in range(bench.memory_epochs):
        trainer.train_epoch(epoch)
    peak = _peak_rss_bytes()
    return {"peak_rss": peak, "graph_rss": base, "peak_growth": peak - base}


def measure_memory(side: str, bench: BenchConfig, graph_file: Path) -> dict[str, int]:
    """Peak memory of ``side`` training alone, in a child process (peak RSS cannot be reset in-process)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-of", side, "--graph-file", str(graph_file)]
    cmd += _bench_args(bench)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- reporting
def summarize(times: dict[str, list[EpochTime]]) -> dict:
    """Medians, minima and the ours/PyG ratios of the timed epochs."""
    wall = {name: [t.wall for t in ts] for name, ts in times.items()}
    cpu = {name: [t.cpu for t in ts] for name, ts in times.items()}
    median = {name: statistics.median(ts) for name, ts in wall.items()}
    median_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    return {
        "median_s": median,
        "min_s": {name: min(ts) for name, ts in wall.items()},
        "ratio": median["ours"] / median["pyg"],
        # robust to load that drifts between rounds: the two epochs of a round ran back to back
        "paired_ratio_median": statistics.median(o / p for o, p in zip(wall["ours"], wall["pyg"], strict=True)),
        "median_cpu_s": median_cpu,
        "cpu_ratio": median_cpu["ours"] / median_cpu["pyg"],
    }


def write_results(out: Path, bench: BenchConfig, result: dict, times: dict[str, list[EpochTime]]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, png_path = out / "bench_single.csv", out / "bench_single.json", out / "bench_single.png"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "side", "seconds", "cpu_seconds"])
        for name, ts in times.items():
            w.writerows([i, name, f"{t.wall:.6f}", f"{t.cpu:.6f}"] for i, t in enumerate(ts))
    json_path.write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["GNNPipe", "PyG GCN2Conv\n(sparse_csr)"]
    colors = ["tab:blue", "tab:orange"]
    med = [result["median_s"][s] for s in SIDES]
    lo = [med[i] - min(t.wall for t in times[s]) for i, s in enumerate(SIDES)]
    hi = [max(t.wall for t in times[s]) - med[i] for i, s in enumerate(SIDES)]
    panels = 2 if result.get("memory") else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    ax.bar(labels, med, yerr=[lo, hi], capsize=6, color=colors)
    ax.set_ylabel("epoch time (s), median, min-max")
    ax.set_title(f"ratio ours/PyG = {result['ratio']:.2f}")
    if panels == 2:
        ax = axes[0][1]
        growth = [result["memory"][s]["peak_growth"] / 2**30 for s in SIDES]
        ax.bar(labels, growth, color=colors)
        ax.set_ylabel("peak RSS growth over graph (GiB)")
        ax.set_title("peak memory")
    fig.suptitle(
        f"GCNII L={bench.layers} H={bench.hidden}, {bench.generator} N={bench.nodes:,} E={bench.edges:,}, "
        f"{result['threads']} threads",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return [csv_path, json_path, png_path]


def run_benchmark(bench: BenchConfig, out: Path, *, memory: bool = True, command: str = "") -> dict:
    """Build the graph and both sides, check they agree, time them interleaved, measure memory, write files."""
    t0 = time.perf_counter()
    graph = make_graph(bench)
    print(f"graph: {graph.name} N={graph.num_nodes} E={graph.num_edges} ({time.perf_counter() - t0:.1f} s)")
    sides = {name: make_side(name, bench, graph) for name in SIDES}
    diff = logits_difference(sides)
    print(f"max |logits ours - PyG| at start (eval, same weights): {diff:.2e}")
    times = time_interleaved(sides, bench.warmup, bench.epochs)
    del sides
    result: dict = {
        "command": command,
        "config": asdict(bench),
        "graph": {"name": graph.name, "nodes": graph.num_nodes, "edges": graph.num_edges},
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "torch_geometric": torch_geometric.__version__},
        "max_logit_difference": diff,
        **summarize(times),
    }
    if memory:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "graph.pt"
            save_graph(graph, path)
            result["memory"] = {name: measure_memory(name, bench, path) for name in SIDES}
    for name in SIDES:
        line = f"{name}: median {result['median_s'][name]:.3f} s  min {result['min_s'][name]:.3f} s"
        line += f"  (cpu {result['median_cpu_s'][name]:.3f} s)"
        if memory:
            mem = result["memory"][name]
            line += f"  peak RSS {mem['peak_rss'] / 2**30:.2f} GiB (+{mem['peak_growth'] / 2**30:.2f} GiB over graph)"
        print(line)
    print(
        f"median of per-round ratios ours/PyG: {result['paired_ratio_median']:.2f}, cpu ratio {result['cpu_ratio']:.2f}"
    )
    for p in write_results(out, bench, result, times):
        print(f"wrote {p}")
    print(f"ratio={result['ratio']:.2f}")
    return result


# ---------------------------------------------------------------------------------------------- command line
def _bench_args(bench: BenchConfig) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in asdict(bench).items()]


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=d.nodes)
    p.add_argument("--edges", type=int, default=d.edges, help="directed edges after symmetrisation")
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--features", type=int, default=d.features)
    p.add_argument("--classes", type=int, default=d.classes)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--epochs", type=int, default=d.epochs, help="timed epochs per side")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed epochs per side first")
    p.add_argument("--memory-epochs", type=int, default=d.memory_epochs)
    p.add_argument("--generator", choices=("powerlaw", "sbm"), default=d.generator)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="0: torch's default")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-memory", action="store_true", help="skip the per-side memory subprocesses")
    p.add_argument("--memory-of", choices=SIDES, help=argparse.SUPPRESS)  # internal: the memory child
    p.add_argument("--graph-file", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.nodes < 2 or a.edges < 1 or a.layers < 1 or a.hidden < 1 or a.epochs < 1 or a.warmup < 0:
        p.error("need --nodes >= 2, --edges >= 1, --layers >= 1, --hidden >= 1, --epochs >= 1, --warmup >= 0")
    if a.threads < 0:
        p.error(f"--threads = {a.threads}, expected >= 0")
    bench = BenchConfig(
        nodes=a.nodes,
        edges=a.edges,
        layers=a.layers,
        hidden=a.hidden,
        features=a.features,
        classes=a.classes,
        dropout=a.dropout,
        epochs=a.epochs,
        warmup=a.warmup,
        memory_epochs=a.memory_epochs,
        generator=a.generator,
        seed=a.seed,
        threads=a.threads,
    )
    return bench, a


def main(argv: list[str] | None = None) -> dict | None:
    bench, a = parse_args(argv)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    if a.memory_of:
        print(json.dumps(memory_child(a.memory_of, bench, a.graph_file)))
        return None
    args = sys.argv[1:] if argv is None else argv
    command = " ".join([".venv/bin/python", "experiments/bench_single.py", *args])
    return run_benchmark(bench, a.out, memory=not a.no_memory, command=command)


if __name__ == "__main__":
    main()
