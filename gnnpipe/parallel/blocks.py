"""Aggregation operators restricted to a set of rows and a set of columns (pure, vectorised).

An engine aggregates one chunk at a time: ``m[rows] = Ahat[rows, own] @ z + Ahat[rows, ext] @ e``. These helpers
cut those blocks out of a normalised CSR so that every engine (and the reference) builds them the same way.
"""

from __future__ import annotations

import torch

from gnnpipe.models.ops import SparseOp

__all__ = ["Csr", "gather_rows", "sub_operator", "in_neighbours", "ranges_to_index"]

Csr = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (indptr [N+1], indices [E], values [E] float64)


def ranges_to_index(ranges: list[tuple[int, int]]) -> torch.Tensor:
    """Concatenate ``[begin, end)`` ranges into one int64 index tensor."""
    if not ranges:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat([torch.arange(b, e, dtype=torch.int64) for b, e in ranges])


def gather_rows(csr: Csr, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge positions of ``rows`` (in the given row order). Returns (row_ptr [R+1], columns [nnz], values)."""
    indptr, indices, values = csr
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    row_ptr = torch.zeros(rows.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=row_ptr[1:])
    total = int(row_ptr[-1])
    pos = torch.repeat_interleave(starts - row_ptr[:-1], lengths) + torch.arange(total)
    return row_ptr, indices[pos], values[pos]


def sub_operator(csr: Csr, rows: torch.Tensor, cols: torch.Tensor) -> SparseOp:
    """``Ahat[rows, cols]`` as a SparseOp ``[len(rows), len(cols)]``; ``cols`` must be sorted and unique."""
    row_ptr, col, val = gather_rows(csr, rows)
    if cols.numel() == 0:
        keep = torch.zeros_like(col, dtype=torch.bool)
        loc = torch.zeros_like(col)
    else:
        loc = torch.searchsorted(cols, col).clamp_(max=cols.numel() - 1)
        keep = cols[loc] == col
    lengths = row_ptr[1:] - row_ptr[:-1]
    row_of = torch.repeat_interleave(torch.arange(rows.numel()), lengths)
    kept_counts = torch.bincount(row_of[keep], minlength=rows.numel())
    new_ptr = torch.zeros(rows.numel() + 1, dtype=torch.int64)
    torch.cumsum(kept_counts, 0, out=new_ptr[1:])
    return SparseOp(new_ptr, loc[keep], val[keep], cols.numel())


def in_neighbours(csr: Csr, rows: torch.Tensor) -> torch.Tensor:
    """Sorted unique in-neighbours of ``rows`` (all sources of edges into them)."""
    _, col, _ = gather_rows(csr, rows)
    return torch.unique(col)
