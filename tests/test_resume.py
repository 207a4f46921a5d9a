"""Checkpoint and resume (train/resume.py): a resumed run is bit-identical to an uninterrupted one, on one
device and on a 2-stage pipeline of gloo workers; a checkpoint of another config, or an incomplete one, is
never used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gnnpipe.cli import main
from gnnpipe.config import config_from_dict
from gnnpipe.parallel.spawn import run_workers
from gnnpipe.train.checkpoint import CheckpointError, load_checkpoint
from gnnpipe.train.run import make_executor, run_training
from gnnpipe.train.trainer import train

DATA = {
    "dataset": {"name": "sbm", "num_nodes": 200, "avg_degree": 6.0, "num_features": 16, "num_classes": 4},
    "model": {"arch": "gcnii", "layers": 4, "hidden": 16, "dropout": 0.5},
    "train": {"epochs": 4, "eval_every": 1, "dtype": "float64", "checkpoint_every": 2, "warmup_epochs": 0},
    "log": {"progress": False},
}
PIPE = {**DATA, "parallel": {"ways": 1, "stages": 2, "chunks": 4, "history_period": 2, "timeout_s": 60.0}}


def _cfg_dict(base: dict, **train: object) -> dict:
    return {**base, "train": {**base["train"], **train}}


def train_worker(cfg_dict: dict, run_dir: str, resume: bool) -> dict:
    """One run (every worker): its losses, evaluations, test accuracy, final (best-valid) weights, and the epochs
    it actually trained (``ran``: every call of the executor's epoch, so a resume that retrained from epoch 0
    shows)."""
    cfg = config_from_dict(cfg_dict, "test")
    ex = make_executor(cfg)
    ran: list[int] = []
    real = ex.train_epoch

    def counted(epoch: int):
        ran.append(epoch)
        return real(epoch)

    ex.train_epoch = counted
    try:
        s = train(cfg, ex, run_dir=run_dir, print_fn=lambda line: None, resume=resume)
        return {"losses": s.losses, "evals": s.evals, "test_acc": s.test_acc, "weights": ex.snapshot(), "ran": ran}
    finally:
        ex.close()


def _shard(run_dir: Path, epoch: int, rank: int = 0) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / f"epoch{epoch}" / f"rank{rank}.pt")


def _same(a: dict, b: dict) -> None:
    assert a["losses"] == b["losses"]
    assert a["evals"] == b["evals"]
    assert a["test_acc"] == b["test_acc"]
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k


def _interrupted_copy(src: Path, dst: Path) -> None:
    """``dst``: ``src``'s checkpoint of epoch 1, and its epoch 3 without a manifest (a crash while writing)."""
    for e in (1, 3):
        shutil.copytree(src / "checkpoints" / f"epoch{e}", dst / "checkpoints" / f"epoch{e}")
    (dst / "checkpoints" / "epoch3" / "manifest.json").unlink()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))


def test_single_device_resume_is_bit_exact(tmp_path):
    straight = train_worker(_cfg_dict(DATA), str(tmp_path / "a"), False)
    short = train_worker(_cfg_dict(DATA, epochs=2), str(tmp_path / "b"), False)  # then continue to 4 epochs
    assert short["losses"] == straight["losses"][:2]
    assert (straight["ran"], short["ran"]) == ([0, 1, 2, 3], [0, 1])
    resumed = train_worker(_cfg_dict(DATA), str(tmp_path / "b"), True)
    _same(straight, resumed)
    assert resumed["ran"] == [2, 3]  # after the checkpoint of epoch 1, not from 0 again
    _interrupted_copy(tmp_path / "a", tmp_path / "c")
    from_c = train_worker(_cfg_dict(DATA), str(tmp_path / "c"), True)
    _same(straight, from_c)
    assert from_c["ran"] == [2, 3]  # epoch 3's checkpoint is incomplete: from epoch 1's
    for d in ("b", "c"):  # the last checkpoint of the resumed runs equals the uninterrupted run's
        a, b = _shard(tmp_path / "a", 3), _shard(tmp_path / d, 3)
        for k, v in a["executor"]["weights"].items():
            assert torch.equal(v, b["executor"]["weights"][k]), k
        assert a["loop"]["stats"][-1]["loss"] == b["loop"]["stats"][-1]["loss"]


