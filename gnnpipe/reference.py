"""The oracle: a deliberately plain, single-process implementation of one epoch as DESIGN §3 defines it.

No processes, no speed. Ways are virtual: position i processes the *union* of the ways' chunks at that
position as one group (reads inside the group are fresh and carry gradient unscaled; reads of groups at
earlier positions are fresh and carry ``cross_chunk_grad_scale`` x gradient; reads of later groups are
historical constants). Every distributed engine configuration must equal this to 1e-6 in float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.models.deep import build_model, chunk_loss
from gnnpipe.models.ops import RowCtx, SparseOp
from gnnpipe.parallel.blocks import in_neighbours, ranges_to_index, sub_operator
from gnnpipe.parallel.dims import ParallelDims
from gnnpipe.parallel.history import History
from gnnpipe.parallel.schedule import position_order
from gnnpipe.partition.chunker import ChunkPlan
from gnnpipe.train.executor import EpochStats, WholeModelExecutor, make_optimizer, resolve_dtype

__all__ = ["Reference"]


@dataclass
class _Group:
    """The chunks of all ways at one local index j: rows, operators, and where their in-neighbours live."""

    chunks: list[int]
    segments: tuple[tuple[int, int], ...]
    rows: torch.Tensor  # [R] sorted vertex ids
    ext: torch.Tensor  # [X] sorted out-of-group in-neighbours
    ext_group: torch.Tensor  # [X] local index j of the group holding each ext vertex
    a_in: SparseOp  # Ahat[rows, rows]
    a_ext: SparseOp  # Ahat[rows, ext]
    train: torch.Tensor  # [T] positions (within rows) of training vertices


def _push_to(hist: History, layer: int, targets: torch.Tensor, fresh: torch.Tensor, scale: float):
    """Gradient hook of the ext rows: push ``scale`` x the gradient of the fresh reads to their sources."""

    def hook(g: torch.Tensor) -> None:
        hist.add_grad(layer, targets, scale * g[fresh])

    return hook


def _plus(g: torch.Tensor, pending: torch.Tensor | None) -> torch.Tensor:
    return g if pending is None else g + pending


class Reference(WholeModelExecutor):
    """Single-process executor with the exact epoch semantics of DESIGN §3 for any (ways, chunks)."""

    def __init__(self, cfg: ExperimentConfig, graph: Graph, plan: ChunkPlan):
        p = cfg.parallel
        dims = ParallelDims.from_config(cfg)
        if plan.num_chunks != dims.chunks or plan.num_ways != dims.ways:
            raise ValueError(
                f"plan has (chunks={plan.num_chunks}, ways={plan.num_ways}), config ({p.chunks}, {p.ways})"
            )
        self.cfg, self.plan = cfg, plan
        self.dtype = resolve_dtype(cfg.train.dtype)
        self.graph = plan.permute(graph)
        g = self.graph
        self.model = build_model(
            cfg.model, g.num_features, g.num_classes, seed=cfg.train.seed, multi_label=g.multi_label
        )
        self.model.to(self.dtype)
        self.csr = g.norm_values(self.model.agg_kind)
        self.op = SparseOp(*self.csr, g.num_nodes)
        self.device = torch.device("cpu")
        self.x = g.x.to(self.dtype)
        self.num_train = int(g.train_mask.sum())
        self.per_way = dims.chunks_per_way
        self.groups = [self._group([w * self.per_way + j for w in range(dims.ways)]) for j in range(self.per_way)]
        self.exact_group = self._group(list(range(dims.chunks)))
        self.hist = History(
            g.num_nodes,
            self.model.dims().agg_widths,
            period=p.history_period,
            momentum=p.history_momentum,
            dtype=self.dtype,
            device=torch.device("cpu"),
        )
        self.optimizer = make_optimizer(list(self.model.parameters()), cfg, self.model)
        self.record_grads = False
        self.last_grads: dict[str, torch.Tensor] = {}
        self.costs = plan.block_counts.sum(1).view(dims.ways, self.per_way).sum(0)

    def _group(self, chunks: list[int]) -> _Group:
        plan, g = self.plan, self.graph
        rows = ranges_to_index([plan.chunk_range(c) for c in chunks])
        ext = in_neighbours(self.csr, rows)
        ext = ext[~torch.isin(ext, rows)]
        ext_group = plan.vertex_chunk()[ext] % self.per_way
        segments = tuple((c, plan.chunk_range(c)[1] - plan.chunk_range(c)[0]) for c in chunks)
        train = g.train_mask[rows].nonzero().flatten()
        return _Group(
            chunks,
            segments,
            rows,
            ext,
            ext_group,
            sub_operator(self.csr, rows, rows),
            sub_operator(self.csr, rows, ext),
            train,
        )

    # ------------------------------------------------------------------ one epoch
    def _forward_group(self, grp: _Group, pos: int, pos_of: torch.Tensor, epoch: int) -> torch.Tensor:
        scale = self.cfg.parallel.cross_chunk_grad_scale
        ctx = RowCtx(training=True, seed=self.cfg.train.seed, epoch=epoch, segments=grp.segments)
        h, h0 = self.model.encoder(self.x[grp.rows], ctx)
        fresh = pos_of[grp.ext_group] < pos
        fresh_ext = grp.ext[fresh]
        for k, layer in enumerate(self.model.layers):
            z, r = layer.pre(h, ctx)
            self.hist.push(k, grp.rows, z.detach())
            z.register_hook(lambda g, k=k, rows=grp.rows: _plus(g, self.hist.grad_of(k, rows)))
            e = self.hist.pull(k, grp.ext, fresh).requires_grad_()
            e.register_hook(_push_to(self.hist, k, fresh_ext, fresh, scale))
            h = layer.post(grp.a_in @ z + grp.a_ext @ e, r, h0, ctx)
        logits = self.model.head(h, ctx)
        y = self.graph.y[grp.rows][grp.train]
        return chunk_loss(logits[grp.train], y, self.num_train)

    def train_epoch(self, epoch: int) -> EpochStats:
        t0 = time.perf_counter()
        p = self.cfg.parallel
        self.model.train()
        if epoch < p.warmup_exact_epochs:
            groups, order = [self.exact_group], [0]
        else:
            groups = self.groups
            order = position_order(
                len(groups), epoch=epoch, seed=self.cfg.train.seed, mode=p.chunk_order, costs=self.costs
            )
        pos_of = torch.empty(len(groups), dtype=torch.int64)
        pos_of[torch.tensor(order)] = torch.arange(len(order))
        losses = [self._forward_group(groups[j], i, pos_of, epoch) for i, j in enumerate(order)]
        self.optimizer.zero_grad(set_to_none=True)
        for loss in reversed(losses):  # reverse order: later readers push gradient before their sources run
            loss.backward()
        if self.record_grads:
            self.last_grads = {k: v.grad.detach().clone() for k, v in self.model.named_parameters()}
        self.optimizer.step()
        self.hist.end_epoch(epoch)
        dt = time.perf_counter() - t0
        stats = EpochStats(loss=float(sum(loss.detach() for loss in losses)), time=dt)
        stats.breakdown["compute"] = dt
        return stats
