"""OGB node-property datasets (ogbn-arxiv, -products, -proteins, -papers100M) from a local root, never downloaded.

The files are those of OGB's own zip archives, unpacked under ``<root>/<name with - as _>`` (or
``<root>/ogb/<...>``)::

    raw/edge.csv.gz  raw/num-node-list.csv.gz  raw/node-feat.csv.gz  raw/node-label.csv.gz   (csv datasets)
    raw/data.npz  raw/node-label.npz                                                          (binary: papers100M)
    split/<split name>/{train,valid,test}.csv.gz

We read this raw layout ourselves (numpy/pandas), with the dataset facts taken from the ``ogb`` package's
``nodeproppred/master.csv``, instead of calling ``ogb.nodeproppred.NodePropPredDataset``: importing ``ogb``
starts a thread that queries PyPI, and the class prompts on stdin for a missing ``RELEASE_v*.txt``, downloads
when raw files are absent, and caches through pickled ``torch.save`` files.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import torch

from gnnpipe.data.common import index_masks, labels_from_array, require_file
from gnnpipe.data.graph import Graph, GraphError

__all__ = ["OGB_PREFIX", "load_ogb", "ogb_dataset_dir", "ogb_meta"]

OGB_PREFIX = "ogbn-"


def ogb_meta(name: str) -> dict[str, str]:
    """Row of ``ogb/nodeproppred/master.csv`` for ``name`` (read without importing ``ogb``)."""
    spec = importlib.util.find_spec("ogb")
    if spec is None or spec.origin is None:
        raise GraphError(f"dataset {name!r}: the 'ogb' package is needed for its dataset metadata (pip install ogb)")
    master = Path(spec.origin).parent / "nodeproppred" / "master.csv"
    with open(master, newline="") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    if name not in names:
        raise GraphError(f"unknown OGB dataset {name!r}; allowed: {', '.join(names)}")
    col = names.index(name) + 1
    return {row[0]: row[col] for row in rows[1:]}


def ogb_dataset_dir(root: str | Path, name: str) -> Path:
    """``<root>/<name with - as _>`` (or ``<root>/ogb/...``); GraphError naming the expected paths if absent."""
    dir_name = name.replace("-", "_")
    candidates = [Path(root) / dir_name, Path(root) / "ogb" / dir_name]
    for d in candidates:
        if (d / "raw").is_dir():
            return d
    expected = " or ".join(repr(str(c / "raw")) for c in candidates)
    raise GraphError(
        f"OGB dataset {name!r} not found: expected its unpacked archive with {expected} "
        "(nothing is downloaded; see datasets/README.md)"
    )


def _read_csv(path: Path, dtype: type | None = None) -> np.ndarray:
    """``[rows, cols]`` array of a headerless ``.csv.gz``."""
    import pandas as pd

    require_file(path, "OGB dataset")
    try:
        frame = pd.read_csv(path, compression="gzip", header=None, dtype=dtype)
    except Exception as exc:  # pandas raises many types for corrupt input
        raise GraphError(f"{path}: cannot parse as a headerless gzip csv ({exc})") from exc
    return np.require(frame.to_numpy(), requirements="W")  # pandas may hand out a read-only view


def _read_raw(raw: Path, binary: bool) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(edge_index [2, E], N, node_feat [N, F] or None, edge_feat [E, D] or None, labels [N, T])."""
    if binary:
        data_path = require_file(raw / "data.npz", "OGB dataset")
        with np.load(data_path, allow_pickle=False) as z:
            edge_index = z["edge_index"].astype(np.int64)
            n = int(np.asarray(z["num_nodes_list"]).reshape(-1)[0])
            node_feat = z["node_feat"].astype(np.float32) if "node_feat" in z.files else None
            edge_feat = z["edge_feat"].astype(np.float32) if "edge_feat" in z.files else None
        with np.load(require_file(raw / "node-label.npz", "OGB dataset"), allow_pickle=False) as z:
            labels = z["node_label"]
        return edge_index, n, node_feat, edge_feat, labels
    edge_index = _read_csv(raw / "edge.csv.gz", np.int64).T
    n = int(_read_csv(raw / "num-node-list.csv.gz", np.int64).reshape(-1)[0])
    node_feat = _read_csv(raw / "node-feat.csv.gz", np.float32) if (raw / "node-feat.csv.gz").is_file() else None
    edge_feat = _read_csv(raw / "edge-feat.csv.gz", np.float32) if (raw / "edge-feat.csv.gz").is_file() else None
    return edge_index, n, node_feat, edge_feat, _read_csv(raw / "node-label.csv.gz")


