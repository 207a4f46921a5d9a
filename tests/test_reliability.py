"""Reliability (issue 13): a failing, killed or interrupted worker ends every worker within seconds with one
line naming the rank, the phase and the error; bad inputs and environments are refused before training with
one line and exit code 2; run directories are unique.

Multi-worker cases start real ``gnnpipe train`` processes (2 gloo workers, the environment torchrun gives)
and time how long after the fault the last one is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gnnpipe.cli import main
from gnnpipe.parallel.spawn import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = """\
dataset: {name: sbm, num_nodes: 400, avg_degree: 6.0, num_features: 16, num_classes: 4}
model: {arch: gcnii, layers: 4, hidden: 16, dropout: 0.0}
parallel: {ways: 1, stages: 2, chunks: 4, timeout_s: 120}
train: {epochs: 100000, eval_every: 100000, warmup_epochs: 0}
log: {progress: false}
"""
# a worker that raises on rank <r> at the start of epoch <e>, after writing the time to <marker>
INJECT = """\
import os, sys, time
spec = os.environ.get("GNNPIPE_TEST_FAIL")
if spec and os.environ.get("RANK") == spec.split(":", 2)[0]:
    _, epoch, marker = spec.split(":", 2)
    from gnnpipe.parallel import engine
    real = engine.Engine.train_epoch
    def train_epoch(self, e):
        if e == int(epoch):
            with open(marker, "w") as f:
                f.write(repr(time.time()))
            raise RuntimeError("injected failure")
        return real(self, e)
    engine.Engine.train_epoch = train_epoch
"""


def _config(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "GNNPIPE_STATUS_DIR")}
    env.update(GNNPIPE_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


def _start_workers(tmp_path: Path, *overrides: str, **env_extra: str) -> list[subprocess.Popen]:
    """Two ``gnnpipe train`` workers of one group (the variables torchrun sets), stdout/stderr to files."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = _env(tmp_path, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **env_extra)  # fmt: skip
        cmd = [sys.executable, "-c", INJECT + "from gnnpipe.cli import main\nsys.exit(main(sys.argv[1:]))",
               "train", "--config", str(_config(tmp_path)), f"log.dir={tmp_path / 'runs'}", *overrides]  # fmt: skip
        out, err = open(tmp_path / f"out{rank}.txt", "w"), open(tmp_path / f"err{rank}.txt", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=err))
    return procs


def _wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[float]:
    """Monotonic time at which each process was seen gone; kills stragglers after ``timeout_s``."""
    done: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(procs) and time.monotonic() < deadline:
        for i, p in enumerate(procs):
            if i not in done and p.poll() is not None:
                done[i] = time.monotonic()
        time.sleep(0.02)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert len(done) == len(procs), f"still running after {timeout_s}s"
    return [done[i] for i in range(len(procs))]


def _wait_for_epoch(tmp_path: Path, procs, epoch: int, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while f"Epoch {epoch:05d}" not in (tmp_path / "out0.txt").read_text():
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), _stderr(tmp_path, 0)
        time.sleep(0.05)


