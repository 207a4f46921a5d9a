"""Calibration on the device at hand (DESIGN §10): what one action costs, what one row holds, what a link does.

Compute: the real engine runs on one worker (W = S = 1) at the thread count each planned worker will have,
at two chunk counts so that chunk sizes vary; every action is timed (warm-up epochs first, then timed
epochs) and each op of each layer gets a fit ``seconds = a + per_row * rows + per_edge * in_edges`` (non-
negative least squares over chunks and epochs). Memory: the same runs' memory reports (DESIGN §7: bytes by
kind, peak growth by phase) give bytes per vertex, layer and channel. Link: a gloo ping-pong between two
local workers (latency, bandwidth), or what the user gives (``--link 25GB/s,5us``). A calibration is cached
per (device, threads, model, graph) in the cache directory and reused.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from gnnpipe.config import ExperimentConfig, config_from_dict, config_to_dict
from gnnpipe.plan.costs import Calibration, Fit, Link, calibration_key, load_cached, save_calibration

__all__ = ["calibrate", "probe_link"]


def _timed_worker(cfg_dict: dict, warmup: int, epochs: int) -> dict:
    """On one worker: the engine at W = S = 1; every action of the timed epochs with its seconds."""
    from gnnpipe.parallel.engine import _STEP_OPS
    from gnnpipe.train.run import make_executor

    cfg = config_from_dict(cfg_dict, "plan calibration")
    ex = make_executor(cfg)
    records: list[tuple[str, int, int, float]] = []
    timing = [False]
    running: list[int] = []  # runnable processes on the machine, sampled every 16th timed action

    def wrap(fn, op: str):
        def timed(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            if timing[0]:
                act = args[-1]
                records.append((op, act.chunk, act.layer, time.perf_counter() - t0))
                if len(records) % 16 == 0:
                    running.append(_procs_running())
            return out

        return timed

    for op, name in _STEP_OPS.items():
        setattr(ex.steps, name, wrap(getattr(ex.steps, name), op.value))
    for name in ("reduce_loss", "step"):
        setattr(ex, name, wrap(getattr(ex, name), name))
    try:
        walls = []
        for e in range(warmup + epochs):
            timing[0] = e >= warmup
            stats = ex.train_epoch(e)
            if timing[0]:
                walls.append(stats.time)
        ex.evaluate()
        units = [(u.n, u.a_in.nnz + u.a_ext.nnz) for u in ex.layout.units]
        params = sum(q.numel() for q in ex.params)
        return {
            "records": records, "walls": walls, "units": units, "params": params, "memory": ex.memory_report(),
            "background": max(statistics.mean(running) - 1, 0.0) if running else 0.0,
        }  # fmt: skip
    finally:
        ex.close()


def _procs_running() -> int:
    """Runnable processes now (``procs_running`` of /proc/stat; 1 where unavailable: this one)."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 1


def _fit(points: list[tuple[int, int, float]]) -> Fit:
    from scipy.optimize import nnls

    a = np.array([[1.0, r, e] for r, e, _ in points])
    y = np.array([t for _, _, t in points])
    scale = a.max(axis=0)
    coef, _ = nnls(a / scale, y)
    coef = coef / scale
    return Fit(float(coef[0]), float(coef[1]), float(coef[2]))


