"""The epoch schedule is data: checked literally on small cases and by invariants on many."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.schedule import Op, eval_schedule, format_schedule, position_order, worker_schedule


def dims(ways=1, stages=3, chunks=3, counts=None) -> ParallelDims:
    return ParallelDims(ways, stages, chunks, tuple(counts or [1] * stages))


def test_middle_stage_schedule_literal():
    acts = [str(a) for a in worker_schedule([2, 0], dims=dims(chunks=2), stage=1)]
    assert acts == [
        "recv_act(0:2)", "pre(0:2 L1)", "agg(0:2 L1)", "send_act(0:2)",
        "recv_act(1:0)", "pre(1:0 L1)", "agg(1:0 L1)", "send_act(1:0)",
        "recv_grad(1:0)", "agg_b(1:0 L1)", "pre_b(1:0 L1)", "send_grad(1:0)",
        "recv_grad(0:2)", "agg_b(0:2 L1)", "pre_b(0:2 L1)", "send_grad(0:2)",
        "reduce_loss", "step",
    ]  # fmt: skip


def test_hybrid_first_stage_with_recompute_literal():
    d = ParallelDims(2, 2, 2, (2, 1))
    acts = [str(a) for a in worker_schedule([0], dims=d, stage=0, recompute=True)]
    assert acts == [
        "encode(0:0)", "pre(0:0 L0)", "halo(0:0 L0)", "agg(0:0 L0)", "pre(0:0 L1)", "halo(0:0 L1)", "agg(0:0 L1)",
        "send_act(0:0)",
        "recv_grad(0:0)", "recompute(0:0)", "agg_b(0:0 L1)", "halo_b(0:0 L1)", "pre_b(0:0 L1)",
        "agg_b(0:0 L0)", "halo_b(0:0 L0)", "pre_b(0:0 L0)", "encode_b(0:0)",
        "reduce_loss", "allreduce", "step",
    ]  # fmt: skip


def test_single_stage_has_no_stage_transfers():
    ops = [a.op for a in worker_schedule([0], dims=dims(stages=1, chunks=1), stage=0)]
    assert ops == [
        Op.ENCODE,
        Op.PRE,
        Op.AGG,
        Op.LOSS,
        Op.LOSS_B,
        Op.AGG_B,
        Op.PRE_B,
        Op.ENCODE_B,
        Op.REDUCE_LOSS,
        Op.STEP,
    ]


def test_eval_schedule_computes_every_z_before_any_aggregation():
    acts = eval_schedule(3, dims=ParallelDims(2, 2, 6, (1, 1)), stage=1)
    ops = [str(a) for a in acts]
    assert ops[:3] == ["eval_recv(c0)", "eval_recv(c1)", "eval_recv(c2)"]
    assert ops[3:9] == ["eval_pre(c0 L1)", "eval_halo(c0 L1)", "eval_pre(c1 L1)", "eval_halo(c1 L1)",
                        "eval_pre(c2 L1)", "eval_halo(c2 L1)"]  # fmt: skip
    assert ops[9:] == ["eval_agg(c0 L1)", "eval_agg(c1 L1)", "eval_agg(c2 L1)", "eval_head(c0)", "eval_head(c1)",
                       "eval_head(c2)", "eval_reduce"]  # fmt: skip


def test_format_schedule_has_a_line_per_chunk_phase():
    text = format_schedule(worker_schedule([1, 0], dims=dims(stages=2, chunks=2), stage=0))
    lines = text.splitlines()
    assert lines[0].startswith("F pos   0 chunk   1: encode pre0 agg0 send_act")
    assert lines[2].startswith("B pos   1 chunk   0: recv_grad agg_b0 pre_b0 encode_b")
    assert lines[-1] == "epoch end: reduce_loss step"


@given(st.integers(1, 12), st.integers(0, 50), st.integers(0, 5))
def test_random_order_is_a_seeded_permutation(n, epoch, seed):
    a = position_order(n, epoch=epoch, seed=seed, mode="random")
    assert sorted(a) == list(range(n))
    assert a == position_order(n, epoch=epoch, seed=seed, mode="random")  # no communication needed


def test_random_order_changes_between_epochs_and_fixed_does_not():
    orders = {tuple(position_order(8, epoch=e, seed=1, mode="random")) for e in range(10)}
    assert len(orders) > 5
    assert all(position_order(8, epoch=e, seed=1, mode="fixed") == list(range(8)) for e in range(3))


def test_degree_order_is_high_degree_first():
    assert position_order(4, epoch=0, seed=0, mode="degree", costs=torch.tensor([5, 9, 1, 9])) == [1, 3, 0, 2]


@given(
    st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True),
    st.integers(1, 4),
    st.integers(1, 2),
    st.booleans(),
)
def test_schedule_invariants(order, stages, ways, recompute):
    d = ParallelDims(ways, stages, 8 * ways, tuple([2] * stages))
    for s in range(stages):
        acts = worker_schedule(order, dims=d, stage=s, recompute=recompute)
        lo, hi = d.layer_range(s)
        fwd = [a.chunk for a in acts if a.op == Op.PRE and a.layer == lo]
        bwd = [a.chunk for a in acts if a.op == Op.PRE_B and a.layer == lo]
        assert fwd == order and bwd == order[::-1]  # backward in reverse order
        for i, a in enumerate(acts):
            if a.op in (Op.PRE, Op.PRE_B):  # every layer of every chunk, with a halo step iff ways > 1
                nxt = acts[i + 1] if a.op == Op.PRE else acts[i - 1]
                assert nxt.op in ((Op.HALO, Op.HALO_B) if ways > 1 else (Op.AGG, Op.AGG_B))
            if a.op == Op.SEND_ACT:  # a chunk leaves only after its last layer
                assert acts[i - 1] == type(a)(Op.AGG, a.pos, a.chunk, hi - 1)
            if a.op == Op.RECOMPUTE:
                assert acts[i + 1].op in (Op.AGG_B, Op.LOSS_B) and acts[i + 1].chunk == a.chunk
        assert sum(a.op == Op.RECOMPUTE for a in acts) == (len(order) if recompute else 0)
        assert acts[-1].op == Op.STEP and (Op.ALLREDUCE in [a.op for a in acts]) == (ways > 1)
