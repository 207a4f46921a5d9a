"""Accuracy suites as data: ``experiments/suites/<name>.yaml`` read into typed, validated :class:`Suite` objects.

A suite file (keys other than these are errors)::

    description: what the suite shows                           # optional text
    seeds: [1, 2, 3]                                            # each experiment runs once per seed
    overrides: [train.lr=0.01]                                  # optional, applied to every experiment first
    experiments:
      - {name: cora_single, config: experiments/configs/cora_gcnii32_single.yaml}
      - {name: cora_pipe, config: experiments/configs/cora_gcnii32_pipe4.yaml, overrides: [model.dropout=0.0]}
    checks:                                                     # optional: what the suite must show
      - {experiment: cora_single, at_least: 80.0}               # mean test accuracy (%) >= 80.0
      - {experiment: cora_pipe, baseline: cora_single, tolerance: 1.0}   # |mean - baseline mean| <= 1.0 points
      - {experiment: cora_pipe, baseline: cora_single, tolerance: 1.0, judged: false}  # reported, not judged

``config`` is a path relative to the repository root (it is passed to ``./launch.sh`` as written). Overrides are
``section.key=value`` strings as on the command line; an experiment's override of a key the suite already sets
replaces it in place (so the command keeps the suite's key order). ``train.seed`` and ``log.*`` are set by the
runner and may not be overridden. A check's ``metric`` is ``test_acc`` (default) or ``best_val_acc``.
Every problem raises :class:`SuiteError` naming the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SUITE_DIR = REPO / "experiments" / "suites"
METRICS = ("test_acc", "best_val_acc")  # per-run percentages a check can judge
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # experiment names become file names
_SUITE_KEYS = ("description", "seeds", "overrides", "experiments", "checks")
_EXPERIMENT_KEYS = ("name", "config", "overrides")
_CHECK_KEYS = ("experiment", "metric", "at_least", "baseline", "tolerance", "judged")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file, the key and what is allowed."""


Fail = Callable[[str, str], SuiteError]  # (key, problem) -> the error to raise


@dataclass(frozen=True)
class Experiment:
    """One arm of a suite: a config file and its overrides (the suite's merged in), run once per seed."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    """What a suite must show about ``experiment``'s mean ``metric`` over the seeds: at least ``at_least``, or
    within ``tolerance`` points of ``baseline``'s mean. ``judged=False``: reported, never a failure."""

    experiment: str
    metric: str = "test_acc"
    at_least: float | None = None
    baseline: str | None = None
    tolerance: float | None = None
    judged: bool = True

    @property
    def label(self) -> str:
        what = "mean" if self.metric == "test_acc" else f"{self.metric} mean"
        if self.baseline is not None:
            return f"|{what} - {self.baseline}| <= {self.tolerance:.1f}"
        return f"{self.metric.replace('_', ' ')} >= {self.at_least:.1f}"


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    seeds: tuple[int, ...]
    experiments: tuple[Experiment, ...]
    checks: tuple[Check, ...] = ()
    description: str = ""

    def experiment_names(self) -> list[str]:
        return [e.name for e in self.experiments]


# ---------------------------------------------------------------------------------------------- loading
def suite_names(directory: Path = SUITE_DIR) -> list[str]:
    """The suites shipped in ``directory`` (file stems), sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def suite_path(name_or_path: str, directory: Path = SUITE_DIR) -> Path:
    """``pipeline`` -> ``experiments/suites/pipeline.yaml``; a path ending in ``.yaml``/``.yml`` is kept."""
    if name_or_path.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SuiteError(f"no suite {name_or_path!r}; shipped suites: {', '.join(suite_names(directory))}")
    return path


def load_suite(path: str | Path, root: Path = REPO) -> Suite:
    """Read and validate one suite file; config paths are checked against ``root`` (the repository)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML ({exc})") from exc
    return suite_from_dict(data, path, root)


def load_suites(directory: Path = SUITE_DIR, root: Path = REPO) -> dict[str, Suite]:
    return {name: load_suite(directory / f"{name}.yaml", root) for name in suite_names(directory)}


