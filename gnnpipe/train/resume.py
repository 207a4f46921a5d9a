"""Checkpoint and resume of a run: ``train.checkpoint_every`` and ``gnnpipe train --resume RUN_DIR``.

A checkpoint of epoch ``E`` is the directory ``<run_dir>/checkpoints/epoch<E>/``: one shard per worker
(``rank<k>.pt``: its executor's weights, optimizer and history, the epoch loop's state -- losses, evaluations,
best-valid weights and accuracies -- and the epoch), written atomically, then rank 0's ``manifest.json``,
written last and atomically. A directory without a manifest, or whose shards do not match the manifest's
sha256, is incomplete and never used. Nothing random is saved: chunk order and dropout masks are keyed by
(seed, epoch), so the next epoch draws the same as in an uninterrupted run.

A checkpoint is used only for the same run: the resolved config (except a larger ``train.epochs``), the
degrees and layer split, and the chunk plan must be the ones it was written with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gnnpipe.config import ExperimentConfig, config_to_dict
from gnnpipe.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gnnpipe.train.executor import EpochStats, Executor

__all__ = [
    "LoopState",
    "check_config",
    "find_checkpoint",
    "load_run_checkpoint",
    "record_run_dir",
    "restarted_run_dir",
    "save_run_checkpoint",
]

MANIFEST = "manifest.json"
RUN_RECORD = "run_dir"  # in launch.sh's $GNNPIPE_STATUS_DIR: this launch's run directory, for elastic restarts
FORMAT = 1


@dataclass
class LoopState:
    """What the epoch loop carries from one epoch to the next, besides the executor's own state."""

    start: int = 0  # the next epoch to train
    stats: list[EpochStats] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # epochs.csv
    best_val: float = -math.inf
    best_epoch: int = -1
    best_test: float = float("nan")
    best_state: dict[str, torch.Tensor] | None = None  # this worker's weights at best_epoch
    skipped: int = 0  # non-finite epochs in a row (train.on_nonfinite=skip)


def _flat_config(cfg: ExperimentConfig) -> dict[str, object]:
    """``section.key -> value`` of the resolved config, without ``train.epochs`` (a larger one may continue)."""
    flat = {f"{sec}.{k}": v for sec, d in config_to_dict(cfg).items() for k, v in d.items()}
    flat.pop("train.epochs")
    return json.loads(json.dumps(flat))  # as the manifest reads back (tuples as lists)


def _config_hash(flat: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()


def _layout(executor: Executor, cfg: ExperimentConfig) -> dict:
    """The degrees, layer split and plan digest of this executor (single device: one of each, no plan)."""
    dims = getattr(executor, "dims", None)
    if dims is None:
        return {"ways": 1, "stages": 1, "chunks": 1, "layer_counts": [cfg.model.layers], "plan": "single-device"}
    d = dataclasses.asdict(dims)
    d["layer_counts"] = list(d["layer_counts"])
    d["plan"] = "/".join(str(v) for v in executor.plan_digest)
    return d


def _rank(executor: Executor) -> int:
    comm = getattr(executor, "comm", None)
    return 0 if comm is None else comm.rank


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_run_checkpoint(cfg: ExperimentConfig, executor: Executor, run_dir: Path, epoch: int, st: LoopState) -> None:
    """Collective: every worker writes its shard of ``epoch``; then rank 0 writes the manifest."""
    d = Path(run_dir) / "checkpoints" / f"epoch{epoch}"
    name = f"rank{_rank(executor)}.pt"
    loop = {
        "stats": [dataclasses.asdict(s) for s in st.stats],
        "evals": st.evals,
        "rows": st.rows,
        "best_val": st.best_val,
        "best_epoch": st.best_epoch,
        "best_test": st.best_test,
        "skipped": st.skipped,
    }
    state = {"epoch": epoch, "executor": executor.checkpoint_state(), "loop": loop, "best_state": st.best_state}
    save_checkpoint(d / name, state)
    shards = dict(executor.gather((name, _sha256(d / name))))  # also: every shard is on disk
    if _rank(executor) != 0:
        return
    flat = _flat_config(cfg)
    manifest = {
        "format": FORMAT,
        "epoch": epoch,
        "epochs": cfg.train.epochs,
        "config_hash": _config_hash(flat),
        "config": flat,
        "layout": _layout(executor, cfg),
        "shards": shards,
    }
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{MANIFEST}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _complete(d: Path) -> dict | None:
    """The manifest of checkpoint directory ``d`` if it is complete (every shard present, hashes match)."""
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        shards = manifest["shards"]
        if manifest.get("format") != FORMAT or not shards:
            return None
        if all((d / n).is_file() and _sha256(d / n) == h for n, h in shards.items()):
            return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def find_checkpoint(run_dir: str | Path) -> tuple[Path, dict]:
    """The newest complete checkpoint of ``run_dir`` and its manifest; CheckpointError if there is none."""
    root = Path(run_dir) / "checkpoints"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"--resume {str(run_dir)!r}: not a run directory")
    found = []
    for d in root.glob("epoch*") if root.is_dir() else ():
        if d.is_dir() and d.name[5:].isdigit():
            found.append((int(d.name[5:]), d))
    for _, d in sorted(found, reverse=True):
        manifest = _complete(d)
        if manifest is not None:
            return d, manifest
    raise CheckpointError(
        f"--resume {str(run_dir)!r}: no complete checkpoint in {str(root)!r} ({len(found)} incomplete); "
        "set train.checkpoint_every to write them"
    )


