"""What a run leaves behind: the run summary (:class:`RunSummary`), its printout, ``summary.json``,
``epochs.csv``, the ``--metrics-out`` file, and with ``log.tensorboard`` the per-epoch scalars as TensorBoard
event files (DESIGN §9). Only the logging worker writes."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gnnpipe.config import ConfigError, ExperimentConfig
from gnnpipe.parallel.nodes import LINKS, describe_nodes
from gnnpipe.train.executor import BREAKDOWN_KEYS, EpochStats, Executor
from gnnpipe.train.metrics import Accuracies
from gnnpipe.units import format_bytes

__all__ = ["RunSummary", "TensorBoardScalars", "check_tensorboard", "print_summary", "write_outputs"]

TENSORBOARD_PIN = "tensorboard==2.21.0"  # as in requirements.txt


@dataclass
class RunSummary:
    test_acc: float
    best_val_acc: float
    best_epoch: int
    epoch_time_s: float
    comm_bytes_per_epoch: dict[str, int]
    comm_bytes_per_epoch_analytic: dict[str, int]
    peak_memory_bytes: list[int]
    losses: list[float]
    breakdown_s: dict[str, float]  # the logging worker's mean per epoch
    breakdown_per_worker_s: list[dict[str, float]]  # every worker's mean per epoch (rank order)
    config: dict
    git_rev: str
    evals: list[dict] = field(default_factory=list)
    memory: list[dict[str, int]] = field(default_factory=list)  # per worker: bytes by kind, peak growth by phase
    nodes: list[int] = field(default_factory=list)  # the node of every rank (DESIGN §4)
    # per kind: {"measured": {"intra", "inter"}, "analytic": {"intra", "inter"}}, cluster-wide per epoch
    bytes_by_link: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def print_summary(s: RunSummary, world: int, out: Callable[[str], None]) -> None:
    out(
        f"Mean epoch time {s.epoch_time_s:.4f}s  (" + ", ".join(f"{k} {v:.4f}s" for k, v in s.breakdown_s.items()) + ")"
    )
    if len(s.breakdown_per_worker_s) > 1:
        out(f"Breakdown across {len(s.breakdown_per_worker_s)} workers, mean +- std per epoch:")
        for k in ("epoch", *BREAKDOWN_KEYS):
            v = torch.tensor([w[k] for w in s.breakdown_per_worker_s], dtype=torch.float64)
            out(f"  {k:<12} {v.mean():.4f}s +- {v.std(correction=0):.4f}s")
        frac = [w["bubble"] / w["epoch"] for w in s.breakdown_per_worker_s if w["epoch"] > 0]
        out(f"  bubble fraction {sum(frac) / max(len(frac), 1):.3f} of the epoch (mean over workers)")
    out("Communication per epoch, cluster-wide (measured | analytic):")
    for kind in ("layer", "graph", "weight"):
        m, a = s.comm_bytes_per_epoch[kind], s.comm_bytes_per_epoch_analytic[kind]
        out(f"  {kind:<7} {format_bytes(m):>12} | {format_bytes(a):>12}")
    total = sum(s.comm_bytes_per_epoch.values())
    out(f"  {'total':<7} {format_bytes(total):>12}")
    if s.comm_bytes_per_epoch["weight"]:  # comm.py books the all-reduce; what gloo's algorithm sends is not seen
        out("  (weight: modelled, not measured -- the all-reduce counted as 2(n-1)/n of its buffer per worker)")
    if len(s.nodes) > 1:
        out(f"Nodes: {describe_nodes(s.nodes)}")
    if len(set(s.nodes)) > 1 and s.bytes_by_link:
        out("Communication per epoch by link, cluster-wide (measured | analytic):")
        for kind, d in s.bytes_by_link.items():
            for link in LINKS:
                m, a = d["measured"][link], d["analytic"][link]
                out(f"  {kind:<7} {link + '-node':<11} {format_bytes(m):>12} | {format_bytes(a):>12}")
    mem = ", ".join(f"rank{r} {format_bytes(b)}" for r, b in enumerate(s.peak_memory_bytes))
    out(f"Peak memory per worker ({world}): {mem}")
    if any(s.memory):
        out("Memory per worker (bytes held by kind; peak growth by phase):")
        for r, d in enumerate(s.memory):
            out(f"  rank{r}: " + ", ".join(f"{k} {format_bytes(v)}" for k, v in d.items()))
    out(f"Highest valid acc {s.best_val_acc:.4f} at epoch {s.best_epoch}; target test acc {s.test_acc:.4f}")


def write_outputs(s: RunSummary, rows: list[dict], metrics_out, run_dir) -> None:
    """The run directory's files first: a metrics path that fails after all cannot lose them."""
    if run_dir is not None:
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps(s.to_json(), indent=2))
        keys = ["epoch", "time", "loss", *BREAKDOWN_KEYS, "train", "val", "test"]
        with open(d / "epochs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    if metrics_out is not None:
        p = Path(metrics_out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(s.to_json(), indent=2))


def check_tensorboard(cfg: ExperimentConfig) -> None:
    """``log.tensorboard: true`` needs tensorboard importable: refuse the run before training if it is not."""
    if not cfg.log.tensorboard:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"{cfg.source}: key 'log.tensorboard' is true but TensorBoard cannot be imported ({e}); "
            f"pip install {TENSORBOARD_PIN}, or set log.tensorboard=false"
        ) from None


class TensorBoardScalars:
    """``log.tensorboard``: per-epoch scalars in ``<run_dir>/tensorboard/`` (step = epoch): ``loss``,
    ``acc/{train,val,test}`` at evaluations, ``time/epoch`` and ``time/<part>`` of the breakdown, and
    ``bytes/{layer,graph,weight}`` (cluster-wide, measured). Collective when on (the bytes are gathered);
    the logging worker writes. A resumed run first drops the events of epochs >= ``start`` (``purge_step``):
    those after the checkpoint were trained again."""

    def __init__(self, cfg: ExperimentConfig, executor: Executor, run_dir, start: int):
        self.on = cfg.log.tensorboard and run_dir is not None
        self.executor, self.writer = executor, None
        if self.on and executor.is_logger:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start or None)

    def epoch(self, epoch: int, s: EpochStats, acc: Accuracies | None) -> None:
        if not self.on:
            return
        nbytes = self.executor.comm_bytes_per_epoch()  # collective
        w = self.writer
        if w is None:
            return
        w.add_scalar("loss", s.loss, epoch)
        w.add_scalar("time/epoch", s.time, epoch)
        for k, v in s.breakdown.items():
            w.add_scalar(f"time/{k}", v, epoch)
        for k, v in nbytes.items():
            w.add_scalar(f"bytes/{k}", v, epoch)
        if acc is not None:
            for k in ("train", "val", "test"):
                w.add_scalar(f"acc/{k}", getattr(acc, k), epoch)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
