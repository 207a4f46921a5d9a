"""The distributed engine equals the reference oracle (and, where exact, single-device training).

One spawned group of gloo workers per world size runs many configurations (process start-up is the
expensive part). Every comparison is float64 with dropout 0, to 1e-6 relative: losses of every epoch, the
weight gradients of the last epoch (after the cross-way all-reduce) and the weights after the last Adam
step. Measured bytes per epoch must equal the analytic formulas exactly.
"""

from __future__ import annotations

import os

import pytest
import torch
from dist_workers import run_engine_configs

from gnnpipe.config import config_from_dict
from gnnpipe.data import load_graph
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.schedule import COMM_OPS, Action, Op, eval_schedule, worker_schedule
from gnnpipe.parallel.spawn import run_workers
from gnnpipe.reference import Reference
from gnnpipe.train.executor import SingleDeviceExecutor
from gnnpipe.train.run import plan_for

EPOCHS = 2
ARCHS = ("gcn", "sage", "gcnii", "resgcn")
CITESEER = {"name": "citeseer"}
SBM = {"name": "sbm", "num_nodes": 300, "avg_degree": 8.0, "num_features": 24, "num_classes": 4, "seed": 3}


def cfg_dict(arch: str, ways: int, stages: int, chunks: int, dataset=CITESEER, dropout=0.0, **parallel) -> dict:
    return {
        "dataset": dataset,
        "model": {"arch": arch, "layers": 8, "hidden": 16, "dropout": dropout},
        "parallel": {"ways": ways, "stages": stages, "chunks": chunks, **parallel},
        "train": {"dtype": "float64", "epochs": EPOCHS, "seed": 5},
    }


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


_GRAPHS: dict = {}


def graph_of(cfg):
    """Load each test graph once per session (loading CiteSeer costs seconds)."""
    key = repr(cfg.dataset)
    if key not in _GRAPHS:
        _GRAPHS[key] = load_graph(cfg.dataset)
    return _GRAPHS[key]


def assert_equal_to_reference(d: dict, results: list[dict], *, single_device: bool = False) -> None:
    """``results``: one entry per worker for config ``d``. Compares with the reference (and single device)."""
    cfg = config_from_dict(d)
    graph = graph_of(cfg)
    oracles = [Reference(cfg, graph, plan_for(cfg, graph))]
    if single_device:
        sd_cfg = config_from_dict({**d, "parallel": {"ways": 1, "stages": 1, "chunks": 1}})
        oracles.append(SingleDeviceExecutor(sd_cfg, graph))
    for oracle in oracles:
        oracle.record_grads = True
        losses = [oracle.train_epoch(e).loss for e in range(EPOCHS)]
        name = type(oracle).__name__
        for r, res in enumerate(results):
            for a, b in zip(res["losses"], losses, strict=True):
                assert abs(a - b) <= 1e-6 * abs(b), f"{name} rank {r}: loss {a} != {b} ({d['parallel']})"
            ref_params = dict(oracle.model.named_parameters())
            for n, q in res["params"].items():
                assert rel(q, ref_params[n].detach()) < 1e-6, f"{name} rank {r}: weight {n} differs"
            if isinstance(oracle, Reference):
                for n, g in res["grads"].items():
                    assert rel(g, oracle.last_grads[n]) < 1e-6, f"rank {r}: gradient {n} differs ({d['parallel']})"
    # every worker holds a slice: together they cover every weight exactly once per way
    names = set().union(*(res["params"] for res in results))
    assert names == {n for n, _ in oracles[0].model.named_parameters()}
    for res in results:
        assert res["bytes"]["measured"] == res["bytes"]["analytic"], res["bytes"]
        if "by_link" in res:  # split by link (intra/inter-node), measured == analytic and summing to the kind
            link = res["by_link"]
            assert link["measured"] == link["analytic"], (d["parallel"], link)
            for kind, total in res["bytes"]["measured"].items():
                assert link["measured"][kind]["intra"] + link["measured"][kind]["inter"] == total, (kind, link)
            if len(set(link["nodes"])) == 1:
                assert all(v["inter"] == 0 for v in link["measured"].values())
    # evaluation through the stages is exact: single-device inference with the engine's final weights
    sd = SingleDeviceExecutor(config_from_dict({**d, "parallel": {"ways": 1, "stages": 1, "chunks": 1}}), graph)
    merged = {n: q for res in results for n, q in res["params"].items()}
    with torch.no_grad():
        for n, q in sd.model.named_parameters():
            q.copy_(merged[n])
    want = sd.evaluate()
    for r, res in enumerate(results):
        for split in ("train", "val", "test"):
            assert abs(getattr(res["acc"], split) - getattr(want, split)) <= 1e-12, (r, split, res["acc"], want)


