"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from their raw files, with the standard public split.

The raw files ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`` live under ``<root>/planetoid/<Name>/raw``
(this repository's layout) or ``<root>/<Name>/raw`` (PyG's layout). They are read by PyG's own reader,
``torch_geometric.io.read_planetoid_data`` -- exactly what ``torch_geometric.datasets.Planetoid`` runs when it
processes them -- called directly so that nothing is downloaded and no ``processed/`` directory is written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gnnpipe.data.graph import Graph, GraphError

__all__ = ["PLANETOID_NAMES", "load_planetoid", "planetoid_raw_dir"]

# config name -> PyG's directory name and file prefix
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


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

    Returns the graph as stored (PyG drops self-loops and duplicate edges; Cora: 2708 nodes, 10556 edges,
    1433 features, 7 classes). ``x: [N, F]`` float32 bag-of-words, ``y: [N]`` int64.
    """
    raw = planetoid_raw_dir(root, name)
    from torch_geometric.io import read_planetoid_data

    # The x/y/graph raw files are Python pickles. They are trusted because they ship with this repository
    # (datasets/planetoid, from the reference GCN implementation); never point this at untrusted files.
    try:
        data = read_planetoid_data(str(raw), name.lower())
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise GraphError(f"Planetoid {name}: cannot read raw files in {str(raw)!r}: {exc}") from exc
    src, dst = data.edge_index
    return Graph.from_edges(
        name.lower(),
        src,
        dst,
        data.x.to(torch.float32),
        data.y.long(),
        data.train_mask,
        data.val_mask,
        data.test_mask,
        int(data.y.max()) + 1,
    )
