"""Typed experiment configuration: YAML (``safe_load``) -> frozen dataclasses, validated once.

Every error is a :class:`ConfigError` whose message names the file, the dotted key, the bad value and
what is allowed. Unknown keys are errors (nothing a user wrote is silently dropped). Command-line
overrides ``section.key=value`` are parsed as YAML scalars and validated exactly like file values.
Every field carries its description and, for a fixed set of values, its ``choices`` (see :func:`opt`);
``validate`` and ``explain`` (``gnnpipe config --explain``) both read them, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DatasetConfig",
    "ModelConfig",
    "ParallelConfig",
    "TrainConfig",
    "LogConfig",
    "ExperimentConfig",
    "load_config",
    "parse_overrides",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "config_fields",
    "explain",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message says where and what is allowed."""


class _SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` (no arbitrary objects), plus YAML 1.2 exponent floats: PyYAML's YAML 1.1 rules
    read ``1e-3`` (no dot) as the *string* '1e-3', so ``lr: 1e-3`` would be refused as not a number."""


_SafeLoader.add_implicit_resolver(  # copies the resolver table: yaml.SafeLoader itself is unchanged
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)  # a SafeLoader subclass: still no arbitrary objects


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
        "layers per stage: equal (remainder to the first stages) or a list of counts summing to model.layers",
        choices=("equal",),
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
        "per-chunk activation rematerialisation: keep only each chunk's stage input and recompute its forward "
        "during backward (less memory, ~1 extra forward)",
    )
    timeout_s: float = opt(120.0, "seconds any transfer may wait before the run fails")

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


@dataclass(frozen=True)
class LogConfig:
    dir: str = opt("runs", "parent directory of the run directories")
    trace: bool = opt(False, "write a Chrome/Perfetto trace.json of compute and communication per worker")
    progress: bool = opt(True, "show a one-line progress bar while training (only when stdout is a terminal)")


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = field(default="<defaults>", compare=False)


# ---------------------------------------------------------------------------------------------- parsing
def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: value {value!r} is not a {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: value {value!r} is not null")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: value {value!r} must be a list of {_type_name(item)}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: value {value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: value {value!r} must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: value {value!r} must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: value {value!r} must be a string")
    raise TypeError(f"unsupported annotation {tp!r}")  # a bug in this module, not user input


def _build_section(cls: type, data: Any, src: str, section: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: section '{section}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names), key=str)  # keys may be non-strings
    if unknown:
        raise ConfigError(
            f"{src}: unknown key '{section}.{unknown[0]}'; allowed keys in '{section}': {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{src}: key '{section}.{k}'") for k, v in data.items()}
    return cls(**kwargs)


_SECTIONS = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "parallel": ParallelConfig,
    "train": TrainConfig,
    "log": LogConfig,
}


def config_fields() -> list[tuple[str, dataclasses.Field, Any]]:
    """Every config field in file order: (dotted key ``section.name``, the dataclass field, its type)."""
    out = []
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        out += [(f"{section}.{f.name}", f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]
    return out


def config_from_dict(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a plain mapping (as YAML gives)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SECTIONS), key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown section '{unknown[0]}'; allowed sections: {', '.join(_SECTIONS)}")
    sections = {name: _build_section(cls, data.get(name), source, name) for name, cls in _SECTIONS.items()}
    cfg = ExperimentConfig(**sections, source=source)
    validate(cfg)
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data with the same keys as the YAML file."""
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in _SECTIONS}


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as a YAML file that ``load_config`` reads back to an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def parse_overrides(overrides: list[str], source: str = "command line") -> dict[str, dict[str, Any]]:
    """``["model.layers=32", "train.lr=1e-3"]`` -> nested dict. Values are YAML scalars (safe_load)."""
    out: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{source}: override key {key!r} must be section.key (e.g. model.layers=32)")
        try:
            value = _yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: override {item!r}: value is not valid YAML ({e})") from None
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            data = _yaml_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    for section, values in parse_overrides(overrides or []).items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"{source}: override of unknown section '{section}'; allowed sections: {', '.join(_SECTIONS)}"
            )
        current = data.get(section) or {}
        if not isinstance(current, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping, got {current!r}")
        data[section] = {**current, **values}
    if overrides:
        source = f"{source} (+ overrides {' '.join(overrides)})"
    return config_from_dict(data, source)


# ---------------------------------------------------------------------------------------------- validation
def _fail(cfg: ExperimentConfig, key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{cfg.source}: key '{key}' has invalid value {value!r}; allowed: {allowed}")


def _check_choices(cfg: ExperimentConfig) -> None:
    """The one check of every field with ``choices`` metadata, against exactly those values. A list in a
    field whose type also admits lists (``parallel.stage_split``) is checked on its own in ``validate``."""
    for key, f, tp in config_fields():
        choices = f.metadata["choices"]
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if choices is not None and not isinstance(value, list) and value not in choices:
            _fail(cfg, key, value, _allowed(tp, choices))


def _positive(cfg: ExperimentConfig, key: str, value: float, *, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):  # YAML reads .nan and .inf
        _fail(cfg, key, value, "a finite number >= 0" if zero_ok else "a finite number > 0")


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field checks; types were checked while parsing."""
    from gnnpipe.data import DATASET_NAMES, dataset_name_allowed  # local: config imports without data deps

    d, m, p, t = cfg.dataset, cfg.model, cfg.parallel, cfg.train
    _check_choices(cfg)
    if not dataset_name_allowed(d.name):  # the loader's own rule ("ogbn-" alone is not a dataset)
        _fail(cfg, "dataset.name", d.name, " | ".join(DATASET_NAMES) + " | ogbn-<name> (an OGB dataset under root)")
    if d.name in ("binary", "npz") and not d.path:
        _fail(cfg, "dataset.path", d.path, f"a path to the {d.name} dataset (required when dataset.name={d.name})")
    for key in ("num_nodes", "num_features", "num_classes"):
        _positive(cfg, f"dataset.{key}", getattr(d, key))
    _positive(cfg, "dataset.avg_degree", d.avg_degree)

    if m.layers < 1:
        _fail(cfg, "model.layers", m.layers, "an integer >= 1")
    if m.hidden < 1:
        _fail(cfg, "model.hidden", m.hidden, "an integer >= 1")
    if not 0.0 <= m.dropout < 1.0:
        _fail(cfg, "model.dropout", m.dropout, "a probability in [0, 1)")
    if not 0.0 <= m.alpha <= 1.0:
        _fail(cfg, "model.alpha", m.alpha, "a number in [0, 1]")
    _positive(cfg, "model.lam", m.lam)

    for key in ("ways", "stages", "chunks", "history_period"):
        if getattr(p, key) < 1:
            _fail(cfg, f"parallel.{key}", getattr(p, key), "an integer >= 1")
    if p.chunks % p.ways:
        _fail(cfg, "parallel.chunks", p.chunks, f"a multiple of parallel.ways ({p.ways})")
    if p.stages > m.layers:
        _fail(cfg, "parallel.stages", p.stages, f"at most model.layers ({m.layers}): every stage needs a layer")
    _positive(cfg, "parallel.cross_chunk_grad_scale", p.cross_chunk_grad_scale, zero_ok=True)
    _positive(cfg, "parallel.timeout_s", p.timeout_s)
    if p.warmup_exact_epochs < 0:
        _fail(cfg, "parallel.warmup_exact_epochs", p.warmup_exact_epochs, "an integer >= 0")
    if not 0.0 <= p.history_momentum < 1.0:
        _fail(cfg, "parallel.history_momentum", p.history_momentum, "a number in [0, 1)")
    if isinstance(p.stage_split, list) and (
        len(p.stage_split) != p.stages or sum(p.stage_split) != m.layers or min(p.stage_split) < 1
    ):
        _fail(
            cfg,
            "parallel.stage_split",
            p.stage_split,
            f"'equal', or a list of {p.stages} positive layer counts summing to model.layers ({m.layers})",
        )

    if t.epochs < 1:
        _fail(cfg, "train.epochs", t.epochs, "an integer >= 1")
    _positive(cfg, "train.lr", t.lr)
    _positive(cfg, "train.weight_decay", t.weight_decay, zero_ok=True)
    if t.layer_weight_decay is not None:
        _positive(cfg, "train.layer_weight_decay", t.layer_weight_decay, zero_ok=True)
    if t.eval_every < 1:
        _fail(cfg, "train.eval_every", t.eval_every, "an integer >= 1")
    if t.warmup_epochs < 0:
        _fail(cfg, "train.warmup_epochs", t.warmup_epochs, "an integer >= 0")


# ---------------------------------------------------------------------------------------------- description
def _allowed(tp: Any, choices: tuple[Any, ...] | None) -> str:
    """``a | b | c`` of a field's choices, plus a list when its type also admits one (``stage_split``)."""
    if choices is None:
        return ""
    lists = [a for a in typing.get_args(tp) if typing.get_origin(a) is list]
    return " | ".join([*(str(c) for c in choices), *(f"a list of {_type_name(typing.get_args(a)[0])}" for a in lists)])


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
        rows.append((key, _type_name(tp), _allowed(tp, f.metadata["choices"]), _show(f.default), f.metadata["help"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]]).rstrip() for r in rows
    )
