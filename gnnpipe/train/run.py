"""Assemble one run: config -> dataset -> plan -> model -> executor -> trainer (DESIGN §8's data flow).

Everything a run needs from this machine and its inputs is checked before any worker joins or trains
(:func:`check_environment`, :func:`prepare_checked`). On a worker of a group, an error anywhere becomes a
:class:`RunFailed` after :meth:`Comm.fail` published it (no collective in the teardown), so every worker
exits within seconds naming the same rank, phase and error (DESIGN §4).
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path

import torch

from gnnpipe.config import ConfigError, ExperimentConfig
from gnnpipe.data import load_graph
from gnnpipe.data.common import check_trainable
from gnnpipe.data.graph import Graph, GraphError
from gnnpipe.memory import MemoryProbe, tune_allocator
from gnnpipe.parallel.comm import Comm, CommError
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.engine import Engine
from gnnpipe.partition.chunker import ChunkPlan, PlanSpec, get_or_build_plan
from gnnpipe.partition.prepared import open_prepared, prepare, prepared_dir
from gnnpipe.profile.volumes import volume_by_link, volume_of
from gnnpipe.train.executor import Executor, SingleDeviceExecutor
from gnnpipe.train.outputs import check_tensorboard
from gnnpipe.train.resume import check_config, find_checkpoint, record_run_dir, restarted_run_dir
from gnnpipe.train.stopping import StopRequested
from gnnpipe.train.trainer import RunSummary, check_output_file, timestamp, train
from gnnpipe.user_errors import USER_ERRORS

__all__ = [
    "RunFailed",
    "cache_dir",
    "check_environment",
    "exit_code_of",
    "make_executor",
    "make_run_dir",
    "one_line",
    "plan_for",
    "prepare_checked",
    "run_name",
    "run_training",
    "shared_plan",
    "shared_prepared",
]


class RunFailed(Exception):
    """A worker of a group stopped: ``line`` names the rank that failed first, the phase and the error;
    ``exit_code`` is this process's; ``root``: this worker's own failure (else the first one it learned of).
    Its process group is torn down: the process should exit now (``liveness.hard_exit``)."""

    def __init__(self, line: str, exit_code: int, root: bool):
        super().__init__(line)
        self.line, self.exit_code, self.root = line, exit_code, root


def exit_code_of(e: BaseException) -> int:
    """2 for bad input, 17 for a lost peer or transfer (CommError's own), 130 for an interrupt, 1 otherwise."""
    if isinstance(e, RunFailed):
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, CommError):
        return e.exit_code
    return 2 if isinstance(e, USER_ERRORS) else 1


def one_line(e: BaseException) -> str:
    """``e`` as one line: user errors say everything themselves; others get their type name."""
    msg = " ".join(str(e).split())[:800]
    if isinstance(e, USER_ERRORS) and msg:
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _failure(comm: Comm | None, phase: str, e: BaseException, run_dir: Path | None = None) -> BaseException:
    """What to raise for ``e``, raised in ``phase``: ``e`` itself in one process; on a worker of a group, a
    RunFailed once the failure is published (or the first one learned)."""
    if isinstance(e, RunFailed) or comm is None or comm.dims.world_size == 1:
        return e
    code = exit_code_of(e)
    log = run_dir / f"rank{comm.rank}.log" if run_dir is not None else None
    what = one_line(e)
    if code == 1 and not isinstance(e, (OSError, MemoryError)):  # a bug, not input or environment: keep where
        text = "".join(traceback.format_exception(e))
        try:
            with open(log, "a") as fh:  # type: ignore[arg-type]
                fh.write(text)
            what += f" (traceback in {log})"
        except (OSError, TypeError):
            print(text, file=sys.stderr, end="", flush=True)
    line, code, root = comm.fail(f"{comm.dims.describe(comm.rank)} failed in {phase}: {what}", code)
    if log is not None:
        try:
            with open(log, "a") as fh:
                fh.write(f"error: {line}\n")
        except OSError:
            pass
    return RunFailed(line, code, root)


def cache_dir() -> Path:
    """Where partitions and chunk plans are cached (``$GNNPIPE_CACHE``, default ``.cache/gnnpipe``)."""
    return Path(os.environ.get("GNNPIPE_CACHE", ".cache/gnnpipe"))


def _check_dir(path: Path, what: str, *, writable: bool) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} = {str(path)!r} is a file; expected a directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if writable:
            with tempfile.TemporaryFile(dir=path):
                pass
    except OSError as e:
        raise ConfigError(f"{what} = {str(path)!r}: cannot create or write it ({e.strerror or e})") from None


