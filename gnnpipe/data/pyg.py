"""Conversion between PyG ``Data`` objects and `Graph`: any PyG dataset becomes usable, and tests can compare
our layers with PyG's on the same graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gnnpipe.data.common import labels_from_array, random_split_masks
from gnnpipe.data.graph import Graph, GraphError

if TYPE_CHECKING:
    from torch_geometric.data import Data

__all__ = ["from_pyg", "to_pyg"]


def _mask(data: Data, key: str, n: int, split: int, name: str) -> torch.Tensor:
    m = data[key]
    if m.dim() == 2:  # several stored splits (e.g. WikiCS): columns are splits
        if not 0 <= split < m.shape[1]:
            raise GraphError(f"PyG data {name!r}: {key} has {m.shape[1]} splits, asked for split {split}")
        m = m[:, split]
    if m.dtype != torch.bool or m.shape != (n,):
        raise GraphError(f"PyG data {name!r}: {key} is {m.dtype} {tuple(m.shape)}, expected bool [{n}]")
    return m.clone()


def from_pyg(data: Data, name: str, *, split: int = 0, seed: int = 0) -> Graph:
    """Graph of a PyG ``Data`` with ``x: [N, F]``, ``edge_index: [2, E]`` (row 0 = sources) and ``y``.

    ``y``: ``[N]`` / ``[N, 1]`` class ids (negative = none) or ``[N, C]`` multi-hot floats. Masks come from
    ``train_mask``/``val_mask``/``test_mask`` (column ``split`` when they are 2-D), else a seeded 60/20/20 split.
    """
    if getattr(data, "x", None) is None:
        raise GraphError(f"PyG data {name!r}: has no node features 'x'; expected x: [N, F]")
    if getattr(data, "y", None) is None:
        raise GraphError(f"PyG data {name!r}: has no labels 'y'; expected y: [N] or [N, C]")
    x = data.x.to(torch.float32)
    if x.is_sparse or x.layout != torch.strided:
        x = x.to_dense()
    n = x.shape[0]
    ei = data.edge_index
    if ei is None or ei.dim() != 2 or ei.shape[0] != 2:
        raise GraphError(f"PyG data {name!r}: edge_index must be [2, E], got {None if ei is None else tuple(ei.shape)}")
    y = labels_from_array(data.y.detach().cpu().numpy(), f"PyG data {name!r}: y")
    keys = ("train_mask", "val_mask", "test_mask")
    if all(getattr(data, k, None) is not None for k in keys):
        train, val, test = (_mask(data, k, n, split, name) for k in keys)
    else:
        train, val, test = random_split_masks(n, seed)
    k = getattr(data, "num_classes", None)  # set by to_pyg; otherwise inferred from y
    k = int(k) if isinstance(k, int) else None
    return Graph.from_edges(name, ei[0].cpu(), ei[1].cpu(), x.cpu(), y, train.cpu(), val.cpu(), test.cpu(), k)


def to_pyg(graph: Graph) -> Data:
    """PyG ``Data`` with ``x``, ``edge_index`` ``[2, E]`` (CSR order: sorted by destination), ``y``, masks and
    an int ``num_classes`` attribute (read back by `from_pyg`)."""
    from torch_geometric.data import Data

    src, dst = graph.edges()
    return Data(
        x=graph.x,
        edge_index=torch.stack([src, dst]),
        y=graph.y,
        train_mask=graph.train_mask,
        val_mask=graph.val_mask,
        test_mask=graph.test_mask,
        num_nodes=graph.num_nodes,
        num_classes=graph.num_classes,
    )
