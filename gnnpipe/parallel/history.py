"""Historical embeddings and cross-chunk gradient buffers of one stage (DESIGN §3).

Per layer ``l`` the stage keeps three full-graph buffers ``[N, d_l]``:
- ``Z[l]``: the latest aggregation inputs this worker has seen (own rows when computed, other ways' halo
  rows when received). Rows of chunks processed earlier in this epoch are *fresh*.
- ``H[l]``: what *historical* reads return. With ``history_period == 1`` and no momentum this is ``Z[l]``
  itself (a row not yet recomputed this epoch still holds last epoch's value: no copy needed). Otherwise it
  is a separate snapshot refreshed every ``period`` epochs as ``H = m H + (1 - m) Z`` (momentum ``m``).
- ``G[l]``: gradient pushed along fresh reads into rows whose own backward has not run yet; cleared every
  epoch.

Two verbs, as in pyg_autoscale's history: :meth:`pull` (rows for an aggregation) and :meth:`push` (gradient).
"""

from __future__ import annotations

import torch

__all__ = ["History"]


class History:
    def __init__(self, num_nodes: int, widths: list[int], *, period: int, momentum: float, dtype, device):
        self.period, self.momentum = period, momentum
        self.Z = [torch.zeros(num_nodes, d, dtype=dtype, device=device) for d in widths]
        self.separate = period > 1 or momentum > 0
        self.H = [z.clone() for z in self.Z] if self.separate else self.Z
        self.G = [torch.zeros_like(z) for z in self.Z]

    def write(self, layer: int, rows: torch.Tensor | slice, values: torch.Tensor) -> None:
        """Store freshly computed (or received) aggregation inputs."""
        self.Z[layer][rows] = values

    def pull(self, layer: int, ids: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` for an aggregation: ``Z`` where ``fresh`` else the historical ``H``. [len(ids), d]."""
        if not self.separate:
            return self.Z[layer][ids]
        return torch.where(fresh[:, None], self.Z[layer][ids], self.H[layer][ids])

    def push(self, layer: int, ids: torch.Tensor, grad: torch.Tensor) -> None:
        """Accumulate gradient for rows ``ids`` (their chunk's backward adds it to its own)."""
        self.G[layer].index_add_(0, ids, grad)

    def pending(self, layer: int, rows: slice) -> torch.Tensor:
        return self.G[layer][rows]

    def end_epoch(self, epoch: int) -> None:
        for G in self.G:
            G.zero_()
        if self.separate and (epoch + 1) % self.period == 0:
            for H, Z in zip(self.H, self.Z, strict=True):
                H.mul_(self.momentum).add_(Z, alpha=1.0 - self.momentum)

    def nbytes(self) -> dict[str, int]:
        """Bytes held, by buffer kind (H counted only when it is a separate snapshot)."""
        size = sum(z.numel() * z.element_size() for z in self.Z)
        return {"activations": size, "history": size if self.separate else 0, "gradients": size}
