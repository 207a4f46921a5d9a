# .venv/bin/python experiments/bench_single.py --nodes 100000 --edges 2000000 --layers 16 --hidden 128 --epochs 10
"""Single-device epoch time and peak memory: our GCNII vs the same model built from PyG's ``GCN2Conv``.

Both sides train the same architecture on the same graph (one of our synthetic generators), with the same
weights at the start, dropout rate, dtype (float32) and thread count:

    h0 = relu(Linear(drop(x)));  h = h0;  L times: h = relu(conv(drop(h), h0));  logits = Linear(drop(h))

and one epoch is forward + cross-entropy on the training vertices + backward + Adam step.
Ours is :class:`gnnpipe.train.executor.SingleDeviceExecutor` (a :class:`SparseOp` with a precomputed
transpose for the backward). PyG's is ``GCN2Conv(shared_weights=True, normalize=False)`` given the GCN-
normalised adjacency as a ``torch.sparse_csr`` tensor (``experiments/pyg_gcnii.py`` says why that path).

Timing: both sides live in one process and alternate (ours, PyG, PyG, ours, ...) after warm-up epochs, so
load from other jobs hits both alike; we report medians. Memory: the graph is written once with
``gnnpipe.data.write_npz``; each side runs alone in a child process that reads it back with ``load_graph``
(dataset ``npz``), then builds its side and trains; ``gnnpipe.memory.MemoryProbe`` gives the peak RSS of that
phase and its growth over the RSS after loading the graph (what the side itself needs: operator,
activations, optimizer; the probe resets the kernel's peak after loading, so loading's temporaries do not count).

Writes nothing unless asked (the tree stays clean): ``--save`` writes ``experiments/results/bench_single/``,
``--out DIR`` that folder; either way ``bench_single.json``, ``.csv`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch_geometric

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from experiments.bench_report import SIDES, EpochTime, summarize, write_results  # noqa: E402
from experiments.pyg_gcnii import PygTrainer  # noqa: E402
from gnnpipe.config import DatasetConfig, ExperimentConfig, ModelConfig, TrainConfig  # noqa: E402
from gnnpipe.data import load_graph, write_npz  # noqa: E402
from gnnpipe.data.graph import Graph  # noqa: E402
from gnnpipe.memory import MemoryProbe  # noqa: E402
from gnnpipe.models.deep import build_model  # noqa: E402
from gnnpipe.train.executor import SingleDeviceExecutor  # noqa: E402

SAVE_DIR = REPO / "experiments" / "results" / "bench_single"  # --save; without --save or --out nothing is written


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
def saved_graph(path: Path) -> DatasetConfig:
    """The dataset config that reads back a graph written by ``write_npz``: already symmetric and normalised
    as ``make_graph`` built it, so neither step is repeated."""
    return DatasetConfig(name="npz", path=str(path), undirected=False, feature_norm=False)


def memory_child(side: str, bench: BenchConfig, graph_file: Path) -> dict[str, int]:
    """Run in a fresh process: load the graph (written by ``write_npz``), build one side, train; return the
    peak RSS of building + training, the RSS after loading, and the peak's growth over it, in bytes."""
    graph = load_graph(saved_graph(graph_file))
    probe = MemoryProbe(torch.device("cpu"))  # baseline: the RSS with the graph loaded; peak reset here
    trainer = make_side(side, bench, graph)
    for epoch in range(bench.memory_epochs):
        trainer.train_epoch(epoch)
    growth = max(probe.phase("build+train")["peak_growth"], 0)  # RSS may dip a page between baseline and reset
    return {"peak_rss": probe.baseline + growth, "graph_rss": probe.baseline, "peak_growth": growth}


def measure_memory(side: str, bench: BenchConfig, graph_file: Path) -> dict[str, int]:
    """Peak memory of ``side`` training alone, in a child process (the other side's memory would stay resident
    in this one)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-of", side, "--graph-file", str(graph_file)]
    cmd += _bench_args(bench)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_benchmark(bench: BenchConfig, out: Path | None, *, memory: bool = True, command: str = "") -> dict:
    """Build the graph and both sides, check they agree, time them interleaved, measure memory, and write the
    files into ``out`` (None: write nothing)."""
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
            path = write_npz(graph, Path(tmp) / "graph.npz")
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
    title = f"GCNII L={bench.layers} H={bench.hidden}, {bench.generator} N={bench.nodes:,} E={bench.edges:,}"
    for p in write_results(out, result, times, f"{title}, {result['threads']} threads") if out is not None else ():
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
    where = p.add_mutually_exclusive_group()  # neither: print only, write nothing (the tree stays clean)
    where.add_argument("--save", action="store_true", help=f"write results to {SAVE_DIR.relative_to(REPO)}/")
    where.add_argument("--out", type=Path, help="write results to this folder")
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
    return run_benchmark(bench, SAVE_DIR if a.save else a.out, memory=not a.no_memory, command=command)


if __name__ == "__main__":
    main()