@pytest.fixture(scope="module", autouse=True)
def plan_cache(tmp_path_factory):
    old = os.environ.get("GNNPIPE_CACHE")
    os.environ["GNNPIPE_CACHE"] = str(tmp_path_factory.mktemp("plans"))
    yield
    if old is None:
        os.environ.pop("GNNPIPE_CACHE", None)
    else:
        os.environ["GNNPIPE_CACHE"] = old


def run_group(world: int, configs: list[dict], record_actions: bool = False, nodes: int = 1) -> list[list[dict]]:
    """Results indexed [config][rank]. ``nodes``: the workers pretend to be on that many nodes (bytes by link)."""
    per_rank = [
        r.value
        for r in run_workers(run_engine_configs, world, configs, EPOCHS, record_actions, timeout_s=600, nodes=nodes)
    ]
    return [[per_rank[r][i] for r in range(world)] for i in range(len(configs))]


# ---------------------------------------------------------------------------------------------- one worker
@pytest.mark.parametrize("chunks", [4, 9, 16])
def test_single_stage_pipeline_equals_reference(chunks):
    """S = 1, W = 1 with many chunks: the engine runs in-process (no process group)."""
    from gnnpipe.parallel.comm import Comm
    from gnnpipe.parallel.dims import ParallelDims
    from gnnpipe.parallel.engine import Engine

    for recompute in (False, True):
        d = cfg_dict("gcnii", 1, 1, chunks, recompute=recompute)
        cfg = config_from_dict(d)
        graph = graph_of(cfg)
        plan = plan_for(cfg, graph)
        eng = Engine(cfg, plan.permute(graph), plan, Comm.init(ParallelDims.from_config(cfg)))
        eng.record_grads = True
        losses = [eng.train_epoch(e).loss for e in range(EPOCHS)]
        params = {n: q.detach().clone() for n, q in eng.named_stage_parameters().items()}
        zero = {"layer": 0, "graph": 0, "weight": 0}
        res = {
            "losses": losses,
            "grads": eng.last_grads,
            "params": params,
            "bytes": {"measured": eng.comm_bytes_per_epoch(), "analytic": zero},
            "acc": eng.evaluate(),
        }
        assert_equal_to_reference(d, [res])


# ---------------------------------------------------------------------------------------------- 2 workers
# Dropout 0.5: masks are keyed by (seed, epoch, site, chunk), not by worker or stage, so graph, pipeline and hybrid
# runs equal the reference (not single-device training: its one chunk draws other masks), and runs that differ
# only in the stage count equal each other (test_dropout_does_not_depend_on_the_stage_count).
DROPOUT2 = [cfg_dict("gcnii", 2, 1, 2, dropout=0.5), cfg_dict("resgcn", 1, 2, 8, dropout=0.5)]
DROPOUT2 += [cfg_dict("gcnii", 1, 2, 8, dropout=0.5), cfg_dict("gcnii", 2, 1, 8, dropout=0.5)]
DROPOUT4 = [cfg_dict("gcnii", 4, 1, 4, dropout=0.5), cfg_dict("resgcn", 1, 4, 8, dropout=0.5)]
DROPOUT4 += [cfg_dict("gcnii", 1, 4, 8, dropout=0.5), cfg_dict("gcnii", 2, 2, 8, dropout=0.5)]
WORLD2 = (
    [cfg_dict(a, 2, 1, 2, ds) for a in ARCHS for ds in (CITESEER, SBM)]  # graph parallelism
    + [cfg_dict(a, 1, 2, 1) for a in ARCHS]  # 1-chunk pipeline
    + [cfg_dict("gcnii", 1, 2, 8), cfg_dict("sage", 1, 2, 4, SBM)]  # pipeline with history
    + [cfg_dict("gcnii", 2, 1, 8), cfg_dict("resgcn", 2, 1, 8, SBM)]  # hybrid with one stage
    + [cfg_dict("gcnii", 1, 2, 8, history_period=3, chunk_order="degree", cross_chunk_grad_scale=1.0)]
    + [cfg_dict(a, 1, 2, 8, recompute=True) for a in ARCHS]  # recompute equals the run without it
    + [cfg_dict("resgcn", 2, 1, 8, SBM, recompute=True)]
    + [cfg_dict("gcnii", 1, 2, 8, warmup_exact_epochs=1), cfg_dict("gcn", 2, 1, 8, SBM, warmup_exact_epochs=1)]
    + DROPOUT2
)


