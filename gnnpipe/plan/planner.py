"""``gnnpipe plan`` end to end (DESIGN §10): calibrate (or reuse), enumerate, simulate, rank, report, write.

``cli.py`` parses the arguments and calls :func:`plan_command`; :func:`plan` is the same without printing or
files, for benchmarks and tests.
"""

from __future__ import annotations

import os

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.plan.costs import Calibration, Link, cache_root, worker_threads
from gnnpipe.plan.report import Projection, format_table, plan_json, projected_calibration, write_outputs
from gnnpipe.plan.search import Prediction, candidates, cost_vector, predict, rank

__all__ = ["plan", "plan_command", "calibration_for"]


def calibration_for(
    cfg: ExperimentConfig, graph: Graph, workers: int, *, link: Link | None = None, recalibrate: bool = False
) -> Calibration:
    """The (cached) calibration of ``cfg``'s model and graph at the threads each of ``workers`` will have."""
    from gnnpipe.plan.calibrate import calibrate

    threads = worker_threads(cfg.train.device, workers)
    return calibrate(
        cfg,
        graph,
        threads=threads,
        cores=os.cpu_count() or 1,
        cache=cache_root(),
        link=link,
        refresh=recalibrate,
        workers=workers,
    )


def plan(
    cfg: ExperimentConfig, graph: Graph, workers: int, cal: Calibration, *, memory: int | None = None
) -> list[Prediction]:
    """Every candidate for ``workers`` workers, predicted with ``cal``, in rank order."""
    cands = candidates(cfg, workers, num_nodes=graph.num_nodes, cost=cost_vector(cfg, cal))
    return rank([predict(cfg, graph, c, cal, memory_budget=memory) for c in cands])


def _inputs(cal: Calibration, workers: int, memory: int | None) -> list[str]:
    from gnnpipe.units import format_bytes

    sharing = f"{cal.threads} thread(s) per worker on {cal.cores} cores" if cal.threads else "one device per worker"
    lines = [
        f"device {cal.device}, {workers} workers, {sharing}; calibration {cal.key}",
        f"link {cal.link.describe()}",
    ]
    probe = cal.shared_by(workers)
    if probe is not None:
        ms = "{:.2f} ms".format
        lines.append(
            f"{workers} workers sharing the machine (probed): compute x{probe.compute_factor:.2f}, "
            f"{ms(probe.msg_cpu.a * 1e3)} CPU per message end; between steps a message takes "
            f"{ms(probe.one_way_s * 1e3)} one way, an exchange {ms(probe.exchange_s * 1e3)}; "
            f"{ms(probe.wake_s * 1e3)} for a core when all are busy"
        )
    return lines + [f"memory budget per worker: {format_bytes(memory) if memory else 'none'}"]


def plan_command(
    cfg: ExperimentConfig,
    *,
    workers: int,
    memory: int | None,
    link: Link | None,
    projections: list[Projection],
    json_path: str | None,
    config_path: str | None,
    recalibrate: bool = False,
) -> int:
    from gnnpipe.config import ConfigError
    from gnnpipe.data import load_graph

    for flag, path in (("--json", json_path), ("--write", config_path)):
        parent = os.path.dirname(os.path.abspath(path)) if path else None
        if parent and not os.path.isdir(parent):  # before measuring anything
            raise ConfigError(f"{flag} {path}: directory {parent} does not exist")
    graph = load_graph(cfg.dataset)
    cal = calibration_for(cfg, graph, workers, link=link, recalibrate=recalibrate)
    preds = plan(cfg, graph, workers, cal, memory=memory)
    print(
        format_table(preds, title=f"gnnpipe plan: {workers} workers (predicted)", inputs=_inputs(cal, workers, memory))
    )
    meta = {"workers": workers, "memory_budget": memory, "device": cal.device, "threads": cal.threads,
            "cores": cal.cores, "link": {"latency_s": cal.link.latency_s, "bandwidth": cal.link.bandwidth,
            "source": cal.link.source}, "calibration": cal.key, "projections": []}  # fmt: skip
    for proj in projections:
        pcal = projected_calibration(cal, proj, cfg)
        ppreds = plan(cfg, graph, proj.workers, pcal, memory=memory)
        title = f"PROJECTION (not measured): {proj.describe()}"
        print()
        print(format_table(ppreds, title=title, inputs=_inputs(pcal, proj.workers, memory)))
        meta["projections"].append({"inputs": proj.describe(), **plan_json(ppreds, meta={})})
    write_outputs(preds, cfg, meta=meta, json_path=json_path, config_path=config_path)
    return 0
