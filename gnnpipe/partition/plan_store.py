"""A chunk plan as a versioned artifact on disk: a directory holding ``tensors.pt`` and ``plan.json``.

Loading refuses (with :class:`PlanError`) a plan of another graph structure or plan version, and a corrupt,
mixed or hand-edited pair of files; the JSON carries a digest of the tensors for that.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from gnnpipe.data.graph import Graph
from gnnpipe.partition.metis import atomic_write
from gnnpipe.partition.plan import PLAN_VERSION, TENSOR_FIELDS, ChunkPlan, PlanError, check_graph_hash

__all__ = ["has_plan", "load_plan", "save_plan"]

_FORMAT = "gnnpipe-chunk-plan"
_META_FILE = "plan.json"
_TENSOR_FILE = "tensors.pt"


def has_plan(path: str | os.PathLike) -> bool:
    """Whether the directory ``path`` holds a saved plan's metadata (it may still be unusable)."""
    return (Path(path) / _META_FILE).exists()


def save_plan(plan: ChunkPlan, path: str | os.PathLike) -> None:
    """Save ``plan`` into the directory ``path``: ``tensors.pt`` (torch.save) and ``plan.json`` (metadata).

    Each file is written atomically; the JSON (written last) holds a digest of the tensors, so a reader never
    mixes the files of two different plans.
    """
    path = Path(path)
    tensors = plan.tensors()
    meta = {"format": _FORMAT, **plan.metadata(), "digest": _digest(tensors)}
    atomic_write(path / _TENSOR_FILE, lambda f: torch.save(tensors, f))
    atomic_write(path / _META_FILE, lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))


def load_plan(path: str | os.PathLike, graph: Graph | None) -> ChunkPlan:
    """Load the plan saved in directory ``path`` and check that it belongs to ``graph`` (None: the caller has
    checked it another way, e.g. a prepared graph stored with its plan).

    Raises PlanError if the directory holds no plan, if the plan was built for another graph structure or
    by another plan version, or if a file is corrupt or inconsistent.
    """
    path = Path(path)
    meta_path, tensor_path = path / _META_FILE, path / _TENSOR_FILE
    if not meta_path.exists() or not tensor_path.exists():
        raise PlanError(f"no chunk plan at {path} (expected {_META_FILE} and {_TENSOR_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise PlanError(f"chunk plan metadata {meta_path} is unreadable ({exc}); delete {path} and rebuild") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise PlanError(f"{meta_path} is not a gnnpipe chunk plan; delete {path} and rebuild")
    if meta.get("version") != PLAN_VERSION:
        raise PlanError(
            f"chunk plan at {path} has version {meta.get('version')!r}, this code reads version {PLAN_VERSION}; "
            "rebuild it"
        )
    if graph is not None:
        check_graph_hash(str(meta.get("graph_hash")), graph, where=f"chunk plan at {path}")
    try:
        tensors = torch.load(tensor_path, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise PlanError(f"chunk plan tensors {tensor_path} are unreadable ({exc}); delete {path} and rebuild") from exc
    if not isinstance(tensors, dict) or set(tensors) != set(TENSOR_FIELDS):
        raise PlanError(f"chunk plan tensors {tensor_path} hold the wrong fields; delete {path} and rebuild")
    if _digest(tensors) != meta.get("digest"):
        raise PlanError(f"chunk plan at {path}: {tensor_path} does not match {meta_path}; delete {path} and rebuild")
    scalars = {k: v for k, v in meta.items() if k not in ("format", "digest")}
    try:
        plan = ChunkPlan(**scalars, **tensors)
    except TypeError as exc:
        raise PlanError(f"chunk plan metadata {meta_path} has the wrong fields ({exc}); rebuild it") from exc
    _check_shapes(plan, where=f"chunk plan at {path}")
    return plan


# ---------------------------------------------------------------------------------------------- checks
def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in TENSOR_FIELDS:
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise PlanError(f"plan field {name} is not a tensor")
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_shapes(plan: ChunkPlan, *, where: str) -> None:
    """Cheap invariants of a loaded plan; a violation means a corrupt or hand-edited file."""
    n, C, W = plan.num_nodes, plan.num_chunks, plan.num_ways
    expected = {
        "perm": (n,),
        "inv_perm": (n,),
        "bounds": (C + 1,),
        "chunk_way": (C,),
        "way_bounds": (W + 1,),
        "block_counts": (C, C),
        "ext_offsets": (C + 1,),
        "halo_fwd_offsets": (C * W + 1,),
        "halo_bwd_offsets": (C * W + 1,),
    }
    for name, t in plan.tensors().items():
        if t.dtype != torch.int64 or (name in expected and tuple(t.shape) != expected[name]):
            raise PlanError(f"{where}: field {name} has {t.dtype} {tuple(t.shape)}; delete it and rebuild")
    for off, vals in (
        ("ext_offsets", "ext_vertices"),
        ("halo_fwd_offsets", "halo_fwd_vertices"),
        ("halo_bwd_offsets", "halo_bwd_vertices"),
    ):
        if int(getattr(plan, off)[-1]) != getattr(plan, vals).numel():
            raise PlanError(f"{where}: {off} does not match {vals}; delete it and rebuild")
    if int(plan.bounds[-1]) != n or int(plan.block_counts.sum()) != plan.num_edges:
        raise PlanError(f"{where}: chunk bounds or edge blocks do not cover the graph; delete it and rebuild")