# ---------------------------------------------------------------------------------------------- validation
def suite_from_dict(data: Any, path: Path, root: Path = REPO) -> Suite:
    """Validate the parsed YAML of ``path``; every error names ``path`` and the offending key."""

    def fail(key: str, problem: str) -> SuiteError:
        return SuiteError(f"{path}: {key}: {problem}")

    _mapping(data, "top level", _SUITE_KEYS, fail)
    for key in ("seeds", "experiments"):
        if key not in data:
            raise fail(key, f"missing; a suite needs {', '.join(('seeds', 'experiments'))}")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise fail("seeds", f"got {seeds!r}; expected a non-empty list of integers, e.g. [1, 2, 3]")
    if len(set(seeds)) != len(seeds):
        raise fail("seeds", f"{seeds} repeats a seed")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", f"got {type(description).__name__}; expected text")
    common = _overrides(data.get("overrides", []), "overrides", fail)

    exps = data["experiments"]
    if not isinstance(exps, list) or not exps:
        raise fail("experiments", "expected a non-empty list of {name, config[, overrides]} mappings")
    experiments: list[Experiment] = []
    for i, e in enumerate(exps):
        where = f"experiments[{i}]"
        _mapping(e, where, _EXPERIMENT_KEYS, fail)
        name, config = e.get("name"), e.get("config")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise fail(f"{where}.name", f"got {name!r}; expected letters, digits and _.+- (it names result files)")
        if name in {x.name for x in experiments}:
            raise fail(f"{where}.name", f"{name!r} appears twice; experiment names must be unique")
        if not isinstance(config, str) or not (root / config).is_file():
            raise fail(f"{where}.config", f"{config!r} is not a file under {root} (e.g. experiments/configs/x.yaml)")
        own = _overrides(e.get("overrides", []), f"{where}.overrides", fail)
        experiments.append(Experiment(name, config, merge_overrides(common, own)))

    checks = data.get("checks") or []
    if not isinstance(checks, list):
        raise fail("checks", f"got {type(checks).__name__}; expected a list of check mappings")
    names = [e.name for e in experiments]
    return Suite(
        name=path.stem,
        path=path,
        seeds=tuple(seeds),
        experiments=tuple(experiments),
        checks=tuple(_check(c, f"checks[{i}]", names, fail) for i, c in enumerate(checks)),
        description=description.strip(),
    )


def _mapping(value: Any, where: str, allowed: tuple[str, ...], fail: Fail) -> None:
    if not isinstance(value, dict):
        raise fail(where, f"got {type(value).__name__}; expected a mapping with keys {', '.join(allowed)}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        key = str(unknown[0]) if where == "top level" else f"{where}.{unknown[0]}"
        raise fail(key, f"unknown key; allowed: {', '.join(allowed)}")


def _overrides(value: Any, key: str, fail: Fail) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise fail(key, f"got {type(value).__name__}; expected a list of 'section.key=value' strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not re.fullmatch(r"[a-z_]+\.[a-z_0-9]+=.*", item):
            raise fail(f"{key}[{i}]", f"got {item!r}; expected 'section.key=value', e.g. 'model.dropout=0.0'")
        dotted = item.split("=", 1)[0]
        if dotted == "train.seed" or dotted.startswith("log."):
            raise fail(f"{key}[{i}]", f"{dotted} is set by the runner (seeds: the suite's 'seeds' list)")
    return tuple(value)


def merge_overrides(first: tuple[str, ...], then: tuple[str, ...]) -> tuple[str, ...]:
    """``first`` then ``then``, one entry per key: a later value replaces an earlier one in its position."""
    merged: dict[str, str] = {}
    for item in (*first, *then):
        key, value = item.split("=", 1)
        merged[key] = value
    return tuple(f"{k}={v}" for k, v in merged.items())


def _check(c: Any, where: str, names: list[str], fail: Fail) -> Check:
    _mapping(c, where, _CHECK_KEYS, fail)
    exp = c.get("experiment")
    if exp not in names:
        raise fail(f"{where}.experiment", f"{exp!r} is not an experiment of this suite: {', '.join(names)}")
    metric = c.get("metric", "test_acc")
    if metric not in METRICS:
        raise fail(f"{where}.metric", f"{metric!r} is not allowed; allowed: {', '.join(METRICS)}")
    judged = c.get("judged", True)
    if not isinstance(judged, bool):
        raise fail(f"{where}.judged", f"got {judged!r}; expected true or false")
    if ("at_least" in c) == ("baseline" in c):
        raise fail(where, "give exactly one of 'at_least' (an absolute bar) or 'baseline' (+ 'tolerance')")
    if "at_least" in c:
        if "tolerance" in c:
            raise fail(f"{where}.tolerance", "only a 'baseline' check has a tolerance")
        return Check(exp, metric, at_least=_number(c["at_least"], f"{where}.at_least", fail), judged=judged)
    baseline = c["baseline"]
    if baseline not in names or baseline == exp:
        raise fail(f"{where}.baseline", f"{baseline!r} must be another experiment of this suite: {', '.join(names)}")
    if "tolerance" not in c:
        raise fail(f"{where}.tolerance", "missing; a baseline check needs a tolerance in points, e.g. 1.0")
    tol = _number(c["tolerance"], f"{where}.tolerance", fail)
    if tol < 0:
        raise fail(f"{where}.tolerance", f"got {tol}; expected >= 0 (points of accuracy)")
    return Check(exp, metric, baseline=baseline, tolerance=tol, judged=judged)


def _number(value: Any, key: str, fail: Fail) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(key, f"got {value!r}; expected a number (points of accuracy, %)")
    return float(value)