def _link_worker(sizes: list[int], reps: int) -> list[float]:
    import torch

    from gnnpipe.parallel.comm import Comm
    from gnnpipe.parallel.dims import ParallelDims

    comm = Comm.init(ParallelDims(1, 2, 2, (1, 1)), timeout_s=60.0)
    peer = 1 - comm.rank
    out = []
    for n in sizes:
        buf = torch.zeros(max(n // 4, 1))
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            if comm.rank == 0:
                comm.exchange({peer: buf}, {}, kind="control")
                comm.exchange({}, {peer: buf}, kind="control")
            else:
                comm.exchange({}, {peer: buf}, kind="control")
                comm.exchange({peer: buf}, {}, kind="control")
            times.append((time.perf_counter() - t0) / 2)
        out.append(statistics.mean(times[1:]))  # the mean: on a busy machine waking up is part of the cost
    comm.close()
    return out


def probe_link(reps: int = 21) -> Link:
    """Latency and bandwidth of a local gloo link (ping-pong between two workers; a line through them)."""
    from gnnpipe.parallel.spawn import run_workers

    sizes = [4, 1 << 16, 1 << 20, 1 << 23]
    times = run_workers(_link_worker, 2, sizes, reps, timeout_s=120.0)[0].value
    slope, _ = np.polyfit(np.array(sizes, dtype=float), np.array(times), 1)  # seconds per byte
    return Link(latency_s=float(times[0]), bandwidth=1.0 / max(float(slope), 1e-15), source="probe")


def calibrate(
    cfg: ExperimentConfig,
    graph,
    *,
    threads: int,
    cores: int,
    cache: Path,
    link: Link | None = None,
    chunk_counts: tuple[int, ...] = (2, 8),
    warmup: int = 1,
    epochs: int = 3,
    refresh: bool = False,
    workers: int = 1,
) -> Calibration:
    """Measure (or load from ``cache``) the calibration of ``cfg``'s model and ``graph`` at ``threads`` threads.
    Chunk sizes are the plan's rows and in-edges (as the planner's :class:`Geometry` counts them). On a CPU,
    what ``workers`` workers sharing the machine cost (``plan/sharing.py``) is probed once per worker count and
    kept in the same cached calibration."""
    cal = _calibrate(cfg, graph, threads=threads, cores=cores, cache=cache, link=link, chunk_counts=chunk_counts,
                     warmup=warmup, epochs=epochs, refresh=refresh)  # fmt: skip
    if cal.device == "cpu" and workers > 1 and cal.shared_by(workers) is None:
        from gnnpipe.plan.sharing import probe_sharing

        stored = load_cached(cache, cal.key) or cal
        probe = probe_sharing(workers, threads, rows=graph.num_nodes // workers, width=cfg.model.hidden)
        stored = dataclasses.replace(stored, sharing={**stored.sharing, str(workers): probe})
        save_calibration(cache, stored)
        cal = dataclasses.replace(cal, sharing=stored.sharing)
    return cal


def _calibrate(cfg, graph, *, threads, cores, cache, link, chunk_counts, warmup, epochs, refresh) -> Calibration:
    from gnnpipe.parallel.spawn import run_workers
    from gnnpipe.partition.prepared import prepare
    from gnnpipe.plan.workload import geometry
    from gnnpipe.train.run import cache_dir, plan_for

    device = cfg.train.device
    key = calibration_key(cfg, device, threads)
    cached = None if refresh else load_cached(cache, key)
    if cached is not None:
        if link is None and cached.link.source != "probe":
            link = probe_link()
        return dataclasses.replace(cached, link=link) if link is not None else cached
    points: dict[str, list[tuple[int, int, float]]] = {}  # op (and layer) -> (rows, edges, median seconds)
    overhead, step, memory, background = [], [], {}, []
    for chunks in chunk_counts:
        par = {**config_to_dict(cfg)["parallel"], "ways": 1, "stages": 1, "chunks": chunks, "stage_split": "equal"}
        d = {**config_to_dict(cfg), "parallel": par}
        prepare(config_from_dict(d, "plan calibration"), cache_dir(), graph)  # the run opens it, as a 2nd run does
        # at the threads a planned worker gets, intra-op and OpenMP (the native kernels) alike; on a GPU (0) the
        # host threads do not matter and the spawner's default stands
        res = run_workers(_timed_worker, 1, d, warmup, epochs, timeout_s=1800.0, threads=threads or None)[0].value
        geo = geometry(plan_for(config_from_dict(d, "plan calibration"), graph))
        units = list(zip(geo.rows, geo.edges, strict=True))
        per_chunk: dict[tuple[str, int], list[float]] = {}
        for op, chunk, layer, sec in res["records"]:
            if op in ("reduce_loss", "step"):
                if op == "step":
                    step.append(sec / max(res["params"], 1))
                continue
            per_chunk.setdefault((f"{op}@{layer}" if layer >= 0 else op, chunk), []).append(sec)
        for (name, chunk), secs in per_chunk.items():  # the median over epochs: robust to a busy moment
            points.setdefault(name, []).append((units[chunk][0], units[chunk][1], statistics.median(secs)))
        background.append(res["background"])
        acted = sum(sec for *_, sec in res["records"]) / max(len(res["walls"]), 1)
        overhead.append(max(statistics.median(res["walls"]) - acted, 0.0))
        memory[f"C{chunks}"] = {**res["memory"], "rows": sum(u[0] for u in units), "edges": sum(u[1] for u in units)}
    cal = Calibration(
        key=key,
        device=device,
        threads=threads,
        cores=cores,
        fits={name: _fit(p) for name, p in sorted(points.items())},
        step_per_elem_s=statistics.median(step) if step else 0.0,
        epoch_overhead_s=statistics.median(overhead),
        link=link or probe_link(),
        memory={"runs": memory, "chunk_counts": list(chunk_counts)},
        background=statistics.mean(background) if device == "cpu" else 0.0,
    )
    save_calibration(cache, cal)
    return cal
