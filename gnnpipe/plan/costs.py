"""What a calibration is, where it is cached, and what ``parallel.stage_split: cost`` reads of it (DESIGN §10).

Pure data and file lookup (no measurement, no processes: that is ``plan/calibrate.py``), so that
``parallel/dims.py`` can resolve ``stage_split: cost`` from a cached calibration without importing the
planner. A calibration is keyed by device, threads per worker, model config, dataset config (which names
the graph), float type, recompute and the aggregation kernels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnnpipe.config import ConfigError, ExperimentConfig

__all__ = [
    "Link", "Fit", "Sharing", "Calibration", "parse_link", "calibration_key", "cache_root", "load_cached",
    "save_calibration", "layer_costs", "worker_threads", "cost_split_counts",
]  # fmt: skip

CALIBRATION_VERSION = 3  # 2: native kernels at the planned OpenMP threads; the sharing probe's wake_s; 3: the leaner
# cross-chunk gradient and in-place history reads (per-chunk costs changed)
_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Link:
    latency_s: float
    bandwidth: float  # bytes per second
    source: str = "given"
    burst: float = 0.0  # bytes a shaped link (tc tbf) passes at once after an idle spell (--link's third part)

    def describe(self) -> str:
        burst = f", burst {self.burst / 1e3:.3g} kB" if self.burst else ""
        return f"{self.bandwidth / 1e9:.3g} GB/s, {self.latency_s * 1e6:.3g} us{burst} ({self.source})"


_RATE = r"([0-9.eE+-]+)\s*(?:([kKmMgGtT]i?)B/s|([kKmMgGtT]?)bit(?:/s)?)"


def parse_link(text: str) -> Link:
    """``RATE[,LATENCY[,BURST]]``: ``"25GB/s,5us"`` (bytes per second with k/M/G/T or Ki/Mi/Gi prefixes), or in
    bits as tc writes them (``200mbit``, ``1gbit``, ``10Gbit/s``: decimal); latency in s, ms, us or ns (default
    0); burst in bytes (``256kB``, ``256KiB``; default 0: the rate alone)."""
    m = re.fullmatch(
        rf"\s*{_RATE}\s*(?:,\s*([0-9.eE+-]+)\s*(s|ms|us|µs|ns)\s*(?:,\s*([0-9.eE+-]+)\s*([kKmMgG]i?)?B\s*)?)?",
        text,
    )
    try:
        if m is None:
            raise ValueError(text)
        if m.group(2) is not None:
            bw = float(m.group(1)) * _UNITS[m.group(2).lower()]
        else:
            bw = float(m.group(1)) * _UNITS[(m.group(3) or "").lower()] / 8
        lat = float(m.group(4)) * _TIME[m.group(5)] if m.group(4) else 0.0
        burst = float(m.group(6)) * _UNITS[(m.group(7) or "").lower()] if m.group(6) else 0.0
    except ValueError:
        bw = lat = burst = -1.0
    if not (bw > 0 and lat >= 0 and burst >= 0 and all(np.isfinite(x) for x in (bw, lat, burst))):
        raise ConfigError(
            f"--link {text!r}: expected RATE[,LATENCY[,BURST]] such as 25GB/s,5us or 200mbit,100us,256KiB (rate > 0)"
        )
    return Link(latency_s=lat, bandwidth=bw, source="given", burst=burst)


@dataclass(frozen=True)
class Fit:
    """``seconds = a + per_row * rows + per_edge * edges`` of one op of one layer on one chunk."""

    a: float
    per_row: float
    per_edge: float

    def seconds(self, rows: float, edges: float) -> float:
        return self.a + self.per_row * rows + self.per_edge * edges


@dataclass(frozen=True)
class Sharing:
    """What ``workers`` local workers cost beyond their one-worker compute (``plan/sharing.py`` measures it):
    ``compute_factor`` (CPU time of a compute step with all of them computing, over alone), ``msg_cpu`` (CPU
    seconds per message end, send or receive: ``a + per_row * bytes``; ``per_edge`` unused), ``allreduce``
    (wall seconds of an all-reduce over all of them, the same form) and ``wake_s`` (how much later a worker
    blocked on a message runs again when it arrives while every core is busy: it waits for a time slice)."""

    workers: int
    compute_factor: float
    msg_cpu: Fit
    allreduce: Fit
    wake_s: float = 0.0
    one_way_s: float = 0.0  # a message's one-way wall time after 2 ms of compute, CPU of both ends included
    exchange_s: float = 0.0  # a two-way exchange's wall time after 2 ms of compute, the same way
    pair_bytes: int = 0  # the size of those messages

    def msg_s(self, messages: int, nbytes: float) -> float:
        """CPU seconds of ``messages`` message ends carrying ``nbytes`` in all."""
        return messages * self.msg_cpu.a + nbytes * self.msg_cpu.per_row

    def ring_step(self) -> tuple[float, float]:
        """(seconds, seconds per byte) of one step of a ring all-reduce, from the measured all-reduce over
        ``workers`` (2(n-1) steps of 1/n of the buffer)."""
        n = max(self.workers, 2)
        return self.allreduce.a / (2 * (n - 1)), self.allreduce.per_row * n / (2 * (n - 1))


@dataclass(frozen=True)
class Calibration:
    """Everything measured: ``fits`` by op (``encode``, ``loss``, ``loss_b``, ``encode_b``, ``recompute``) or op
    and layer (``pre@3``, ``agg@3``, ``agg_b@3``, ``pre_b@3``); ``step_per_elem_s`` (optimizer, per weight
    element); ``epoch_overhead_s`` (per epoch outside the actions); ``memory``: the calibration runs' memory
    facts (see :mod:`gnnpipe.plan.memory_model`)."""

    key: str
    device: str
    threads: int
    cores: int
    fits: dict[str, Fit]
    step_per_elem_s: float
    epoch_overhead_s: float
    link: Link
    memory: dict
    background: float = 0.0  # other runnable processes while calibrating (CPU; see plan/simulate.py)
    sharing: dict[str, Sharing] = dataclasses.field(default_factory=dict)  # by worker count (CPU only)

    def seconds(self, op: str, layer: int, rows: float, edges: float) -> float:
        fit = self.fits.get(f"{op}@{layer}") or self.fits.get(op)
        return fit.seconds(rows, edges) if fit is not None else 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        sharing = {
            k: Sharing(**{**v, "msg_cpu": Fit(**v["msg_cpu"]), "allreduce": Fit(**v["allreduce"])})
            for k, v in d.get("sharing", {}).items()
        }
        fits = {k: Fit(**v) for k, v in d["fits"].items()}
        return cls(**{**d, "fits": fits, "link": Link(**d["link"]), "sharing": sharing})

    def shared_by(self, workers: int) -> Sharing | None:
        """The measured cost of ``workers`` sharing the machine (None: not measured, or one device each)."""
        return self.sharing.get(str(workers))


def layer_costs(cal: Calibration, num_layers: int, rows: int, edges: int) -> list[float]:
    """Seconds per GNN layer for the whole graph (forward + backward), the encoder added to the first layer
    and the head and loss to the last: what ``stage_split: cost`` balances (min-max, partition/stages.py)."""
    out = [
        sum(cal.seconds(op, layer, rows, edges) for op in ("pre", "agg", "agg_b", "pre_b"))
        for layer in range(num_layers)
    ]
    out[0] += cal.seconds("encode", -1, rows, edges) + cal.seconds("encode_b", -1, rows, edges)
    out[-1] += cal.seconds("loss", -1, rows, edges) + cal.seconds("loss_b", -1, rows, edges)
    return out


def calibration_key(cfg: ExperimentConfig, device: str, threads: int) -> str:
    """What a calibration depends on: device, threads, model, graph (dataset config), float type, recompute."""
    from gnnpipe.kernels import describe

    key = {
        "version": CALIBRATION_VERSION,
        "device": device,
        "threads": threads,
        "model": dataclasses.asdict(cfg.model),
        "dataset": dataclasses.asdict(cfg.dataset),
        "dtype": cfg.train.dtype,
        "recompute": cfg.parallel.recompute,
        "history_dtype": getattr(cfg.parallel, "history_dtype", "auto"),
        "kernels": describe().split(":")[0] + describe().split("(")[-1].split(",")[0],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _cache_path(cache: Path, key: str) -> Path:
    return Path(cache) / f"plan_calibration_v{CALIBRATION_VERSION}_{key}.json"


def load_cached(cache: Path, key: str) -> Calibration | None:
    path = _cache_path(cache, key)
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def cache_root() -> Path:
    """The project's cache directory (``$GNNPIPE_CACHE``, default ``.cache/gnnpipe``; as ``train/run.py``)."""
    return Path(os.environ.get("GNNPIPE_CACHE", ".cache/gnnpipe"))


