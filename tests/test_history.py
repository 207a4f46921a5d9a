"""Historical embeddings: fresh vs historical reads, refresh period, momentum, gradient buffers."""

from __future__ import annotations

import torch

from gnnpipe.parallel.history import History


def make(period=1, momentum=0.0) -> History:
    return History(4, [2], period=period, momentum=momentum, dtype=torch.float64, device=torch.device("cpu"))


def test_period_one_reads_last_written_value_without_a_copy():
    h = make()
    assert h.H[0] is h.Z[0] and h.nbytes()["history"] == 4 * 2 * 8  # Z only
    h.push(0, slice(0, 2), torch.ones(2, 2))
    ids = torch.tensor([0, 3])
    assert h.pull(0, ids, torch.tensor([False, False])).tolist() == [[1, 1], [0, 0]]


def test_period_k_serves_the_snapshot_until_refresh():
    h = make(period=3)
    h.push(0, slice(0, 4), torch.full((4, 2), 5.0))
    ids = torch.tensor([1, 2])
    assert h.pull(0, ids, torch.tensor([True, False])).tolist() == [[5, 5], [0, 0]]
    h.end_epoch(0)
    h.end_epoch(1)
    assert h.pull(0, ids, torch.tensor([False, False])).tolist() == [[0, 0], [0, 0]]
    h.end_epoch(2)  # (2 + 1) % 3 == 0: refresh
    assert h.pull(0, ids, torch.tensor([False, False])).tolist() == [[5, 5], [5, 5]]


def test_momentum_smooths_the_snapshot():
    h = make(momentum=0.75)
    h.push(0, slice(0, 4), torch.full((4, 2), 4.0))
    h.end_epoch(0)
    assert h.H[0][0].tolist() == [1.0, 1.0]  # 0.75 * 0 + 0.25 * 4
    h.end_epoch(1)
    assert h.H[0][0].tolist() == [1.75, 1.75]


def test_separate_snapshot_doubles_the_history_bytes():
    assert make(period=2).nbytes()["history"] == 2 * 4 * 2 * 8


def test_added_gradient_is_held_until_the_epoch_ends():
    h = make()
    assert h.grad_of(0, slice(0, 4)) is None  # nothing allocated before the first gradient
    h.add_grad(0, torch.tensor([1, 1, 3]), torch.ones(3, 2, dtype=torch.float64))
    assert h.grad_of(0, slice(0, 4)).tolist() == [[0, 0], [2, 2], [0, 0], [1, 1]]
    h.end_epoch(0)
    assert h.grad_of(0, slice(0, 4)) is None
