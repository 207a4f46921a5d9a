"""gnnpipe plan: the simulator against hand-computed cases, bytes equal to the profiler's, candidates, the CLI.

No test here depends on this machine's speed: calibrations are made up (written into a temporary cache), and
the simulator is checked against literal timelines.
"""

from __future__ import annotations

import json

import pytest

from gnnpipe.cli import main
from gnnpipe.config import ConfigError, config_from_dict, config_to_dict, load_config
from gnnpipe.data import load_graph
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.plan.costs import (
    Calibration,
    Fit,
    Link,
    Sharing,
    cache_root,
    calibration_key,
    parse_link,
    save_calibration,
    worker_threads,
)
from gnnpipe.plan.report import parse_memory, parse_projection, projected_calibration
from gnnpipe.plan.search import Candidate, candidates, machine_of, predict, rank
from gnnpipe.plan.simulate import Machine, Task, simulate
from gnnpipe.plan.workload import all_tasks, geometry
from gnnpipe.profile.volumes import volume_of
from gnnpipe.train.run import plan_for

INF = float("inf")
FREE = Machine(capacity=INF, latency_s=0.0, bandwidth=1e30)


# ---------------------------------------------------------------------------------------------- simulator
def _pipeline_2x2(stage: int, f: float = 1.0, b: float = 2.0) -> list[Task]:
    """A 2-stage pipeline with 2 chunks: forward f, backward b per chunk and stage, as worker_schedule orders it."""
    t: list[Task] = []
    for c in range(2):
        if stage == 1:
            t.append(Task("recv", peers=(0,), bubble=c == 0))
        t.append(Task("compute", f))
        if stage == 0:
            t.append(Task("send", peers=(1,), nbytes=(100,)))
    for c in range(2):
        if stage == 0:
            t.append(Task("recv", peers=(1,), bubble=c == 0))
        t.append(Task("compute", b))
        if stage == 1:
            t.append(Task("send", peers=(0,), nbytes=(100,)))
    t.append(Task("flush"))
    t.append(Task("collective", peers=(0, 1), bubble=True))
    return t


def test_two_stage_two_chunk_pipeline_makespan_and_bubble():
    # stage 0: F0 [0,1] F1 [1,2], waits for B1 until 5, B1 [5,7], B0 [7,9]
    # stage 1: waits 1, F0 [1,2] F1 [2,3] B1 [3,5] B0 [5,7], waits at the epoch end until 9
    r = simulate([_pipeline_2x2(0), _pipeline_2x2(1)], FREE)
    assert r.makespan == pytest.approx(9.0)
    for w in r.workers:
        assert w.compute == pytest.approx(6.0) and w.bubble == pytest.approx(3.0) and w.comm == pytest.approx(0.0)
    assert [m[:3] for m in r.messages] == [(0, 1, 100)] * 2 + [(1, 0, 100)] * 2


def test_link_latency_and_bandwidth_delay_the_receiver():
    m = Machine(capacity=INF, latency_s=0.5, bandwidth=100.0)  # 100 bytes: 0.5 + 1.0 s
    r = simulate([_pipeline_2x2(0), _pipeline_2x2(1)], m)
    # stage 0 sends F0 at 1 (arrives 2.5); the send of F1 at 2 first retires F0's (until 2.5): arrives 4.
    # stage 1: F0 [2.5, 3.5], F1 [4, 5], B1 [5, 7] (arrives 8.5), B0 [7, 9] (arrives 10.5);
    # stage 0: B1 [8.5, 10.5], B0 [10.5, 12.5]
    assert r.makespan == pytest.approx(12.5)
    assert r.workers[0].comm == pytest.approx(0.5) and r.workers[0].bubble == pytest.approx(8.5 - 2.5)


def test_workers_share_the_cores():
    two = [[Task("compute", 1.0)], [Task("compute", 1.0)]]
    shared = simulate(two, Machine(capacity=1.0, latency_s=0.0, bandwidth=1.0))
    assert [w.end for w in shared.workers] == pytest.approx([2.0, 2.0])
    uneven = [[Task("compute", 1.0)], [Task("compute", 3.0)]]  # both at half speed until 2, then full
    r = simulate(uneven, Machine(capacity=1.0, latency_s=0.0, bandwidth=1.0))
    assert [w.end for w in r.workers] == pytest.approx([2.0, 4.0])