def save_calibration(cache: Path, cal: Calibration) -> Path:
    """Write ``cal`` atomically into ``cache``."""
    path = _cache_path(cache, cal.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cal.to_dict(), indent=1))
    tmp.replace(path)
    return path


def worker_threads(device: str, workers: int) -> int:
    """Threads each of ``workers`` local workers gets: ``cores // workers`` on a CPU (as torchrun and
    ``parallel/spawn.py`` set them), 0 on a GPU (one device per worker; threads do not matter)."""
    if device.startswith("cuda"):
        return 0
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def cost_split_counts(cfg: ExperimentConfig) -> list[int]:
    """``stage_split: cost``: the min-max layer split (partition/stages.py) over the calibrated per-layer costs
    of ``cfg``'s model and graph, from the cached calibration at this run's threads per worker."""
    from gnnpipe.partition.stages import split_layers

    p = cfg.parallel
    threads = worker_threads(cfg.train.device, p.ways * p.stages)
    cal = load_cached(cache_root(), calibration_key(cfg, cfg.train.device, threads))
    if cal is None:
        raise ConfigError(
            f"parallel.stage_split: cost needs a calibration of this model and graph at {threads} thread(s) per "
            f"worker in {cache_root()}; run `gnnpipe plan --config F --workers {p.ways * p.stages}` first "
            "(or use equal or a list of layer counts)"
        )
    ref = cal.memory["runs"][f"C{cal.memory['chunk_counts'][-1]}"]
    costs = layer_costs(cal, cfg.model.layers, ref["rows"], ref["edges"])
    return split_layers(cfg.model.layers, p.stages, costs=costs)