def check_environment(cfg: ExperimentConfig, metrics_out: str | Path | None = None) -> None:
    """What the run asks of this machine, before any worker joins or loads anything: the device, the log
    directory, the cache directory and the metrics file. ConfigError naming the key or flag."""
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{cfg.source}: key 'train.device' has value 'cuda' but torch {torch.__version__} sees no CUDA device "
            f"(built with CUDA {torch.version.cuda or 'none'}); allowed here: cpu"
        )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1")))
    if cfg.train.device == "cuda" and cfg.parallel.backend != "gloo" and local > torch.cuda.device_count():
        raise ConfigError(
            f"{cfg.source}: key 'train.device' has value 'cuda' with {local} workers on this host but "
            f"{torch.cuda.device_count()} GPU(s): NCCL needs one GPU per worker; use fewer workers per host, "
            "parallel.backend=gloo (host-staged transfers) or train.device=cpu"
        )
    if cfg.train.device == "cpu" and cfg.parallel.backend == "nccl":
        raise ConfigError(
            f"{cfg.source}: key 'parallel.backend' has value 'nccl' with train.device=cpu; allowed: auto | gloo"
        )
    _check_dir(Path(cfg.log.dir), f"{cfg.source}: key 'log.dir'", writable=True)
    where = "environment variable GNNPIPE_CACHE" if "GNNPIPE_CACHE" in os.environ else "the cache directory"
    _check_dir(cache_dir(), where, writable=False)
    check_output_file(metrics_out, "--metrics-out")
    check_tensorboard(cfg)


def run_name(cfg: ExperimentConfig) -> str:
    stem = "default" if cfg.source.startswith("<") else Path(cfg.source.split(" (+ overrides")[0]).stem
    p = cfg.parallel
    return f"{stem}-w{p.ways}s{p.stages}c{p.chunks}-{timestamp()}"