def test_exchange_and_collective_wait_for_the_slowest():
    m = Machine(capacity=INF, latency_s=0.25, bandwidth=1e30)
    w0 = [Task("compute", 1.0), Task("exchange", peers=(1,), nbytes=(8,)), Task("collective", 0.5, peers=(0, 1))]
    w1 = [Task("compute", 3.0), Task("exchange", peers=(0,), nbytes=(8,)), Task("collective", 0.5, peers=(0, 1))]
    r = simulate([w0, w1], m)
    # w1 posts at 3, its rows reach w0 at 3.25; both leave the exchange at 3.25, the collective ends at 3.75
    assert [w.end for w in r.workers] == pytest.approx([3.75, 3.75])
    assert r.workers[0].comm == pytest.approx(2.25 + 0.5)


def test_message_cpu_is_booked_as_overhead_and_shares_the_cores():
    # w0: 1 s of message CPU then an exchange; w1: 1 s of compute then the exchange. One core: both run at half
    # speed until 2; the exchange (latency 0.5) ends at 2.5 for both.
    m = Machine(capacity=1.0, latency_s=0.5, bandwidth=1e30)
    w0 = [Task("compute", 1.0, overhead=True), Task("exchange", peers=(1,), nbytes=(8,))]
    w1 = [Task("compute", 1.0), Task("exchange", peers=(0,), nbytes=(8,))]
    r = simulate([w0, w1], m)
    assert [w.end for w in r.workers] == pytest.approx([2.5, 2.5])
    assert (r.workers[0].overhead, r.workers[0].compute, r.workers[0].comm) == pytest.approx((2.0, 0.0, 0.5))
    assert (r.workers[1].overhead, r.workers[1].compute) == pytest.approx((0.0, 2.0))


def test_a_worker_woken_by_a_message_waits_for_a_core_only_when_every_core_is_busy():
    # one core; w1 blocks on w0's message (arrives at 0.5) while w0 and w2 compute: it runs again 0.25 later.
    # 0-0.75: w0, w2 at 1/2; then all three at 1/3 until w0 ends (2.625), then w1, w2 at 1/2 until 3.375.
    w0 = [Task("send", peers=(1,), nbytes=(8,)), Task("compute", 1.0)]
    w1 = [Task("recv", peers=(0,)), Task("compute", 1.0)]
    w2 = [Task("compute", 2.0)]
    link = dict(latency_s=0.5, bandwidth=1e30)
    plain = simulate([w0, w1, w2], Machine(capacity=1.0, **link))
    woken = simulate([w0, w1, w2], Machine(capacity=1.0, wake_s=0.25, **link))
    assert plain.workers[1].comm == pytest.approx(0.5) and woken.workers[1].comm == pytest.approx(0.75)
    assert [w.end for w in woken.workers] == pytest.approx([2.625, 3.375, 4.0])
    free = simulate([w0, w1, w2], Machine(capacity=INF, wake_s=0.25, **link))  # a core each: no wait
    assert free.workers[1].comm == pytest.approx(0.5)
    there = [Task("compute", 1.0), Task("recv", peers=(0,)), Task("compute", 1.0)]  # never blocked: no wait
    r = simulate([w0, there, w2], Machine(capacity=1.0, wake_s=0.25, **link))
    assert r.workers[1].comm == pytest.approx(0.0)
    sync = [[Task("collective", 0.5, peers=(0, 1))], [Task("compute", 1.0), Task("collective", 0.5, peers=(0, 1))]]
    r = simulate(sync + [[Task("compute", 5.0)]], Machine(capacity=1.0, wake_s=0.25, **link))
    assert r.workers[0].end == pytest.approx(r.workers[1].end)  # a collective's time is measured as a whole


def test_a_receive_without_a_send_is_a_deadlock():
    with pytest.raises(RuntimeError, match="deadlock"):
        simulate([[Task("recv", peers=(1,))], [Task("recv", peers=(0,))]], FREE)


# ---------------------------------------------------------------------------------------------- planner
SBM = {"name": "sbm", "num_nodes": 240, "avg_degree": 6.0, "num_features": 12, "num_classes": 3}