def _stderr(tmp_path: Path, rank: int) -> str:
    return (tmp_path / f"err{rank}.txt").read_text()


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text[-3000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------- failures
def test_an_exception_on_one_rank_ends_every_rank_within_10s_with_one_line(tmp_path):
    marker = tmp_path / "failed_at"
    procs = _start_workers(tmp_path, GNNPIPE_TEST_FAIL=f"1:3:{marker}")
    gone = _wait_all(procs, timeout_s=240)
    failed_at = float(marker.read_text()) - time.time() + time.monotonic()  # wall clock -> monotonic
    assert max(gone) - failed_at < 10.0, f"last worker gone {max(gone) - failed_at:.1f}s after the failure"
    assert [p.returncode for p in procs] == [17, 1]  # 17: stopped by another worker's failure
    root = "rank 1 (way 0, stage 1, layers 2-3) failed in epoch 3 (train): RuntimeError: injected failure"
    for rank in (0, 1):
        line = _one_line(_stderr(tmp_path, rank))
        assert line.startswith("gnnpipe train: error: ") and root in line, line
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "Traceback" in (run_dir / "rank1.log").read_text()  # a bug's traceback is kept, in the rank's log
    assert f"traceback in {run_dir / 'rank1.log'}" in _stderr(tmp_path, 1)


@pytest.mark.parametrize(
    "sig, victim", [(signal.SIGINT, 1), (signal.SIGTERM, 0)], ids=["SIGINT-rank1", "SIGTERM-rank0"]
)
def test_a_signal_to_one_worker_ends_every_worker_within_5s(tmp_path, sig, victim):
    procs = _start_workers(tmp_path)
    _wait_for_epoch(tmp_path, procs, 2)
    t0 = time.monotonic()
    procs[victim].send_signal(sig)
    gone = _wait_all(procs, timeout_s=60)
    assert max(gone) - t0 < 5.0, f"last worker gone {max(gone) - t0:.1f}s after {sig.name}"
    assert procs[victim].returncode == 128 + sig and procs[1 - victim].returncode == 17
    for rank in (0, 1):
        line = _one_line(_stderr(tmp_path, rank))
        assert f"rank {victim} (way 0, stage {victim}, layers" in line and f"interrupted by {sig.name}" in line


def test_a_killed_worker_ends_the_other_within_10s_naming_it(tmp_path):
    procs = _start_workers(tmp_path)
    _wait_for_epoch(tmp_path, procs, 2)
    t0 = time.monotonic()
    procs[1].kill()
    gone = _wait_all(procs, timeout_s=60)
    assert gone[0] - t0 < 10.0 and procs[0].returncode == 17
    line = _one_line(_stderr(tmp_path, 0))
    assert "rank 0 (way 0, stage 0, layers 0-1) failed in epoch" in line and "rank 1" in line


@pytest.mark.parametrize("victim", [1, 0], ids=["rank1", "rank0-hosting-the-store"])
def test_a_stopped_worker_is_detected_within_10s(tmp_path, victim):
    """SIGSTOP: the worker is alive but silent (its heartbeat stops); the other names it and exits within 10 s
    (parallel.heartbeat_timeout_s, 6 s). Rank 0 also hosts the store here (no launcher): its silence must not
    block the other's watchdog either. The stopped process is continued and killed: nothing is left."""
    procs = _start_workers(tmp_path)
    other = procs[1 - victim]
    try:
        _wait_for_epoch(tmp_path, procs, 2)
        t0 = time.monotonic()
        procs[victim].send_signal(signal.SIGSTOP)
        while other.poll() is None and time.monotonic() - t0 < 30:
            time.sleep(0.02)
        took = time.monotonic() - t0
        print(f"SIGSTOP rank {victim}: rank {1 - victim} gone {took:.1f}s later")
        assert other.returncode == 17, _stderr(tmp_path, 1 - victim)
        assert took < 10.0, f"the stopped rank {victim} was noticed after {took:.1f}s"
        line = _one_line(_stderr(tmp_path, 1 - victim))
        assert f"rank {1 - victim} (way 0, stage {1 - victim}" in line and "hung" in line, line
    finally:
        procs[victim].send_signal(signal.SIGCONT)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def test_a_bad_dataset_fails_in_setup_on_every_worker_at_once(tmp_path):
    """Rank 0 prepares the dataset and refuses it; rank 1 waits at the barrier: it must not wait timeout_s."""
    t0 = time.monotonic()
    procs = _start_workers(
        tmp_path, "dataset.num_nodes=3", "dataset.avg_degree=1", "dataset.num_classes=2", "parallel.chunks=4"
    )
    _wait_all(procs, timeout_s=120)
    assert time.monotonic() - t0 < 60 and [p.returncode for p in procs] == [2, 17]
    for rank in (0, 1):
        line = _one_line(_stderr(tmp_path, rank))
        assert "rank 0 (way 0, stage 0, layers 0-1) failed in setup" in line
        assert "parallel.chunks = 4 but the graph has 3 vertices" in line


def test_sigint_in_one_process_is_one_line_and_exit_130(tmp_path):
    cfg = _config(tmp_path, TINY.replace("stages: 2, chunks: 4", "stages: 1, chunks: 1"))
    out = open(tmp_path / "out0.txt", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "gnnpipe", "train", "--config", str(cfg),
                             f"log.dir={tmp_path / 'runs'}"], cwd=REPO_ROOT, env=_env(tmp_path), stdout=out,
                            stderr=open(tmp_path / "err0.txt", "w"))  # fmt: skip  # noqa: SIM115
    _wait_for_epoch(tmp_path, [proc], 2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    (gone,) = _wait_all([proc], timeout_s=30)
    assert gone - t0 < 5.0 and proc.returncode == 130
    assert _one_line(_stderr(tmp_path, 0)) == "gnnpipe train: error: interrupted (SIGINT)"


# ---------------------------------------------------------------------------------------------- validation
def _binary_dataset(tmp_path: Path, edit) -> str:
    from gnnpipe.config import config_from_dict
    from gnnpipe.data import load_graph, write_binary

    g = load_graph(config_from_dict({"dataset": {"name": "sbm", "num_nodes": 60, "num_classes": 3}}).dataset)
    edit(g)
    return str(write_binary(g, tmp_path / "ds"))


def _unlabel(g) -> None:
    g.y[g.train_mask.nonzero()[2]] = -1


def _no_train(g) -> None:
    g.train_mask[:] = False


BAD_INPUTS = {  # (yaml text or None, overrides, files to make, extra argv, fragment of the one line)
    "cuda without a GPU": (None, ["train.device=cuda"], {}, [], "key 'train.device' has value 'cuda'"),
    "log.dir is a file": (None, ["log.dir={tmp}/f"], {"f": ""}, [], "key 'log.dir' = '{tmp}/f' is a file"),
    "log.dir under a file": (None, ["log.dir={tmp}/f/runs"], {"f": ""}, [], "cannot create or write it"),
    "metrics-out a directory": (None, [], {}, ["--metrics-out", "{tmp}"], "--metrics-out '{tmp}' is a directory"),
    "more chunks than vertices": (
        None,
        ["dataset.num_nodes=5", "dataset.avg_degree=2", "parallel.chunks=6"],
        {},
        [],
        "at most 5",
    ),
    "unlabelled training vertex": ("binary", [_unlabel], {}, [], "1 of the 36 training vertices have no label"),
    "no training vertices": ("binary", [_no_train], {}, [], "no training vertices"),
    "duplicate key": ("model: {layers: 2}\nmodel: {layers: 3}\n", [], {}, [], "duplicate key 'model'"),
    "config not UTF-8": (b"model: {arch: gcn}  # \xe9\n", [], {}, [], "not UTF-8 text (byte 0xe9"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2_before_training(case, tmp_path, monkeypatch, capsys):
    import torch

    text, overrides, files, extra, fragment = BAD_INPUTS[case]
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    sub = {"tmp": str(tmp_path)}
    argv = ["train", "--config", str(_config(tmp_path, TINY.replace("stages: 2, chunks: 4", "stages: 1, chunks: 1")))]
    if text == "binary":
        argv += ["dataset.name=binary", f"dataset.path={_binary_dataset(tmp_path, overrides[0])}"]
        overrides = []
    elif isinstance(text, bytes):
        (tmp_path / "tiny.yaml").write_bytes(text)
    elif text is not None:
        (tmp_path / "tiny.yaml").write_text(text)
    argv += [o.format(**sub) for o in overrides] + [e.format(**sub) for e in extra]
    if not any(a.startswith("log.dir=") for a in argv):
        argv.append(f"log.dir={tmp_path / 'runs'}")
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = _one_line(err)
    assert line.startswith("gnnpipe train: error: ") and fragment.format(**sub) in line, line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing trained


def test_gnnpipe_cache_naming_a_file_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--config", str(_config(tmp_path)), f"log.dir={tmp_path / 'runs'}"]) == 2
    assert "environment variable GNNPIPE_CACHE = " in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [["--workers", "0"], ["--measure", "-1"], ["--workers", "two"]])
def test_profile_arguments_are_validated(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["profile", "--dataset", "cora", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and ("allowed: an integer >=" in err or "is not an integer" in err), err


# ---------------------------------------------------------------------------------------------- run directories
def test_runs_started_in_the_same_second_get_their_own_directory(tmp_path, monkeypatch):
    from gnnpipe.train import run

    monkeypatch.setattr(run, "timestamp", lambda: "20260101-000000")
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    cfg = _config(tmp_path, TINY.replace("stages: 2, chunks: 4", "stages: 1, chunks: 1").replace("100000", "1"))
    for _ in range(3):
        assert main(["train", "--config", str(cfg), f"log.dir={tmp_path / 'runs'}"]) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    stem = "tiny-w1s1c1-20260101-000000"
    assert names == [stem, f"{stem}-2", f"{stem}-3"]
    assert all((tmp_path / "runs" / n / "summary.json").is_file() for n in names)


def test_make_run_dir_is_unique_across_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from gnnpipe.train.run import make_run_dir

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: make_run_dir(tmp_path, "same"), range(16)))
    assert len({d.name for d in dirs}) == 16


def test_more_cuda_workers_on_a_host_than_gpus_is_refused(tmp_path, monkeypatch):
    import torch

    from gnnpipe.config import ConfigError, load_config
    from gnnpipe.train.run import check_environment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cfg = load_config(_config(tmp_path), ["train.device=cuda", f"log.dir={tmp_path / 'runs'}"])
    with pytest.raises(ConfigError, match=r"'cuda' with 2 workers on this host but 1 GPU\(s\): NCCL needs one GPU"):
        check_environment(cfg)