def _split_masks(d: Path, split: str, n: int) -> tuple[torch.Tensor, ...]:
    out = []
    for part in ("train", "valid", "test"):
        path = d / "split" / split / f"{part}.csv.gz"
        out.append(index_masks(_read_csv(path, np.int64).reshape(-1), n, str(path)))
    return tuple(out)


def load_ogb(root: str | Path, name: str) -> Graph:
    """Load an ``ogbn-*`` homogeneous node-property dataset from its unpacked archive under ``root``.

    Edges are as stored (plus reversed copies where OGB's ``add_inverse_edge`` says so). ``x: [N, F]``
    float32 node features; a dataset without them (ogbn-proteins) gets the mean of its in-edge features.
    ``y``: ``[N]`` int64 (NaN/negative = -1) for one task, ``[N, T]`` float32 multi-hot for T binary tasks.
    """
    meta = ogb_meta(name)
    if meta["is hetero"] == "True":
        raise GraphError(f"OGB dataset {name!r} is heterogeneous; only homogeneous ogbn-* datasets are supported")
    d = ogb_dataset_dir(root, name)
    raw = d / "raw"
    edge_index, n, x, edge_feat, labels = _read_raw(raw, meta["binary"] == "True")
    edge_file = raw / ("data.npz" if meta["binary"] == "True" else "edge.csv.gz")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise GraphError(f"{edge_file}: edge array has shape {edge_index.shape}, expected two endpoints per edge")
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
        raise GraphError(f"{edge_file}: an edge endpoint is out of range [0, {n}) (N from num-node-list)")
    src, dst = torch.from_numpy(edge_index[0].copy()), torch.from_numpy(edge_index[1].copy())
    if meta["add_inverse_edge"] == "True":
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
        edge_feat = None if edge_feat is None else np.concatenate([edge_feat, edge_feat])
    if x is None:
        if edge_feat is None:
            raise GraphError(f"{raw}: no node-feat and no edge-feat file; expected node features")
        x = _mean_in_edge_features(torch.from_numpy(edge_feat), dst, n).numpy()
    if x.shape[0] != n:
        raise GraphError(f"{raw}: node features have {x.shape[0]} rows, expected {n} (num-node-list)")
    num_tasks = int(meta["num tasks"])
    y = labels_from_array(labels, f"{raw}: node-label", multi_label=num_tasks > 1)
    if y.shape[0] != n:
        raise GraphError(f"{raw}: node-label has {y.shape[0]} rows, expected {n} (num-node-list)")
    num_classes = num_tasks if num_tasks > 1 else int(meta["num classes"])
    train, val, test = _split_masks(d, meta["split"], n)
    return Graph.from_edges(name, src, dst, torch.from_numpy(x), y, train, val, test, num_classes)


def _mean_in_edge_features(edge_feat: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    """``[n, D]`` mean of the features ``[E, D]`` of each vertex's in-edges (0 for none)."""
    out = torch.zeros(n, edge_feat.shape[1], dtype=torch.float32)
    out.index_add_(0, dst, edge_feat.to(torch.float32))
    deg = torch.bincount(dst, minlength=n).clamp(min=1).unsqueeze(1)
    return out / deg
