"""Assemble one run: config -> dataset -> plan -> model -> executor -> trainer (DESIGN §8's data flow)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.memory import MemoryProbe, tune_allocator
from gnnpipe.parallel.comm import Comm
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.engine import Engine
from gnnpipe.partition.chunker import ChunkPlan, PlanSpec, get_or_build_plan
from gnnpipe.partition.prepared import open_prepared, prepare, prepared_dir
from gnnpipe.profile.volumes import volume_of
from gnnpipe.train.executor import Executor, SingleDeviceExecutor
from gnnpipe.train.trainer import RunSummary, timestamp, train

__all__ = ["cache_dir", "make_executor", "run_training", "run_name", "plan_for", "shared_plan", "shared_prepared"]


def cache_dir() -> Path:
    """Where partitions and chunk plans are cached (``$GNNPIPE_CACHE``, default ``.cache/gnnpipe``)."""
    return Path(os.environ.get("GNNPIPE_CACHE", ".cache/gnnpipe"))


def run_name(cfg: ExperimentConfig) -> str:
    stem = "default" if cfg.source.startswith("<") else Path(cfg.source.split(" (+ overrides")[0]).stem
    p = cfg.parallel
    return f"{stem}-w{p.ways}s{p.stages}c{p.chunks}-{timestamp()}"


def plan_for(cfg: ExperimentConfig, graph: Graph) -> ChunkPlan:
    p = cfg.parallel
    vw = None if p.vertex_weights == "none" else p.vertex_weights
    return get_or_build_plan(
        graph, PlanSpec(p.chunks, p.ways, method=p.partition, vertex_weights=vw), cache_dir=cache_dir()
    )


def shared_plan(cfg: ExperimentConfig, graph: Graph, comm) -> ChunkPlan:
    """The plan on every worker: rank 0 builds (or loads) it first, the others then load it from the cache."""
    if comm.rank == 0:
        plan = plan_for(cfg, graph)
    comm.all_gather_object(None)  # barrier: the plan is in the cache
    return plan if comm.rank == 0 else plan_for(cfg, graph)


def shared_prepared(cfg: ExperimentConfig, comm) -> tuple[Graph, ChunkPlan]:
    """The prepared (permuted, memory-mapped) graph and plan on every worker: the first worker of each host
    prepares them if its cache has none, the others wait, then every worker of a host maps the same files
    (one copy per host). The engine checks at setup that every worker got the same plan."""
    if comm.local_rank == 0:
        prepare(cfg, cache_dir())
    comm.all_gather_object(None)  # barrier: the prepared directory exists
    return open_prepared(prepared_dir(cfg, cache_dir()))


def make_executor(cfg: ExperimentConfig) -> Executor:
    """The executor the degrees of ``cfg`` call for: plain single device for (1, 1, 1), else the engine.

    Under torchrun (or mpirun) this joins the process group. The graph comes prepared (permuted into the
    chunk plan's order, beside the plan in the cache, memory-mapped): no worker generates or permutes it.
    The executor's ``analytic_bytes`` is the profiler's formula for its degrees (DESIGN §4). Memory is
    measured per phase from here on (``probe``).
    """
    p = cfg.parallel
    tune_allocator()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch.optim's one-time lazy imports (~70 MB) happen
    probe = MemoryProbe(cfg.train.device)  # before measuring: they are library start-up, not this run's memory
    if (p.ways, p.stages, p.chunks) == (1, 1, 1) and "WORLD_SIZE" not in os.environ:
        graph, _ = open_prepared(prepare(cfg, cache_dir()))
        probe.phase("load")
        ex = SingleDeviceExecutor(cfg, graph)
        ex.probe = probe
        return ex
    comm = Comm.init(ParallelDims.from_config(cfg), device=cfg.train.device, timeout_s=p.timeout_s)
    try:
        graph, plan = shared_prepared(cfg, comm)
        probe.phase("load")
        vol = volume_of(cfg, graph, plan)
        eng = Engine(cfg, graph, plan, comm, probe=probe)
        eng.analytic_bytes = {"layer": vol.layer, "graph": vol.graph, "weight": vol.weight}
        return eng
    except BaseException:
        comm.close()
        raise


def run_training(cfg: ExperimentConfig, *, metrics_out: str | None = None) -> RunSummary:
    executor = make_executor(cfg)  # the graph is not kept: the executor holds what it needs
    try:
        name = run_name(cfg)
        comm = getattr(executor, "comm", None)
        if comm is not None:
            name = comm.all_gather_object(name)[0]  # one run directory for all ranks
        rank = comm.rank if comm is not None else 0
        run_dir = Path(cfg.log.dir) / name
        summary = train(cfg, executor, metrics_out=metrics_out, run_dir=run_dir, log_file=run_dir / f"rank{rank}.log")
        executor.write_artifacts(run_dir)
        return summary
    finally:
        executor.close()
