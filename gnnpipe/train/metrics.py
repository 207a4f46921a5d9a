"""Accuracy on the train/valid/test masks (micro-F1 for multi-label data)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Accuracies", "accuracies"]


@dataclass(frozen=True)
class Accuracies:
    train: float
    val: float
    test: float


def _score(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    if int(mask.sum()) == 0:
        return float("nan")
    lg, yy = logits[mask], y[mask]
    if yy.dim() == 2:  # multi-label: micro-F1 with threshold 0 on logits
        pred = lg > 0
        truth = yy > 0.5
        tp = (pred & truth).sum().item()
        denom = pred.sum().item() + truth.sum().item()
        return 2.0 * tp / denom if denom else 1.0
    return (lg.argmax(-1) == yy).to(torch.float64).mean().item()


def accuracies(
    logits: torch.Tensor, y: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> Accuracies:
    """logits: [N, C]; y: [N] or [N, C]; masks: (train, val, test) bool [N]."""
    return Accuracies(*(_score(logits, y, m) for m in masks))
