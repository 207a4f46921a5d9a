"""Graphs and their loaders. ``load_graph(cfg)`` is the one entry point the rest of the system calls.

Dataset names (``cfg.name``):

- ``cora`` / ``citeseer`` / ``pubmed``: Planetoid raw files under ``<root>/planetoid/<Name>/raw``
  (or ``<root>/<Name>/raw``), public split;
- ``ogbn-<x>``: an OGB node-property dataset unpacked under ``<root>/ogbn_<x>`` (never downloaded);
- ``binary``: the GNNPipe authors' format, directory ``cfg.path``;
- ``npz``: an ``.npz`` file ``cfg.path`` in the common GNN-benchmark layout;
- ``sbm`` / ``powerlaw``: seeded synthetic graphs of ``num_nodes``, ``avg_degree``, ``num_features``,
  ``num_classes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gnnpipe.data.binary import read_binary, read_partitions, write_binary, write_partitions
from gnnpipe.data.graph import Graph, GraphError, csr_from_edges
from gnnpipe.data.npz import read_npz, write_npz
from gnnpipe.data.ogb import OGB_PREFIX, load_ogb
from gnnpipe.data.planetoid import PLANETOID_NAMES, load_planetoid
from gnnpipe.data.pyg import from_pyg, to_pyg
from gnnpipe.data.synthetic import SyntheticSpec, powerlaw_graph, sbm_graph

__all__ = [
    "DATASET_NAMES",
    "OGB_PREFIX",
    "Graph",
    "GraphError",
    "SyntheticSpec",
    "csr_from_edges",
    "dataset_name_allowed",
    "from_pyg",
    "load_graph",
    "load_raw_graph",
    "powerlaw_graph",
    "read_binary",
    "read_npz",
    "read_partitions",
    "sbm_graph",
    "to_pyg",
    "write_binary",
    "write_npz",
    "write_partitions",
]

SYNTHETIC_NAMES = ("sbm", "powerlaw")
FILE_NAMES = ("binary", "npz")
# The fixed names; besides these, any "ogbn-<x>" name is allowed (see dataset_name_allowed).
DATASET_NAMES: tuple[str, ...] = (*PLANETOID_NAMES, *SYNTHETIC_NAMES, *FILE_NAMES)


class DatasetSpec(Protocol):
    """The fields of ``gnnpipe.config.DatasetConfig`` the loaders read."""

    name: str
    root: str
    path: str | None
    feature_norm: bool
    undirected: bool
    num_nodes: int
    avg_degree: float
    num_features: int
    num_classes: int
    seed: int


def dataset_name_allowed(name: str) -> bool:
    """True for a name of ``DATASET_NAMES`` or any ``ogbn-<x>``."""
    return name in DATASET_NAMES or (name.startswith(OGB_PREFIX) and len(name) > len(OGB_PREFIX))


def _need_path(cfg: DatasetSpec) -> Path:
    if not cfg.path:
        raise GraphError(f"dataset.name = {cfg.name!r} needs dataset.path (the {cfg.name} file or directory)")
    return Path(cfg.path)


def load_raw_graph(cfg: DatasetSpec) -> Graph:
    """The dataset as stored, before the preprocessing of `load_graph`."""
    name = cfg.name
    if name in PLANETOID_NAMES:
        return load_planetoid(cfg.root, name)
    if name.startswith(OGB_PREFIX):
        return load_ogb(cfg.root, name)
    if name == "binary":
        return read_binary(_need_path(cfg))
    if name == "npz":
        return read_npz(_need_path(cfg), seed=cfg.seed)
    if name in SYNTHETIC_NAMES:
        make = sbm_graph if name == "sbm" else powerlaw_graph
        return make(SyntheticSpec(cfg.num_nodes, cfg.num_classes, cfg.avg_degree, cfg.num_features, cfg.seed))
    raise GraphError(f"dataset.name = {name!r} is unknown; allowed: {', '.join(DATASET_NAMES)}, ogbn-<name>")


def load_graph(cfg: DatasetSpec) -> Graph:
    """Load the dataset ``cfg`` describes and preprocess it.

    ``cfg.undirected``: symmetrise, drop self-loops and duplicate edges (synthetic graphs already are).
    ``cfg.feature_norm``: divide every feature row by its sum.
    """
    g = load_raw_graph(cfg)
    if cfg.undirected and cfg.name not in SYNTHETIC_NAMES:
        g = g.to_undirected()
    if cfg.feature_norm:
        g = g.row_normalized_features()
    return g