# Not exact (checked against their exact twins above instead): bfloat16 history.
WORLD2_APPROX = [
    cfg_dict("gcnii", 1, 2, 8, history_dtype="bfloat16"),
    cfg_dict("gcnii", 2, 1, 8, history_dtype="bfloat16"),
    cfg_dict("gcnii", 1, 2, 8, history_dtype="bfloat16", recompute=True),
]


@pytest.fixture(scope="module")
def world2():
    return run_group(2, WORLD2 + WORLD2_APPROX)


@pytest.mark.parametrize(
    "i",
    range(len(WORLD2)),
    ids=lambda i: "{arch}-W{ways}S{stages}C{chunks}".format(arch=WORLD2[i]["model"]["arch"], **WORLD2[i]["parallel"]),
)
def test_world2_equals_reference(world2, i):
    d = WORLD2[i]
    p = d["parallel"]
    exact = p["chunks"] == p["ways"] and d["model"]["dropout"] == 0  # one position: no historical reads
    assert_equal_to_reference(d, world2[i], single_device=exact and d["dataset"] is CITESEER)


@pytest.mark.parametrize("i", range(len(WORLD2_APPROX)))
def test_bfloat16_history_halves_history_and_stays_close(world2, i):
    """``parallel.history_dtype: bfloat16`` stores the history in 2 bytes per element (here against float64,
    the model's dtype: a quarter) and trains nearly as the exact run: losses within 1e-2 relative, not equal."""
    d = WORLD2_APPROX[i]
    exact = {**d, "parallel": {k: v for k, v in d["parallel"].items() if k != "history_dtype"}}
    got, want = world2[len(WORLD2) + i], world2[WORLD2.index(exact)]
    for rank in range(2):
        assert got[rank]["memory"]["history"] * 4 == want[rank]["memory"]["history"] > 0
        for a, b in zip(got[rank]["losses"], want[rank]["losses"], strict=True):
            assert abs(a - b) <= 1e-2 * abs(b)
    assert got[0]["losses"][-1] != want[0]["losses"][-1]


# ---------------------------------------------------------------------------------------------- 3 workers
WORLD3 = [cfg_dict(a, 3, 1, 3, ds) for a in ARCHS for ds in (CITESEER, SBM)] + [cfg_dict(a, 1, 3, 1) for a in ARCHS]


@pytest.fixture(scope="module")
def world3():
    return run_group(3, WORLD3)


@pytest.mark.parametrize("i", range(len(WORLD3)))
def test_world3_equals_reference(world3, i):
    assert_equal_to_reference(WORLD3[i], world3[i], single_device=WORLD3[i]["dataset"] is CITESEER)


