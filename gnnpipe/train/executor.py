"""What the trainer drives: one training epoch, an exact evaluation, weight snapshots.

The trainer never knows how many workers there are; an executor hides it. :class:`SingleDeviceExecutor`
is plain full-graph training on one device (the semantics every parallel configuration must reproduce).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.memory import MemoryProbe, SavedTensors, peak_bytes
from gnnpipe.models.deep import DeepGNN, build_model, chunk_loss
from gnnpipe.models.ops import RowCtx, SparseOp
from gnnpipe.train.metrics import Accuracies, accuracies

__all__ = [
    "EpochStats",
    "Executor",
    "WholeModelExecutor",
    "SingleDeviceExecutor",
    "resolve_dtype",
    "make_optimizer",
]

BREAKDOWN_KEYS = ("compute", "comm_layer", "comm_graph", "weight_sync", "bubble")
BYTE_KINDS = ("layer", "graph", "weight")


@dataclass
class EpochStats:
    """One training epoch as the logger sees it. Times in seconds; ``loss`` is the global full-graph loss."""

    loss: float
    time: float
    breakdown: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BREAKDOWN_KEYS, 0.0))


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def make_optimizer(params: list[torch.nn.Parameter], cfg: ExperimentConfig, model: DeepGNN) -> torch.optim.Optimizer:
    """Adam over ``params`` (a subset of ``model``'s), one step per epoch.

    Adam is element-wise, so splitting parameters across stages changes nothing. GNN-layer weights may get
    their own decay (``train.layer_weight_decay``, as the GCNII recipe: 0.01 on convolutions, 5e-4 on dense).
    """
    t = cfg.train
    if t.layer_weight_decay is None:
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    in_layers = {id(q) for q in model.layers.parameters()}
    groups = [
        {"params": [q for q in params if id(q) in in_layers], "weight_decay": t.layer_weight_decay},
        {"params": [q for q in params if id(q) not in in_layers], "weight_decay": t.weight_decay},
    ]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=t.lr)


class Executor:
    """Interface. Every method is collective: all workers call it, in the same order."""

    is_logger: bool = True
    world_size: int = 1
    analytic_bytes: dict[str, int] = {"layer": 0, "graph": 0, "weight": 0}  # the profiler's formula (run.py)
    analytic_by_link: dict[str, dict[str, int]] | None = None  # its intra/inter-node split (run.py)
    probe: MemoryProbe | None = None  # per-phase peak memory of this worker
    saved_bytes: dict[str, int] | None = None  # measured in the first epoch (SavedTensors)

    def train_epoch(self, epoch: int) -> EpochStats:
        raise NotImplementedError

    def evaluate(self) -> Accuracies:
        """Exact full-graph inference (no history, no dropout); identical result on every worker."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of this worker's weights (for best-valid tracking)."""
        raise NotImplementedError

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def checkpoint_state(self) -> dict:
        """Everything of this worker that the next epoch depends on (weights, optimizer, history): a
        checkpoint shard (``train/resume.py``). Dropout masks and chunk order are keyed by (seed, epoch): no
        random state to save."""
        raise NotImplementedError

    def load_checkpoint_state(self, state: dict) -> None:
        raise NotImplementedError

    def comm_bytes_per_epoch(self) -> dict[str, int]:
        """``{layer, graph, weight}``: cluster-wide bytes of the last training epoch, measured by comm.py."""
        return {"layer": 0, "graph": 0, "weight": 0}

    def comm_bytes_by_link(self) -> dict[str, dict[str, int]]:
        """``{kind: {intra, inter}}``: the last training epoch's :meth:`comm_bytes_per_epoch` split by whether the
        two ranks share a node (DESIGN §4). Collective."""
        return {k: {"intra": 0, "inter": 0} for k in BYTE_KINDS}

    def node_of_rank(self) -> list[int]:
        """The node of every rank (setup learnt them: torchrun's node rank, or the host)."""
        return [0]

    def peak_memory(self) -> list[int]:
        """Peak memory of every worker, in bytes (rank order)."""
        raise NotImplementedError

    def memory_report(self) -> dict[str, int]:
        """Where this worker's memory goes, by kind, and the measured peak growth of each phase."""
        out = dict(self.saved_bytes or {})
        return {**out, **self.probe.report()} if self.probe is not None else out

    def gather(self, obj: object) -> list:
        """``obj`` of every worker, in rank order (small Python objects)."""
        return [obj]

    def write_artifacts(self, run_dir) -> None:
        """Write run files only an executor knows (e.g. a trace); collective."""

    def close(self) -> None:
        pass


class WholeModelExecutor(Executor):
    """An executor that holds the whole model in one process (single device, the reference).

    Subclasses set ``graph``, ``model``, ``x`` (features in the model's dtype), ``op`` (the full aggregation
    operator) and ``device``; evaluation and weight snapshots are the same for all of them.
    """

    graph: Graph
    model: DeepGNN
    x: torch.Tensor
    op: SparseOp
    device: torch.device

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """Exact full-graph logits (no history, no dropout): [N, C] in ``graph``'s vertex order."""
        self.model.eval()
        return self.model.forward_full(self.x, self.op, RowCtx(training=False))

    def evaluate(self) -> Accuracies:
        g = self.graph
        return accuracies(self.logits().cpu(), g.y, (g.train_mask, g.val_mask, g.test_mask))

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def peak_memory(self) -> list[int]:
        if self.probe is None:
            return [peak_bytes(self.device)]
        return [self.probe.overall_peak()]


class SingleDeviceExecutor(WholeModelExecutor):
    """Full-graph training on one device: forward all vertices, loss on the training mask, one Adam step."""

    def __init__(self, cfg: ExperimentConfig, graph: Graph, model: DeepGNN | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.train.device)
        self.dtype = resolve_dtype(cfg.train.dtype)
        self.graph = graph
        if model is None:
            model = build_model(
                cfg.model, graph.num_features, graph.num_classes, seed=cfg.train.seed, multi_label=graph.multi_label
            )
        self.model = model.to(device=self.device, dtype=self.dtype)
        indptr, indices, values = graph.norm_values(self.model.agg_kind)
        self.op = SparseOp(indptr, indices, values, graph.num_nodes)
        self.x = graph.x.to(self.device, self.dtype)
        self.y = graph.y.to(self.device)
        self.train_idx = graph.train_mask.nonzero().flatten().to(self.device)
        self.optimizer = make_optimizer(list(self.model.parameters()), cfg, self.model)

    def loss(self, epoch: int) -> torch.Tensor:
        """The full-graph training loss of ``epoch`` (dropout keyed by epoch) with its autograd graph."""
        ctx = RowCtx(training=True, seed=self.cfg.train.seed, epoch=epoch, chunk=0)
        logits = self.model.forward_full(self.x, self.op, ctx)
        idx = self.train_idx
        return chunk_loss(logits[idx], self.y[idx], idx.numel())

    def train_epoch(self, epoch: int) -> EpochStats:
        t0 = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        first = self.saved_bytes is None
        with SavedTensors(exclude=(self.x,)) if first else contextlib.nullcontext() as saved:
            loss = self.loss(epoch)
        if first:
            self.saved_bytes = {"saved_for_backward": saved.bytes, "dropout_masks": saved.mask_bytes}
        loss.backward()
        self.optimizer.step()
        if first and self.probe is not None:
            self.probe.phase("train")
        dt = time.perf_counter() - t0
        stats = EpochStats(loss=float(loss.detach()), time=dt)
        stats.breakdown["compute"] = dt
        return stats

    def checkpoint_state(self) -> dict:
        return {"weights": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