def _cfg(**par) -> object:
    return config_from_dict(
        {
            "dataset": SBM,
            "model": {"arch": "gcnii", "layers": 4, "hidden": 8, "dropout": 0.5},
            "parallel": {"partition": "contiguous", **par},
            "train": {"epochs": 3, "eval_every": 3, "warmup_epochs": 1},
            "log": {"progress": False},
        }
    )


def _mem_run(rows: int, edges: int) -> dict:
    return {
        "graph_structures": 30 * edges, "features_labels": rows * (12 * 4 + 11), "weights_optimizer": 10_000,
        "history": 0, "history_grad": 0, "in_flight_max": 0, "eval_buffers": rows * 8 * 4 * 4,
        "saved_for_backward": rows * 4 * 8 * 10, "dropout_masks": rows * 100, "baseline_rss": 300_000_000,
        "peak_growth_load": 2_000_000, "end_growth_load": 1_000_000, "peak_growth_setup": 1_500_000,
        "end_growth_setup": 1_500_000, "peak_growth_train": 3_000_000, "end_growth_train": 2_000_000,
        "peak_growth_eval": 2_500_000, "end_growth_eval": 2_000_000, "rows": rows, "edges": edges,
    }  # fmt: skip


def fake_calibration(cfg, workers: int, *, encode_cost: float = 1e-6) -> Calibration:
    """A made-up calibration of ``cfg`` at the threads ``workers`` workers get, keyed as a real one."""
    layer = Fit(1e-4, 1e-6, 1e-7)
    fits = {op: layer for op in ("pre", "agg", "agg_b", "pre_b", "loss", "loss_b")}
    fits |= {"encode": Fit(1e-4, encode_cost, 0.0), "encode_b": Fit(1e-4, encode_cost, 0.0)}
    threads = worker_threads(cfg.train.device, workers)
    return Calibration(
        key=calibration_key(cfg, cfg.train.device, threads), device="cpu", threads=threads, cores=2, fits=fits,
        step_per_elem_s=1e-8, epoch_overhead_s=1e-3, link=Link(1e-4, 1e9, "probe"),
        memory={"runs": {"C2": _mem_run(240, 1440), "C8": _mem_run(240, 1440)}, "chunk_counts": [2, 8]},
    )  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))
    return cache_root()


@pytest.mark.parametrize(
    "wsc, compress, order", [((2, 1, 2), "none", "random"), ((1, 2, 4), "none", "degree"),
                             ((2, 2, 4), "none", "fixed"), ((1, 4, 8), "none", "random"),
                             ((2, 2, 4), "int8", "random"), ((1, 2, 4), "bf16", "random")],
)  # fmt: skip
def test_predicted_bytes_equal_the_profiler(cache, wsc, compress, order):
    cfg = _cfg(compress=compress, chunk_order=order)
    graph = load_graph(cfg.dataset)
    w, s, c = wsc
    cand = Candidate(w, s, c, tuple(ParallelDims.from_config(_cfg(ways=w, stages=s, chunks=c)).layer_counts), "equal")
    pred = predict(cfg, graph, cand, fake_calibration(cfg, w * s), orders=1)
    ccfg = cand.config(cfg)
    vol = volume_of(ccfg, graph, plan_for(ccfg, graph))
    assert pred.bytes == {"layer": vol.layer, "graph": vol.graph, "weight": vol.weight}
    assert len(pred.peak_memory_bytes) == w * s and pred.epoch_time_s > 0
    assert pred.compute_s > 0 and pred.bubble_s >= 0


def _tasks_2x1(cfg, graph, cal):
    """Every task of graph parallelism on 2 ways (2 chunks) with ``cal``."""
    import dataclasses

    from gnnpipe.models.deep import build_model

    dims = ParallelDims(2, 1, 2, (4,))
    plan = plan_for(dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, ways=2, chunks=2)), graph)
    model = build_model(cfg.model, graph.num_features, graph.num_classes, seed=0)
    params = [sum(q.numel() for q in model.parameters())]
    kw = dict(dims=dims, geo=geometry(plan), cal=cal, model=model.dims(), stage_params=params, itemsize=4)
    return all_tasks([0], **kw), params[0], geometry(plan)


