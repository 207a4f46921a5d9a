"""Elastic restarts and graceful stops (issue 13): a 4-worker pipeline (1 way x 4 stages) under ``./launch.sh``.

- ``--max-restarts 1`` with one worker SIGKILLed mid-run: torchrun restarts the group, it goes on in the same
  run directory from the newest complete checkpoint, and the per-epoch losses and final weights are bitwise
  those of an uninterrupted run.
- SIGINT to the launcher with checkpoints on: every process is gone within 5 s, after a final checkpoint of the
  epoch boundary; ``./launch.sh CONFIG --resume RUN_DIR`` then ends bitwise like the uninterrupted run.

The kill moment is chosen by markers, not by sleeping: a ``sitecustomize`` hook (first attempt only) holds every
worker at the start of epoch 3 -- after the checkpoint of epoch 2 -- and writes ``at<rank>`` with its pid; it
lets the worker go on once that worker has received a signal (``stopping.requested()``; it then writes
``sig<rank>``) or the test has written ``go``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gnnpipe.cli import main
from gnnpipe.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
dataset: {name: sbm, num_nodes: 240, avg_degree: 6.0, num_features: 16, num_classes: 4}
model: {arch: gcnii, layers: 4, hidden: 16, dropout: 0.5}
parallel: {ways: 1, stages: 4, chunks: 4, timeout_s: 60}
train: {epochs: 6, eval_every: 2, dtype: float64, checkpoint_every: 3, warmup_epochs: 0}
log: {progress: false}
"""
HOLD_EPOCH = 3
HOOK = """\
import os, time
spec = os.environ.get("GNNPIPE_TEST_HOLD")
if spec and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    epoch, where = spec.split(":", 1)
    from gnnpipe.parallel import engine
    from gnnpipe.train import executor, stopping
    def hold(real):
        def train_epoch(self, e):
            if e == int(epoch):
                path = os.path.join(where, "at" + os.environ.get("RANK", "0"))
                with open(path + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(path + ".tmp", path)  # the marker appears with its content
                while stopping.requested() is None and not os.path.exists(os.path.join(where, "go")):
                    time.sleep(0.02)  # until this worker has a signal (or is killed), or the test says go
                if stopping.requested() is not None:
                    open(os.path.join(where, "sig" + os.environ.get("RANK", "0")), "w").close()
            return real(self, e)
        return train_epoch
    engine.Engine.train_epoch = hold(engine.Engine.train_epoch)
    executor.SingleDeviceExecutor.train_epoch = hold(executor.SingleDeviceExecutor.train_epoch)
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("restart")
    (d / "site").mkdir()
    (d / "site" / "sitecustomize.py").write_text(HOOK)
    (d / "tiny.yaml").write_text(CONFIG)
    return d


def _launch(work: Path, name: str, *args: str, hold: bool = False) -> subprocess.Popen:
    env = {**os.environ, "GNNPIPE_PYTHON": sys.executable, "GNNPIPE_CACHE": str(work / "cache"),
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(work / "site")}  # fmt: skip
    if hold:
        (work / name / "markers").mkdir(parents=True)
        env["GNNPIPE_TEST_HOLD"] = f"{HOLD_EPOCH}:{work / name / 'markers'}"
    (work / name).mkdir(exist_ok=True)
    cmd = ["./launch.sh", str(work / "tiny.yaml"), f"log.dir={work / name / 'runs'}",
           "--metrics-out", str(work / name / "m.json"), *args]  # fmt: skip
    out, err = open(work / name / "out.txt", "w"), open(work / name / "err.txt", "w")  # noqa: SIM115
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)


def _wait_markers(work: Path, name: str, proc: subprocess.Popen, n: int) -> dict[int, int]:
    """Every worker is held at epoch HOLD_EPOCH: {rank: pid}."""
    markers = work / name / "markers"
    deadline = time.monotonic() + 240
    while len([p for p in markers.glob("at*") if p.suffix != ".tmp"]) < n:
        assert proc.poll() is None and time.monotonic() < deadline, (work / name / "err.txt").read_text()[-3000:]
        time.sleep(0.05)
    return {int(p.name[2:]): int(p.read_text()) for p in markers.glob("at*") if p.suffix != ".tmp"}


def _finish(work: Path, name: str, proc: subprocess.Popen, timeout: float = 120) -> dict:
    code = proc.wait(timeout=timeout)
    assert code == 0, (work / name / "err.txt").read_text()[-3000:]
    return json.loads((work / name / "m.json").read_text())


def _run_dir(work: Path, name: str) -> Path:
    (run_dir,) = (work / name / "runs").iterdir()
    return run_dir


def _assert_same_end(work: Path, a: str, b: str) -> None:
    """Losses, evaluations and the last checkpoint (weights, Adam state, history, best-valid weights) equal."""
    ma, mb = json.loads((work / a / "m.json").read_text()), json.loads((work / b / "m.json").read_text())
    assert len(ma["losses"]) == 6 and ma["losses"] == mb["losses"] and ma["evals"] == mb["evals"]
    for name in (a, b):  # every epoch trained exactly once: the restart or resume went on, it did not start over
        assert _epochs_logged(_run_dir(work, name)) == list(range(6)), name
    assert ma["test_acc"] == mb["test_acc"]
    for rank in range(4):
        sa, sb = (load_checkpoint(_run_dir(work, n) / "checkpoints" / "epoch5" / f"rank{rank}.pt") for n in (a, b))
        flat_a, flat_b = _tensors(sa), _tensors(sb)
        assert flat_a.keys() == flat_b.keys() and len(flat_a) > 4
        for k in flat_a:
            assert torch.equal(flat_a[k], flat_b[k]), (rank, k)


def _epochs_logged(run_dir: Path) -> list[int]:
    """The epochs rank 0 trained in ``run_dir``, in order, over every attempt and resume (its log is appended)."""
    lines = (run_dir / "rank0.log").read_text().splitlines()
    return [int(ln.split()[1]) for ln in lines if ln.startswith("Epoch ") and ln.split()[1].isdigit()]


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}/{k}"))
    return out


def _gone(work: Path, name: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"log.dir={work / name}"], capture_output=True).returncode != 0


@pytest.fixture(scope="module")
def baseline(work) -> str:
    _finish(work, "straight", _launch(work, "straight"))
    return "straight"


def test_sigkill_under_max_restarts_resumes_bit_exact(work, baseline):
    proc = _launch(work, "killed", "--max-restarts", "1", hold=True)
    pids = _wait_markers(work, "killed", proc, 4)
    assert (_run_dir(work, "killed") / "checkpoints" / "epoch2" / "manifest.json").is_file()
    os.kill(pids[2], signal.SIGKILL)  # a middle stage, mid-run (held in epoch 3)
    m = _finish(work, "killed", proc)
    err = (work / "killed" / "err.txt").read_text()
    assert "attempt 0 failed and the workers were restarted" in err, err[-3000:]
    assert len(m["losses"]) == 6
    assert len(list((work / "killed" / "runs").iterdir())) == 1  # the restart went on in the same run directory
    _assert_same_end(work, baseline, "killed")


def test_sigint_stops_with_a_final_checkpoint_within_5s_and_resume_is_bit_exact(work, baseline):
    proc = _launch(work, "sigint", hold=True)
    _wait_markers(work, "sigint", proc, 4)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    while not _gone(work, "sigint"):
        assert time.monotonic() - t0 < 5.0, "a worker outlived the launcher by 5 s"
        time.sleep(0.02)
    took = time.monotonic() - t0
    print(f"SIGINT to launch.sh (4 workers, final checkpoint): every process gone after {took:.2f}s")
    assert took < 5.0, f"{took:.1f}s"
    err = [ln for ln in (work / "sigint" / "err.txt").read_text().splitlines() if ln.strip()]
    run_dir = _run_dir(work, "sigint")
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert f"interrupted by SIGINT: stopped after epoch {HOLD_EPOCH} with a final checkpoint" in err[0]
    assert f"--resume {run_dir}" in err[0]
    final = run_dir / "checkpoints" / f"epoch{HOLD_EPOCH}" / "manifest.json"
    assert final.is_file()  # not a periodic one (checkpoint_every 3): written because of the signal
    _finish(work, "sigint", _launch(work, "sigint", "--resume", str(run_dir)))
    _assert_same_end(work, baseline, "sigint")


# ---------------------------------------------------------------------------------------------- without launch.sh
def _start(work: Path, name: str, world: int, *overrides: str) -> list[subprocess.Popen]:
    """``gnnpipe train`` processes of one group with torchrun's variables (one process: none), held at epoch 3."""
    from gnnpipe.parallel.spawn import free_port

    (work / name / "markers").mkdir(parents=True)
    port, procs = str(free_port()), []
    for rank in range(world):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "GNNPIPE_STATUS_DIR")}
        env.update(GNNPIPE_CACHE=str(work / "cache"), PYTHONPATH=str(work / "site"), OMP_NUM_THREADS="1",
                   GNNPIPE_TEST_HOLD=f"{HOLD_EPOCH}:{work / name / 'markers'}")  # fmt: skip
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port)  # fmt: skip
        cmd = [sys.executable, "-m", "gnnpipe", "train", "--config", str(work / "tiny.yaml"),
               f"log.dir={work / name / 'runs'}", *overrides]  # fmt: skip
        err = open(work / name / f"err{rank}.txt", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err))
    return procs


