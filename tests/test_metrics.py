"""Accuracy (single-label) and micro-F1 (multi-label) on hand-made examples."""

from __future__ import annotations

import math

import pytest
import torch

from gnnpipe.train.metrics import Accuracies, accuracies


def _masks(n: int, train: list[int], val: list[int], test: list[int]):
    out = []
    for idx in (train, val, test):
        m = torch.zeros(n, dtype=torch.bool)
        m[idx] = True
        out.append(m)
    return tuple(out)


def test_accuracy_hand_made():
    logits = torch.tensor(
        [
            [2.0, 1.0, 0.0],  # pred 0
            [0.0, 3.0, 1.0],  # pred 1
            [0.0, 0.0, 5.0],  # pred 2
            [1.0, 0.0, 0.0],  # pred 0
            [0.0, 1.0, 0.0],  # pred 1
            [0.0, 0.0, 1.0],  # pred 2
        ]
    )
    y = torch.tensor([0, 1, 0, 0, 2, 2])
    # train {0,1,2}: right, right, wrong -> 2/3; val {3,4}: right, wrong -> 1/2; test {5}: right -> 1
    acc = accuracies(logits, y, _masks(6, [0, 1, 2], [3, 4], [5]))
    assert acc == Accuracies(train=pytest.approx(2 / 3), val=0.5, test=1.0)


def test_accuracy_ignores_rows_outside_the_mask():
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, -1, 1])  # row 1 is unlabelled and in no split
    acc = accuracies(logits, y, _masks(3, [0], [2], [0, 2]))
    assert (acc.train, acc.val, acc.test) == (1.0, 1.0, 1.0)


def test_empty_mask_is_nan():
    logits = torch.tensor([[1.0, 0.0]])
    acc = accuracies(logits, torch.tensor([0]), _masks(1, [0], [], [0]))
    assert acc.train == 1.0 and math.isnan(acc.val) and acc.test == 1.0


def test_multilabel_micro_f1_hand_made():
    # prediction = logit > 0
    logits = torch.tensor(
        [
            [1.0, -1.0, 2.0],  # pred {0, 2}
            [-1.0, 1.0, 1.0],  # pred {1, 2}
            [-1.0, -1.0, -1.0],  # pred {}
            [3.0, 3.0, -3.0],  # pred {0, 1}
        ]
    )
    y = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # truth {0}
            [0.0, 1.0, 1.0],  # truth {1, 2}
            [1.0, 0.0, 0.0],  # truth {0}
            [0.0, 0.0, 1.0],  # truth {2}
        ]
    )
    # rows {0,1,2}: tp = 1 + 2 + 0 = 3, predicted = 2 + 2 + 0 = 4, true = 1 + 2 + 1 = 4 -> F1 = 6 / 8
    # row {3}: tp 0, predicted 2, true 1 -> F1 = 0
    # row {1}: exact -> F1 = 1
    acc = accuracies(logits, y, _masks(4, [0, 1, 2], [3], [1]))
    assert acc == Accuracies(train=0.75, val=0.0, test=1.0)


def test_multilabel_micro_f1_equals_the_formula_with_precision_and_recall():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 6, generator=g)
    y = (torch.rand(50, 6, generator=g) < 0.3).float()
    mask = torch.ones(50, dtype=torch.bool)
    pred, truth = logits > 0, y > 0.5
    tp = (pred & truth).sum().item()
    precision, recall = tp / pred.sum().item(), tp / truth.sum().item()
    f1 = accuracies(logits, y, (mask, mask, mask)).train
    assert f1 == pytest.approx(2 * precision * recall / (precision + recall))


def test_multilabel_nothing_predicted_nothing_true_is_perfect():
    logits = -torch.ones(2, 3)
    y = torch.zeros(2, 3)
    mask = torch.ones(2, dtype=torch.bool)
    assert accuracies(logits, y, (mask, mask, mask)).test == 1.0
