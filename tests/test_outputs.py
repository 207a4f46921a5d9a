"""Run outputs (train/outputs.py): ``log.tensorboard`` writes the per-epoch scalars as TensorBoard event files in
the run directory, read back here with TensorBoard's own EventAccumulator; without tensorboard the run is
refused before training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gnnpipe.cli import main
from gnnpipe.config import config_from_dict
from gnnpipe.parallel.spawn import run_workers
from gnnpipe.train.executor import BREAKDOWN_KEYS
from gnnpipe.train.run import run_training

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

CFG = {
    "dataset": {"name": "sbm", "num_nodes": 200, "avg_degree": 6.0, "num_features": 16, "num_classes": 4},
    "model": {"arch": "gcnii", "layers": 4, "hidden": 16, "dropout": 0.5},
    "train": {"epochs": 4, "eval_every": 2, "warmup_epochs": 0},
    "log": {"progress": False, "tensorboard": True},
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, f"no event file in {run_dir / 'tensorboard'}"
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_of_every_epoch_single_device(tmp_path):
    cfg = config_from_dict({**CFG, "log": {**CFG["log"], "dir": str(tmp_path / "runs")}})
    summary = run_training(cfg)
    (run_dir,) = (tmp_path / "runs").iterdir()
    sc = _scalars(run_dir)
    expected = {"loss", "time/epoch", *(f"time/{k}" for k in BREAKDOWN_KEYS), "acc/train", "acc/val", "acc/test"}
    expected |= {"bytes/layer", "bytes/graph", "bytes/weight"}
    assert expected <= set(sc), sorted(sc)
    assert [s for s, _ in sc["loss"]] == [0, 1, 2, 3]
    assert [v for _, v in sc["loss"]] == pytest.approx(summary.losses, rel=1e-6)
    assert [s for s, _ in sc["acc/val"]] == [e["epoch"] for e in summary.evals] == [1, 3]
    assert [v for _, v in sc["acc/test"]] == pytest.approx([e["test"] for e in summary.evals], rel=1e-6)
    assert all(v > 0 for _, v in sc["time/epoch"])


def tb_worker(cfg_dict: dict) -> list[str]:
    cfg = config_from_dict(cfg_dict, "test")
    run_training(cfg)
    return []


def test_tensorboard_on_a_pipeline_counts_bytes_and_only_rank0_writes(tmp_path):
    d = {**CFG, "parallel": {"ways": 1, "stages": 2, "chunks": 4, "timeout_s": 60.0}}
    d["log"] = {**CFG["log"], "dir": str(tmp_path / "runs")}
    d["train"] = {**CFG["train"], "epochs": 2}
    run_workers(tb_worker, 2, d, timeout_s=240)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert len(list((run_dir / "tensorboard").iterdir())) == 1  # one writer
    sc = _scalars(run_dir)
    assert [s for s, _ in sc["bytes/layer"]] == [0, 1] and all(v > 0 for _, v in sc["bytes/layer"])
    assert all(v == 0 for _, v in sc["bytes/graph"])  # one way: no halo


def test_tensorboard_missing_is_one_line_exit_2_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    cfg = tmp_path / "c.yaml"
    cfg.write_text("log: {tensorboard: true, progress: false}\ndataset: {name: sbm, num_nodes: 100}\n")
    assert main(["train", "--config", str(cfg), f"log.dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "key 'log.tensorboard' is true but TensorBoard cannot be imported" in err and "tensorboard==" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
