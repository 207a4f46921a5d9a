"""The config schema: the typed, frozen sections of an experiment and what each key means.

Every field carries its one-line description and, for a fixed set of values, its ``choices`` (see
:func:`opt`). ``gnnpipe.config_validate`` checks values against them and :func:`explain` prints them
(``gnnpipe config --explain``), so the two cannot drift apart. Reading YAML lives in ``gnnpipe.config``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SECTIONS",
    "ConfigError",
    "DatasetConfig",
    "ExperimentConfig",
    "LogConfig",
    "ModelConfig",
    "ParallelConfig",
    "TrainConfig",
    "allowed_values",
    "config_fields",
    "explain",
    "opt",
    "type_name",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message says where and what is allowed."""


# ---------------------------------------------------------------------------------------------- sections
def opt(default: Any, help: str, *, choices: tuple[Any, ...] | None = None) -> Any:
    """A config field that carries its one-line description and, for a fixed set of values, those values.

    ``validate`` checks every field with ``choices`` against exactly these; ``explain`` prints both.
    """
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class DatasetConfig:
    """Which graph to load. ``name`` selects the loader (see ``gnnpipe.data.DATASET_NAMES``)."""

    name: str = opt("cora", "loader: cora | citeseer | pubmed | sbm | powerlaw | binary | npz | ogbn-<name>")
    root: str = opt("datasets", "directory holding the Planetoid and OGB datasets")
    path: str | None = opt(None, "the dataset's directory (binary) or .npz file (npz); required for those two")
    feature_norm: bool = opt(False, "divide every feature row by its sum")
    undirected: bool = opt(True, "symmetrise edges, drop self-loops and duplicates (synthetic graphs already are)")
    num_nodes: int = opt(2000, "synthetic graphs (sbm, powerlaw): number of nodes")
    avg_degree: float = opt(10.0, "synthetic graphs: average degree")
    num_features: int = opt(64, "synthetic graphs: feature width")
    num_classes: int = opt(4, "synthetic graphs: number of classes")
    seed: int = opt(0, "seed of the synthetic generators and of the npz random split")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = opt(
        "gcnii",
        "layer type: GCN, GraphSAGE (mean), GCNII (initial residual), ResGCN (DeeperGCN res+)",
        choices=("gcn", "sage", "gcnii", "resgcn"),
    )
    layers: int = opt(16, "number of GNN layers (at least parallel.stages)")
    hidden: int = opt(64, "hidden width of every layer")
    dropout: float = opt(0.5, "dropout probability, in [0, 1)")
    alpha: float = opt(0.1, "GCNII: weight of the initial residual h0, in [0, 1]")
    lam: float = opt(0.5, "GCNII: lambda of the identity mapping, theta_l = log(lam / l + 1)")
    init: str = opt(
        "xavier",
        "weight init: xavier (the authors' U(+-sqrt(5/(fan_in+fan_out)))) or PyTorch's default",
        choices=("xavier", "pytorch"),
    )