def test_sharing_scales_compute_adds_message_cpu_and_times_the_all_reduce(cache):
    """With a measured Sharing for 2 workers: every compute task takes the factor, every halo exchange gets the
    CPU of its sent and received message ends, the weight all-reduce costs what the probe's all-reduce over the
    2 workers measured (the ring over all of them), all as the Sharing's numbers say."""
    import dataclasses

    cfg = _cfg()
    graph = load_graph(cfg.dataset)
    cal = fake_calibration(cfg, 2)
    sharing = Sharing(2, compute_factor=1.5, msg_cpu=Fit(1e-3, 1e-9, 0.0), allreduce=Fit(2e-3, 4e-9, 0.0))
    plain, params, geo = _tasks_2x1(cfg, graph, cal)
    shared, _, _ = _tasks_2x1(cfg, graph, dataclasses.replace(cal, sharing={"2": sharing}))
    for w in range(2):
        base = [t for t in plain[w] if t.kind == "compute" and t.label != "step"]
        comp = [t for t in shared[w] if t.kind == "compute" and not t.overhead and t.label != "step"]
        assert [t.seconds for t in comp] == pytest.approx([1.5 * t.seconds for t in base])
        over = [t for t in shared[w] if t.overhead]
        exchanges = [t for t in shared[w] if t.kind == "exchange"]
        assert len(exchanges) == 2 * 4 and len(over) == 2 * len(exchanges) and not any(t.overhead for t in plain[w])
        # forward halo of layer 0: this way sends halo_fwd[w][1 - w] rows and receives halo_fwd[1 - w][w] (width 8)
        sent, got = geo.halo_fwd[w][1 - w] * 8 * 4, geo.halo_fwd[1 - w][w] * 8 * 4
        i = shared[w].index(exchanges[0])
        assert shared[w][i - 1].seconds == pytest.approx(1e-3 + 1e-9 * sent)
        assert shared[w][i + 1].seconds == pytest.approx(1e-3 + 1e-9 * got)
        (weights,) = [t for t in shared[w] if t.label == "weight"]
        assert weights.seconds == pytest.approx(2e-3 + 4e-9 * params * 4)
    assert sharing.ring_step() == pytest.approx((1e-3, 4e-9))
    again = Calibration.from_dict(json.loads(json.dumps(dataclasses.replace(cal, sharing={"2": sharing}).to_dict())))
    assert again.shared_by(2) == sharing and again.shared_by(4) is None


def test_a_probed_link_latency_loses_the_message_cpu_the_overhead_tasks_book():
    """A ping-pong's one-way time holds both message ends' CPU; with a sharing probe that CPU is booked as
    overhead tasks, so the wire keeps only the rest (never below 0); a given link is the wire as it is."""
    import dataclasses

    cfg = _cfg()
    cal = dataclasses.replace(fake_calibration(cfg, 2), link=Link(5e-4, 1e9, "probe"))
    sharing = Sharing(2, compute_factor=1.0, msg_cpu=Fit(1e-4, 0.0, 0.0), allreduce=Fit(1e-3, 0.0, 0.0))
    assert machine_of(cal, 2).latency_s == pytest.approx(5e-4)  # no probe for 2 workers: nothing booked twice
    shared = dataclasses.replace(cal, sharing={"2": sharing})
    assert machine_of(shared, 2).latency_s == pytest.approx(5e-4 - 2e-4)
    assert machine_of(shared, 4).latency_s == pytest.approx(5e-4)  # measured for 2, not for 4
    heavy = dataclasses.replace(shared, sharing={"2": dataclasses.replace(sharing, msg_cpu=Fit(4e-4, 0.0, 0.0))})
    assert machine_of(heavy, 2).latency_s == 0.0
    given = dataclasses.replace(shared, link=Link(5e-4, 1e9, "given"))
    assert machine_of(given, 2).latency_s == pytest.approx(5e-4)
    assert machine_of(shared, 2).wake_s == 0.0 and machine_of(cal, 2).wake_s == 0.0
    slow = dataclasses.replace(shared, sharing={"2": dataclasses.replace(sharing, wake_s=3e-3)})
    assert machine_of(slow, 2).wake_s == 3e-3
    assert Calibration.from_dict(json.loads(json.dumps(slow.to_dict()))).shared_by(2).wake_s == 3e-3
    # the probe's pair timed messages between steps: those times replace the idle ping-pong's, less the CPU
    paired = dataclasses.replace(sharing, one_way_s=6e-4, exchange_s=1.5e-3, pair_bytes=10**5)  # 1e-4 s on the wire
    m = machine_of(dataclasses.replace(cal, sharing={"2": paired}), 2)
    assert (m.latency_s, m.exchange_latency_s) == pytest.approx((6e-4 - 3e-4, 1.5e-3 - 3e-4))
    assert m.transfer_s(0, exchange=True) == pytest.approx(1.2e-3) and m.transfer_s(0) == pytest.approx(3e-4)
    assert machine_of(dataclasses.replace(given, sharing={"2": paired}), 2).exchange_latency_s is None