# ---------------------------------------------------------------------------------------------- 4 workers
WORLD4 = (
    [cfg_dict(a, 4, 1, 4, ds) for a in ARCHS for ds in (CITESEER, SBM)]
    + [cfg_dict(a, 1, 4, 1) for a in ARCHS]
    + [cfg_dict("gcnii", 1, 4, 16), cfg_dict("resgcn", 1, 4, 12, SBM)]
    + [cfg_dict(a, 2, 2, 8) for a in ARCHS]  # hybrid
    + [cfg_dict("gcnii", 1, 4, 16, recompute=True), cfg_dict("sage", 2, 2, 8, recompute=True)]
    + [cfg_dict(a, 2, 2, 8, placement="ways") for a in ("gcnii", "sage")]  # a stage's ways share a node
    + [cfg_dict("gcnii", 2, 2, 8, warmup_exact_epochs=1), cfg_dict("gcnii", 2, 2, 8, recompute=True)]
    + DROPOUT4
)


@pytest.fixture(scope="module")
def world4():
    """Run as 2 nodes x 2 workers (a fake node map): every configuration also checks bytes by link."""
    return run_group(4, WORLD4, record_actions=True, nodes=2)


@pytest.mark.parametrize("i", range(len(WORLD4)))
def test_world4_equals_reference(world4, i):
    d = WORLD4[i]
    p = d["parallel"]
    exact = p["chunks"] == p["ways"] and d["model"]["dropout"] == 0
    assert_equal_to_reference(d, world4[i], single_device=exact and d["dataset"] is CITESEER)


def test_hybrid_does_not_depend_on_stages(world2, world4):
    """Hybrid W=2 S=2 C=8 and W=2 S=1 C=8 compute the same losses (both also equal the reference above)."""
    s1 = world2[WORLD2.index(cfg_dict("gcnii", 2, 1, 8))][0]["losses"]
    s2 = world4[WORLD4.index(cfg_dict("gcnii", 2, 2, 8))][0]["losses"]
    for a, b in zip(s1, s2, strict=True):
        assert abs(a - b) <= 1e-9 * abs(b)


def test_dropout_does_not_depend_on_the_stage_count(world2, world4):
    """Dropout 0.5 (keyed masks): the same ways and chunks on 1, 2 or 4 stages compute the same losses and
    weights (each also equals the reference above), and dropout changes the run."""
    for ways, arch, runs in (
        (1, "gcnii", [world2[WORLD2.index(cfg_dict("gcnii", 1, 2, 8, dropout=0.5))],
                      world4[WORLD4.index(cfg_dict("gcnii", 1, 4, 8, dropout=0.5))]]),
        (1, "resgcn", [world2[WORLD2.index(cfg_dict("resgcn", 1, 2, 8, dropout=0.5))],
                       world4[WORLD4.index(cfg_dict("resgcn", 1, 4, 8, dropout=0.5))]]),
        (2, "gcnii", [world2[WORLD2.index(cfg_dict("gcnii", 2, 1, 8, dropout=0.5))],
                      world4[WORLD4.index(cfg_dict("gcnii", 2, 2, 8, dropout=0.5))]]),
    ):  # fmt: skip
        for a, b in zip(runs[0][0]["losses"], runs[1][0]["losses"], strict=True):
            assert abs(a - b) <= 1e-9 * abs(b), (ways, arch, a, b)
        merged = [{n: q for res in group for n, q in res["params"].items()} for group in runs]
        assert merged[0].keys() == merged[1].keys()
        for n in merged[0]:
            assert rel(merged[0][n], merged[1][n]) < 1e-9, (ways, arch, n)
    plain = world4[WORLD4.index(cfg_dict("gcnii", 2, 2, 8))][0]["losses"]
    dropped = world4[WORLD4.index(cfg_dict("gcnii", 2, 2, 8, dropout=0.5))][0]["losses"]
    assert all(abs(a - b) > 1e-6 * abs(b) for a, b in zip(plain, dropped, strict=True))


