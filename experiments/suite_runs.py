"""One run of a suite experiment: its ``./launch.sh`` command, its execution, and its stored results.

Every run is one subprocess through the user path::

    OMP_NUM_THREADS=1 ./launch.sh CONFIG overrides... train.seed=K [train.epochs=N] log.progress=false \\
        log.dir=experiments/results/tmp/accuracy/runs --metrics-out OUT/runs/<experiment>-s<seed>[-e<N>].json

(``launch.sh`` starts torchrun on ways*stages workers for multi-worker configs; every process gets one intra-op
thread, see :func:`run_env`). The metrics JSON is a ``gnnpipe.train.trainer.RunSummary`` (read back typed by
:func:`read_summary`); a ``.run.json`` sidecar (:class:`RunRecord`) keeps the command, wall time and load.
Per-run stdout goes to ``experiments/results/tmp/accuracy/logs`` (ignored by git).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.suites import Experiment
from gnnpipe.train.trainer import RunSummary

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / "experiments" / "results" / "tmp" / "accuracy"  # ignored by git: trainer logs, stdout


def repo_relative(path: Path) -> str:
    """``path`` as the commands spell it: relative to the repository when inside it, else absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@dataclass(frozen=True)
class RunRecord:
    """The sidecar of a finished run: how it was made."""

    command: str
    rc: int | str
    wall_s: float
    loadavg_1m_at_start: float


@dataclass(frozen=True)
class RunResult:
    """A finished run as the tables see it."""

    experiment: str
    seed: int
    summary: RunSummary
    record: RunRecord


def read_summary(path: Path) -> RunSummary:
    """A metrics JSON back as a :class:`RunSummary` (keys it does not know are ignored, so older and newer
    files both load; a missing field without a default is an error naming the file)."""
    data = json.loads(Path(path).read_text())
    fields = {f.name: f for f in dataclasses.fields(RunSummary)}
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{path}: not a run summary; it lacks {', '.join(missing)}")
    return RunSummary(**{k: v for k, v in data.items() if k in fields})


@dataclass(frozen=True)
class Run:
    """Experiment ``exp`` with ``seed`` (and optionally every run's epochs overridden), stored under ``runs_dir``."""

    exp: Experiment
    seed: int
    epochs: int | None
    runs_dir: Path

    @property
    def run_id(self) -> str:
        return f"{self.exp.name}-s{self.seed}" + (f"-e{self.epochs}" if self.epochs else "")

    @property
    def metrics(self) -> Path:
        return self.runs_dir / f"{self.run_id}.json"

    @property
    def sidecar(self) -> Path:
        return self.runs_dir / f"{self.run_id}.run.json"

    def overrides(self) -> list[str]:
        ov = [*self.exp.overrides, f"train.seed={self.seed}"]
        return ov + ([f"train.epochs={self.epochs}"] if self.epochs else [])

    def command(self, metrics_out: Path | None = None) -> list[str]:
        return [
            "./launch.sh",
            self.exp.config,
            *self.overrides(),
            "log.progress=false",
            f"log.dir={repo_relative(SCRATCH / 'runs')}",
            "--metrics-out",
            repo_relative(metrics_out or self.metrics),
        ]

    def shell_command(self) -> str:
        return "OMP_NUM_THREADS=1 " + " ".join(self.command())

    def is_finished(self) -> bool:
        return self.metrics.is_file() and self.sidecar.is_file()

    def result(self) -> RunResult:
        side = json.loads(self.sidecar.read_text())
        record = RunRecord(**{f.name: side[f.name] for f in dataclasses.fields(RunRecord)})
        return RunResult(self.exp.name, self.seed, read_summary(self.metrics), record)


def resolved_config(run: Run) -> dict:
    """The config (minus ``log``) that the run's command resolves to, as stored in the metrics JSON."""
    from gnnpipe.config import config_to_dict, load_config

    d = config_to_dict(load_config(REPO / run.exp.config, run.overrides()))
    d.pop("log")
    return d


