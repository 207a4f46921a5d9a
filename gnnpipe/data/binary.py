"""The GNNPipe authors' on-disk graph format: read, write, and read partition bounds.

A dataset is a directory holding:

- ``meta_data.txt``: one line ``N E F C`` (vertices, directed edges, feature width, classes);
- ``edge_list.bin``: packed ``uint32 (src, dst)`` pairs, ``E`` of them -- or ``2E`` when written by the
  authors' partitioner, which stores the edge array twice (sorted by (src, dst), then by (dst, src));
- ``feature.bin``: float32 row-major ``[N, F]``;
- ``label.bin``: float32 one-hot ``[N, C]`` (multi-hot for multi-label data);
- ``split.txt``: ``N`` lines ``vid s`` with ``s`` 0 = train, 1 = valid, 2 = test, 3 = unused;
- optionally ``<k>_parts/partitions.txt``: ``k`` lines ``begin end``, contiguous vertex ranges tiling [0, N).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gnnpipe.data.common import read_text, require_dir, require_file
from gnnpipe.data.graph import Graph, GraphError

__all__ = [
    "BinaryMeta",
    "read_binary",
    "read_meta",
    "read_partitions",
    "write_binary",
    "write_partitions",
]

META, EDGES, FEATURES, LABELS, SPLIT = "meta_data.txt", "edge_list.bin", "feature.bin", "label.bin", "split.txt"
_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class BinaryMeta:
    """The four numbers of ``meta_data.txt``."""

    num_nodes: int
    num_edges: int
    num_features: int
    num_classes: int


# ---------------------------------------------------------------------------------------------- reading
def read_meta(directory: str | Path) -> BinaryMeta:
    """Parse ``<directory>/meta_data.txt`` ("N E F C", non-negative integers)."""
    path = require_file(Path(directory) / META, "binary dataset")
    tokens = read_text(path, "binary dataset").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError:
        values = []
    if len(values) != 4 or min(values) < 0:
        raise GraphError(
            f"{path}: malformed, got {' '.join(tokens)[:80]!r}; expected one line 'N E F C' of 4 non-negative integers"
        )
    return BinaryMeta(*values)


def _read_array(path: Path, dtype: np.dtype, counts: tuple[int, ...], what: str) -> np.ndarray:
    """Read a raw array of ``counts[i]`` items (the first match wins); size mismatches name the file."""
    require_file(path, "binary dataset")
    size = path.stat().st_size
    item = np.dtype(dtype).itemsize
    for count in counts:
        if size == count * item:
            return np.fromfile(path, dtype=dtype, count=count)
    expected = " or ".join(f"{c * item} bytes" for c in counts)
    raise GraphError(f"{path}: size {size} bytes does not match meta_data.txt ({what}); expected {expected}")


def _read_feature_like(path: Path, n: int, width: int) -> np.ndarray:
    """float32 ``[n, width]`` from a raw file; a size mismatch says how many rows the file holds."""
    require_file(path, "binary dataset")
    size, expected = path.stat().st_size, 4 * n * width
    if size != expected:
        if width and size % (4 * width) == 0:
            got = f"it holds {size // (4 * width)} rows of {width} float32 but meta_data.txt says N = {n} vertices"
        else:
            got = f"size {size} bytes is not {n} rows x {width} float32 (truncated, or meta_data.txt is wrong)"
        raise GraphError(f"{path}: {got}; expected {expected} bytes")
    return np.fromfile(path, dtype=np.float32, count=n * width).reshape(n, width)


def _read_split(path: Path, n: int) -> np.ndarray:
    """``[N]`` int64 split codes from split.txt; every vertex must appear exactly once with a code in 0..3."""
    text = read_text(path, "binary dataset")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tokens = text.split()
    try:
        pairs = np.array(tokens, dtype=np.int64).reshape(-1, 2) if len(tokens) == 2 * len(lines) else None
    except ValueError:
        pairs = None
    if pairs is None:  # slow path: find the offending line
        for i, ln in enumerate(lines):
            parts = ln.split()
            if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
                raise GraphError(f"{path}: line {i + 1} is {ln[:60]!r}; expected 'vid split' (two integers)")
    assert pairs is not None
    if pairs.shape[0] != n:
        raise GraphError(f"{path}: has {pairs.shape[0]} lines, expected {n} (one 'vid split' line per vertex)")
    vid, code = pairs[:, 0], pairs[:, 1]
    bad = np.flatnonzero((vid < 0) | (vid >= n))
    if bad.size:
        raise GraphError(f"{path}: line {bad[0] + 1}: vertex id {vid[bad[0]]} out of range [0, {n})")
    bad = np.flatnonzero((code < 0) | (code > 3))
    if bad.size:
        raise GraphError(
            f"{path}: line {bad[0] + 1}: split code {code[bad[0]]}; "
            "expected 0 (train), 1 (valid), 2 (test) or 3 (unused)"
        )
    out = np.full(n, -1, dtype=np.int64)
    out[vid] = code
    if (out < 0).any():
        missing = int(np.flatnonzero(out < 0)[0])
        raise GraphError(f"{path}: vertex {missing} has no line (some vertex is listed twice); expected each once")
    return out


def _decode_labels(lab: np.ndarray, path: Path, multi_label: bool | None) -> torch.Tensor:
    """label.bin ``[N, C]`` 0/1 floats -> int64 ``[N]`` (one-hot; empty row = -1) or float32 ``[N, C]``.

    Auto-detection: multi-label iff some row has more than one 1 (a single-label file marks an unlabelled
    vertex with an all-zero row). ``multi_label`` overrides the detection.
    """
    if lab.size and not np.all((lab == 0) | (lab == 1)):
        raise GraphError(f"{path}: labels must be 0/1 (one-hot or multi-hot), found other values")
    ones = lab.sum(1) if lab.size else np.zeros(lab.shape[0])
    if multi_label is None:
        multi_label = bool((ones > 1).any())
    if multi_label:
        return torch.from_numpy(lab.astype(np.float32))
    if (ones > 1).any():
        row = int(np.flatnonzero(ones > 1)[0])
        raise GraphError(f"{path}: row {row} has {int(ones[row])} ones; expected one-hot rows for single-label data")
    y = lab.argmax(1).astype(np.int64) if lab.shape[1] else np.zeros(lab.shape[0], dtype=np.int64)
    y[ones == 0] = -1
    return torch.from_numpy(y)


def read_binary(directory: str | Path, name: str | None = None, *, multi_label: bool | None = None) -> Graph:
    """Load a dataset in the authors' format (see the module docstring).

    Returns a Graph with ``x: [N, F]`` float32, ``y: [N]`` int64 (or ``[N, C]`` float32 when multi-label),
    masks from split.txt. Truncated files, out-of-range ids, bad split codes and malformed meta raise
    GraphError naming the file.
    """
    d = require_dir(directory, "binary dataset")
    meta = read_meta(d)
    n, e, f, c = meta.num_nodes, meta.num_edges, meta.num_features, meta.num_classes
    edges = _read_array(d / EDGES, np.uint32, (2 * e, 4 * e), f"{e} uint32 (src, dst) pairs, once or twice")
    edges = edges.reshape(-1, 2)[:e].astype(np.int64)
    if e and int(edges.max()) >= n:
        i = int(np.flatnonzero((edges >= n).any(1))[0])
        raise GraphError(f"{d / EDGES}: edge {i} = {tuple(edges[i].tolist())} has a vertex id out of range [0, {n})")
    x = _read_feature_like(d / FEATURES, n, f)
    if not np.isfinite(x).all():
        raise GraphError(f"{d / FEATURES}: contains NaN or infinite values; expected finite float32 features")
    lab = _read_feature_like(d / LABELS, n, c)
    y = _decode_labels(lab, d / LABELS, multi_label)
    split = torch.from_numpy(_read_split(d / SPLIT, n))
    src, dst = torch.from_numpy(edges[:, 0]), torch.from_numpy(edges[:, 1])
    return Graph.from_edges(
        name or d.resolve().name,
        src,
        dst,
        torch.from_numpy(x),
        y,
        split == 0,
        split == 1,
        split == 2,
        c,
    )


def read_partitions(directory: str | Path, k: int) -> torch.Tensor:
    """Bounds ``[k + 1]`` int64 of ``<directory>/<k>_parts/partitions.txt``: part i is ``[b[i], b[i+1])``.

    The k lines "begin end" must tile [0, N) in order (N from meta_data.txt); parts may be empty.
    """
    n = read_meta(directory).num_nodes
    path = require_file(Path(directory) / f"{k}_parts" / "partitions.txt", f"{k}-way partition")
    lines = [ln for ln in read_text(path, f"{k}-way partition").splitlines() if ln.strip()]
    if len(lines) != k:
        raise GraphError(f"{path}: has {len(lines)} lines, expected {k} ('begin end' per part)")
    bounds = [0]
    for i, ln in enumerate(lines):
        parts = ln.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise GraphError(f"{path}: line {i + 1} is {ln[:60]!r}; expected 'begin end' (two non-negative integers)")
        begin, end = int(parts[0]), int(parts[1])
        if begin != bounds[-1] or end < begin:
            raise GraphError(
                f"{path}: line {i + 1} is [{begin}, {end}); expected a range starting at {bounds[-1]} "
                "(parts must tile [0, N) in order)"
            )
        bounds.append(end)
    if bounds[-1] != n:
        raise GraphError(f"{path}: parts end at {bounds[-1]}, expected N = {n} from meta_data.txt")
    return torch.tensor(bounds, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------- writing
def write_binary(graph: Graph, directory: str | Path) -> Path:
    """Write ``graph`` in the authors' format (edges once, in the graph's CSR order) into ``directory``.

    Vertices in no split get code 3; a vertex in two splits, or ids beyond uint32, raise GraphError.
    Returns the directory.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    n, e = graph.num_nodes, graph.num_edges
    if n > _UINT32_MAX:
        raise GraphError(f"graph {graph.name!r}: {n} vertices do not fit the format's uint32 ids")
    overlap = graph.train_mask.int() + graph.val_mask.int() + graph.test_mask.int()
    if (overlap > 1).any():
        v = int(torch.nonzero(overlap > 1)[0])
        raise GraphError(f"graph {graph.name!r}: vertex {v} is in two splits; split.txt allows one")
    c = graph.num_classes
    if graph.multi_label:
        lab = graph.y.to(torch.float32).numpy()
    else:
        lab = np.zeros((n, c), dtype=np.float32)
        labelled = (graph.y >= 0).numpy()
        lab[np.flatnonzero(labelled), graph.y.numpy()[labelled]] = 1.0
    (d / META).write_text(f"{n} {e} {graph.num_features} {c}\n")
    src, dst = graph.edges()
    np.stack([src.numpy(), dst.numpy()], 1).astype(np.uint32).tofile(d / EDGES)
    graph.x.to(torch.float32).contiguous().numpy().tofile(d / FEATURES)
    np.ascontiguousarray(lab, dtype=np.float32).tofile(d / LABELS)
    code = np.full(n, 3, dtype=np.int64)
    code[graph.train_mask.numpy()] = 0
    code[graph.val_mask.numpy()] = 1
    code[graph.test_mask.numpy()] = 2
    lines = np.char.add(np.char.add(np.arange(n).astype(str), " "), code.astype(str))
    (d / SPLIT).write_text("\n".join(lines.tolist()) + ("\n" if n else ""))
    return d


def write_partitions(directory: str | Path, bounds: torch.Tensor) -> Path:
    """Write ``bounds [k + 1]`` as ``<directory>/<k>_parts/partitions.txt``; returns the file path."""
    b = [int(v) for v in bounds]
    k = len(b) - 1
    path = Path(directory) / f"{k}_parts" / "partitions.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{b[i]} {b[i + 1]}\n" for i in range(k)))
    return path
