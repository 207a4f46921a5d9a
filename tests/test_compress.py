"""parallel.compress on 4 gloo workers: measured bytes == analytic for every setting and strategy, the byte
ratios of the acceptance (int8 >= 3.5x, bf16 2x on layer- and graph-level traffic), every message a receiver
decodes within the codec's error bound of what its sender encoded, reproducible runs, and compressed runs that
differ from the exact one by no more than the codec's bound allows. One spawned group runs every configuration.

With ``compress: none`` the engine is the exact run; tests/test_engine.py compares that with the reference.
"""

from __future__ import annotations

import pytest
import torch
from dist_workers import run_engine_configs

from gnnpipe.parallel.spawn import run_workers

EPOCHS = 2
SBM = {"name": "sbm", "num_nodes": 400, "avg_degree": 8.0, "num_features": 24, "num_classes": 4, "seed": 3}
SETTINGS = ("none", "bf16", "fp16", "int8")
STRATEGIES = {"pipeline": (1, 4, 8), "graph": (4, 1, 4), "hybrid": (2, 2, 8)}


def cfg_dict(strategy: str, compress: str, arch: str = "gcnii", dtype: str = "float32") -> dict:
    ways, stages, chunks = STRATEGIES[strategy]
    return {
        "dataset": SBM,
        "model": {"arch": arch, "layers": 8, "hidden": 32, "dropout": 0.1},
        "parallel": {"ways": ways, "stages": stages, "chunks": chunks, "compress": compress},
        "train": {"dtype": dtype, "epochs": EPOCHS, "seed": 5},
    }


CONFIGS = (
    [cfg_dict(s, c) for s in STRATEGIES for c in SETTINGS]
    + [cfg_dict("pipeline", "int8"), cfg_dict("hybrid", "int8")]  # the same runs again: reproducible
    + [cfg_dict("graph", c, arch="sage") for c in ("none", "int8")]  # widths of z: hidden, then the classes
    + [cfg_dict("hybrid", c, dtype="float64") for c in ("none", "bf16", "int8")]  # a float64 run compresses too
)


@pytest.fixture(scope="module")
def world4(tmp_path_factory):
    import os

    old = os.environ.get("GNNPIPE_CACHE")
    os.environ["GNNPIPE_CACHE"] = str(tmp_path_factory.mktemp("plans"))
    try:
        per_rank = [r.value for r in run_workers(run_engine_configs, 4, CONFIGS, EPOCHS, False, True, timeout_s=600)]
    finally:
        if old is None:
            os.environ.pop("GNNPIPE_CACHE", None)
        else:
            os.environ["GNNPIPE_CACHE"] = old
    return [[per_rank[r][i] for r in range(4)] for i in range(len(CONFIGS))]


def result(world4, d: dict) -> dict:
    return world4[CONFIGS.index(d)][0]


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=lambda i: "{}-{}-{}".format(
    CONFIGS[i]["model"]["arch"], CONFIGS[i]["train"]["dtype"], "W{ways}S{stages}C{chunks}-{compress}".format(
        **CONFIGS[i]["parallel"])))  # fmt: skip
