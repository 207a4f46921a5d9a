"""Cross-field checks of an :class:`ExperimentConfig`, run once at the boundary (``config_from_dict``).

Types were checked while parsing; here every field with ``choices`` is checked against exactly those, and
the rules that span keys (``chunks`` a multiple of ``ways``, ``stage_split`` summing to ``layers`` ...)
are enforced. Each failure is a :class:`ConfigError` naming the source, the dotted key, the value and what
is allowed.
"""

from __future__ import annotations

import math
from typing import Any

from gnnpipe.config_schema import ConfigError, ExperimentConfig, allowed_values, config_fields

__all__ = ["validate"]


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
            _fail(cfg, key, value, allowed_values(tp, choices))


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
    if not (math.isfinite(p.heartbeat_timeout_s) and p.heartbeat_timeout_s >= 2.0):
        _fail(cfg, "parallel.heartbeat_timeout_s", p.heartbeat_timeout_s, "a finite number of seconds >= 2")
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
    if t.checkpoint_every < 0:
        _fail(cfg, "train.checkpoint_every", t.checkpoint_every, "an integer >= 0 (0: no checkpoints)")