def test_candidates_respect_world_size_layers_and_memory(cache):
    cfg = _cfg()
    graph = load_graph(cfg.dataset)
    cal = fake_calibration(cfg, 4)
    cands = candidates(cfg, 4, num_nodes=graph.num_nodes, cost=[1.0, 1.0, 1.0, 5.0])
    assert cands and all(c.ways * c.stages == 4 for c in cands)
    assert all(c.stages <= 4 and c.chunks % c.ways == 0 and sum(c.stage_split) == 4 for c in cands)
    assert {(c.ways, c.stages) for c in cands} == {(4, 1), (2, 2), (1, 4)}
    # the min-max split of the costs [1, 1, 1, 5], found by trying every cut: 2 stages -> (3, 1) (stage costs 3
    # and 5, against the equal split's 2 and 6); 4 stages have one split only (1, 1, 1, 1), equal to the equal one
    costs = [1.0, 1.0, 1.0, 5.0]
    best = min(range(1, 4), key=lambda k: max(sum(costs[:k]), sum(costs[k:])))
    assert (best, 4 - best) == (3, 1)
    assert {(c.ways, c.stages, c.stage_split) for c in cands if c.split == "cost"} == {(2, 2, (best, 4 - best))}
    assert {(c.ways, c.stages, c.stage_split) for c in cands if c.split == "equal"} == {
        (4, 1, (4,)), (2, 2, (2, 2)), (1, 4, (1, 1, 1, 1))}  # fmt: skip
    assert not any(c.stages > 4 for c in candidates(_cfg(), 8, num_nodes=240, cost=None))  # 4 layers: S <= 4
    preds = [predict(cfg, graph, c, cal, orders=1) for c in cands[:3]]
    budget = sorted(max(p.peak_memory_bytes) for p in preds)[0]
    limited = rank([predict(cfg, graph, c, cal, orders=1, memory_budget=budget) for c in cands[:3]])
    assert all(max(p.peak_memory_bytes) <= budget for p in limited if p.fits_memory)
    assert [p.fits_memory for p in limited] == sorted((p.fits_memory for p in limited), reverse=True)


def test_stage_split_cost_reads_the_calibration(cache):
    cfg = _cfg(stages=2, chunks=4, stage_split="cost")
    with pytest.raises(ConfigError, match="stage_split: cost needs a calibration"):
        ParallelDims.from_config(cfg)
    save_calibration(cache, fake_calibration(cfg, 2, encode_cost=1e-3))  # an expensive encoder on layer 0
    assert ParallelDims.from_config(cfg).layer_counts == (1, 3)
    assert ParallelDims.from_config(_cfg(stages=2, chunks=4)).layer_counts == (2, 2)


def test_parsers():
    link = parse_link("25GB/s,5us")
    assert link.bandwidth == 25e9 and link.latency_s == pytest.approx(5e-6)
    assert parse_link("1 GiB/s, 2 ms").bandwidth == 2**30
    assert parse_memory("24GB") == 24 * 10**9 and parse_memory("16GiB") == 16 * 2**30
    proj = parse_projection("8xGPU,link=300GB/s,2us,layer_ms=1.5")
    assert (proj.workers, proj.device, proj.layer_ms, proj.link.bandwidth) == (8, "GPU", 1.5, 300e9)
    for bad, fn in (
        ("fast", parse_link),
        ("0GB/s,1us", parse_link),
        ("lots", parse_memory),
        ("8xGPU", parse_projection),
    ):
        with pytest.raises(ConfigError):
            fn(bad)