@dataclass(frozen=True)
class ParallelConfig:
    ways: int = opt(1, "graph-parallel degree; ways * stages = workers")
    stages: int = opt(1, "layer-parallel (pipeline) degree")
    chunks: int = opt(1, "graph chunks flowing through the pipeline; a multiple of ways")
    chunk_order: str = opt(
        "random",
        "chunk order per epoch: random (re-drawn each epoch, seeded), fixed, degree (high-degree first)",
        choices=("random", "fixed", "degree"),
    )
    history_period: int = opt(1, "historical rows: previous epoch (1) or a snapshot refreshed every k epochs")
    cross_chunk_grad_scale: float = opt(2.0, "gradient factor along fresh cross-chunk reads (authors' estimate)")
    stage_split: str | list[int] = opt(
        "equal",
        "layers per stage: equal (remainder to the first stages), cost (min-max over the per-layer costs "
        "calibrated by gnnpipe plan) or a list of counts summing to model.layers",
        choices=("equal", "cost"),
    )
    partition: str = opt(
        "metis",
        "graph partitioner: METIS recursive bisection, METIS k-way, random, contiguous id ranges",
        choices=("metis", "metis_kway", "random", "contiguous"),
    )
    vertex_weights: str = opt(
        "none", "METIS vertex weights: none, or degree (balances aggregation work)", choices=("none", "degree")
    )
    warmup_exact_epochs: int = opt(0, "the first k epochs are exact (all chunks at once, no history)")
    history_momentum: float = opt(0.0, "smooth the history snapshot: H = m H + (1-m) Z, m in [0, 1)")
    recompute: bool = opt(
        False,
        "per-chunk activation rematerialisation: keep each chunk's stage input and each layer's aggregation "
        "result, recompute the rest during backward (less memory, ~1 extra forward without aggregation)",
    )
    history_dtype: str = opt(
        "auto",
        "storage of the historical rows (every boundary row a stage reads): auto (the model's dtype), float32, "
        "float64, or bfloat16 (half of float32's memory; rows are rounded when stored, fresh reads too, while "
        "compute stays in the model's dtype)",
        choices=("auto", "float32", "float64", "bfloat16"),
    )
    timeout_s: float = opt(120.0, "seconds any transfer may wait before the run fails")
    heartbeat_timeout_s: float = opt(
        6.0,
        "a worker whose heartbeat (one a second) stops this long is taken as dead or hung (e.g. SIGSTOP) and "
        "every worker stops; at least 2",
    )
    compress: str = opt(
        "none",
        "training traffic between workers (stage-to-stage rows, h0 and their gradients; halo rows and gradient "
        "rows): none, bf16/fp16 casts, or int8 with a bfloat16 scale per row and seeded stochastic rounding; "
        "evaluation stays exact",
        choices=("none", "bf16", "fp16", "int8"),
    )
    placement: str = opt(
        "stages",
        "rank layout, i.e. what shares a node (launchers fill a node with consecutive ranks): stages (rank = "
        "way * stages + stage: a way's consecutive stages share a node, only stage boundaries between node "
        "blocks cross) or ways (rank = stage * ways + way: a stage's ways share a node, halo exchanges and the "
        "weight all-reduce stay inside it, stage boundaries cross)",
        choices=("stages", "ways"),
    )
    backend: str = opt(
        "auto",
        "torch.distributed backend: auto (nccl on cuda, gloo on cpu), nccl, or gloo (on cuda: transfers staged "
        "through host memory, so several workers may share one GPU)",
        choices=("auto", "nccl", "gloo"),
    )

    @property
    def world_size(self) -> int:
        return self.ways * self.stages


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = opt(200, "training epochs (one Adam step each)")
    lr: float = opt(0.01, "Adam learning rate")
    weight_decay: float = opt(5.0e-4, "L2 weight decay")
    layer_weight_decay: float | None = opt(None, "weight decay of the GNN layers' weights (null: weight_decay)")
    eval_every: int = opt(10, "exact full-graph evaluation every k epochs (keeps the best-valid weights)")
    seed: int = opt(1, "seed of the weights, dropout masks and chunk order")
    device: str = opt("cpu", "compute device (cuda: NCCL between workers, else gloo)", choices=("cpu", "cuda"))
    dtype: str = opt("float32", "floating-point type of weights and activations", choices=("float32", "float64"))
    warmup_epochs: int = opt(5, "first epochs left out of the reported mean epoch time")
    on_nonfinite: str = opt(
        "stop",
        "a NaN/inf loss or gradient: stop the run naming the epoch and layer, or skip (drop) that epoch's update",
        choices=("stop", "skip"),
    )
    checkpoint_every: int = opt(
        0,
        "write a checkpoint every k epochs to <run_dir>/checkpoints/epoch<E>/ (0: off); "
        "gnnpipe train --resume RUN_DIR continues from the newest complete one",
    )


@dataclass(frozen=True)
class LogConfig:
    dir: str = opt("runs", "parent directory of the run directories")
    trace: bool = opt(False, "write a Chrome/Perfetto trace.json of compute and communication per worker")
    progress: bool = opt(True, "show a one-line progress bar while training (only when stdout is a terminal)")
    tensorboard: bool = opt(
        False, "also write the per-epoch scalars as TensorBoard event files into the run directory (needs tensorboard)"
    )


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = field(default="<defaults>", compare=False)


SECTIONS = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "parallel": ParallelConfig,
    "train": TrainConfig,
    "log": LogConfig,
}


def config_fields() -> list[tuple[str, dataclasses.Field, Any]]:
    """Every config field in file order: (dotted key ``section.name``, the dataclass field, its type)."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        out += [(f"{section}.{f.name}", f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]
    return out


# ---------------------------------------------------------------------------------------------- description
def type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def allowed_values(tp: Any, choices: tuple[Any, ...] | None) -> str:
    """``a | b | c`` of a field's choices, plus a list when its type also admits one (``stage_split``)."""
    if choices is None:
        return ""
    lists = [a for a in typing.get_args(tp) if typing.get_origin(a) is list]
    return " | ".join([*(str(c) for c in choices), *(f"a list of {type_name(typing.get_args(a)[0])}" for a in lists)])


def _show(value: Any) -> str:
    """A default as it is written in YAML: null, true/false, bare strings, flow lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def explain() -> str:
    """Every config key as an aligned table: key, type, allowed values (of fields with choices), default,
    description; ``gnnpipe config --explain`` prints it."""
    rows = [("key", "type", "allowed", "default", "description")]
    for key, f, tp in config_fields():
        rows.append(
            (key, type_name(tp), allowed_values(tp, f.metadata["choices"]), _show(f.default), f.metadata["help"])
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]]).rstrip() for r in rows
    )