def test_placement_ways_equals_stages(world4):
    """Placement only moves ways and stages between ranks: a hybrid 2x2 with ``placement: ways`` computes the
    same losses and weights as with ``stages`` (float64), on different ranks."""
    for arch in ("gcnii", "sage"):
        by_stages = world4[WORLD4.index(cfg_dict(arch, 2, 2, 8))]
        by_ways = world4[WORLD4.index(cfg_dict(arch, 2, 2, 8, placement="ways"))]
        assert by_ways[0]["losses"] == by_stages[0]["losses"]
        # rank 1 is (way 0, stage 1) with stages, (way 1, stage 0) with ways: another slice of the weights
        assert set(by_ways[1]["params"]) == set(by_stages[2]["params"]) != set(by_stages[1]["params"])
        for r_ways, r_stages in ((1, 2), (2, 1), (3, 3)):
            for n, q in by_ways[r_ways]["params"].items():
                assert torch.equal(q, by_stages[r_stages]["params"][n]), (arch, n)


def test_bytes_by_link_on_two_nodes(world4):
    """2 nodes x 2 workers. Placement stages: a way's stages share a node, so stage boundaries stay inside it
    and halos and the all-reduce cross; placement ways: the reverse. A 4-stage pipeline crosses at 1 of its 3
    boundaries."""
    stages = world4[WORLD4.index(cfg_dict("gcnii", 2, 2, 8))][0]
    ways = world4[WORLD4.index(cfg_dict("gcnii", 2, 2, 8, placement="ways"))][0]
    pipe = world4[WORLD4.index(cfg_dict("gcnii", 1, 4, 16))][0]
    assert stages["by_link"]["nodes"] == ways["by_link"]["nodes"] == [0, 0, 1, 1]
    total = stages["bytes"]["measured"]
    assert ways["bytes"]["measured"] == total  # the same bytes, on other links
    for kind, (on_stages, on_ways) in {"layer": ("intra", "inter"), "graph": ("inter", "intra"),
                                       "weight": ("inter", "intra")}.items():  # fmt: skip
        assert total[kind] > 0
        assert stages["by_link"]["measured"][kind][on_stages] == total[kind], kind
        assert ways["by_link"]["measured"][kind][on_ways] == total[kind], kind
    layer = pipe["by_link"]["measured"]["layer"]
    assert layer["inter"] * 3 == pipe["bytes"]["measured"]["layer"] and layer["intra"] == 2 * layer["inter"]


def test_pipeline_stage_bytes_formula(world4):
    """Stage-to-stage bytes per epoch are exactly 2 (S-1) N d 8 (float64), x2 with GCNII's h0."""
    n = graph_of(config_from_dict(cfg_dict("gcn", 1, 1, 1))).num_nodes
    res = world4[WORLD4.index(cfg_dict("gcnii", 1, 4, 16))][0]
    assert res["bytes"]["measured"]["layer"] == 2 * 3 * n * 16 * 8 * 2
    assert res["bytes"]["measured"]["graph"] == 0 and res["bytes"]["measured"]["weight"] == 0


# ---------------------------------------------------------------------------------------------- lockstep
def expected_transfer(d: ParallelDims, rank: int, act: Action) -> tuple:
    """The comm.py call an action must make: (kind, ranks sent to, ranks received from)."""
    way, stage = d.coords(rank)
    everyone = tuple(range(d.world_size))
    halo_peers = tuple(r for r in d.stage_ranks(stage) if r != rank)
    prev_r = d.rank(way, stage - 1) if stage > 0 else None
    next_r = d.rank(way, stage + 1) if stage < d.stages - 1 else None
    return {
        Op.RECV_ACT: ("layer", (), (prev_r,)),
        Op.SEND_ACT: ("layer", (next_r,), ()),
        Op.RECV_GRAD: ("layer", (), (next_r,)),
        Op.SEND_GRAD: ("layer", (prev_r,), ()),
        Op.HALO: ("graph", halo_peers, halo_peers),
        Op.HALO_B: ("graph", halo_peers, halo_peers),
        Op.REDUCE_LOSS: ("control", everyone, everyone),
        Op.ALLREDUCE: ("weight", tuple(d.stage_ranks(stage)), tuple(d.stage_ranks(stage))),
        Op.EVAL_RECV: ("eval", (), (prev_r,)),
        Op.EVAL_SEND: ("eval", (next_r,), ()),
        Op.EVAL_HALO: ("eval", halo_peers, halo_peers),
        Op.EVAL_REDUCE: ("eval", everyone, everyone),
    }[act.op]