def test_measured_bytes_equal_analytic_for_every_setting(world4, i):
    for res in world4[i]:
        assert res["bytes"]["measured"] == res["bytes"]["analytic"], (CONFIGS[i]["parallel"], res["bytes"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_compression_cuts_layer_and_graph_bytes(world4, strategy):
    """int8 >= 3.5x and bf16/fp16 exactly 2x fewer layer- and graph-level bytes; weights are not compressed."""
    base = result(world4, cfg_dict(strategy, "none"))["bytes"]["measured"]
    kinds = [k for k in ("layer", "graph") if base[k] > 0]
    assert kinds == {"pipeline": ["layer"], "graph": ["graph"], "hybrid": ["layer", "graph"]}[strategy]
    for how, least in (("bf16", 2.0), ("fp16", 2.0), ("int8", 3.5)):
        got = result(world4, cfg_dict(strategy, how))["bytes"]["measured"]
        assert got["weight"] == base["weight"]
        for k in kinds:
            assert base[k] / got[k] >= least, (strategy, how, k, base[k], got[k])
            if how != "int8":
                assert base[k] == 2 * got[k]
    d64 = result(world4, cfg_dict("hybrid", "none", dtype="float64"))["bytes"]["measured"]
    i64 = result(world4, cfg_dict("hybrid", "int8", dtype="float64"))["bytes"]["measured"]
    assert d64["layer"] / i64["layer"] >= 7.0 and d64["graph"] / i64["graph"] >= 7.0


@pytest.mark.parametrize("strategy", ["pipeline", "hybrid"])
def test_int8_runs_are_reproducible(world4, strategy):
    """Stochastic rounding is seeded from (seed, epoch, sender rank, message): the same config twice gives
    bitwise the same losses, weights and accuracy on every worker."""
    d = cfg_dict(strategy, "int8")
    first, second = [i for i, c in enumerate(CONFIGS) if c == d]
    for a, b in zip(world4[first], world4[second], strict=True):
        assert a["losses"] == b["losses"]
        assert all((a["params"][n] == b["params"][n]).all() for n in a["params"])
        assert a["acc"] == b["acc"]


# The codec's bound (parallel/codec.py) on one decoded element y of a sent element x, for a row of largest
# magnitude m: bf16 rounds to nearest with 8 significant bits, |y - x| <= 2^-8 |x|; fp16 with 11, |y - x| <=
# 2^-11 |x| plus half its subnormal step 2^-25 (values below 6e-8 flush to 0: up to 2^-24); int8 is one step
# of the row scale s = m / 127 rounded up to bfloat16, |y - x| < s <= m / 127 (1 + 2^-7). RELATIVE: that bound
# over |x| (int8: over the row's largest magnitude).
RELATIVE = {"none": 0.0, "bf16": 2.0**-8, "fp16": 2.0**-11, "int8": (1 + 2.0**-7) / 127}


def codec_bound(x: torch.Tensor, how: str) -> torch.Tensor:
    """Per element: the largest |decoded - sent| the codec allows for the rows ``x: [R, d]``."""
    if how == "int8":
        return (x.abs().amax(dim=1, keepdim=True) * RELATIVE[how]).expand_as(x)
    return x.abs() * RELATIVE[how] + (2.0**-24 if how == "fp16" else 0.0)


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=lambda i: "{}-{}".format(CONFIGS[i]["train"]["dtype"],
    "W{ways}S{stages}C{chunks}-{compress}".format(**CONFIGS[i]["parallel"])))  # fmt: skip
def test_every_message_decodes_within_the_codec_bound_of_what_was_sent(world4, i):
    """Pairs up, by (sender, receiver, kind) and in order, the rows each sender's training transfers were given
    with the rows its receiver decoded: exactly equal with ``none``, within the codec's bound otherwise, and
    (compressed) not all equal -- a receiver that decoded zeros, garbage or another message fails here."""
    how = CONFIGS[i]["parallel"]["compress"]
    pairs = changed = 0
    for sender, res in enumerate(world4[i]):
        for (receiver, kind), sent in res["messages"]["sent"].items():
            got = world4[i][receiver]["messages"]["received"][(sender, kind)]
            assert len(got) == len(sent) > 0, (sender, receiver, kind, len(got), len(sent))
            for x, y in zip(sent, got, strict=True):
                assert y.shape == x.shape and y.dtype == x.dtype
                err = (y - x).abs()
                assert (err <= codec_bound(x, how)).all(), (how, sender, receiver, kind, float(err.max()))
                changed += int(not torch.equal(x, y))
            pairs += 1
    received = sum(len(res["messages"]["received"]) for res in world4[i])
    assert pairs == received > 0  # every receiver's messages were matched with a sender's
    assert (changed == 0) if how == "none" else (changed > 0), (how, changed)


def loss_tolerance(strategy: str, how: str) -> float:
    """Relative loss difference the codec's bound allows, to first order: a forward path passes through
    ``hops`` compressed messages (S - 1 stage boundaries, and with W > 1 one halo exchange per layer), each
    perturbing an element by at most RELATIVE (int8: of its row's largest magnitude); the layers are taken not
    to amplify a relative error (GCNII's residuals keep them near 1), and the loss moves by at most the relative
    change of its input. The backward's compressed gradients add the same once more: 2 hops per message."""
    ways, stages, _ = STRATEGIES[strategy]
    hops = (stages - 1) + (8 if ways > 1 else 0)  # 8 layers
    return 2 * hops * RELATIVE[how]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_compressed_runs_differ_from_the_exact_one_within_the_codec_bound(world4, strategy):
    """Not equal any more (that is the point), but every worker agrees and the losses move by no more than
    :func:`loss_tolerance`."""
    exact = result(world4, cfg_dict(strategy, "none"))["losses"]
    for how in ("bf16", "fp16", "int8"):
        runs = world4[CONFIGS.index(cfg_dict(strategy, how))]
        assert all(r["losses"] == runs[0]["losses"] for r in runs)  # the loss is all-reduced: one value
        assert runs[0]["losses"] != exact, (strategy, how)  # a codec that sends the exact rows fails here
        assert runs[0]["params"].keys() == result(world4, cfg_dict(strategy, "none"))["params"].keys()
        assert any(not torch.equal(q, result(world4, cfg_dict(strategy, "none"))["params"][n])
                   for n, q in runs[0]["params"].items())  # fmt: skip
        tol = loss_tolerance(strategy, how)
        for a, b in zip(runs[0]["losses"], exact, strict=True):
            assert abs(a - b) <= tol * abs(b), (strategy, how, a, b, tol)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_evaluation_traffic_is_never_compressed(world4, strategy):
    """Evaluation is exact: it sends the same uncompressed bytes whatever the setting (DESIGN §4)."""
    sent = {how: [r["eval_bytes"] for r in world4[CONFIGS.index(cfg_dict(strategy, how))]] for how in SETTINGS}
    assert sum(sent["none"]) > 0
    assert all(sent[how] == sent["none"] for how in SETTINGS), sent
