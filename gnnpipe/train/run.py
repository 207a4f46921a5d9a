"""Assemble one run: config -> dataset -> plan -> model -> executor -> trainer (DESIGN §6's data flow)."""

from __future__ import annotations

import os
from pathlib import Path

from gnnpipe.config import ExperimentConfig
from gnnpipe.data import load_graph
from gnnpipe.data.graph import Graph
from gnnpipe.partition.chunker import ChunkPlan, get_or_build_plan
from gnnpipe.train.executor import Executor, SingleDeviceExecutor
from gnnpipe.train.trainer import RunSummary, timestamp, train

__all__ = ["cache_dir", "make_executor", "run_training", "run_name", "plan_for", "shared_plan"]


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
        graph, chunks=p.chunks, ways=p.ways, method=p.partition, vertex_weights=vw, cache_dir=cache_dir()
    )


def shared_plan(cfg: ExperimentConfig, graph: Graph, comm) -> ChunkPlan:
    """The plan on every worker: rank 0 builds (or loads) it first, the others then load it from the cache."""
    if comm.rank == 0:
        plan = plan_for(cfg, graph)
    comm.all_gather_object(None)  # barrier: the plan is in the cache
    return plan if comm.rank == 0 else plan_for(cfg, graph)


def make_executor(cfg: ExperimentConfig, graph: Graph | None = None) -> Executor:
    """The executor the degrees of ``cfg`` call for: plain single device for (1, 1, 1), else the engine.

    Under torchrun (or mpirun) this joins the process group; rank 0 builds the chunk plan first so the others
    load it from the cache instead of all partitioning at once.
    """
    p = cfg.parallel
    if graph is None:
        graph = load_graph(cfg.dataset)
    if (p.ways, p.stages, p.chunks) == (1, 1, 1) and "WORLD_SIZE" not in os.environ:
        return SingleDeviceExecutor(cfg, graph)
    from gnnpipe.parallel.comm import Comm, Topology
    from gnnpipe.parallel.engine import Engine

    comm = Comm.init(Topology(p.ways, p.stages), device=cfg.train.device, timeout_s=p.timeout_s)
    try:
        return Engine(cfg, graph, shared_plan(cfg, graph, comm), comm)
    except BaseException:
        comm.close()
        raise


def run_training(cfg: ExperimentConfig, *, metrics_out: str | None = None) -> RunSummary:
    executor = make_executor(cfg)
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
