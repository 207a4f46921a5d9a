"""Accuracy on the train/valid/test masks (micro-F1 for multi-label data)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Accuracies", "accuracies", "score_counts", "from_counts"]


@dataclass(frozen=True)
class Accuracies:
    """Score per split in [0, 1]: accuracy, or micro-F1 for multi-label data; NaN for a split with no rows."""

    train: float
    val: float
    test: float


def score_counts(
    logits: torch.Tensor, y: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Summable scores of some rows: [3 splits, (numerator, denominator, rows)] float64.

    Single-label: (correct, rows, rows). Multi-label micro-F1: (2 tp, predicted + true positives, rows). Counts of
    disjoint row sets add up, so chunks (or workers) can score their rows and sum (:func:`from_counts`).
    """
    out = torch.zeros(3, 3, dtype=torch.float64)
    for i, mask in enumerate(masks):
        lg, yy = logits[mask], y[mask]
        if yy.dim() == 2:  # multi-label: micro-F1 with threshold 0 on logits
            pred, truth = lg > 0, yy > 0.5
            out[i, 0] = 2.0 * float((pred & truth).sum())
            out[i, 1] = float(pred.sum() + truth.sum())
        else:
            out[i, 0] = float((lg.argmax(-1) == yy).sum())
            out[i, 1] = float(yy.numel())
        out[i, 2] = float(yy.shape[0])
    return out


def from_counts(counts: torch.Tensor) -> Accuracies:
    """Accuracies from summed :func:`score_counts` (NaN for an empty split; F1 of no positives at all is 1)."""

    def one(num: float, den: float, rows: float) -> float:
        if rows == 0:
            return float("nan")
        return num / den if den else 1.0

    return Accuracies(*(one(*map(float, counts[i])) for i in range(3)))


def accuracies(
    logits: torch.Tensor, y: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> Accuracies:
    """logits: [N, C]; y: [N] or [N, C]; masks: (train, val, test) bool [N]."""
    return from_counts(score_counts(logits, y, masks))
