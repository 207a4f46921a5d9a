"""Typed experiment configuration: YAML (``safe_load``) -> frozen dataclasses, validated once.

Every error is a :class:`ConfigError` whose message names the file, the dotted key, the bad value and
what is allowed. Unknown keys are errors (nothing a user wrote is silently dropped). Command-line
overrides ``section.key=value`` are parsed as YAML scalars and validated exactly like file values.

This module reads and writes YAML; the sections and their self-description (``opt``, ``explain``) live in
``gnnpipe.config_schema`` and the cross-field checks in ``gnnpipe.config_validate``. Import all of them
from here: ``from gnnpipe.config import ExperimentConfig, load_config, explain``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from gnnpipe.config_schema import (
    SECTIONS,
    ConfigError,
    DatasetConfig,
    ExperimentConfig,
    LogConfig,
    ModelConfig,
    ParallelConfig,
    TrainConfig,
    config_fields,
    explain,
    opt,
    type_name,
)
from gnnpipe.config_validate import validate
from gnnpipe.textfile import decode_utf8

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
    "opt",
    "validate",
]


class _SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` (no arbitrary objects), plus YAML 1.2 exponent floats: PyYAML's YAML 1.1 rules
    read ``1e-3`` (no dot) as the *string* '1e-3', so ``lr: 1e-3`` would be refused as not a number."""


_SafeLoader.add_implicit_resolver(  # copies the resolver table: yaml.SafeLoader itself is unchanged
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _duplicate_key(node: yaml.Node, path: str = "") -> tuple[str, int, int] | None:
    """The first key that appears twice in one mapping of ``node``'s tree: (dotted key, first line, second line)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                name = f"{path}.{k.value}" if path else k.value
                if k.value in seen:
                    return name, seen[k.value], k.start_mark.line + 1
                seen[k.value] = k.start_mark.line + 1
                found = _duplicate_key(v, name)
            else:
                found = _duplicate_key(v, path)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found = _duplicate_key(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _yaml_load(text: str, source: str = "command line") -> Any:
    """Parse YAML with :class:`_SafeLoader` (a SafeLoader subclass: no arbitrary objects). A key given twice in one
    mapping is a ConfigError naming it: YAML would silently keep the last one."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        dup = _duplicate_key(node)
        if dup is not None:
            key, first, second = dup
            raise ConfigError(f"{source}: duplicate key '{key}' (lines {first} and {second}); give each key once")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_text(path: Path, source: str) -> str:
    """The file as UTF-8 text (a BOM is allowed); ConfigError naming the first byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the file ({e.strerror})") from None
    text, where = decode_utf8(data)
    if text is None:
        raise ConfigError(f"{source}: not UTF-8 text ({where}); save the file as UTF-8")
    return text


# ---------------------------------------------------------------------------------------------- parsing
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
        raise ConfigError(f"{where}: value {value!r} is not a {type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: value {value!r} is not null")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: value {value!r} must be a list of {type_name(item)}")
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


def config_from_dict(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a plain mapping (as YAML gives)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS), key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown section '{unknown[0]}'; allowed sections: {', '.join(SECTIONS)}")
    sections = {name: _build_section(cls, data.get(name), source, name) for name, cls in SECTIONS.items()}
    cfg = ExperimentConfig(**sections, source=source)
    validate(cfg)
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data with the same keys as the YAML file."""
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}


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
        if p.is_dir():
            raise ConfigError(f"{source}: is a directory; expected a YAML config file")
        if not p.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            data = _yaml_load(_read_text(p, source), source) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    for section, values in parse_overrides(overrides or []).items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: override of unknown section '{section}'; allowed sections: {', '.join(SECTIONS)}"
            )
        current = data.get(section) or {}
        if not isinstance(current, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping, got {current!r}")
        data[section] = {**current, **values}
    if overrides:
        source = f"{source} (+ overrides {' '.join(overrides)})"
    return config_from_dict(data, source)
