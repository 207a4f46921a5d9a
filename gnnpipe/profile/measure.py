"""Measure per-epoch communication by running a few epochs of a strategy on local gloo workers."""

from __future__ import annotations

from gnnpipe.config import ExperimentConfig, config_from_dict, config_to_dict
from gnnpipe.parallel.spawn import run_workers

__all__ = ["measure_bytes"]


def _worker(cfg_dict: dict, epochs: int) -> dict:
    from gnnpipe.train.run import make_executor

    cfg = config_from_dict(cfg_dict, "profile")
    ex = make_executor(cfg)
    try:
        for e in range(epochs):
            ex.train_epoch(e)
        return {"per_worker": dict(ex.epoch_bytes), "cluster": ex.comm_bytes_per_epoch()}
    finally:
        ex.close()


def measure_bytes(cfg: ExperimentConfig, epochs: int, *, timeout_s: float = 900.0) -> dict:
    """Bytes of the last of ``epochs`` training epochs, counted by comm.py: cluster-wide and per worker."""
    world = cfg.parallel.world_size
    results = run_workers(_worker, world, config_to_dict(cfg), epochs, timeout_s=timeout_s)
    return {
        "cluster": results[0].value["cluster"],
        "per_worker": [{k: int(round(v)) for k, v in r.value["per_worker"].items()} for r in results],
    }
