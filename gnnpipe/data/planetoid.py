"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from their raw files, with the standard public split.

The raw files ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`` live under ``<root>/planetoid/<Name>/raw``
(this repository's layout) or ``<root>/<Name>/raw`` (PyG's layout). Nothing is downloaded and nothing is
written next to them. The result equals PyG's ``read_planetoid_data`` (``tests/test_data_planetoid.py``).

The x/y/graph files are Python 2 pickles. A pickle can name any importable callable, so a crafted file
would run code under ``pickle.load``; they are read with :class:`_PlanetoidUnpickler`, which resolves only
the handful of numpy/scipy names the format needs (array and dtype reconstruction, ``csr_matrix``, the
``defaultdict(list)`` adjacency) and refuses every other name before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from gnnpipe.data.graph import Graph, GraphError

__all__ = ["PLANETOID_NAMES", "load_planetoid", "planetoid_raw_dir", "read_planetoid_pickle"]

# config name -> PyG's directory name and file prefix
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
_NUM_VAL = 500  # the public split: the 500 vertices after the training ones are the validation set


def _allowed_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> object, for every global the Planetoid pickles may reference (old and new paths)."""
    import scipy.sparse

    reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array reconstructor, wherever it lives
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "defaultdict"): collections.defaultdict,
        ("__builtin__", "list"): list,  # the defaultdict's factory (Python 2 name)
        ("builtins", "list"): list,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
    for mod in ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse"):
        allowed[(mod, "csr_matrix")] = scipy.sparse.csr_matrix
    return allowed


class _PlanetoidUnpickler(pickle.Unpickler):
    """Resolves only the globals of :func:`_allowed_globals`; anything else is refused before it is called."""

    def __init__(self, f, path: Path):
        super().__init__(f, encoding="latin1")  # Python 2 pickles
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        obj = self.allowed.get((module, name))
        if obj is None:
            raise GraphError(
                f"{self.path}: refused to load: the pickle references {module}.{name}, which a Planetoid file "
                "never needs (only numpy arrays, scipy csr_matrix and the adjacency dict are allowed); "
                "the file is corrupt or crafted"
            )
        return obj

    def persistent_load(self, pid):
        raise GraphError(
            f"{self.path}: refused to load: the pickle uses persistent ids, which a Planetoid file never has"
        )


def read_planetoid_pickle(path: str | Path):
    """One Planetoid pickle (x/tx/allx/y/ty/ally/graph) through the restricted unpickler; GraphError on anything
    else, on a truncated file, or on an object of the wrong kind."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return _PlanetoidUnpickler(io.BytesIO(data), path).load()
    except GraphError:
        raise
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise GraphError(f"{path}: not a readable Planetoid pickle ({type(exc).__name__}: {exc})") from None


def _matrix(obj, path: Path) -> torch.Tensor:
    """A feature or one-hot label matrix: scipy csr_matrix or numeric ndarray -> float32 ``[rows, cols]``."""
    import scipy.sparse

    if isinstance(obj, scipy.sparse.csr_matrix):
        try:
            obj.check_format(full_check=True)
            arr = obj.toarray()
        except Exception as exc:
            raise GraphError(f"{path}: malformed sparse matrix ({type(exc).__name__}: {exc})") from None
    elif isinstance(obj, np.ndarray):
        arr = obj
    else:
        raise GraphError(f"{path}: holds a {type(obj).__name__}; expected a numpy array or scipy csr_matrix")
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise GraphError(f"{path}: holds a {arr.dtype} array of shape {arr.shape}; expected a 2-d numeric matrix")
    return torch.from_numpy(np.asarray(arr, dtype=np.float32))


