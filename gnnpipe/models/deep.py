"""Deep GNN models as ``encoder -> L layers -> head``, and the slices a pipeline stage holds.

``encoder(x, ctx) -> (h, h0)`` and ``head(h, ctx) -> logits`` are row-wise; only the layers aggregate.
The encoder belongs to the first stage, the head (and the loss) to the last (DESIGN §6).
Every worker builds the whole model from the same seed (cheap), then keeps its stage's slice, so weights
are identical to single-device training whatever the stage split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gnnpipe.config import ModelConfig
from gnnpipe.models.layers import GCNIILayer, GCNLayer, GNNLayer, ResGCNLayer, SAGELayer
from gnnpipe.models.ops import RowCtx, SparseOp, init_linear_

__all__ = ["DeepGNN", "ModelDims", "build_model", "chunk_loss", "ENCODER_SITE", "HEAD_SITE"]

ENCODER_SITE = 1 << 20  # dropout sites of the row-wise parts outside the layers
HEAD_SITE = (1 << 20) + 1


class Encoder(nn.Module):
    """Input projection. ``kind``: identity | project (``Linear(drop(x))``) | gcnii (``h0 = relu(Linear(drop(x)))``)."""

    def __init__(self, kind: str, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.kind = kind
        self.p = dropout
        self.lin = nn.Linear(in_dim, hidden) if kind != "identity" else None

    def forward(self, x: torch.Tensor, ctx: RowCtx) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.lin is None:
            return x, None
        h = self.lin(ctx.dropout(x, self.p, ENCODER_SITE))
        if self.kind == "gcnii":
            h = torch.relu(h)
            return h, h
        return h, None


class Head(nn.Module):
    """Output head. ``kind``: identity | linear (``Linear(drop(h))``) | norm (``Linear(drop(relu(LN(h))))``)."""

    def __init__(self, kind: str, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.kind = kind
        self.p = dropout
        self.norm = nn.LayerNorm(hidden) if kind == "norm" else None
        self.lin = nn.Linear(hidden, num_classes) if kind != "identity" else None

    def forward(self, h: torch.Tensor, ctx: RowCtx) -> torch.Tensor:
        if self.lin is None:
            return h
        if self.norm is not None:
            h = torch.relu(self.norm(h))
        return self.lin(ctx.dropout(h, self.p, HEAD_SITE))


@dataclass(frozen=True)
class ModelDims:
    """Widths the communication formulas need (DESIGN §4)."""

    agg_widths: list[int]  # width of each layer's aggregation input z_l
    agg_grad: list[bool]  # whether z_l depends on weights (needs a backward exchange)
    boundary_widths: list[int]  # width of h after each layer
    h0_width: int  # width of the initial residual travelling with activations (0 if none)


class DeepGNN(nn.Module):
    def __init__(self, encoder: Encoder, layers: list[GNNLayer], head: Head, agg_kind: str, multi_label: bool):
        super().__init__()
        self.encoder = encoder
        self.layers = nn.ModuleList(layers)
        self.head = head
        self.agg_kind = agg_kind
        self.multi_label = multi_label

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def dims(self) -> ModelDims:
        h0 = self.layers[0].in_width if self.encoder.kind == "gcnii" else 0
        return ModelDims(
            agg_widths=[layer.agg_width for layer in self.layers],
            agg_grad=[True for _ in self.layers],  # every z_l here is a function of weights
            boundary_widths=[layer.out_width for layer in self.layers],
            h0_width=h0,
        )

    def stage_modules(self, lo: int, hi: int) -> list[nn.Module]:
        """Modules held by the stage owning layers ``[lo, hi)``."""
        mods: list[nn.Module] = [self.encoder] if lo == 0 else []
        mods += list(self.layers[lo:hi])
        if hi == self.num_layers:
            mods.append(self.head)
        return mods

    def stage_parameters(self, lo: int, hi: int) -> list[nn.Parameter]:
        return [p for m in self.stage_modules(lo, hi) for p in m.parameters()]

    def forward_full(self, x: torch.Tensor, op: SparseOp, ctx: RowCtx) -> torch.Tensor:
        """Plain full-graph forward (all rows fresh): the single-device semantics. Returns logits [N, C]."""
        h, h0 = self.encoder(x, ctx)
        for layer in self.layers:
            z, r = layer.pre(h, ctx)
            h = layer.post(op @ z, r, h0, ctx)
        return self.head(h, ctx)


def build_model(cfg: ModelConfig, in_dim: int, num_classes: int, *, seed: int, multi_label: bool = False) -> DeepGNN:
    """Build the model of ``cfg`` with weights drawn from a generator seeded by ``seed`` (same on every worker)."""
    L, H, p = cfg.layers, cfg.hidden, cfg.dropout
    if cfg.arch in ("gcn", "sage"):
        cls = GCNLayer if cfg.arch == "gcn" else SAGELayer
        widths = [in_dim] + [H] * (L - 1) + [num_classes]
        layers = [cls(i, widths[i], widths[i + 1], p, last=i == L - 1) for i in range(L)]
        encoder, head = Encoder("identity", in_dim, H, p), Head("identity", H, num_classes, p)
    elif cfg.arch == "gcnii":
        layers = [GCNIILayer(i, H, p, cfg.alpha, cfg.lam) for i in range(L)]
        encoder, head = Encoder("gcnii", in_dim, H, p), Head("linear", H, num_classes, p)
    elif cfg.arch == "resgcn":
        layers = [ResGCNLayer(i, H, p) for i in range(L)]
        encoder, head = Encoder("project", in_dim, H, p), Head("norm", H, num_classes, p)
    else:
        raise ValueError(f"unknown model.arch {cfg.arch!r}; allowed: gcn, sage, gcnii, resgcn")
    model = DeepGNN(encoder, layers, head, layers[0].agg_kind, multi_label)
    g = torch.Generator()
    g.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            init_linear_(m.weight, m.bias, cfg.init, g)
    return model


def chunk_loss(logits: torch.Tensor, y: torch.Tensor, total: int) -> torch.Tensor:
    """Loss summed over the given rows, divided by the *global* number of training vertices ``total``.

    Summing this over chunks gives the full-graph mean loss (DESIGN §3). ``y``: [rows] int64 or [rows, C].
    """
    if y.dim() == 2:
        s = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="sum") / y.shape[1]
    else:
        s = F.nll_loss(F.log_softmax(logits, dim=-1), y, reduction="sum")
    return s / max(total, 1)
