"""Helpers shared by the loaders: path checks, text files, split masks, label conversion, training checks.

Every loader validates its input once, here at the boundary, and raises `GraphError` with a message that
names the file, what is wrong and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gnnpipe.data.graph import Graph, GraphError
from gnnpipe.textfile import decode_utf8

__all__ = [
    "SPLIT_FRACTIONS",
    "check_trainable",
    "index_masks",
    "labels_from_array",
    "random_split_masks",
    "read_text",
    "require_dir",
    "require_file",
]

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path if it is a file; otherwise raise GraphError saying what was expected there."""
    p = Path(path)
    if p.is_dir():
        raise GraphError(f"{what}: {str(p)!r} is a directory; expected a file")
    if not p.is_file():
        raise GraphError(f"{what}: file {str(p)!r} not found (expected it to exist)")
    return p


def read_text(path: str | Path, what: str) -> str:
    """The text of a dataset file that must be ASCII/UTF-8 (numbers, ids); GraphError naming the file and the
    first byte that is not UTF-8 (a binary file given where text is expected, or another encoding)."""
    p = require_file(path, what)
    text, where = decode_utf8(p.read_bytes())
    if text is None:
        raise GraphError(f"{what}: {str(p)!r} is not UTF-8 text ({where}); expected plain decimal numbers")
    return text


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path if it is a directory; otherwise raise GraphError."""
    p = Path(path)
    if not p.is_dir():
        raise GraphError(f"{what}: directory {str(p)!r} not found (expected it to exist)")
    return p


def random_split_masks(
    num_nodes: int, seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded random train/val/test split (default 60/20/20) of all vertices.

    Returns three disjoint ``[num_nodes]`` bool masks covering every vertex (the test part takes the rest).
    """
    perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(int(seed)))
    n_train = int(round(fractions[0] * num_nodes))
    n_val = int(round(fractions[1] * num_nodes))
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return tuple(index_masks(p, num_nodes) for p in parts)  # type: ignore[return-value]


def index_masks(index: torch.Tensor | np.ndarray, num_nodes: int, where: str = "split") -> torch.Tensor:
    """``[num_nodes]`` bool mask that is True at ``index`` (int ids); ids out of range raise GraphError."""
    if isinstance(index, torch.Tensor):
        idx = index.to(torch.int64).reshape(-1)
    else:
        idx = torch.from_numpy(np.array(index, dtype=np.int64)).reshape(-1)  # a copy: inputs may be read-only
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_nodes):
        bad = idx[(idx < 0) | (idx >= num_nodes)][0].item()
        raise GraphError(f"{where}: vertex id {bad} out of range [0, {num_nodes})")
    mask = torch.zeros(num_nodes, dtype=torch.bool)
    mask[idx] = True
    return mask


def labels_from_array(labels: np.ndarray, where: str, multi_label: bool | None = None) -> torch.Tensor:
    """Convert stored labels to the Graph convention.

    labels: ``[N]`` or ``[N, 1]`` class ids (negative or NaN = unlabelled) gives int64 ``[N]`` with -1 for none;
    ``[N, C]`` with C > 1 gives float32 multi-hot ``[N, C]`` (NaN = 0). ``multi_label`` forces the choice.
    """
    a = np.asarray(labels)
    if a.ndim == 2 and a.shape[1] == 1 and not multi_label:
        a = a[:, 0]
    if a.ndim == 1 and multi_label:
        a = a[:, None]
    if a.ndim == 1:
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a)
            if np.any(a[~bad] != np.round(a[~bad])):
                raise GraphError(f"{where}: class labels must be integers, found a fractional value")
            a = np.where(bad, -1, a)
        elif a.dtype.kind not in "iub":
            raise GraphError(f"{where}: labels have dtype {a.dtype}, expected integers or floats")
        y = torch.from_numpy(a.astype(np.int64))
        return torch.where(y < 0, torch.full_like(y, -1), y)
    if a.ndim == 2:
        if a.dtype.kind not in "iubf":
            raise GraphError(f"{where}: labels have dtype {a.dtype}, expected numbers")
        return torch.from_numpy(np.nan_to_num(a.astype(np.float32), nan=0.0))
    raise GraphError(f"{where}: labels have shape {a.shape}, expected [N] or [N, C]")


def check_trainable(
    graph: Graph, where: str, *, chunks: int = 1, old_ids: torch.Tensor | None = None, features: bool = True
) -> None:
    """What training needs beyond a valid graph, checked before it starts (GraphError naming what and where):
    at least one vertex per chunk, at least one training vertex, a label on every training vertex (single
    label: ``y >= 0``), finite features (``features``). ``old_ids: [N]`` maps a permuted graph's vertex ids
    back to the dataset's, for the messages."""
    n = graph.num_nodes
    if chunks > n:
        raise GraphError(f"{where}: parallel.chunks = {chunks} but the graph has {n} vertices; allowed: at most {n}")
    train = graph.train_mask
    num_train = int(train.sum())
    if num_train == 0:
        raise GraphError(f"{where}: no training vertices (the train split is empty); training needs at least one")

    def vertex(v: int) -> int:
        return int(old_ids[v]) if old_ids is not None else v

    if not graph.multi_label:
        unlabelled = train & (graph.y < 0)
        bad = int(unlabelled.sum())
        if bad:
            v = vertex(int(unlabelled.nonzero()[0]))
            raise GraphError(
                f"{where}: {bad} of the {num_train} training vertices have no label (-1), e.g. vertex {v}; "
                f"every training vertex needs a class in [0, {graph.num_classes})"
            )
    if features and graph.x.is_floating_point() and not bool(torch.isfinite(graph.x).all()):
        v = vertex(int((~torch.isfinite(graph.x)).any(1).nonzero()[0]))
        raise GraphError(f"{where}: features contain NaN or infinite values, e.g. at vertex {v}; expected finite")
