"""GNN layers split as ``pre`` (row-wise) -> one aggregation -> ``post`` (row-wise) (DESIGN §3).

``pre(h, ctx) -> (z, r)``: ``z: [rows, agg_width]`` is the aggregation input (the only tensor other vertices
read); ``r`` is an optional row-wise term ``post`` needs (a root/skip term), or None.
``post(m, r, h0, ctx) -> h'``: ``m = Ahat[rows, :] @ Z`` is the aggregation result for the same rows.
Because both halves are row-wise, an engine may run them on any subset of rows (a chunk) and the layer's
math is unchanged; only which ``Z`` rows are fresh differs.

Each layer equals the PyG layer it is named after (tests/test_models.py): GCNConv, SAGEConv (mean, root
weight), GCN2Conv (shared weights), DeepGCNLayer 'res+' with SAGEConv and a node-wise LayerNorm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gnnpipe.models.ops import RowCtx

__all__ = ["GNNLayer", "GCNLayer", "SAGELayer", "GCNIILayer", "ResGCNLayer"]


class GNNLayer(nn.Module):
    """Base class. Subclasses set the widths and ``agg_kind`` (a key of ``Graph.norm_values``)."""

    agg_kind: str = "gcn"

    def __init__(self, index: int, in_width: int, out_width: int, agg_width: int, dropout: float):
        super().__init__()
        self.index = index  # position in the model (also the dropout site)
        self.in_width = in_width
        self.out_width = out_width
        self.agg_width = agg_width
        self.p = dropout

    def pre(self, h: torch.Tensor, ctx: RowCtx) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def post(self, m: torch.Tensor, r: torch.Tensor | None, h0: torch.Tensor | None, ctx: RowCtx) -> torch.Tensor:
        raise NotImplementedError

    def linears(self) -> list[nn.Linear]:
        """Linear maps to initialise, in a fixed order."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]


class GCNLayer(GNNLayer):
    """GCNConv: ``Ahat (drop(h) W) + b``, ReLU unless it is the last layer."""

    agg_kind = "gcn"

    def __init__(self, index: int, in_width: int, out_width: int, dropout: float, last: bool):
        super().__init__(index, in_width, out_width, out_width, dropout)
        self.lin = nn.Linear(in_width, out_width, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_width))
        self.last = last

    def pre(self, h, ctx):
        return self.lin(ctx.dropout(h, self.p, self.index)), None

    def post(self, m, r, h0, ctx):
        out = m + self.bias
        return out if self.last else torch.relu(out)


class SAGELayer(GNNLayer):
    """SAGEConv (mean): ``mean_j(drop(h)_j) W_l^T + b + drop(h) W_r^T``.

    The neighbour weight is applied before aggregating (mean is linear), so the aggregation input has the
    layer's output width rather than its input width: less to aggregate and less to communicate.
    """

    agg_kind = "mean"

    def __init__(self, index: int, in_width: int, out_width: int, dropout: float, last: bool):
        super().__init__(index, in_width, out_width, out_width, dropout)
        self.lin_l = nn.Linear(in_width, out_width, bias=True)
        self.lin_r = nn.Linear(in_width, out_width, bias=False)
        self.last = last

    def pre(self, h, ctx):
        t = ctx.dropout(h, self.p, self.index)
        return torch.nn.functional.linear(t, self.lin_l.weight), self.lin_r(t) + self.lin_l.bias

    def post(self, m, r, h0, ctx):
        out = m + r
        return out if self.last else torch.relu(out)


class GCNIILayer(GNNLayer):
    """GCN2Conv with shared weights, then ReLU.

    ``s = (1-a) Ahat drop(h) + a h0``; ``h' = relu((1-t) s + t s W)`` with ``t = log(lam / l + 1)``, l 1-based.
    """

    agg_kind = "gcn"

    def __init__(self, index: int, width: int, dropout: float, alpha: float, lam: float):
        super().__init__(index, width, width, width, dropout)
        self.lin = nn.Linear(width, width, bias=False)
        self.alpha = alpha
        self.theta = math.log(lam / (index + 1) + 1.0)

    def pre(self, h, ctx):
        return ctx.dropout(h, self.p, self.index), None

    def post(self, m, r, h0, ctx):
        s = torch.lerp(m, h0, self.alpha)  # (1-a) m + a h0 in one kernel
        # (1-t) s + t (s @ W^T) in one fused call
        return torch.relu(torch.addmm(s, s, self.lin.weight.t(), beta=1.0 - self.theta, alpha=self.theta))


class ResGCNLayer(GNNLayer):
    """DeeperGCN 'res+' block with a mean SAGE convolution: ``h + SAGE(drop(relu(LN(h))))``.

    LayerNorm (row-wise) replaces BatchNorm: batch statistics would couple all vertices outside the
    aggregation and break chunked execution.
    """

    agg_kind = "mean"

    def __init__(self, index: int, width: int, dropout: float):
        super().__init__(index, width, width, width, dropout)
        self.norm = nn.LayerNorm(width)
        self.lin_l = nn.Linear(width, width, bias=True)
        self.lin_r = nn.Linear(width, width, bias=False)

    def pre(self, h, ctx):
        t = ctx.dropout(torch.relu(self.norm(h)), self.p, self.index)
        return torch.nn.functional.linear(t, self.lin_l.weight), self.lin_r(t) + self.lin_l.bias + h

    def post(self, m, r, h0, ctx):
        return m + r
