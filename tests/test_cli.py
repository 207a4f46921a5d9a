"""``python -m gnnpipe``: info, world-size, train; user errors are one line on stderr and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gnnpipe.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
CORA_GCN2 = "experiments/configs/cora_gcn2.yaml"


def _gnnpipe(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["GNNPIPE_CACHE"] = str(tmp_path / "cache")
    return subprocess.run(
        [sys.executable, "-m", "gnnpipe", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_info(tmp_path):
    r = _gnnpipe("info", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout and "gloo" in r.stdout


def test_world_size(tmp_path):
    r = _gnnpipe("world-size", "--config", CORA_GCN2, "parallel.ways=2", "parallel.chunks=2", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"


def test_train_bad_config_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: gcn, layers: lots}\n")
    r = _gnnpipe("train", "--config", str(bad), tmp_path=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "model.layers" in lines[0] and str(bad) in lines[0] and "'lots'" in lines[0]
    assert lines[0].startswith("gnnpipe train: error:")


def test_train_runs_and_writes_metrics(tmp_path):
    metrics = tmp_path / "m.json"
    r = _gnnpipe(
        "train",
        "--config",
        CORA_GCN2,
        "train.epochs=2",
        "train.eval_every=1",
        f"log.dir={tmp_path / 'runs'}",
        "--metrics-out",
        str(metrics),
        tmp_path=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(metrics.read_text())
    assert 0.0 <= m["test_acc"] <= 1.0
    assert m["config"]["train"]["epochs"] == 2 and m["config"]["model"]["arch"] == "gcn"
    assert "Highest valid acc" in r.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("cora_gcn2-w1s1c1-")
    assert {"epochs.csv", "summary.json", "rank0.log"} <= {p.name for p in run_dir.iterdir()}


# in-process: the same error path, without paying for a fresh interpreter per case
@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--config", "does/not/exist.yaml"], "config file not found"),
        (["train", "--config", CORA_GCN2, "model.arch=gat"], "model.arch"),
        (["train", "--config", CORA_GCN2, "parallel.ways=2", "parallel.chunks=3"], "parallel.chunks"),
        (["train", "--config", CORA_GCN2, "model.layers"], "section.key=value"),
        (["world-size", "--config", CORA_GCN2, "parallel.stages=3"], "parallel.stages"),
    ],
)
def test_user_errors_in_process(argv, fragment, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
