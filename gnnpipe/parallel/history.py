"""Historical embeddings and cross-chunk gradient of one stage (DESIGN §3, §7).

Per layer ``l`` the stage keeps full-graph buffers ``[N, d_l]``:
- ``Z[l]``: the latest aggregation inputs this worker has seen (own rows when computed, other ways' halo
  rows when received). Rows of chunks processed earlier in this epoch are *fresh*.
- ``H[l]``: what *historical* reads return. With ``history_period == 1`` and no momentum this is ``Z[l]``
  itself (a row not yet recomputed this epoch still holds last epoch's value: no copy needed). Otherwise it
  is a separate snapshot refreshed every ``period`` epochs as ``H = m H + (1 - m) Z`` (momentum ``m``).
- ``G[l]``: a dense gradient buffer for fresh reads (:meth:`History.add_grad`, :meth:`History.grad_of`), used
  by the single-process reference, which holds every row anyway.

The engine does not hold ``G``: a :class:`GradInbox` keeps each reading chunk's aggregation gradient until
the chunks it read have pulled their share (so that memory grows during the backward exactly as the saved
activations shrink), plus the parcels other ways sent for chunks whose backward has not run yet.

Verbs, as pyg_autoscale's ``History``: :meth:`History.push` stores rows, :meth:`History.pull` reads rows.
``dtype`` (``parallel.history_dtype``) may be narrower than the compute dtype: rows are cast on push and on
pull.
"""

from __future__ import annotations

import torch

from gnnpipe.models.sparse import SparseOp

__all__ = ["GradInbox", "History", "history_dtype", "separate_snapshot"]


def separate_snapshot(period: int, momentum: float) -> bool:
    """Whether historical reads need a snapshot ``H`` apart from ``Z`` (else they read ``Z`` itself, in place)."""
    return period > 1 or momentum > 0


def history_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    """``parallel.history_dtype`` as a torch dtype (``auto``: the model's)."""
    return model_dtype if name == "auto" else getattr(torch, name)


