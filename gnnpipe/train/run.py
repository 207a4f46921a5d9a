"""Assemble one run: config -> dataset -> (plan) -> model -> executor -> trainer."""

from __future__ import annotations

from pathlib import Path

from gnnpipe.config import ConfigError, ExperimentConfig
from gnnpipe.data import load_graph
from gnnpipe.train.executor import Executor, SingleDeviceExecutor
from gnnpipe.train.trainer import RunSummary, timestamp, train

__all__ = ["make_executor", "run_training", "run_name"]


def run_name(cfg: ExperimentConfig) -> str:
    stem = "default" if cfg.source.startswith("<") else Path(cfg.source.split(" (+ overrides")[0]).stem
    p = cfg.parallel
    return f"{stem}-w{p.ways}s{p.stages}c{p.chunks}-{timestamp()}"


def make_executor(cfg: ExperimentConfig) -> Executor:
    """The executor the degrees of ``cfg`` call for."""
    p = cfg.parallel
    if (p.ways, p.stages, p.chunks) != (1, 1, 1):
        raise ConfigError(
            f"{cfg.source}: parallel degrees ways={p.ways}, stages={p.stages}, chunks={p.chunks} are not supported "
            "yet; only ways=1, stages=1, chunks=1 (single device) runs in this version"
        )
    graph = load_graph(cfg.dataset)
    return SingleDeviceExecutor(cfg, graph)


def run_training(cfg: ExperimentConfig, *, metrics_out: str | None = None) -> RunSummary:
    executor = make_executor(cfg)
    try:
        return train(cfg, executor, metrics_out=metrics_out, run_dir=Path(cfg.log.dir) / run_name(cfg))
    finally:
        executor.close()
