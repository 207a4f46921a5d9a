"""Historical embeddings and cross-chunk gradient buffers of one stage (DESIGN §3).

Per layer ``l`` the stage keeps full-graph buffers ``[N, d_l]``:
- ``Z[l]``: the latest aggregation inputs this worker has seen (own rows when computed, other ways' halo
  rows when received). Rows of chunks processed earlier in this epoch are *fresh*.
- ``H[l]``: what *historical* reads return. With ``history_period == 1`` and no momentum this is ``Z[l]``
  itself (a row not yet recomputed this epoch still holds last epoch's value: no copy needed). Otherwise it
  is a separate snapshot refreshed every ``period`` epochs as ``H = m H + (1 - m) Z`` (momentum ``m``).
- ``G[l]``: gradient sent along fresh reads into rows whose own backward has not run yet; allocated at the
  first gradient of an epoch and freed at its end, so it costs memory only during the backward.

Verbs, as pyg_autoscale's ``History``: :meth:`push` stores rows, :meth:`pull` reads rows; for the gradient
buffer :meth:`add_grad` accumulates and :meth:`grad_of` reads what has arrived for some rows.
"""

from __future__ import annotations

import torch

__all__ = ["History"]


class History:
    def __init__(
        self, num_nodes: int, widths: list[int], *, period: int, momentum: float, dtype, device, grad_rows=None
    ):
        """``num_nodes`` rows of history, ``grad_rows`` (default the same) of gradient buffer, per layer."""
        self.period, self.momentum = period, momentum
        self.widths = list(widths)
        self.grad_rows = num_nodes if grad_rows is None else grad_rows
        self.Z = [torch.zeros(num_nodes, d, dtype=dtype, device=device) for d in widths]
        self.separate = period > 1 or momentum > 0
        self.H = [z.clone() for z in self.Z] if self.separate else self.Z
        self.G: list[torch.Tensor | None] = [None for _ in widths]
        self.grad_bytes_max = 0  # largest bytes of gradient buffers held at once (0: never needed)

    def push(self, layer: int, rows: torch.Tensor | slice, values: torch.Tensor) -> None:
        """Store freshly computed (or received) aggregation inputs of ``rows``."""
        self.Z[layer][rows] = values

    def pull(self, layer: int, rows: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        """Rows for an aggregation: the latest ``Z`` where ``fresh`` else the historical ``H``. [len(rows), d]."""
        if not self.separate:
            return self.Z[layer][rows]
        return torch.where(fresh[:, None], self.Z[layer][rows], self.H[layer][rows])

    def add_grad(self, layer: int, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Accumulate gradient for ``rows`` (their chunk's backward adds it to its own)."""
        if rows.numel() == 0:
            return
        if self.G[layer] is None:
            z = self.Z[layer]
            self.G[layer] = torch.zeros(self.grad_rows, z.shape[1], dtype=z.dtype, device=z.device)
            held = sum(g.numel() * g.element_size() for g in self.G if g is not None)
            self.grad_bytes_max = max(self.grad_bytes_max, held)
        self.G[layer].index_add_(0, rows, grad)

    def grad_of(self, layer: int, rows: torch.Tensor | slice) -> torch.Tensor | None:
        """The gradient accumulated so far for ``rows`` (None: none arrived this epoch)."""
        g = self.G[layer]
        return None if g is None else g[rows]

    def end_epoch(self, epoch: int) -> None:
        self.G = [None for _ in self.widths]
        if self.separate and (epoch + 1) % self.period == 0:
            for H, Z in zip(self.H, self.Z, strict=True):
                H.mul_(self.momentum).add_(Z, alpha=1.0 - self.momentum)

    def nbytes(self) -> dict[str, int]:
        """Bytes held, by buffer kind: ``history`` (Z, and H when it is a separate snapshot) and the gradient
        buffers at their largest so far (up to one [N, d] per layer, during the backward only)."""
        size = sum(z.numel() * z.element_size() for z in self.Z)
        return {"history": size * (2 if self.separate else 1), "history_grad": self.grad_bytes_max}