def test_projection_scales_to_the_given_layer_time():
    cfg = _cfg()
    cal = fake_calibration(cfg, 2)
    proj = projected_calibration(cal, parse_projection("8xGPU,link=300GB/s,2us,layer_ms=2"), cfg)
    from gnnpipe.plan.costs import layer_costs

    costs = layer_costs(proj, 4, 240, 1440)
    assert sum(costs) / 4 == pytest.approx(2e-3) and proj.threads == 0 and proj.link.bandwidth == 300e9


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def config_file(tmp_path, cache):
    from gnnpipe.config import config_to_yaml

    cfg = _cfg()
    path = tmp_path / "base.yaml"
    path.write_text(config_to_yaml(cfg))
    save_calibration(cache, fake_calibration(load_config(path), 2))
    return path


@pytest.mark.parametrize(
    "extra, needle",
    [
        ([], "--workers"),
        (["--workers", "0"], "--workers"),
        (["--workers", "2", "--memory", "lots"], "--memory"),
        (["--workers", "2", "--link", "fast"], "--link"),
        (["--workers", "2", "--project", "8 GPUs"], "--project"),
        (["--workers", "2", "--json", "/nonexistent/dir/p.json"], "--json"),
        (["--workers", "2", "--bogus"], "--bogus"),
        (["--workers", "2", "--nodes", "0"], "--nodes"),
        (["--workers", "2", "--nodes", "3"], "--nodes"),
        (["--workers", "4", "--nodes", "2", "--link", "200xbit"], "--link"),
        (["--workers", "4", "--nodes", "2", "--link", "0mbit,1us"], "--link"),
    ],
)
def test_plan_argument_errors_are_one_line_exit_2(config_file, capsys, extra, needle):
    try:
        rc = main(["plan", "--config", str(config_file), *extra])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_plan_json_and_written_config(config_file, tmp_path, capsys):
    out_json, out_cfg = tmp_path / "plan.json", tmp_path / "best.yaml"
    rc = main(["plan", "--config", str(config_file), "--workers", "2", "--memory", "64GB", "--json", str(out_json),
               "--write", str(out_cfg), "--project", "8xGPU,link=300GB/s,2us,layer_ms=1"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "compute" in text and "bubble" in text and "PROJECTION (not measured): 8 x GPU" in text
    assert "2 workers sharing the machine (probed): compute x" in text
    data = json.loads(out_json.read_text())
    keys = {"ways", "stages", "chunks", "stage_split", "epoch_time_s", "peak_memory_bytes", "bytes"}
    assert data["candidates"] and all(keys <= set(c) for c in data["candidates"])
    assert all(set(c["bytes"]) == {"layer", "graph", "weight"} for c in data["candidates"])
    assert (
        data["best"] == data["candidates"][0]
        and data["meta"]["projections"][0]["best"]["ways"] * data["meta"]["projections"][0]["best"]["stages"] == 8
    )
    chosen = load_config(out_cfg)
    dims = ParallelDims.from_config(chosen)
    assert dims.world_size == 2
    best = data["best"]
    assert (dims.ways, dims.stages, dims.chunks, list(dims.layer_counts)) == (
        best["ways"], best["stages"], best["chunks"], best["stage_split"],
    )  # fmt: skip
    base = load_config(config_file)
    assert (chosen.dataset, chosen.model, chosen.train) == (base.dataset, base.model, base.train)


def test_calibration_times_every_op_and_is_cached(cache):
    """A real (tiny) calibration: every op of every layer gets a fit, the memory reports are kept, and a second
    call reuses the cached file (nothing about the measured values is asserted: they depend on the machine)."""
    from gnnpipe.plan.calibrate import calibrate

    cfg = _cfg()
    graph = load_graph(cfg.dataset)
    link = Link(1e-5, 1e9, "given")
    cal = calibrate(cfg, graph, threads=1, cores=2, cache=cache, link=link, chunk_counts=(2, 4), epochs=1)
    want = {f"{op}@{layer}" for op in ("pre", "agg", "agg_b", "pre_b") for layer in range(4)}
    assert want | {"encode", "encode_b", "loss", "loss_b"} <= set(cal.fits)
    assert all(f.a >= 0 and f.per_row >= 0 and f.per_edge >= 0 for f in cal.fits.values())
    assert set(cal.memory["runs"]) == {"C2", "C4"} and cal.memory["runs"]["C4"]["rows"] == graph.num_nodes
    assert "peak_growth_train" in cal.memory["runs"]["C2"] and cal.link == link
    again = calibrate(cfg, graph, threads=1, cores=2, cache=cache, link=link, chunk_counts=(2, 4), epochs=1)
    assert again == cal


def test_sharing_probe_runs_on_two_workers():
    """The real probe on 2 gloo workers: every figure is measured and in range (values depend on the machine)."""
    from gnnpipe.plan.sharing import probe_sharing

    s = probe_sharing(2, 1, rows=256, width=8, reps=4)
    assert s.workers == 2 and s.compute_factor >= 1.0 and s.wake_s >= 0.0
    assert 0 < s.one_way_s < 0.1 and 0 < s.exchange_s < 0.1
    assert s.msg_cpu.a >= 0 and s.msg_cpu.per_row >= 0 and s.allreduce.a > 0


# ---------------------------------------------------------------------------------------------- several nodes
def test_messages_between_nodes_share_the_nodes_link_as_a_token_bucket():
    """Ranks 0 and 1 (node 0) send 1000 B each to ranks 2 and 3 (node 1) at once: the one link at 1000 B/s
    serves them one after the other; a burst of 1000 B lets the first through at once; rank 0 to rank 1 stays
    on the node (the local link only)."""
    from gnnpipe.plan.simulate import Wire

    def tasks(intra: bool) -> list[list[Task]]:
        if intra:
            return [[Task("send", peers=(1,), nbytes=(1000,))], [Task("recv", peers=(0,))], [], []]
        sends = [[Task("send", peers=(2 + r,), nbytes=(1000,))] for r in range(2)]
        return sends + [[Task("recv", peers=(0,))], [Task("recv", peers=(1,))]]

    for burst, want in ((0.0, [1.0, 2.0]), (1000.0, [0.0, 1.0])):
        wire = Wire((0, 0, 1, 1), latency_s=0.5, bandwidth=1000.0, burst=burst)
        res = simulate(tasks(False), Machine(INF, 0.0, 1e30, wire=wire))
        assert [res.workers[2].end, res.workers[3].end] == pytest.approx([w + 0.5 for w in want]), burst
    res = simulate(tasks(True), Machine(INF, 0.0, 1e30, wire=Wire((0, 0, 1, 1), 0.5, 1000.0)))
    assert res.workers[1].end == pytest.approx(0.0)


def _predict(cfg, graph, w, s, c, placement="stages", *, nodes=2, link="1GB/s,0us", cal=None):
    counts = tuple(ParallelDims.from_config(_cfg(ways=w, stages=s, chunks=c)).layer_counts)
    cand = Candidate(w, s, c, counts, "equal", placement)
    return predict(cfg, graph, cand, cal or fake_calibration(cfg, w * s), orders=1, nodes=nodes, inter=parse_link(link))


def test_inter_node_bytes_by_placement_follow_the_formulas(cache):
    """2 nodes x 2 workers, GCNII (h0 travels with h), hidden 8, float32. Hybrid 2x2: placement stages keeps
    stage boundaries in a node (halos and the all-reduce cross), placement ways the reverse; a 4-stage pipeline
    crosses at 1 of 3 boundaries: 2 N (8 + 8) 4 bytes."""
    cfg = _cfg()
    graph = load_graph(cfg.dataset)
    n = graph.num_nodes
    by_stages, by_ways = _predict(cfg, graph, 2, 2, 8, "stages"), _predict(cfg, graph, 2, 2, 8, "ways")
    assert by_stages.bytes == by_ways.bytes and by_stages.bytes["graph"] > 0 and by_stages.bytes["weight"] > 0
    for kind, total in by_stages.bytes.items():
        assert by_stages.bytes_by_link[kind] == ({"intra": total, "inter": 0} if kind == "layer" else
                                                 {"intra": 0, "inter": total}), kind  # fmt: skip
        assert by_ways.bytes_by_link[kind] == ({"intra": 0, "inter": total} if kind == "layer" else
                                               {"intra": total, "inter": 0}), kind  # fmt: skip
    assert by_ways.inter_node_bytes == 2 * n * (8 + 8) * 4 == by_ways.bytes["layer"]
    pipe = _predict(cfg, graph, 1, 4, 8)
    assert pipe.bytes_by_link["layer"] == {"intra": 2 * 2 * n * 16 * 4, "inter": 2 * n * 16 * 4}
    assert pipe.to_dict()["inter_node_bytes"] == 2 * n * 16 * 4 and pipe.to_dict()["placement"] == "stages"
    one = _predict(cfg, graph, 1, 4, 8, nodes=1)
    assert one.inter_node_bytes == 0 and one.to_dict()["nodes"] == 1
    # the inter-node link is what costs: on a slow one the placement that crosses more is slower
    slow = [_predict(cfg, graph, 2, 2, 8, pl, link="2MB/s,100us") for pl in ("stages", "ways")]
    more = max(slow, key=lambda p: p.inter_node_bytes)
    assert more.epoch_time_s > min(slow, key=lambda p: p.inter_node_bytes).epoch_time_s


def test_slow_inter_node_link_makes_the_planner_prefer_the_pipeline(cache):
    """SBM (no good cut: METIS leaves most edges of 4 ways cut), 4 workers on 2 nodes: on a fast link graph
    parallelism beats every pipeline (no bubble); on a slow one the pipeline beats it by 2x, as it sends far
    fewer bytes across. Hybrids come in both placements."""
    from gnnpipe.plan.planner import plan

    d = config_to_dict(_cfg(partition="metis"))
    d["model"]["layers"] = 16  # deep: graph parallelism's halo bytes grow with the layers, the pipeline's do not
    d["dataset"]["avg_degree"] = 12.0
    cfg = config_from_dict(d)
    graph = load_graph(cfg.dataset)
    cal = fake_calibration(cfg, 4)
    fast = plan(cfg, graph, 4, cal, nodes=2, inter=parse_link("100GB/s,1us"))
    slow = plan(cfg, graph, 4, cal, nodes=2, inter=parse_link("2mbit,1ms"))
    assert {(p.strategy, p.candidate.placement) for p in fast} >= {("hybrid", "stages"), ("hybrid", "ways")}

    def first(preds, strategy):
        return next(p for p in preds if p.strategy == strategy)  # preds are ranked: the best of its kind

    assert first(fast, "graph").epoch_time_s < first(fast, "pipeline").epoch_time_s, [
        (p.strategy, p.epoch_time_s) for p in fast
    ]
    assert first(slow, "pipeline").epoch_time_s < 0.5 * first(slow, "graph").epoch_time_s, [
        (p.strategy, p.candidate.placement, p.epoch_time_s) for p in slow
    ]
    assert first(slow, "graph").inter_node_bytes > 2 * first(slow, "pipeline").inter_node_bytes > 0
    # first: a hybrid whose ways share a node (halos inside, one boundary across) or the pipeline
    assert (slow[0].strategy, slow[0].candidate.placement) in {("hybrid", "ways"), ("pipeline", "stages")}
    one = plan(cfg, graph, 4, cal)  # one node: placements are not candidates
    assert {p.candidate.placement for p in one} == {"stages"} and all(p.inter_node_bytes == 0 for p in one)


def test_link_rates_in_bits_and_an_optional_latency_and_burst():
    assert parse_link("200mbit").bandwidth == 25e6 and parse_link("200mbit").latency_s == 0
    link = parse_link("1gbit,50us,256KiB")
    assert (link.bandwidth, link.latency_s, link.burst) == (125e6, pytest.approx(50e-6), 256 * 1024)
    assert parse_link("10Gbit/s, 2ms").bandwidth == 1.25e9 and parse_link("25MB/s,50us").bandwidth == 25e6


def test_predict_run_for_the_bench(config_file, cache):
    """The planner's prediction of one configuration on a described cluster, from Python (bench_network)."""
    from gnnpipe.plan.planner import predict_run

    out = predict_run(config_file, ["parallel.stages=2", "parallel.chunks=4"], nodes=2, link="200mbit,100us")
    n = load_graph(_cfg().dataset).num_nodes
    assert (out["ways"], out["stages"], out["chunks"], out["nodes"], out["placement"]) == (1, 2, 4, 2, "stages")
    assert out["inter_node_bytes"] == out["bytes"]["layer"] == 2 * n * 16 * 4 and out["epoch_time_s"] > 0
    fast = predict_run(config_file, ["parallel.stages=2", "parallel.chunks=4"], nodes=2, link="100gbit")
    assert fast["epoch_time_s"] < out["epoch_time_s"]
    with pytest.raises(ConfigError, match="--nodes 3"):
        predict_run(config_file, ["parallel.stages=2", "parallel.chunks=4"], nodes=3)