class History:
    def __init__(
        self,
        num_nodes: int,
        widths: list[int],
        *,
        period: int,
        momentum: float,
        dtype,
        device,
        grad_rows=None,
        compute_dtype=None,
    ):
        """``num_nodes`` rows of history (stored in ``dtype``, pulled as ``compute_dtype``, default the same) and
        ``grad_rows`` (default the same) of gradient buffer, per layer."""
        self.period, self.momentum = period, momentum
        self.dtype = dtype  # storage
        self.compute_dtype = dtype if compute_dtype is None else compute_dtype
        self.widths = list(widths)
        self.grad_rows = num_nodes if grad_rows is None else grad_rows
        self.Z = [torch.zeros(num_nodes, d, dtype=dtype, device=device) for d in widths]
        self.separate = separate_snapshot(period, momentum)
        self.H = [z.clone() for z in self.Z] if self.separate else self.Z
        self.G: list[torch.Tensor | None] = [None for _ in widths]
        self.grad_bytes_max = 0  # largest bytes of gradient buffers held at once (0: never needed)

    def push(self, layer: int, rows: torch.Tensor | slice, values: torch.Tensor) -> None:
        """Store freshly computed (or received) aggregation inputs of ``rows``."""
        z = self.Z[layer]
        z[rows] = values.to(z.dtype)

    def pull(self, layer: int, rows: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        """Rows for an aggregation: the latest ``Z`` where ``fresh`` else the historical ``H``. [len(rows), d]."""
        if not self.separate:
            return self.Z[layer][rows].to(self.compute_dtype)
        return torch.where(fresh[:, None], self.Z[layer][rows], self.H[layer][rows]).to(self.compute_dtype)

    def add_grad(self, layer: int, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Accumulate gradient for ``rows`` (their chunk's backward adds it to its own)."""
        if rows.numel() == 0:
            return
        if self.G[layer] is None:
            z = self.Z[layer]
            self.G[layer] = torch.zeros(self.grad_rows, z.shape[1], dtype=self.compute_dtype, device=z.device)
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
        """Bytes held, by buffer kind: ``history`` (Z, and H when it is a separate snapshot) and the dense gradient
        buffers at their largest so far (the reference's; up to one [N, d] per layer, during the backward)."""
        size = sum(z.numel() * z.element_size() for z in self.Z)
        return {"history": size * (2 if self.separate else 1), "history_grad": self.grad_bytes_max}


class GradInbox:
    """Cross-chunk gradient of one stage waiting for the backward of the chunk it belongs to (DESIGN §3, §7).

    Two kinds of entries, per (layer, unit):
    - :meth:`keep`: a reading unit's aggregation gradient ``g(m)`` until the ``uses`` units it read fresh have
      each taken their block of ``A^T g(m)`` (:meth:`use`; the puller scales it). Only the rows that read a
      unit still to pull are kept (the others would contribute nothing), plus one zero row;
      :meth:`reaching_rows` gives, once per unit and epoch, ``A_ext^T``'s column indices renumbered into those
      kept rows (rows not kept point at the zero row), so a pull is one sparse product on the compact rows.
    - :meth:`post`: parcels ``(rows, values)`` for a unit whose backward comes later (other ways' readers'
      gradient, received with the halo), taken once by :meth:`take`.
    Everything is consumed within the epoch: :meth:`end_epoch` checks that nothing is left.
    """

    def __init__(self):
        self._kept: dict[tuple[int, int], list] = {}  # (layer, unit) -> [values, uses left]
        self._columns: dict[int, torch.Tensor | None] = {}  # unit -> renumbered A_ext^T columns (None: all rows)
        self._parcels: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.held = 0
        self.held_max = 0  # largest bytes held at once

    def _count(self, *ts: torch.Tensor | None, sign: int = 1) -> None:
        self.held += sign * sum(t.numel() * t.element_size() for t in ts if t is not None)
        self.held_max = max(self.held_max, self.held)

    def reaching_rows(
        self, unit: int, a_ext: SparseOp, n: int, waiting: list[tuple[int, int]], like: torch.Tensor
    ) -> torch.Tensor | None:
        """The rows of ``unit`` (``n`` rows, external block ``a_ext``) that read the ``waiting`` ext ranges (None:
        all of them), with ``A_ext^T``'s columns renumbered into them for this epoch (:meth:`use` returns them).
        ``Ahat >= 0``: a row reads them iff ``A_ext @ reach > 0``."""
        reach = like.new_zeros(a_ext.shape[1], 1)
        for s, e in waiting:
            reach[s:e] = 1
        rows, columns = (a_ext @ reach).flatten().nonzero().flatten(), None
        if rows.numel() == n:
            rows = None
        else:  # the rows not kept point at one zero row after the kept ones
            tcols = a_ext.t_columns(like.dtype, like.device)
            renumber = torch.full((n,), rows.numel(), dtype=tcols.dtype, device=like.device)
            renumber[rows] = torch.arange(rows.numel(), dtype=tcols.dtype, device=like.device)
            columns = renumber[tcols.long()]
        self._columns[unit] = columns
        self._count(columns)
        return rows

    def keep(self, layer: int, unit: int, values: torch.Tensor, uses: int) -> None:
        """Keep ``values`` (the kept rows of ``g(m)``, see :meth:`reaching_rows`) for ``uses`` pulls."""
        if uses > 0:
            self._kept[(layer, unit)] = [values, uses]
            self._count(values)

    def use(self, layer: int, unit: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(kept values, renumbered columns) of ``unit``'s gradient (dropped after its last use)."""
        entry = self._kept[(layer, unit)]
        entry[1] -= 1
        if entry[1] == 0:
            del self._kept[(layer, unit)]
            self._count(entry[0], sign=-1)
        return entry[0], self._columns[unit]

    def post(self, layer: int, unit: int, rows: torch.Tensor, values: torch.Tensor) -> None:
        self._parcels.setdefault((layer, unit), []).append((rows, values))
        self._count(rows, values)

    def take(self, layer: int, unit: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        parcels = self._parcels.pop((layer, unit), [])
        for rows, values in parcels:
            self._count(rows, values, sign=-1)
        return parcels

    def end_epoch(self) -> None:
        assert not self._kept and not self._parcels, f"cross-chunk gradient left over: {[*self._kept, *self._parcels]}"
        self._count(*self._columns.values(), sign=-1)
        self._columns = {}

    def nbytes(self) -> dict[str, int]:
        return {"history_grad": self.held_max}