def record_run_dir(run_dir: str | Path) -> None:
    """Under launch.sh (rank 0): remember this launch's run directory, so that a group torchrun restarts
    (``--max-restarts``) goes on in it. The launcher's directory outlives the restarts of its workers."""
    status_dir = os.environ.get("GNNPIPE_STATUS_DIR")
    if not status_dir or not Path(status_dir).is_dir():
        return
    tmp = Path(status_dir) / f".{RUN_RECORD}.tmp"
    tmp.write_text(str(Path(run_dir).resolve()))
    os.replace(tmp, Path(status_dir) / RUN_RECORD)


def restarted_run_dir() -> tuple[str, bool] | None:
    """After an elastic restart (``TORCHELASTIC_RESTART_COUNT > 0``, rank 0): the run directory the earlier
    attempt recorded and whether it has a complete checkpoint to go on from (else it starts again, in it)."""
    status_dir = os.environ.get("GNNPIPE_STATUS_DIR")
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) == 0 or not status_dir:
        return None
    try:
        run_dir = (Path(status_dir) / RUN_RECORD).read_text()
    except OSError:
        return None  # the earlier attempt failed before it had a run directory
    try:
        find_checkpoint(run_dir)
        return run_dir, True
    except CheckpointError:
        return run_dir, False


def check_config(cfg: ExperimentConfig, manifest: dict, where: Path) -> None:
    """Refuse a checkpoint written with another config, naming the first differing key."""
    flat, saved = _flat_config(cfg), manifest["config"]
    if _config_hash(flat) != manifest["config_hash"] or flat != saved:
        diff = sorted(k for k in flat.keys() | saved.keys() if flat.get(k, "<absent>") != saved.get(k, "<absent>"))
        what = "; ".join(f"{k}: {saved.get(k, '<absent>')!r} there, {flat.get(k, '<absent>')!r} now" for k in diff[:4])
        raise CheckpointError(
            f"checkpoint {str(where)!r} was written with another config ({what or 'config hash differs'}"
            + (f"; and {len(diff) - 4} more keys" if len(diff) > 4 else "")
            + "); only a larger train.epochs may differ"
        )
    if cfg.train.epochs < manifest["epochs"]:
        raise CheckpointError(
            f"checkpoint {str(where)!r}: train.epochs = {cfg.train.epochs} is smaller than the run's "
            f"{manifest['epochs']}; allowed: >= {manifest['epochs']}"
        )


def load_run_checkpoint(cfg: ExperimentConfig, executor: Executor, run_dir: str | Path) -> LoopState:
    """Restore this worker from the newest complete checkpoint of ``run_dir``; the loop state to go on with."""
    d, manifest = find_checkpoint(run_dir)
    check_config(cfg, manifest, d)
    mine, saved = _layout(executor, cfg), manifest["layout"]
    if mine != saved:
        raise CheckpointError(
            f"checkpoint {str(d)!r} was written for another layout or plan: {saved} there, {mine} now"
        )
    state = load_checkpoint(d / f"rank{_rank(executor)}.pt")
    if state["epoch"] != manifest["epoch"]:
        raise CheckpointError(f"checkpoint {str(d)!r}: shard of epoch {state['epoch']}, manifest {manifest['epoch']}")
    executor.load_checkpoint_state(state["executor"])
    loop = state["loop"]
    return LoopState(
        start=state["epoch"] + 1,
        stats=[EpochStats(**s) for s in loop["stats"]],
        evals=loop["evals"],
        rows=loop["rows"],
        best_val=loop["best_val"],
        best_epoch=loop["best_epoch"],
        best_test=loop["best_test"],
        best_state=state["best_state"],
        skipped=loop["skipped"],
    )
