"""Typed experiment configuration: YAML (``safe_load``) -> frozen dataclasses, validated once.

Every error is a :class:`ConfigError` whose message names the file, the dotted key, the bad value and
what is allowed. Unknown keys are errors (nothing a user wrote is silently dropped). Command-line
overrides ``section.key=value`` are parsed as YAML scalars and validated exactly like file values.
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
]

ARCHS = ("gcn", "sage", "gcnii", "resgcn")
INITS = ("xavier", "pytorch")
CHUNK_ORDERS = ("random", "fixed", "degree")
PARTITION_METHODS = ("metis", "metis_kway", "random", "contiguous")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")


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
@dataclass(frozen=True)
class DatasetConfig:
    """Which graph to load. ``name`` selects the loader (see ``gnnpipe.data.DATASET_NAMES``)."""

    name: str = "cora"
    root: str = "datasets"
    path: str | None = None
    feature_norm: bool = False
    undirected: bool = True
    # synthetic generators only
    num_nodes: int = 2000
    avg_degree: float = 10.0
    num_features: int = 64
    num_classes: int = 4
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "gcnii"
    layers: int = 16
    hidden: int = 64
    dropout: float = 0.5
    alpha: float = 0.1
    lam: float = 0.5
    init: str = "xavier"


@dataclass(frozen=True)
class ParallelConfig:
    ways: int = 1
    stages: int = 1
    chunks: int = 1
    chunk_order: str = "random"
    history_period: int = 1
    cross_chunk_grad_scale: float = 2.0
    stage_split: str | list[int] = "equal"
    partition: str = "metis"
    vertex_weights: str = "none"  # METIS vertex weights: none | degree (balances aggregation work)
    warmup_exact_epochs: int = 0
    history_momentum: float = 0.0
    timeout_s: float = 120.0

    @property
    def world_size(self) -> int:
        return self.ways * self.stages


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5.0e-4
    layer_weight_decay: float | None = None  # decay of the GNN layers' weights (None: weight_decay)
    eval_every: int = 10
    seed: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    warmup_epochs: int = 5  # excluded from the reported mean epoch time


@dataclass(frozen=True)
class LogConfig:
    dir: str = "runs"
    trace: bool = False
    tensorboard: bool = False
    progress: bool = True


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


def _choice(cfg: ExperimentConfig, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(cfg, key, value, " | ".join(choices))


def _positive(cfg: ExperimentConfig, key: str, value: float, *, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):  # YAML reads .nan and .inf
        _fail(cfg, key, value, "a finite number >= 0" if zero_ok else "a finite number > 0")


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field checks; types were checked while parsing."""
    from gnnpipe.data import DATASET_NAMES, dataset_name_allowed  # local: config imports without data deps

    d, m, p, t = cfg.dataset, cfg.model, cfg.parallel, cfg.train
    if not dataset_name_allowed(d.name):  # the loader's own rule ("ogbn-" alone is not a dataset)
        _fail(cfg, "dataset.name", d.name, " | ".join(DATASET_NAMES) + " | ogbn-<name> (an OGB dataset under root)")
    if d.name in ("binary", "npz") and not d.path:
        _fail(cfg, "dataset.path", d.path, f"a path to the {d.name} dataset (required when dataset.name={d.name})")
    for key in ("num_nodes", "num_features", "num_classes"):
        _positive(cfg, f"dataset.{key}", getattr(d, key))
    _positive(cfg, "dataset.avg_degree", d.avg_degree)

    _choice(cfg, "model.arch", m.arch, ARCHS)
    _choice(cfg, "model.init", m.init, INITS)
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
    _choice(cfg, "parallel.chunk_order", p.chunk_order, CHUNK_ORDERS)
    _choice(cfg, "parallel.partition", p.partition, PARTITION_METHODS)
    _choice(cfg, "parallel.vertex_weights", p.vertex_weights, ("none", "degree"))
    _positive(cfg, "parallel.cross_chunk_grad_scale", p.cross_chunk_grad_scale, zero_ok=True)
    _positive(cfg, "parallel.timeout_s", p.timeout_s)
    if p.warmup_exact_epochs < 0:
        _fail(cfg, "parallel.warmup_exact_epochs", p.warmup_exact_epochs, "an integer >= 0")
    if not 0.0 <= p.history_momentum < 1.0:
        _fail(cfg, "parallel.history_momentum", p.history_momentum, "a number in [0, 1)")
    if isinstance(p.stage_split, str):
        _choice(cfg, "parallel.stage_split", p.stage_split, ("equal", "cost"))
    elif len(p.stage_split) != p.stages or sum(p.stage_split) != m.layers or min(p.stage_split) < 1:
        _fail(
            cfg,
            "parallel.stage_split",
            p.stage_split,
            f"'equal', 'cost', or a list of {p.stages} positive layer counts summing to model.layers ({m.layers})",
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
    if cfg.log.tensorboard:
        _fail(
            cfg,
            "log.tensorboard",
            True,
            "false (TensorBoard output is not implemented yet; use the metrics JSON / epochs.csv of the run directory)",
        )
    _choice(cfg, "train.device", t.device, DEVICES)
    _choice(cfg, "train.dtype", t.dtype, DTYPES)
