"""The epoch loop: train, exact evaluation every ``eval_every`` epochs, best-valid weights, logs and metrics.

Runs unchanged on any executor (single device or a distributed engine). Only the logging worker prints and
writes the run summary; every worker keeps its own best-valid weights. Output paths are checked before the
first epoch. A non-finite loss or gradient stops the run naming the epoch and layer (``train.on_nonfinite:
stop``), or drops that epoch's update (``skip``). ``on_phase`` tells the caller what is running, so that an
error can say where it happened.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gnnpipe.config import ConfigError, ExperimentConfig, config_to_dict
from gnnpipe.train.executor import BREAKDOWN_KEYS, EpochStats, Executor
from gnnpipe.train.metrics import Accuracies
from gnnpipe.train.outputs import RunSummary, TensorBoardScalars, print_summary, write_outputs
from gnnpipe.train.resume import LoopState, load_run_checkpoint, save_run_checkpoint
from gnnpipe.train.stopping import GracefulStop, StopRequested
from gnnpipe.units import format_bytes

__all__ = ["NonFiniteError", "RunSummary", "check_output_file", "train", "git_rev", "format_bytes"]

MAX_SKIPPED_IN_A_ROW = 10  # train.on_nonfinite=skip: this many non-finite epochs in a row stop the run anyway


class NonFiniteError(ValueError):
    """The loss or a gradient became NaN or infinite; the message names the epoch and the layer."""


def check_output_file(path: str | Path | None, what: str) -> None:
    """Refuse, before training, an output file that cannot be written: a directory, or under a file."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"{what} {str(path)!r} is a directory; give a file path, e.g. {str(p / 'metrics.json')!r}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {str(path)!r}: {str(parent)!r} is a file, so no file can be created under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(path)!r}: directory {str(parent)!r} is not writable")


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _epoch_line(epoch: int, s: EpochStats, acc: Accuracies | None) -> str:
    b = s.breakdown
    line = (
        f"Epoch {epoch:05d} | Time {s.time:.4f}s | Compute {b['compute']:.4f}s | Comm-layer {b['comm_layer']:.4f}s"
        f" | Comm-graph {b['comm_graph']:.4f}s | Bubble {b['bubble']:.4f}s | Loss {s.loss:.4f}"
    )
    if acc is not None:
        line += f" | Train {acc.train:.4f} | Val {acc.val:.4f} | Test {acc.test:.4f}"
    return line