def test_pipeline_resume_is_bit_exact(tmp_path):
    """2 stages, 4 chunks, dropout, a separate history snapshot (period 2): 4 epochs straight vs 2 + 2."""
    straight = run_workers(train_worker, 2, _cfg_dict(PIPE), str(tmp_path / "a"), False, timeout_s=240)
    _interrupted_copy(tmp_path / "a", tmp_path / "b")  # epoch 3 incomplete: resumes from epoch 1
    resumed = run_workers(train_worker, 2, _cfg_dict(PIPE), str(tmp_path / "b"), True, timeout_s=240)
    for rank in range(2):
        _same(straight[rank].value, resumed[rank].value)
        assert len(straight[rank].value["losses"]) == 4
        assert straight[rank].value["ran"] == [0, 1, 2, 3] and resumed[rank].value["ran"] == [2, 3], rank
        a, b = _shard(tmp_path / "a", 3, rank), _shard(tmp_path / "b", 3, rank)
        for z, w in zip(a["executor"]["history_Z"], b["executor"]["history_Z"], strict=True):
            assert torch.equal(z, w)
    manifest = json.loads((tmp_path / "b" / "checkpoints" / "epoch3" / "manifest.json").read_text())
    assert manifest["layout"]["stages"] == 2 and sorted(manifest["shards"]) == ["rank0.pt", "rank1.pt"]


def _epochs_logged(run_dir: Path) -> list[int]:
    """The epochs rank 0 trained in ``run_dir``, in order, over every start (its log is appended to)."""
    lines = (run_dir / "rank0.log").read_text().splitlines()
    return [int(ln.split()[1]) for ln in lines if ln.startswith("Epoch ") and ln.split()[1].isdigit()]


def _checkpointed_run(tmp_path: Path) -> Path:
    cfg = config_from_dict({**_cfg_dict(DATA, epochs=2, checkpoint_every=1), "log": {"dir": str(tmp_path / "runs")}})
    run_training(cfg)
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_checkpoint_of_another_config_is_refused_naming_the_key(tmp_path):
    run_dir = _checkpointed_run(tmp_path)
    base = _cfg_dict(DATA, epochs=2, checkpoint_every=1)
    base["log"] = {"dir": str(tmp_path / "runs")}
    other = {**base, "model": {**base["model"], "dropout": 0.3}}
    with pytest.raises(CheckpointError, match=r"model\.dropout: 0\.5 there, 0\.3 now"):
        run_training(config_from_dict(other), resume=str(run_dir))
    with pytest.raises(CheckpointError, match="train.epochs = 1 is smaller"):
        run_training(config_from_dict(_cfg_dict(base, epochs=1)), resume=str(run_dir))
    s = run_training(config_from_dict(_cfg_dict(base, epochs=3)), resume=str(run_dir))  # larger: goes on
    assert len(s.losses) == 3 and (run_dir / "checkpoints" / "epoch2" / "manifest.json").is_file()
    assert _epochs_logged(run_dir) == [0, 1, 2]  # the refused resumes trained nothing; the last one epoch 2 only


def test_incomplete_or_missing_checkpoint_is_never_used(tmp_path):
    run_dir = _checkpointed_run(tmp_path)
    base = {**_cfg_dict(DATA, epochs=2, checkpoint_every=1), "log": {"dir": str(tmp_path / "runs")}}
    (run_dir / "checkpoints" / "epoch1" / "manifest.json").unlink()  # newest incomplete: epoch 0 is used
    s = run_training(config_from_dict(base), resume=str(run_dir))
    assert len(s.losses) == 2
    assert _epochs_logged(run_dir) == [0, 1, 1]  # epoch 1 again, after the checkpoint of epoch 0
    with open(run_dir / "checkpoints" / "epoch1" / "rank0.pt", "ab") as f:  # a shard that does not match
        f.write(b"x")
    (run_dir / "checkpoints" / "epoch0" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        run_training(config_from_dict(base), resume=str(run_dir))
    with pytest.raises(CheckpointError, match="not a run directory"):
        run_training(config_from_dict(base), resume=str(tmp_path / "nowhere"))


def test_cli_resume_refusal_is_one_line_exit_2(tmp_path, capsys):
    run_dir = _checkpointed_run(tmp_path)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        json.dumps({**_cfg_dict(DATA, epochs=2, checkpoint_every=1), "log": {"dir": str(tmp_path / "runs")}})
    )
    code = main(["train", "--config", str(cfg_file), "--resume", str(run_dir), "train.lr=0.02"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "train.lr: 0.01 there, 0.02 now" in err
