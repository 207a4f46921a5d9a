"""The epoch schedule as data (pure; no processes, no tensors beyond the chunk order).

One epoch (DESIGN §3, the authors' synchronous GPipe-style epoch): every way processes its chunks in this
epoch's order, forward at positions 0..P-1, then backward at positions P-1..0. A stage receives a chunk's
activations from the previous stage before its forward and sends them on after; backward mirrors it.
Positions are shared by all ways: position i of every way runs "at the same time".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gnnpipe.models.ops import keyed_generator

__all__ = ["Action", "position_order", "worker_schedule", "format_schedule"]

_ORDER_SITE = 0x0DE5  # keeps the order RNG stream apart from dropout streams with the same (seed, epoch)


def position_order(num_local: int, *, epoch: int, seed: int, mode: str, costs: torch.Tensor | None = None) -> list[int]:
    """Local chunk index processed at each position of ``epoch``.

    mode ``random``: a permutation drawn from a generator keyed by (seed, epoch) -- the same on every worker
    without communication. ``fixed``: 0..P-1 every epoch. ``degree``: by decreasing ``costs`` (e.g. in-edges of
    the chunks at that local index, summed over ways), ties by index: high-degree-first.
    """
    if mode == "random":
        g = keyed_generator(seed, epoch, _ORDER_SITE)
        return torch.randperm(num_local, generator=g).tolist()
    if mode == "fixed":
        return list(range(num_local))
    if mode == "degree":
        if costs is None or costs.numel() != num_local:
            raise ValueError("chunk_order 'degree' needs one cost per local chunk")
        return sorted(range(num_local), key=lambda j: (-float(costs[j]), j))
    raise ValueError(f"unknown chunk order {mode!r}; allowed: random, fixed, degree")


@dataclass(frozen=True)
class Action:
    """One step of a worker's epoch. ``op``: recv_act | F | send_act | recv_grad | B | send_grad."""

    op: str
    pos: int
    chunk: int  # local chunk index within the way

    def __str__(self) -> str:
        return f"{self.op}({self.pos}:{self.chunk})"


def worker_schedule(order: list[int], *, stage: int, num_stages: int) -> list[Action]:
    """The ordered actions of the worker holding ``stage`` for one epoch with chunk ``order``."""
    first, last = stage == 0, stage == num_stages - 1
    acts: list[Action] = []
    for pos, c in enumerate(order):
        if not first:
            acts.append(Action("recv_act", pos, c))
        acts.append(Action("F", pos, c))
        if not last:
            acts.append(Action("send_act", pos, c))
    for pos in reversed(range(len(order))):
        c = order[pos]
        if not last:
            acts.append(Action("recv_grad", pos, c))
        acts.append(Action("B", pos, c))
        if not first:
            acts.append(Action("send_grad", pos, c))
    return acts


def format_schedule(order: list[int], num_stages: int) -> str:
    """A table, one line per stage, of the F/B actions (communication omitted) for reading and docs."""
    lines = []
    for s in range(num_stages):
        acts = [a for a in worker_schedule(order, stage=s, num_stages=num_stages) if a.op in ("F", "B")]
        lines.append(f"stage {s}: " + " ".join(f"{a.op}{a.chunk}" for a in acts))
    return "\n".join(lines)
