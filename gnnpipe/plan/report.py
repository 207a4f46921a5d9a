"""``gnnpipe plan``: the ranked table, its JSON, the chosen config, and projections (DESIGN §10).

Every prediction is printed broken into compute, communication and bubble (means over workers of the
simulated epoch), with the peak memory of the largest worker and the bytes per epoch by kind. A projection
replaces the measured device by one the user describes (``8xGPU,link=300GB/s,2us,layer_ms=1.5``: 8 workers
with a device each, that link, and a GNN layer's forward + backward over the whole graph taking
``layer_ms`` on one such device; without ``layer_ms`` this device's calibrated layer time) and is printed
with those inputs, labelled as a projection.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from gnnpipe.config import ConfigError, ExperimentConfig, config_to_yaml
from gnnpipe.plan.costs import Calibration, Fit, Link, layer_costs, parse_link
from gnnpipe.plan.search import Prediction
from gnnpipe.units import format_bytes

__all__ = ["parse_memory", "Projection", "parse_projection", "projected_calibration", "format_table", "plan_json"]

_MEM_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20}
_MEM_UNITS |= {"gib": 2**30, "tib": 2**40}


def parse_memory(text: str) -> int:
    """``24GB`` (decimal), ``16GiB``, ``512MB`` or a byte count -> bytes."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    unit = (m.group(2) if m else "x").lower()
    try:
        value = float(m.group(1)) * _MEM_UNITS[unit] if m and unit in _MEM_UNITS else -1
    except ValueError:
        value = -1
    if not value > 0:
        raise ConfigError(f"--memory {text!r}: expected a size such as 24GB, 16GiB or 512MB")
    return int(value)


@dataclass(frozen=True)
class Projection:
    workers: int
    device: str
    link: Link
    layer_ms: float | None

    def describe(self) -> str:
        lt = f"{self.layer_ms} ms per layer (given)" if self.layer_ms is not None else "this device's layer time"
        return f"{self.workers} x {self.device}, one device per worker, link {self.link.describe()}, {lt}"


def parse_projection(text: str) -> Projection:
    """``8xGPU,link=300GB/s,2us[,layer_ms=1.5]``."""
    m = re.fullmatch(r"\s*(\d+)\s*x\s*([^,]+),\s*link=([^,]+,[^,]+?)(?:,\s*layer_ms=([0-9.eE+-]+))?\s*", text)
    if not m or int(m.group(1)) < 1:
        raise ConfigError(
            f"--project {text!r}: expected NxDEVICE,link=BANDWIDTH,LATENCY[,layer_ms=MS], e.g. 8xGPU,link=300GB/s,2us"
        )
    layer_ms = float(m.group(4)) if m.group(4) else None
    if layer_ms is not None and not layer_ms > 0:
        raise ConfigError(f"--project {text!r}: layer_ms must be > 0")
    return Projection(int(m.group(1)), m.group(2).strip(), parse_link(m.group(3)), layer_ms)


def projected_calibration(cal: Calibration, proj: Projection, cfg: ExperimentConfig) -> Calibration:
    """``cal`` on the projected cluster: every compute fit scaled so that a whole-graph layer takes
    ``layer_ms``, one device per worker (no sharing), the projected link."""
    scale = 1.0
    if proj.layer_ms is not None:
        ref = cal.memory["runs"][f"C{cal.memory['chunk_counts'][-1]}"]
        costs = layer_costs(cal, cfg.model.layers, ref["rows"], ref["edges"])
        scale = proj.layer_ms / 1e3 / max(sum(costs) / len(costs), 1e-12)
    fits = {k: Fit(f.a * scale, f.per_row * scale, f.per_edge * scale) for k, f in cal.fits.items()}
    return dataclasses.replace(
        cal,
        device=proj.device,
        threads=0,
        fits=fits,
        step_per_elem_s=cal.step_per_elem_s * scale,
        epoch_overhead_s=cal.epoch_overhead_s * scale,
        link=proj.link,
        sharing={},  # one device per worker: no sharing of this machine's cores
    )


def _row(i: int, p: Prediction, best: bool) -> str:
    c = p.candidate
    split = ",".join(map(str, c.stage_split))
    mem = format_bytes(max(p.peak_memory_bytes))
    vol = format_bytes(sum(p.bytes.values()))
    flag = " *" if best else ("  (over memory)" if not p.fits_memory else "")
    inter = f" {format_bytes(p.inter_node_bytes):>12}" if p.nodes > 1 else ""
    return (
        f"{i:>3} {p.strategy:<8} {c.ways:>2}x{c.stages:<2} C={c.chunks:<4} {split:<14} {c.split:<5} {c.placement:<9}"
        f"{p.epoch_time_s:>9.4f} {p.compute_s:>9.4f} {p.comm_s:>9.4f} {p.overhead_s:>9.4f} {p.bubble_s:>9.4f} "
        f"{mem:>12} {vol:>12}{inter}{flag}"
    )


def format_table(preds: list[Prediction], *, title: str, inputs: list[str]) -> str:
    """The ranked candidates (``preds`` in rank order; the first that fits the budget is marked ``*``)."""
    best = next((p for p in preds if p.fits_memory), None)
    head = (
        f"{'#':>3} {'strategy':<8} {'WxS':<5} {'chunks':<6} {'layers/stage':<14} {'split':<5} {'placement':<9}"
        f"{'epoch s':>9} {'compute':>9} {'comm':>9} {'msg cpu':>9} {'bubble':>9} {'peak mem':>12} {'bytes/ep':>12}"
        + (f" {'inter-node':>12}" if preds and preds[0].nodes > 1 else "")
    )
    lines = [title, *(f"  {s}" for s in inputs), head]
    lines += [_row(i, p, p is best) for i, p in enumerate(preds, 1)]
    if best is None:
        lines.append("no candidate fits the memory budget")
    else:
        c = best.candidate
        lines.append(
            f"first choice: {best.strategy} ways={c.ways} stages={c.stages} chunks={c.chunks} "
            f"stage_split={list(c.stage_split)} placement={c.placement}: {best.epoch_time_s:.4f} s/epoch predicted "
            "(compute, comm, bubble: means over workers)"
        )
    return "\n".join(lines)


def plan_json(preds: list[Prediction], *, meta: dict) -> dict:
    """Per candidate ``ways, stages, chunks, stage_split, epoch_time_s, peak_memory_bytes, bytes`` (+ breakdown,
    ``placement``, ``nodes``, ``inter_node_bytes`` and ``bytes_by_link``, per epoch, analytic); the first that
    fits the budget under ``best`` (null if none)."""
    best = next((p for p in preds if p.fits_memory), None)
    return {"meta": meta, "candidates": [p.to_dict() for p in preds], "best": best.to_dict() if best else None}


def write_text(path: str, text: str, what: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write: {e.strerror or e}") from None


def write_outputs(preds: list[Prediction], cfg: ExperimentConfig, *, meta: dict, json_path, config_path) -> None:
    best = next((p for p in preds if p.fits_memory), None)
    if json_path:
        write_text(json_path, json.dumps(plan_json(preds, meta=meta), indent=1) + "\n", "--json")
    if config_path:
        if best is None:
            raise ConfigError("--write: no candidate fits the memory budget; nothing to write")
        chosen = best.candidate.config(cfg)
        head = (
            f"# gnnpipe plan: {best.strategy}, {best.epoch_time_s:.4f} s/epoch predicted; ./launch.sh {config_path}\n"
        )
        write_text(config_path, head + config_to_yaml(chosen), "--write")
