"""``gnnpipe plan`` end to end (DESIGN §10): calibrate (or reuse), enumerate, simulate, rank, report, write.

``cli.py`` parses the arguments and calls :func:`plan_command`; :func:`plan` is the same without printing or
files, for benchmarks and tests; :func:`predict_run` predicts one configuration (a config file and overrides)
on a given cluster, for experiments that compare predictions with runs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from gnnpipe.config import ConfigError, ExperimentConfig, load_config
from gnnpipe.data.graph import Graph
from gnnpipe.plan.costs import Calibration, Link, cache_root, worker_threads
from gnnpipe.plan.report import Projection, format_table, plan_json, projected_calibration, write_outputs
from gnnpipe.plan.search import Candidate, Prediction, candidates, cost_vector, predict, rank

__all__ = ["plan", "plan_command", "calibration_for", "check_nodes", "predict_run"]


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
    cfg: ExperimentConfig,
    graph: Graph,
    workers: int,
    cal: Calibration,
    *,
    memory: int | None = None,
    nodes: int = 1,
    inter: Link | None = None,
) -> list[Prediction]:
    """Every candidate for ``workers`` workers on ``nodes`` nodes (inter-node link ``inter``, default the
    calibration's), predicted with ``cal``, in rank order; on several nodes every placement of a hybrid."""
    places = ("stages", "ways") if nodes > 1 else ("stages",)
    cands = candidates(cfg, workers, num_nodes=graph.num_nodes, cost=cost_vector(cfg, cal), placements=places)
    return rank([predict(cfg, graph, c, cal, memory_budget=memory, nodes=nodes, inter=inter) for c in cands])


def check_nodes(workers: int, nodes: int) -> None:
    """``--nodes``: at least 1, and dividing the workers (every node runs as many)."""
    if nodes < 1 or workers % nodes:
        raise ConfigError(
            f"--nodes {nodes}: allowed: a positive divisor of the {workers} workers (each node runs as many)"
        )


def predict_run(
    config: str | Path | ExperimentConfig,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    workers: int | None = None,
    nodes: int = 1,
    link: str | Link | None = None,
    placement: str | None = None,
    recalibrate: bool = False,
) -> dict:
    """The planner's prediction for one run: ``config`` (a YAML path and ``section.key=value`` overrides, or a
    config) as it is (degrees, chunks, layer split, placement; ``placement`` overrides it) on ``workers`` (default
    ways x stages, which it must equal) workers spread over ``nodes`` nodes, consecutive ranks each. ``link``
    (``"200mbit,100us"`` or a :class:`Link`): between nodes when ``nodes > 1`` (the probe's local link inside
    one), else the link instead of the probe. Calibrates on this machine once (cached) as ``gnnpipe plan`` does.
    Returns :meth:`Prediction.to_dict`: ``epoch_time_s``, its breakdown, ``peak_memory_bytes``, ``bytes`` by kind,
    ``bytes_by_link``, ``inter_node_bytes``, ``placement``, ``nodes``."""
    from gnnpipe.data import load_graph
    from gnnpipe.parallel.dims import ParallelDims
    from gnnpipe.plan.costs import parse_link

    cfg = config if isinstance(config, ExperimentConfig) else load_config(str(config), list(overrides))
    if placement is not None:
        cfg = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, placement=placement))
    par = cfg.parallel
    workers = par.world_size if workers is None else workers
    if workers != par.world_size:
        raise ConfigError(f"workers={workers} but parallel.ways x parallel.stages = {par.world_size}")
    check_nodes(workers, nodes)
    link = parse_link(link) if isinstance(link, str) else link
    graph = load_graph(cfg.dataset)
    cal = calibration_for(cfg, graph, workers, link=link if nodes == 1 else None, recalibrate=recalibrate)
    dims = ParallelDims.from_config(cfg)
    split = "given" if isinstance(par.stage_split, list) else par.stage_split
    cand = Candidate(par.ways, par.stages, par.chunks, dims.layer_counts, split, par.placement)
    return predict(cfg, graph, cand, cal, nodes=nodes, inter=link).to_dict()


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
    nodes: int = 1,
) -> int:
    """``link``: between nodes when ``nodes > 1`` (the probe's inside one), else instead of the probe."""
    from gnnpipe.data import load_graph

    check_nodes(workers, nodes)

    for flag, path in (("--json", json_path), ("--write", config_path)):
        parent = os.path.dirname(os.path.abspath(path)) if path else None
        if parent and not os.path.isdir(parent):  # before measuring anything
            raise ConfigError(f"{flag} {path}: directory {parent} does not exist")
    graph = load_graph(cfg.dataset)
    cal = calibration_for(cfg, graph, workers, link=link if nodes == 1 else None, recalibrate=recalibrate)
    inter = (link or cal.link) if nodes > 1 else None
    preds = plan(cfg, graph, workers, cal, memory=memory, nodes=nodes, inter=inter)
    inputs = _inputs(cal, workers, memory)
    if inter is not None:
        inputs.insert(2, f"{nodes} nodes x {workers // nodes} workers; between nodes {inter.describe()}, shared")
    title = f"gnnpipe plan: {workers} workers" + (f" on {nodes} nodes" if nodes > 1 else "") + " (predicted)"
    print(format_table(preds, title=title, inputs=inputs))
    meta = {"workers": workers, "memory_budget": memory, "device": cal.device, "threads": cal.threads,
            "cores": cal.cores, "link": {"latency_s": cal.link.latency_s, "bandwidth": cal.link.bandwidth,
            "source": cal.link.source}, "calibration": cal.key, "projections": [], "nodes": nodes,
            "inter_node_link": dataclasses.asdict(inter) if inter else None}  # fmt: skip
    for proj in projections:
        pcal = projected_calibration(cal, proj, cfg)
        ppreds = plan(cfg, graph, proj.workers, pcal, memory=memory)
        title = f"PROJECTION (not measured): {proj.describe()}"
        print()
        print(format_table(ppreds, title=title, inputs=_inputs(pcal, proj.workers, memory)))
        meta["projections"].append({"inputs": proj.describe(), **plan_json(ppreds, meta={})})
    write_outputs(preds, cfg, meta=meta, json_path=json_path, config_path=config_path)
    return 0
