"""The epoch schedule is data: checked literally on small cases."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from gnnpipe.parallel.schedule import format_schedule, position_order, worker_schedule


def test_middle_stage_schedule_literal():
    acts = [str(a) for a in worker_schedule([2, 0, 1], stage=1, num_stages=3)]
    assert acts == [
        "recv_act(0:2)", "F(0:2)", "send_act(0:2)",
        "recv_act(1:0)", "F(1:0)", "send_act(1:0)",
        "recv_act(2:1)", "F(2:1)", "send_act(2:1)",
        "recv_grad(2:1)", "B(2:1)", "send_grad(2:1)",
        "recv_grad(1:0)", "B(1:0)", "send_grad(1:0)",
        "recv_grad(0:2)", "B(0:2)", "send_grad(0:2)",
    ]  # fmt: skip


def test_edge_stages_have_no_outward_transfers():
    first = [a.op for a in worker_schedule([0, 1], stage=0, num_stages=2)]
    last = [a.op for a in worker_schedule([0, 1], stage=1, num_stages=2)]
    assert first == ["F", "send_act", "F", "send_act", "recv_grad", "B", "recv_grad", "B"]
    assert last == ["recv_act", "F", "recv_act", "F", "B", "send_grad", "B", "send_grad"]
    assert [a.op for a in worker_schedule([0], stage=0, num_stages=1)] == ["F", "B"]


def test_format_schedule():
    assert format_schedule([1, 0], 2) == "stage 0: F1 F0 B0 B1\nstage 1: F1 F0 B0 B1"


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


@given(st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True), st.integers(1, 5))
def test_backward_is_reverse_of_forward_on_every_stage(order, stages):
    for s in range(stages):
        acts = worker_schedule(order, stage=s, num_stages=stages)
        f = [a.chunk for a in acts if a.op == "F"]
        b = [a.chunk for a in acts if a.op == "B"]
        assert f == order and b == order[::-1]
        # a chunk is sent only after it is computed, received before it is computed
        for i, a in enumerate(acts):
            if a.op in ("send_act", "send_grad"):
                assert acts[i - 1].op in ("F", "B") and acts[i - 1].chunk == a.chunk
            if a.op in ("recv_act", "recv_grad"):
                assert acts[i + 1].op in ("F", "B") and acts[i + 1].chunk == a.chunk
