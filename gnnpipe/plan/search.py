"""Candidates for N workers, each predicted by simulating its schedule, filtered and ranked (DESIGN §10).

Candidates: every ``W x S = N`` with ``S <= layers``; graph parallelism (``S = 1``) with one chunk per way;
otherwise ``C = W * S * k`` for ``k`` in ``chunk_factors`` (chunks per way a multiple of the stage count, so the
pipeline can fill); each with the equal layer split and, when it differs, the min-max split over the
calibrated per-layer costs. A prediction is the mean simulated epoch over ``orders`` chunk orders (the orders
the run will draw, from ``train.seed``), its mean per-worker compute / communication / message CPU / bubble,
the peak memory per worker and the bytes per epoch by kind; candidates over the memory budget are kept but marked.
On ``K > 1`` nodes each hybrid comes with both placements (``parallel.placement``: ``stages``, ``ways``; for
pure graph or pipeline parallelism they are the same layout), simulated with the inter-node link, and its
bytes split by link (``partition/links.py``).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.models.deep import build_model
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.nodes import block_nodes
from gnnpipe.parallel.schedule import position_order
from gnnpipe.partition.links import analytic_by_link
from gnnpipe.partition.stages import split_layers, stage_bounds
from gnnpipe.plan.costs import Calibration, Link, layer_costs
from gnnpipe.plan.memory_model import predict_memory, stage_saved_per_row
from gnnpipe.plan.simulate import Machine, Wire, simulate
from gnnpipe.plan.workload import all_tasks, geometry

__all__ = ["Candidate", "Prediction", "candidates", "predict", "rank", "strategy_name", "machine_of", "cost_vector"]


@dataclass(frozen=True)
class Candidate:
    ways: int
    stages: int
    chunks: int
    stage_split: tuple[int, ...]
    split: str  # equal | cost
    placement: str = "stages"  # parallel.placement

    def config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """``cfg`` with these degrees, placement and the layer split as an explicit list."""
        par = dataclasses.replace(
            cfg.parallel, ways=self.ways, stages=self.stages, chunks=self.chunks, stage_split=list(self.stage_split),
            placement=self.placement,
        )  # fmt: skip
        return dataclasses.replace(cfg, parallel=par)


@dataclass(frozen=True)
class Prediction:
    candidate: Candidate
    strategy: str
    epoch_time_s: float
    compute_s: float  # mean over workers
    comm_s: float
    overhead_s: float  # message CPU (plan/sharing.py), mean over workers
    bubble_s: float
    peak_memory_bytes: tuple[int, ...]  # per worker, rank order
    bytes: dict[str, int]  # per epoch, cluster-wide, by kind
    fits_memory: bool
    nodes: int = 1
    bytes_by_link: dict[str, dict[str, int]] | None = None  # per kind: intra/inter-node (analytic)

    @property
    def inter_node_bytes(self) -> int:
        return sum(d["inter"] for d in (self.bytes_by_link or {}).values())

    def to_dict(self) -> dict:
        c = self.candidate
        return {
            "ways": c.ways, "stages": c.stages, "chunks": c.chunks, "stage_split": list(c.stage_split),
            "split": c.split, "strategy": self.strategy, "epoch_time_s": self.epoch_time_s,
            "compute_s": self.compute_s, "comm_s": self.comm_s, "overhead_s": self.overhead_s,
            "bubble_s": self.bubble_s,
            "peak_memory_bytes": list(self.peak_memory_bytes), "bytes": dict(self.bytes),
            "fits_memory": self.fits_memory, "placement": c.placement, "nodes": self.nodes,
            "inter_node_bytes": self.inter_node_bytes, "bytes_by_link": self.bytes_by_link,
        }  # fmt: skip


def strategy_name(ways: int, stages: int) -> str:
    if ways == stages == 1:
        return "single"
    return "graph" if stages == 1 else "pipeline" if ways == 1 else "hybrid"


def candidates(
    cfg: ExperimentConfig,
    workers: int,
    *,
    num_nodes: int,
    cost: list[float] | None,
    chunk_factors=(1, 2, 4),
    placements=("stages",),
) -> list[Candidate]:
    """Every (W, S, C, split, placement) for ``workers`` workers; ``cost``: per-layer costs for the min-max split;
    ``placements``: those to try for hybrids (``num_nodes``: the graph's vertices, which bound the chunks)."""
    L = cfg.model.layers
    out: list[Candidate] = []
    for ways in (w for w in range(1, workers + 1) if workers % w == 0):
        stages = workers // ways
        if stages > L or ways > num_nodes:
            continue
        chunk_counts = [ways] if stages == 1 else sorted({ways * stages * k for k in chunk_factors})
        splits = [("equal", tuple(split_layers(L, stages)))]
        if cost is not None and stages > 1:
            best = tuple(split_layers(L, stages, costs=cost))
            if best != splits[0][1]:
                splits.append(("cost", best))
        for chunks in chunk_counts:
            if chunks > num_nodes:
                continue
            places = placements if ways > 1 and stages > 1 else ("stages",)
            out += [Candidate(ways, stages, chunks, split, kind, pl) for kind, split in splits for pl in places]
    return out


def machine_of(cal: Calibration, workers: int) -> Machine:
    """The machine ``workers`` workers share: on a CPU, ``cores / threads`` of them compute at full speed.

    With the sharing probe for ``workers`` and a probed link, a message's latency is what the probe's pair
    measured between steps of compute: one way for stage messages, an exchange's wall time for halo exchanges
    (``plan/sharing.py``). Those times also hold the CPU work of both message ends, which the simulator books
    as ``overhead`` tasks, and the transfer of their bytes, which the bandwidth books: both are taken out here,
    down to 0 (without the pair's times: the idle ping-pong less 2 ends x ``msg_cpu.a``). A given link
    (``--link``) is the wire already, and the latency as it says."""
    capacity = float("inf") if cal.threads == 0 else cal.cores / cal.threads
    background = cal.background if capacity != float("inf") else 0.0
    latency, exchange, sharing = cal.link.latency_s, None, cal.shared_by(workers)
    if sharing is not None and cal.link.source == "probe":
        if sharing.one_way_s > 0:  # messages between steps, as the engine sends them
            nbytes = sharing.pair_bytes
            rest = 2 * (sharing.msg_cpu.a + sharing.msg_cpu.per_row * nbytes) + nbytes / cal.link.bandwidth
            latency, exchange = max(sharing.one_way_s - rest, 0.0), max(sharing.exchange_s - rest, 0.0)
        else:
            latency = max(latency - 2 * sharing.msg_cpu.a, 0.0)
    wake = sharing.wake_s if sharing is not None else 0.0
    return Machine(capacity, latency, cal.link.bandwidth, background, wake, exchange)


def predict(
    cfg: ExperimentConfig,
    graph: Graph,
    cand: Candidate,
    cal: Calibration,
    *,
    memory_budget: int | None = None,
    orders: int = 3,
    first_epoch: int = 5,
    nodes: int = 1,
    inter: Link | None = None,
) -> Prediction:
    """Simulate ``cand`` on ``graph`` with the calibration ``cal`` (its plan comes from the plan cache); on
    ``nodes`` nodes (consecutive ranks each) whose links are ``inter`` (the calibration's link inside a node)."""
    from gnnpipe.train.run import plan_for

    ccfg = cand.config(cfg)
    plan = plan_for(ccfg, graph)
    geo = geometry(plan)
    dims = ParallelDims(cand.ways, cand.stages, cand.chunks, cand.stage_split, cand.placement)
    model = build_model(cfg.model, graph.num_features, graph.num_classes, seed=cfg.train.seed)
    mdims = model.dims()
    itemsize = torch.empty((), dtype=getattr(torch, cfg.train.dtype)).element_size()
    params = [sum(q.numel() for q in model.stage_parameters(lo, hi)) for lo, hi in stage_bounds(cand.stage_split)]
    node_of = block_nodes(dims.world_size, nodes)
    wire = None
    if nodes > 1:
        inter = inter or cal.link
        wire = Wire(tuple(node_of), inter.latency_s, inter.bandwidth, inter.burst)
    machine = dataclasses.replace(machine_of(cal, dims.world_size), wire=wire)
    kw = dict(dims=dims, geo=geo, cal=cal, model=mdims, stage_params=params, itemsize=itemsize, wire=wire)
    runs = []
    p = cfg.parallel
    for epoch in range(first_epoch, first_epoch + orders):
        costs = _way_costs(geo, dims) if p.chunk_order == "degree" else None
        order = position_order(dims.chunks_per_way, epoch=epoch, seed=cfg.train.seed, mode=p.chunk_order, costs=costs)
        compress = getattr(p, "compress", "none")
        runs.append(simulate(all_tasks(order, recompute=p.recompute, compress=compress, **kw), machine))
    last = runs[-1]
    layer = sum(b for *_, b, label in last.messages if label == "layer")
    graph_b = sum(b for *_, b, label in last.messages if label == "graph")
    weight = sum(2 * (dims.ways - 1) * n * itemsize for n in params)
    ref = cal.memory["runs"][f"C{cal.memory['chunk_counts'][-1]}"]
    fdtype = torch.float64 if itemsize == 8 else torch.float32
    probe = stage_saved_per_row(model, 0, cfg.model.layers, graph.num_features, fdtype)
    ratio = ref["saved_for_backward"] / max(probe * ref["rows"], 1.0)
    copies = 2 if (p.history_period > 1 or p.history_momentum > 0) else 1
    hist_dtype = getattr(p, "history_dtype", "auto")  # a narrower history store (parallel.history_dtype)
    hist_itemsize = itemsize if hist_dtype == "auto" else torch.empty((), dtype=getattr(torch, hist_dtype)).itemsize
    mem = [
        predict_memory(
            dims=dims, rank=r, geo=geo, cal=cal, model=model, num_features=graph.num_features, itemsize=itemsize,
            stage_params=params, total_params=sum(params), saved_ratio=ratio, history_copies=copies,
            history_itemsize=hist_itemsize,
        ).peak
        for r in range(dims.world_size)
    ]  # fmt: skip
    return Prediction(
        candidate=cand,
        strategy=strategy_name(cand.ways, cand.stages),
        epoch_time_s=statistics.mean(r.makespan for r in runs),
        compute_s=statistics.mean(w.compute for r in runs for w in r.workers),
        comm_s=statistics.mean(w.comm for r in runs for w in r.workers),
        overhead_s=statistics.mean(w.overhead for r in runs for w in r.workers),
        bubble_s=statistics.mean(w.bubble for r in runs for w in r.workers),
        peak_memory_bytes=tuple(mem),
        bytes={"layer": layer, "graph": graph_b, "weight": weight},
        fits_memory=memory_budget is None or max(mem) <= memory_budget,
        nodes=nodes,
        bytes_by_link=analytic_by_link(
            plan,
            dims,
            node_of,
            agg_widths=mdims.agg_widths,
            agg_grad=mdims.agg_grad,
            boundary_widths=mdims.boundary_widths,
            h0_width=mdims.h0_width,
            stage_weight_numels=params,
            bytes_per_elem=itemsize,
            compress=getattr(p, "compress", "none"),
        ),  # fmt: skip
    )


def _way_costs(geo, dims: ParallelDims) -> torch.Tensor:
    """In-edges per local chunk index summed over ways (the ``degree`` chunk order's key, as the layout's)."""
    P = dims.chunks_per_way
    return torch.tensor([sum(geo.edges[w * P + j] for w in range(dims.ways)) for j in range(P)], dtype=torch.float64)


def rank(preds: list[Prediction]) -> list[Prediction]:
    """Fastest first among those within the memory budget, then the others (fastest first)."""
    return sorted(preds, key=lambda p: (not p.fits_memory, p.epoch_time_s, p.candidate.chunks))


def cost_vector(cfg: ExperimentConfig, cal: Calibration) -> list[float]:
    ref = cal.memory["runs"][f"C{cal.memory['chunk_counts'][-1]}"]
    return layer_costs(cal, cfg.model.layers, ref["rows"], ref["edges"])