def _adjacency(obj, n: int, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``{vertex: [neighbours]}`` dict -> (src, dst) int64, self-loops and duplicates dropped (as PyG)."""
    if not isinstance(obj, dict):
        raise GraphError(f"{path}: holds a {type(obj).__name__}; expected a dict of adjacency lists")
    rows: list[int] = []
    cols: list[int] = []
    for key, value in obj.items():
        if not isinstance(value, list) or not all(isinstance(v, (int, np.integer)) for v in [key, *value]):
            raise GraphError(f"{path}: entry {key!r} is not 'vertex id: list of vertex ids'")
        rows += [int(key)] * len(value)
        cols += [int(v) for v in value]
    src, dst = torch.tensor(rows, dtype=torch.int64), torch.tensor(cols, dtype=torch.int64)
    bad = (src < 0) | (src >= n) | (dst < 0) | (dst >= n)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise GraphError(f"{path}: edge ({int(src[i])}, {int(dst[i])}) has a vertex id out of range [0, {n})")
    keep = src != dst
    key = torch.unique(src[keep] * n + dst[keep])
    return key // n, key % n


def _test_index(path: Path) -> torch.Tensor:
    try:
        values = [int(t) for t in path.read_bytes().decode("ascii").split()]
    except (UnicodeDecodeError, ValueError):
        raise GraphError(f"{path}: expected one vertex id (a decimal integer) per line") from None
    return torch.tensor(values, dtype=torch.int64)


def planetoid_raw_dir(root: str | Path, name: str) -> Path:
    """The raw directory of a Planetoid dataset under ``root``; GraphError naming the expected paths if absent."""
    key = name.lower()
    if key not in PLANETOID_NAMES:
        raise GraphError(f"unknown Planetoid dataset {name!r}; allowed: {', '.join(PLANETOID_NAMES)}")
    pyg_name = PLANETOID_NAMES[key]
    candidates = [Path(root) / "planetoid" / pyg_name / "raw", Path(root) / pyg_name / "raw"]
    for raw in candidates:
        if raw.is_dir():
            missing = [f"ind.{key}.{s}" for s in _SUFFIXES if not (raw / f"ind.{key}.{s}").is_file()]
            if missing:
                raise GraphError(f"Planetoid {pyg_name}: {str(raw)!r} lacks {', '.join(missing)}")
            return raw
    expected = " or ".join(repr(str(c)) for c in candidates)
    raise GraphError(
        f"Planetoid {pyg_name}: raw files not found; expected ind.{key}.* in {expected} "
        "(nothing is downloaded; see datasets/README.md)"
    )


def load_planetoid(root: str | Path, name: str) -> Graph:
    """Load Cora / CiteSeer / PubMed with the public split (20 per class train, 500 valid, 1000 test).

    Returns the graph as stored, self-loops and duplicate edges dropped (Cora: 2708 nodes, 10556 edges,
    1433 features, 7 classes). ``x: [N, F]`` float32 bag-of-words, ``y: [N]`` int64.
    """
    key = name.lower()
    raw = planetoid_raw_dir(root, key)
    p = {s: raw / f"ind.{key}.{s}" for s in _SUFFIXES}
    x, tx, allx, y, ty, ally = (
        _matrix(read_planetoid_pickle(p[s]), p[s]) for s in ("x", "tx", "allx", "y", "ty", "ally")
    )
    graph = read_planetoid_pickle(p["graph"])
    test_index = _test_index(p["test.index"])
    if test_index.numel() == 0:
        raise GraphError(f"{p['test.index']}: no test vertices")
    widths = {x.shape[1], tx.shape[1], allx.shape[1]}, {y.shape[1], ty.shape[1], ally.shape[1]}
    if len(widths[0]) != 1 or len(widths[1]) != 1 or tx.shape[0] != ty.shape[0] or allx.shape[0] != ally.shape[0]:
        raise GraphError(f"Planetoid {name}: x/tx/allx or y/ty/ally in {str(raw)!r} have inconsistent shapes")
    sorted_test = test_index.sort().values
    lo = int(test_index.min())
    if key == "citeseer":  # isolated test vertices have no row in tx/ty: zero rows at their positions (as PyG)
        size = int(test_index.max()) - lo + 1
        if size < tx.shape[0] or sorted_test.unique().numel() != tx.shape[0]:
            raise GraphError(f"{p['test.index']}: does not match the {tx.shape[0]} rows of tx")
        tx_ext, ty_ext = torch.zeros(size, tx.shape[1]), torch.zeros(size, ty.shape[1])
        tx_ext[sorted_test - lo], ty_ext[sorted_test - lo] = tx, ty
        tx, ty = tx_ext, ty_ext
    feats = torch.cat([allx, tx], 0)
    labels = torch.cat([ally, ty], 0).max(dim=1)[1]
    n = feats.shape[0]
    if lo < 0 or int(test_index.max()) >= n or y.shape[0] + _NUM_VAL > n:
        raise GraphError(f"Planetoid {name}: test ids or split sizes do not fit the {n} vertices of allx + tx")
    feats[test_index] = feats[sorted_test]
    labels[test_index] = labels[sorted_test]
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    masks[0][: y.shape[0]] = True
    masks[1][y.shape[0] : y.shape[0] + _NUM_VAL] = True
    masks[2][test_index] = True
    src, dst = _adjacency(graph, n, p["graph"])
    return Graph.from_edges(key, src, dst, feats, labels.long(), *masks, int(labels.max()) + 1)