def make_run_dir(log_dir: Path, name: str) -> Path:
    """Create a fresh ``log_dir/name`` (then ``name-2``, ``name-3`` ...): runs started in the same second,
    here or in another process, never share a run directory (``mkdir`` is atomic)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        d = log_dir / (name if i == 1 else f"{name}-{i}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise ConfigError(f"log.dir {str(log_dir)!r}: no free run directory name {name}-<n>")


def _dataset_where(cfg: ExperimentConfig) -> str:
    d = cfg.dataset
    return f"dataset {d.name!r}" + (f" ({d.path})" if d.path else "")


def plan_for(cfg: ExperimentConfig, graph: Graph) -> ChunkPlan:
    p = cfg.parallel
    if p.chunks > graph.num_nodes:
        raise GraphError(
            f"{_dataset_where(cfg)}: parallel.chunks = {p.chunks} but the graph has {graph.num_nodes} vertices; "
            f"allowed: at most {graph.num_nodes}"
        )
    vw = None if p.vertex_weights == "none" else p.vertex_weights
    return get_or_build_plan(
        graph, PlanSpec(p.chunks, p.ways, method=p.partition, vertex_weights=vw), cache_dir=cache_dir()
    )


def shared_plan(cfg: ExperimentConfig, graph: Graph, comm) -> ChunkPlan:
    """The plan on every worker: rank 0 builds (or loads) it first, the others then load it from the cache."""
    if comm.rank == 0:
        plan = plan_for(cfg, graph)
    comm.all_gather_object(None)  # barrier: the plan is in the cache
    return plan if comm.rank == 0 else plan_for(cfg, graph)


def prepare_checked(cfg: ExperimentConfig) -> Path:
    """``prepare`` (the permuted graph and plan, once per cache), refusing a dataset training cannot use
    (``check_trainable``: chunks <= vertices, training vertices, labels, finite features) before planning."""
    out = prepared_dir(cfg, cache_dir())
    if out.is_dir():
        return out
    graph = load_graph(cfg.dataset)
    check_trainable(graph, _dataset_where(cfg), chunks=cfg.parallel.chunks)
    return prepare(cfg, cache_dir(), graph)


def _open_checked(cfg: ExperimentConfig, path: Path) -> tuple[Graph, ChunkPlan]:
    """The prepared graph and plan at ``path``, checked again (cheap: labels and splits only; the cache may have
    been written by something else than a training run)."""
    graph, plan = open_prepared(path)
    check_trainable(graph, _dataset_where(cfg), chunks=cfg.parallel.chunks, old_ids=plan.inv_perm, features=False)
    return graph, plan


def shared_prepared(cfg: ExperimentConfig, comm) -> tuple[Graph, ChunkPlan]:
    """The prepared (permuted, memory-mapped) graph and plan on every worker: the first worker of each host
    prepares them if its cache has none, the others wait, then every worker of a host maps the same files
    (one copy per host). The engine checks at setup that every worker got the same plan."""
    if comm.local_rank == 0:
        with comm.busy():  # METIS holds the GIL: the heartbeat cannot beat meanwhile
            path = prepare_checked(cfg)
    else:
        path = prepared_dir(cfg, cache_dir())
    comm.all_gather_object(None)  # barrier: the prepared directory exists
    return _open_checked(cfg, path)


def make_executor(cfg: ExperimentConfig) -> Executor:
    """The executor the degrees of ``cfg`` call for: plain single device for (1, 1, 1), else the engine.

    Under torchrun (or mpirun) this joins the process group. The graph comes prepared (permuted into the
    chunk plan's order, beside the plan in the cache, memory-mapped): no worker generates or permutes it.
    The executor's ``analytic_bytes`` is the profiler's formula for its degrees (DESIGN §4). Memory is
    measured per phase from here on (``probe``). An error after joining is a :class:`RunFailed`.
    """
    p = cfg.parallel
    tune_allocator()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch.optim's one-time lazy imports (~70 MB) happen
    probe = MemoryProbe(cfg.train.device)  # before measuring: they are library start-up, not this run's memory
    if (p.ways, p.stages, p.chunks) == (1, 1, 1) and "WORLD_SIZE" not in os.environ:
        graph, _ = _open_checked(cfg, prepare_checked(cfg))
        probe.phase("load")
        ex = SingleDeviceExecutor(cfg, graph)
        ex.probe = probe
        return ex
    comm = Comm.init(
        ParallelDims.from_config(cfg),
        device=cfg.train.device,
        timeout_s=p.timeout_s,
        dead_after_s=p.heartbeat_timeout_s,
        backend=p.backend,
    )
    try:
        graph, plan = shared_prepared(cfg, comm)
        probe.phase("load")
        vol = volume_of(cfg, graph, plan)
        by_link = volume_by_link(cfg, graph, plan, comm.node_of_rank)
        eng = Engine(cfg, graph, plan, comm, probe=probe)
        eng.analytic_bytes = {"layer": vol.layer, "graph": vol.graph, "weight": vol.weight}
        eng.analytic_by_link = by_link
        return eng
    except BaseException as e:
        failure = _failure(comm, "setup", e)
        if failure is e:
            comm.close()
            raise
        raise failure from e


def run_training(cfg: ExperimentConfig, *, metrics_out: str | None = None, resume: str | None = None) -> RunSummary:
    """Check, set up, train, write the outputs. A worker of a group raises :class:`RunFailed` on any error.
    ``resume``: a run directory to go on in, from its newest complete checkpoint (checked before joining)."""
    check_environment(cfg, metrics_out)
    if resume is not None:
        where, manifest = find_checkpoint(resume)
        check_config(cfg, manifest, where)
    executor = make_executor(cfg)  # the graph is not kept: the executor holds what it needs
    comm: Comm | None = getattr(executor, "comm", None)
    phase, run_dir = ["setup (run directory)"], None
    try:
        rank = comm.rank if comm is not None else 0
        # one run directory for all ranks, rank 0's: --resume's, an elastic restart's earlier one, or a new one
        chosen = None
        if rank == 0:
            chosen = (resume, True) if resume is not None else restarted_run_dir()
            if chosen is None:
                chosen = (str(make_run_dir(Path(cfg.log.dir), run_name(cfg))), False)
            record_run_dir(chosen[0])
        if comm is not None:
            chosen = comm.all_gather_object(chosen)[0]
        run_dir, resuming = Path(chosen[0]), chosen[1]
        summary = train(
            cfg,
            executor,
            metrics_out=metrics_out,
            run_dir=run_dir,
            log_file=run_dir / f"rank{rank}.log",
            on_phase=lambda name: phase.__setitem__(0, name),
            resume=resuming,
        )
        phase[0] = "writing outputs"
        executor.write_artifacts(run_dir)
    except StopRequested:  # every worker stopped at the same epoch boundary, checkpoint written: a clean end
        executor.close()
        raise
    except BaseException as e:
        failure = _failure(comm, phase[0], e, run_dir)
        if failure is e:
            raise
        raise failure from e
    executor.close()
    return summary