class _Progress:
    """A one-line progress bar, only when stdout is a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled and sys.stdout.isatty()

    def update(self, epoch: int, loss: float) -> None:
        if self.enabled:
            done = int(30 * (epoch + 1) / self.total)
            sys.stdout.write(f"\r[{'#' * done}{'.' * (30 - done)}] {epoch + 1}/{self.total} loss {loss:.4f}")
            sys.stdout.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stdout.write("\r" + " " * 70 + "\r")
            sys.stdout.flush()


def _layer_of(name: str) -> str:
    """``layers.3.lin.weight`` -> ``layer 3 (layers.3.lin.weight)``; encoder/head likewise."""
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) > 1:
        return f"layer {parts[1]} ({name})"
    return {"encoder": "the input encoder", "head": "the output head"}.get(parts[0], name) + f" ({name})"


class _NonFiniteGuard:
    """Looks at this worker's gradients just before each optimizer step (a step pre-hook, so the weights are
    still the epoch's): records the first non-finite one, and with ``skip`` drops the whole update (gradients
    set to None: Adam leaves those weights and its state unchanged)."""

    def __init__(self, executor: Executor, skip: bool):
        named = getattr(executor, "named_stage_parameters", None)  # the engine: this stage's, by model name
        model = getattr(executor, "model", None)
        self.params = named() if named is not None else dict(model.named_parameters()) if model is not None else {}
        self.skip = skip
        self.bad: str | None = None
        opt = getattr(executor, "optimizer", None)
        self.handle = opt.register_step_pre_hook(self._before_step) if opt is not None and self.params else None

    def _before_step(self, optimizer, args, kwargs) -> None:
        grads = [(n, q.grad) for n, q in self.params.items() if q.grad is not None]
        finite = torch.stack([torch.isfinite(g).all() for _, g in grads]).tolist() if grads else []
        bad = [n for (n, _), ok in zip(grads, finite, strict=True) if not ok]
        self.bad = f"{len(bad)} of {len(grads)} tensors, first in {_layer_of(bad[0])}" if bad else None
        if self.bad is not None and self.skip:
            for q in self.params.values():
                q.grad = None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def train(
    cfg: ExperimentConfig,
    executor: Executor,
    *,
    metrics_out: str | Path | None = None,
    run_dir: str | Path | None = None,
    print_fn: Callable[[str], None] = print,
    log_file: str | Path | None = None,
    on_phase: Callable[[str], None] | None = None,
    resume: bool = False,
) -> RunSummary:
    """Train for ``cfg.train.epochs`` epochs; return (and on the logger, write) the run summary.

    The logging worker prints; every worker appends the same lines to its own ``log_file``. ``on_phase`` is
    called with ``epoch 3 (train)``, ``epoch 3 (evaluate)``, ``summary``, ``writing outputs``. ``resume``:
    go on from the newest complete checkpoint in ``run_dir`` (``train/resume.py``).
    """
    log = executor.is_logger
    if log:
        check_output_file(metrics_out, "--metrics-out")  # before the first epoch, not after the last
    fh = None
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_file, "a")  # noqa: SIM115 - closed in the finally below

    def out(line: str, *, screen: bool = True) -> None:
        if log and screen:
            print_fn(line)
        if fh is not None:
            fh.write(line + "\n")
            fh.flush()

    guard = _NonFiniteGuard(executor, skip=cfg.train.on_nonfinite == "skip")
    try:
        on_phase = on_phase or (lambda phase: None)
        if resume:
            on_phase("loading the checkpoint")
        st = load_run_checkpoint(cfg, executor, run_dir) if resume else LoopState()
        return _train(cfg, executor, metrics_out, run_dir, out, guard, on_phase, st)
    finally:
        guard.close()
        if fh is not None:
            fh.close()


def _check_finite(cfg: ExperimentConfig, epoch: int, loss: float, guard: _NonFiniteGuard, skipped: int) -> str | None:
    """None if the epoch was finite; else (``skip``) what was not, or NonFiniteError if the run must stop."""
    if math.isfinite(loss) and guard.bad is None:
        return None
    what = f"epoch {epoch}: " + (f"non-finite loss {loss!r}" if not math.isfinite(loss) else "finite loss")
    if guard.bad is not None:
        what += f", non-finite gradient in {guard.bad}"
    if cfg.train.on_nonfinite == "skip" and skipped + 1 < MAX_SKIPPED_IN_A_ROW:
        return what
    if cfg.train.on_nonfinite == "skip":
        raise NonFiniteError(f"{what}; {MAX_SKIPPED_IN_A_ROW} epochs in a row non-finite (train.on_nonfinite=skip)")
    raise NonFiniteError(
        f"{what}; the run stops (train.on_nonfinite=stop): lower train.lr, check the features, "
        "or set train.on_nonfinite=skip to drop such updates"
    )


def _train(
    cfg: ExperimentConfig,
    executor: Executor,
    metrics_out,
    run_dir,
    out: Callable[..., None],
    guard: _NonFiniteGuard,
    on_phase: Callable[[str], None],
    st: LoopState,
) -> RunSummary:
    t = cfg.train
    log = executor.is_logger
    progress = _Progress(t.epochs, cfg.log.progress and log)
    stats, evals, rows = st.stats, st.evals, st.rows
    board = TensorBoardScalars(cfg, executor, run_dir, st.start)
    stop = GracefulStop(executor, enabled=bool(t.checkpoint_every) and run_dir is not None)
    try:
        with stop:
            for epoch in range(st.start, t.epochs):
                _epoch(cfg, executor, epoch, st, out, guard, on_phase, progress, board, run_dir)
                sig = stop.agreed()  # SIGINT/SIGTERM: every worker stops here, after a final checkpoint
                if sig is not None:
                    if (epoch + 1) % t.checkpoint_every:
                        on_phase(f"epoch {epoch} (final checkpoint)")
                        save_run_checkpoint(cfg, executor, run_dir, epoch, st)
                    raise StopRequested(sig, epoch, run_dir)
    finally:
        board.close()
    if st.best_state is not None:
        executor.restore(st.best_state)  # leave the executor holding the best-valid weights

    on_phase("summary")
    timed = stats[t.warmup_epochs :] if len(stats) > t.warmup_epochs else stats
    epoch_time = sum(s.time for s in timed) / len(timed)
    breakdown = {k: sum(s.breakdown[k] for s in timed) / len(timed) for k in BREAKDOWN_KEYS}
    per_worker = executor.gather({**breakdown, "epoch": epoch_time})
    memory = executor.gather(executor.memory_report())
    comm = executor.comm_bytes_per_epoch()
    by_link = executor.comm_bytes_by_link()
    summary = RunSummary(
        test_acc=st.best_test,
        best_val_acc=st.best_val,
        best_epoch=st.best_epoch,
        epoch_time_s=epoch_time,
        comm_bytes_per_epoch=comm,
        comm_bytes_per_epoch_analytic=dict(executor.analytic_bytes),
        peak_memory_bytes=executor.peak_memory(),
        losses=[s.loss for s in stats],
        breakdown_s=breakdown,
        breakdown_per_worker_s=per_worker,
        config=config_to_dict(cfg),
        git_rev=git_rev(),
        evals=evals,
        memory=memory,
        nodes=executor.node_of_rank(),
        bytes_by_link={
            k: {"measured": by_link[k], "analytic": (executor.analytic_by_link or {}).get(k, dict.fromkeys(v, 0))}
            for k, v in by_link.items()
        },
    )
    if log:
        print_summary(summary, executor.world_size, out)
        on_phase("writing outputs")
        write_outputs(summary, rows, metrics_out, run_dir)
    return summary


def _epoch(cfg, executor, epoch: int, st: LoopState, out, guard, on_phase, progress, board, run_dir) -> None:
    """One epoch of the loop: train, check it is finite, evaluate when due, log, TensorBoard, checkpoint."""
    t = cfg.train
    stats, evals, rows = st.stats, st.evals, st.rows
    on_phase(f"epoch {epoch} (train)")
    guard.bad = None
    s = executor.train_epoch(epoch)
    stats.append(s)
    bad = _check_finite(cfg, epoch, s.loss, guard, st.skipped)
    st.skipped = st.skipped + 1 if bad else 0
    if bad:
        kept = "update dropped" if guard.bad else "gradients finite, update kept"
        out(f"Epoch {epoch:05d} | {bad}: {kept} (train.on_nonfinite=skip)")
    acc = None
    if (epoch + 1) % t.eval_every == 0 or epoch == t.epochs - 1:
        on_phase(f"epoch {epoch} (evaluate)")
        acc = executor.evaluate()
        evals.append({"epoch": epoch, "train": acc.train, "val": acc.val, "test": acc.test})
        if acc.val > st.best_val:
            st.best_val, st.best_epoch, st.best_test = acc.val, epoch, acc.test
            st.best_state = executor.snapshot()
    rows.append(
        {
            "epoch": epoch,
            "time": s.time,
            "loss": s.loss,
            **s.breakdown,
            **({"train": acc.train, "val": acc.val, "test": acc.test} if acc else {}),
        }
    )
    if progress.enabled and acc is None:  # the bar replaces the line on screen, never in the log file
        progress.update(epoch, s.loss)
        out(_epoch_line(epoch, s, acc), screen=False)
    else:
        progress.clear()
        out(_epoch_line(epoch, s, acc))
    board.epoch(epoch, s, acc)
    if t.checkpoint_every and (epoch + 1) % t.checkpoint_every == 0 and run_dir is not None:
        on_phase(f"epoch {epoch} (checkpoint)")
        save_run_checkpoint(cfg, executor, run_dir, epoch, st)


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