def _wait(cond: Callable[[], bool], procs: list[subprocess.Popen], what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, what
        time.sleep(0.02)


def test_sigterm_to_one_worker_of_two_stops_both_at_the_boundary_with_a_final_checkpoint(work):
    """The signal reaches rank 1 only: rank 0 learns it at the epoch boundary, both write the final checkpoint."""
    procs = _start(work, "one", 2, "parallel.stages=2", "parallel.chunks=2")
    markers = work / "one" / "markers"
    try:
        _wait(lambda: (markers / "at0").is_file() and (markers / "at1").is_file(), procs, "held at epoch 3")
        t0 = time.monotonic()
        procs[1].send_signal(signal.SIGTERM)
        _wait(lambda: (markers / "sig1").is_file(), procs, "rank 1 got the signal")
        (markers / "go").touch()  # rank 0 goes on too
        codes = [p.wait(timeout=30) for p in procs]
        took = time.monotonic() - t0
        print(f"SIGTERM to rank 1 of 2 (final checkpoint): both gone after {took:.2f}s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [143, 143] and took < 5.0, (codes, took)
    assert not (markers / "sig0").exists()  # rank 0 never got a signal itself
    (run_dir,) = (work / "one" / "runs").iterdir()
    assert (run_dir / "checkpoints" / f"epoch{HOLD_EPOCH}" / "manifest.json").is_file()
    for rank in (0, 1):
        err = [ln for ln in (work / "one" / f"err{rank}.txt").read_text().splitlines() if ln.strip()]
        assert len(err) == 1 and f"interrupted by SIGTERM: stopped after epoch {HOLD_EPOCH}" in err[0], err


def test_sigterm_to_one_process_writes_a_final_checkpoint_and_resume_is_bit_exact(work):
    one = ("parallel.stages=1", "parallel.chunks=1")
    procs = _start(work, "single", 1, *one)
    _wait(lambda: (work / "single" / "markers" / "at0").is_file(), procs, "held at epoch 3")
    t0 = time.monotonic()
    procs[0].send_signal(signal.SIGTERM)
    assert procs[0].wait(timeout=30) == 143
    print(f"SIGTERM to one process (final checkpoint): gone after {time.monotonic() - t0:.2f}s")
    assert time.monotonic() - t0 < 5.0
    (run_dir,) = (work / "single" / "runs").iterdir()
    assert (run_dir / "checkpoints" / f"epoch{HOLD_EPOCH}" / "manifest.json").is_file()
    err = (work / "single" / "err0.txt").read_text().strip()
    assert "\n" not in err and f"interrupted by SIGTERM: stopped after epoch {HOLD_EPOCH}" in err, err
    os.environ["GNNPIPE_CACHE"] = str(work / "cache")
    try:
        argv = ["train", "--config", str(work / "tiny.yaml"), *one]
        assert main([*argv, f"log.dir={work / 'single' / 'straight'}", "--metrics-out", str(work / "s1.json")]) == 0
        assert main([*argv, f"log.dir={work / 'single' / 'runs'}", "--resume", str(run_dir),
                     "--metrics-out", str(work / "s2.json")]) == 0  # fmt: skip
    finally:
        del os.environ["GNNPIPE_CACHE"]
    a, b = (json.loads((work / f).read_text()) for f in ("s1.json", "s2.json"))
    assert len(a["losses"]) == 6 and a["losses"] == b["losses"] and a["evals"] == b["evals"]
    assert _epochs_logged(run_dir) == list(range(6))  # 0-3 before the signal, 4-5 resumed


def test_restarts_exhausted_keep_the_last_attempts_exit_code_and_line(work):
    """rank 1 raises at epoch 3 in every attempt: torchrun restarts once (from the checkpoint of epoch 2), then
    the launcher exits with the worker's code and its one line, after one note for the restarted attempt."""
    site = work / "fail-site"
    site.mkdir()
    inject = (Path(__file__).parent / "test_reliability.py").read_text().split('INJECT = """\\\n')[1].split('"""')[0]
    (site / "sitecustomize.py").write_text(inject)
    (work / "fail").mkdir()
    env = {**os.environ, "GNNPIPE_PYTHON": sys.executable, "GNNPIPE_CACHE": str(work / "cache"),
           "PYTHONPATH": str(site), "GNNPIPE_TEST_FAIL": f"1:{HOLD_EPOCH}:{work / 'fail' / 'at'}"}  # fmt: skip
    cmd = ["./launch.sh", str(work / "tiny.yaml"), "parallel.stages=2", "parallel.chunks=2",
           f"log.dir={work / 'fail' / 'runs'}", "--max-restarts", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    root = f"rank 1 (way 0, stage 1, layers 2-3) failed in epoch {HOLD_EPOCH} (train): RuntimeError: injected failure"
    assert lines[0].startswith("launch.sh: attempt 0 failed and the workers were restarted: ") and root in lines[0]
    assert lines[1].startswith("gnnpipe train: error: ") and root in lines[1]
    (run_dir,) = (work / "fail" / "runs").iterdir()  # both attempts in one run directory
    log = (run_dir / "rank0.log").read_text()
    assert log.count("Epoch 00002") == 1 and log.count("Epoch 00001") == 1  # the second attempt resumed at 3