LOCKSTEP = {
    "pipeline-4-stages": cfg_dict("gcnii", 1, 4, 16),
    "hybrid-2x2": cfg_dict("gcnii", 2, 2, 8),
    "hybrid-2x2-ways": cfg_dict("gcnii", 2, 2, 8, placement="ways"),
    "pipeline-4-stages-recompute": cfg_dict("gcnii", 1, 4, 16, recompute=True),
    "hybrid-2x2-recompute": cfg_dict("gcnii", 2, 2, 8, recompute=True),
    "hybrid-2x2-warmup-exact": cfg_dict("gcnii", 2, 2, 8, warmup_exact_epochs=1),
}


@pytest.mark.parametrize("name", LOCKSTEP)
def test_lockstep_every_worker_runs_exactly_its_schedule(world4, name):
    """What each worker executed, and every transfer it made, is what ``worker_schedule`` / ``eval_schedule`` say.
    Recompute: every chunk's backward starts with one RECOMPUTE. Warm-up-exact: the first epoch runs one unit
    per way (the whole way's rows, order [0]), the next the chunks in their order."""
    d_cfg = LOCKSTEP[name]
    cfg = config_from_dict(d_cfg)
    p = cfg.parallel
    d = ParallelDims.from_config(cfg)
    positions = [1 if e < p.warmup_exact_epochs else d.chunks_per_way for e in range(EPOCHS)]
    for rank, res in enumerate(world4[WORLD4.index(d_cfg)]):
        stage = d.coords(rank)[1]
        assert [len(order) for order in res["orders"]] == positions, res["orders"]
        want = [
            a for order in res["orders"] for a in worker_schedule(order, dims=d, stage=stage, recompute=p.recompute)
        ]
        want += eval_schedule(d.chunks_per_way, dims=d, stage=stage)
        assert res["executed"] == [str(a) for a in want], f"rank {rank} ran something else than its schedule"
        transfers = [expected_transfer(d, rank, a) for a in want if a.op in COMM_OPS]
        assert [tuple(x) for x in res["comm_log"]] == transfers, f"rank {rank}: transfers differ from the schedule"
        layers = d.layer_counts[stage]
        assert sum(a.op == Op.HALO for a in want) == (sum(positions) * layers if d.ways > 1 else 0)
        assert sum(a.op == Op.RECOMPUTE for a in want) == (sum(positions) if p.recompute else 0)


# ---------------------------------------------------------------------------------------------- memory
def test_stage_saves_only_its_layers_share_for_backward(world4):
    """A stage's tensors saved for backward (autograd's pack hook, first epoch) are at most its layers' share
    of what single-device training saves, plus a stated slack: the stage's input rows (h, h0) and its head.
    With recompute a stage keeps per chunk only its input rows and each layer's aggregation result."""
    d = cfg_dict("gcnii", 1, 4, 16)
    cfg = config_from_dict(d)
    graph = graph_of(cfg)
    single = SingleDeviceExecutor(config_from_dict({**d, "parallel": {"ways": 1, "stages": 1, "chunks": 1}}), graph)
    single.train_epoch(0)
    total = single.saved_bytes["saved_for_backward"]
    n, h = graph.num_nodes, d["model"]["hidden"]
    row_bytes = n * h * 8  # one [N, hidden] float64 buffer
    dims = ParallelDims.from_config(cfg)
    plain = world4[WORLD4.index(d)]
    recomputed = world4[WORLD4.index(cfg_dict("gcnii", 1, 4, 16, recompute=True))]
    for rank in range(4):
        share = dims.layer_counts[rank] / dims.num_layers
        slack = 2 * row_bytes + n * graph.num_classes * 8 * 2  # stage input (h, h0); logits and log-softmax
        saved = plain[rank]["memory"]["saved_for_backward"]
        assert saved <= share * total + slack, (rank, saved, share * total, slack)
        kept = recomputed[rank]["memory"]["saved_for_backward"]
        assert kept <= (2 + dims.layer_counts[rank]) * row_bytes, (rank, kept)
        assert kept < saved