def is_done(run: Run) -> bool:
    """Metrics exist and were made with the config the command resolves to now (a key added to gnnpipe's
    config since then counts as unchanged when the run resolves it to its default)."""
    from gnnpipe.config import ExperimentConfig, config_to_dict

    if not run.is_finished():
        return False
    try:
        stored = read_summary(run.metrics).config
    except ValueError as exc:
        print(f"  {exc}; rerunning")
        return False
    defaults = config_to_dict(ExperimentConfig())
    now = resolved_config(run)
    for section, values in now.items():
        for key, value in values.items():
            if key not in stored.get(section, {}) and value == defaults[section][key]:
                stored.setdefault(section, {})[key] = value
    stored.pop("log", None)
    if stored != now:
        print(f"  {run.run_id}: stored metrics were made with another config; rerunning")
        return False
    return True


def run_env() -> dict[str, str]:
    """One intra-op thread per process for every run, as torchrun gives each worker: a single-device run
    with torch's default (one thread per core) on this shared 2-core machine measured 3.3 s/epoch instead of
    0.14 s (oversubscribed OpenMP threads spin). Threads change timings only, not the arithmetic's meaning."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def execute(run: Run, timeout_s: float) -> bool:
    """Run one experiment seed through launch.sh; True on success (metrics and sidecar written)."""
    partial = run.metrics.with_suffix(".partial.json")
    cmd = run.command(partial)
    log = SCRATCH / "logs" / f"{run.run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    run.runs_dir.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    print(f"  {run.run_id}: OMP_NUM_THREADS=1 {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=run_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc: int | str = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the session we started: launch.sh, torchrun, its workers
            proc.wait()
            rc = "timeout"
    wall = time.perf_counter() - t0
    if rc == 0 and partial.is_file():
        partial.replace(run.metrics)
        record = RunRecord(command=run.shell_command(), rc=rc, wall_s=wall, loadavg_1m_at_start=load)
        run.sidecar.write_text(json.dumps(dataclasses.asdict(record), indent=2))
        print(f"  {run.run_id}: done in {wall:.0f}s", flush=True)
        return True
    print(f"  {run.run_id}: FAILED (rc={rc}) after {wall:.0f}s; see {repo_relative(log)}", flush=True)
    return False


def run_all(runs: list[Run], *, force: bool, timeout_s: float) -> list[str]:
    """Run each of ``runs`` in turn, skipping those :func:`is_done` finds (unless ``force``); the failed run ids."""
    failed = []
    for i, r in enumerate(runs):
        print(f"[{i + 1}/{len(runs)}] {r.run_id}", flush=True)
        if not force and is_done(r):
            print(f"  {r.run_id}: metrics exist, skipped", flush=True)
        elif not execute(r, timeout_s):
            failed.append(r.run_id)
    return failed


def finished_results(runs: list[Run]) -> tuple[list[RunResult], list[str]]:
    """The results of every finished run of ``runs`` (in order), and the ids of those that cannot be read."""
    results, unreadable = [], []
    for r in (r for r in runs if r.is_finished()):
        try:
            results.append(r.result())
        except (ValueError, KeyError, TypeError) as exc:  # e.g. made by a RunSummary with other fields
            print(f"  {r.run_id}: left out of the tables: {exc}")
            unreadable.append(r.run_id)
    return results, unreadable


def add_run_options(ap: argparse.ArgumentParser, evidence: Path) -> None:
    """The options every suite-style runner shares: what to run (``--dry-run``, ``--report``, ``--force``,
    ``--timeout``) and where its results go (``--save`` into ``evidence`` or ``--out DIR``)."""
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--report", action="store_true", help="run nothing; rebuild the tables from finished runs")
    ap.add_argument("--force", action="store_true", help="rerun runs whose metrics already exist")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run before it is killed")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--save", action="store_true", help=f"write into {repo_relative(evidence)} (the evidence)")
    where.add_argument("--out", type=Path, help="write into this folder (default: a fresh one under tmp/)")


def check_run_options(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.report and not (args.save or args.out):
        ap.error("--report reads finished runs: name their folder with --save or --out DIR")
