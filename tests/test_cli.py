"""``python -m gnnpipe``: info, world-size, train, config; user errors are one line on stderr and exit code 2."""

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


def test_config_explain_lists_every_key_with_its_default(capsys):
    from gnnpipe.config import config_fields

    assert main(["config", "--explain"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for key, f, _ in config_fields():
        if f.default is None or isinstance(f.default, bool):
            default = {None: "null", True: "true", False: "false"}[f.default]
        else:
            default = str(f.default)
        assert f" {default} " in rows[key], key
        assert rows[key].endswith(f.metadata["help"]), key
    assert "log.tensorboard" in rows and "parallel.recompute" in rows


def test_config_prints_the_resolved_yaml(capsys, monkeypatch, tmp_path):
    from gnnpipe.config import load_config

    monkeypatch.chdir(REPO_ROOT)
    overrides = ["model.layers=4", "parallel.stages=2", "parallel.stage_split=[1, 3]", "parallel.recompute=true"]
    assert main(["config", "--config", CORA_GCN2, *overrides]) == 0
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(capsys.readouterr().out)
    assert load_config(resolved) == load_config(CORA_GCN2, overrides)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["config", "parallel.stage_split=balanced"], "'balanced'; allowed: equal | cost"),
        (["config", "log.tensorbord=false"], "unknown key 'log.tensorbord'"),
        (["config", "--explain", "model.layers=4"], "--explain"),
    ],
)
def test_config_user_errors(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gnnpipe config: error:") and fragment in err and len(err.strip().splitlines()) == 1


def test_schedule_prints_every_workers_actions(capsys):
    """``gnnpipe schedule`` prints, per worker, the actions the engine executes (tests/test_engine.py checks
    the engine runs exactly these)."""
    assert main(["schedule", "--config", "experiments/configs/cora_gcnii32_pipe4.yaml", "--epoch", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("epoch 3: 1 way(s) x 4 stage(s), 16 chunks; order [")
    assert out.count(": 578 actions") == 4  # 16 chunks x (8 layers x 2 + 2) x 2 + reduce_loss + step
    assert "rank 3 (way 0, stage 3, layers 24-31)" in out and "epoch end: reduce_loss step" in out


def test_schedule_of_a_hybrid_has_halo_and_allreduce(capsys):
    argv = ["schedule", "--config", "experiments/configs/default.yaml", "parallel.ways=2", "parallel.recompute=true"]
    assert main([*argv, "--eval"]) == 0
    out = capsys.readouterr().out
    assert "halo0" in out and "halo_b0" in out and "recompute" in out and "allreduce" in out and "eval:" in out
    assert main(["schedule", "--config", "experiments/configs/default.yaml", "--epoch", "999"]) == 2
    assert "--epoch 999" in capsys.readouterr().err


def test_version(capsys):
    import gnnpipe

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"gnnpipe {gnnpipe.__version__}"
