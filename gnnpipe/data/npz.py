"""``.npz`` graphs in the common GNN-benchmark layout (Shchur et al., as read by PyG's ``CitationFull``/``Amazon``).

Keys read (``np.load(allow_pickle=False)``; other keys such as ``idx_to_node`` or ``class_names`` are ignored):

- adjacency: ``adj_data, adj_indices, adj_indptr, adj_shape`` -- scipy CSR of ``A[src, dst]`` -- or
  ``edge_index`` ``[2, E]``; explicit zeros in ``adj_data`` are not edges;
- features: ``attr_data, attr_indices, attr_indptr, attr_shape`` (sparse CSR) or a dense
  ``attr_matrix`` / ``features`` / ``x`` ``[N, F]``;
- labels: ``labels`` / ``y`` (``[N]`` class ids, negative = none, or ``[N, C]`` multi-hot) or sparse
  ``labels_data, labels_indices, labels_indptr, labels_shape`` (multi-hot); optional scalar ``num_classes``;
- splits (optional): index arrays ``train_idx/val_idx/test_idx`` (or ``idx_train/idx_val/idx_test``) or bool
  ``train_mask/val_mask/test_mask``; without them a seeded random 60/20/20 split is drawn.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from gnnpipe.data.common import index_masks, labels_from_array, random_split_masks, require_file
from gnnpipe.data.graph import Graph, GraphError, csr_from_edges

__all__ = ["read_npz", "write_npz"]

_SPLIT_KEYS = (
    ("train_idx", "val_idx", "test_idx"),
    ("idx_train", "idx_val", "idx_test"),
    ("train_mask", "val_mask", "test_mask"),
)


def _csr(z: dict[str, np.ndarray], prefix: str, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Validated ``(data, indices, indptr, shape)`` of the CSR matrix stored under ``prefix_*``."""
    keys = [f"{prefix}_{k}" for k in ("data", "indices", "indptr", "shape")]
    missing = [k for k in keys if k not in z]
    if missing:
        raise GraphError(f"{path}: has {prefix}_* keys but lacks {', '.join(missing)}")
    data, indices, indptr, shape = (z[k] for k in keys)
    shape = tuple(int(s) for s in np.asarray(shape).reshape(-1))
    if len(shape) != 2 or min(shape) < 0:
        raise GraphError(f"{path}: {prefix}_shape is {shape}, expected two non-negative sizes")
    if indptr.ndim != 1 or indptr.shape[0] != shape[0] + 1:
        raise GraphError(f"{path}: {prefix}_indptr has {indptr.shape} entries, expected {shape[0] + 1} (rows + 1)")
    if indices.shape != data.shape or indptr[0] != 0 or indptr[-1] != indices.shape[0] or (np.diff(indptr) < 0).any():
        raise GraphError(
            f"{path}: {prefix}_indptr/indices/data are inconsistent; expected a CSR matrix "
            "(indptr starting at 0, non-decreasing, ending at len(indices) == len(data))"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
        raise GraphError(f"{path}: {prefix}_indices has a column id out of range [0, {shape[1]})")
    return data, indices.astype(np.int64), indptr.astype(np.int64), shape


def _dense_from_csr(z: dict[str, np.ndarray], prefix: str, path: Path) -> np.ndarray:
    data, indices, indptr, shape = _csr(z, prefix, path)
    out = np.zeros(shape, dtype=np.float32)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    np.add.at(out, (rows, indices), data.astype(np.float32))
    return out


def _edges(z: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    if "adj_indptr" in z or "adj_data" in z:
        data, indices, indptr, shape = _csr(z, "adj", path)
        if shape[0] != shape[1]:
            raise GraphError(f"{path}: adj_shape is {shape}, expected a square adjacency matrix")
        src = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(indptr))
        keep = data != 0
        return src[keep], indices[keep], shape[0]
    if "edge_index" in z:
        ei = z["edge_index"]
        if ei.ndim != 2 or ei.shape[0] != 2 or ei.dtype.kind not in "iu":
            raise GraphError(f"{path}: edge_index has shape {ei.shape} dtype {ei.dtype}, expected integer [2, E]")
        return ei[0].astype(np.int64), ei[1].astype(np.int64), -1
    raise GraphError(f"{path}: no adjacency; expected adj_data/adj_indices/adj_indptr/adj_shape or edge_index")


def _features(z: dict[str, np.ndarray], path: Path) -> np.ndarray:
    if "attr_indptr" in z or "attr_data" in z:
        return _dense_from_csr(z, "attr", path)
    for key in ("attr_matrix", "features", "x"):
        if key in z:
            x = z[key]
            if x.ndim != 2 or x.dtype.kind not in "iubf":
                raise GraphError(f"{path}: {key} has shape {x.shape} dtype {x.dtype}, expected numeric [N, F]")
            return x.astype(np.float32)
    raise GraphError(f"{path}: no features; expected attr_data/attr_indices/attr_indptr/attr_shape or attr_matrix")


def _labels(z: dict[str, np.ndarray], path: Path) -> torch.Tensor:
    if "labels_indptr" in z or "labels_data" in z:
        return torch.from_numpy(_dense_from_csr(z, "labels", path))
    for key in ("labels", "y"):
        if key in z:
            return labels_from_array(z[key], f"{path}: {key}")
    raise GraphError(f"{path}: no labels; expected 'labels' ([N] class ids or [N, C] multi-hot)")


def _splits(z: dict[str, np.ndarray], n: int, seed: int, path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    for keys in _SPLIT_KEYS:
        present = [k for k in keys if k in z]
        if not present:
            continue
        if len(present) != 3:
            raise GraphError(f"{path}: has {', '.join(present)} but not all of {', '.join(keys)}")
        out = []
        for k in keys:
            a = z[k]
            if a.dtype == np.bool_:
                if a.shape != (n,):
                    raise GraphError(f"{path}: {k} has shape {a.shape}, expected [{n}] bool")
                out.append(torch.from_numpy(a.copy()))
            else:
                out.append(index_masks(a, n, f"{path}: {k}"))
        return tuple(out)  # type: ignore[return-value]
    return random_split_masks(n, seed)


def read_npz(path: str | Path, name: str | None = None, *, seed: int = 0) -> Graph:
    """Load an ``.npz`` graph (layout in the module docstring); ``seed`` drives the random split if none is stored.

    Edges are ``src -> dst`` for every stored ``A[src, dst] != 0``. Returns x ``[N, F]`` float32 and labels
    ``[N]`` int64 or ``[N, C]`` float32.
    """
    p = require_file(path, "npz dataset")
    if not zipfile.is_zipfile(p):  # np.load would try it as a pickle and say so
        raise GraphError(f"{p}: not an .npz file (a zip archive of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(p, allow_pickle=False) as f:
            z = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise GraphError(f"{p}: not a readable .npz without pickles ({exc})") from exc
    src, dst, n = _edges(z, p)
    x = _features(z, p)
    if n < 0:
        n = x.shape[0]
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise GraphError(f"{p}: an edge endpoint is out of range [0, {n})")
    if x.shape[0] != n:
        raise GraphError(f"{p}: features have {x.shape[0]} rows, but the adjacency has {n} vertices")
    if not np.isfinite(x).all():
        raise GraphError(f"{p}: features contain NaN or infinite values")
    y = _labels(z, p)
    if y.shape[0] != n:
        raise GraphError(f"{p}: labels have {y.shape[0]} rows, but the adjacency has {n} vertices")
    num_classes = int(z["num_classes"]) if "num_classes" in z else None
    train, val, test = _splits(z, n, seed, p)
    return Graph.from_edges(
        name or p.stem,
        torch.from_numpy(src),
        torch.from_numpy(dst),
        torch.from_numpy(x),
        y,
        train,
        val,
        test,
        num_classes,
    )


def write_npz(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` in the layout above: adjacency CSR ``A[src, dst]``, dense ``attr_matrix``, ``labels``,
    split index arrays and ``num_classes``. Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    src, dst = graph.edges()
    indptr, indices = csr_from_edges(dst, src, graph.num_nodes)  # rows = sources
    n = graph.num_nodes
    with open(p, "wb") as f:
        np.savez(
            f,
            adj_data=np.ones(indices.numel(), dtype=np.float32),
            adj_indices=indices.numpy(),
            adj_indptr=indptr.numpy(),
            adj_shape=np.array([n, n], dtype=np.int64),
            attr_matrix=graph.x.to(torch.float32).numpy(),
            labels=graph.y.numpy(),
            num_classes=np.array(graph.num_classes, dtype=np.int64),
            train_idx=torch.nonzero(graph.train_mask).reshape(-1).numpy(),
            val_idx=torch.nonzero(graph.val_mask).reshape(-1).numpy(),
            test_idx=torch.nonzero(graph.test_mask).reshape(-1).numpy(),
        )
    return p
