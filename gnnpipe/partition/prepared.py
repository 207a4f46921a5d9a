"""One copy of the graph per host: the permuted graph and its chunk plan, stored once, opened by memory mapping.

``prepare`` loads the dataset, builds (or loads) the chunk plan and writes the graph *in the plan's vertex
order* (CSR, features, labels, splits as ``.npy``) beside the plan, in a directory keyed by the dataset's
config, the dataset files' sizes and times, and the plan's parameters. Workers then ``open_prepared`` it:
arrays are memory-mapped copy-on-write, so the workers of one machine share the page cache's single copy
and each touches only the rows it uses (its way's rows, its stage's features or labels). Nobody but the
preparing process ever holds the unpermuted graph. A directory appears atomically (built under a temporary
name, renamed last), so a reader never sees half of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from gnnpipe.config import ExperimentConfig
from gnnpipe.data import SYNTHETIC_NAMES, load_graph
from gnnpipe.data.graph import Graph
from gnnpipe.partition.chunker import (
    PLAN_VERSION,
    ChunkPlan,
    PlanError,
    PlanSpec,
    get_or_build_plan,
    load_plan,
    save_plan,
)

__all__ = ["PREPARED_VERSION", "prepared_dir", "prepare", "open_prepared", "get_or_prepare"]

PREPARED_VERSION = 1
_ARRAYS = ("indptr", "indices", "x", "y", "train_mask", "val_mask", "test_mask")


def _source_stamp(cfg: ExperimentConfig) -> list:
    """Sizes and modification times of the files a dataset is read from (synthetic graphs: none)."""
    d = cfg.dataset
    if d.name in SYNTHETIC_NAMES:
        return []
    roots = [Path(d.path)] if d.path else [Path(d.root)]
    stamp = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        key = d.name.lower().replace("-", "_")
        for p in files[:5000]:
            if d.path or key in str(p).lower().replace("-", "_"):
                st = p.stat()
                stamp.append((str(p), st.st_size, st.st_mtime_ns))
    return stamp


def prepared_dir(cfg: ExperimentConfig, cache_dir: str | os.PathLike) -> Path:
    """Where ``cfg``'s prepared graph lives (whether or not it exists yet)."""
    p = cfg.parallel
    key = {
        "version": (PREPARED_VERSION, PLAN_VERSION),
        "dataset": dataclasses.asdict(cfg.dataset),
        "source": _source_stamp(cfg),
        "plan": (p.chunks, p.ways, p.partition, p.vertex_weights),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"prepared_v{PREPARED_VERSION}_{cfg.dataset.name}_C{p.chunks}_W{p.ways}_{digest}"


def prepare(cfg: ExperimentConfig, cache_dir: str | os.PathLike, graph: Graph | None = None) -> Path:
    """Write ``cfg``'s permuted graph and plan (once); returns the directory. ``graph``: the loaded dataset, if
    the caller already has it."""
    out = prepared_dir(cfg, cache_dir)
    if out.is_dir():
        return out
    if graph is None:
        graph = load_graph(cfg.dataset)
    p = cfg.parallel
    vw = None if p.vertex_weights == "none" else p.vertex_weights
    plan = get_or_build_plan(
        graph, PlanSpec(p.chunks, p.ways, method=p.partition, vertex_weights=vw), cache_dir=cache_dir
    )
    g = plan.permute(graph)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(g, name).numpy(), allow_pickle=False)
        meta = {
            "name": g.name,
            "num_classes": g.num_classes,
            "version": PREPARED_VERSION,
            "structure_hash": g.structure_hash(),
        }
        (tmp / "graph.json").write_text(json.dumps(meta))
        save_plan(plan, tmp / "plan")
        os.rename(tmp, out)  # atomic: a reader sees all of it or nothing
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not out.is_dir():  # another process may have won the race: then its copy is used
            raise
    return out


def open_prepared(path: str | os.PathLike) -> tuple[Graph, ChunkPlan]:
    """The prepared graph (memory-mapped, in plan order) and its plan."""
    path = Path(path)
    meta = json.loads((path / "graph.json").read_text())
    arrays = {name: torch.from_numpy(np.load(path / f"{name}.npy", mmap_mode="c")) for name in _ARRAYS}
    graph = Graph(meta["name"], num_classes=meta["num_classes"], **arrays)
    if graph.structure_hash() != meta.get("structure_hash"):
        raise PlanError(f"prepared graph {path} is corrupt (structure hash differs); delete it and run again")
    return graph, load_plan(path / "plan", None)


def get_or_prepare(cfg: ExperimentConfig, cache_dir: str | os.PathLike) -> tuple[Graph, ChunkPlan]:
    """Prepare if needed, then open (single process; workers use ``train.run.shared_prepared``)."""
    return open_prepared(prepare(cfg, cache_dir))
