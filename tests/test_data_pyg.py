"""PyG ``Data`` <-> Graph conversion."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from gnnpipe.data import GraphError, from_pyg, to_pyg


@pytest.mark.parametrize("multi_label", [False, True])
def test_round_trip(small_graph, assert_same_graph, multi_label):
    g = small_graph(multi_label=multi_label)
    data = to_pyg(g)
    assert data.num_nodes == g.num_nodes and data.edge_index.shape == (2, g.num_edges)
    assert_same_graph(g, from_pyg(data, "small"))


def test_edge_direction_kept():
    data = Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 0], [1, 2]]), y=torch.tensor([0, 1, 1]))
    g = from_pyg(data, "tri")
    assert g.in_degree().tolist() == [0, 1, 1]  # edges 0->1 and 0->2: in-edges of 1 and 2
    assert int(g.train_mask.sum()) + int(g.val_mask.sum()) + int(g.test_mask.sum()) == 3  # random split


def test_2d_masks_and_column_labels():
    n = 10
    masks = torch.zeros(n, 3, dtype=torch.bool)
    masks[:4, 1] = True
    data = Data(
        x=torch.randn(n, 3),
        edge_index=torch.tensor([[0, 1], [1, 0]]),
        y=torch.arange(n).reshape(n, 1) % 3,  # ogb-style [N, 1]
        train_mask=masks,
        val_mask=masks,
        test_mask=masks,
    )
    g = from_pyg(data, "m", split=1)
    assert int(g.train_mask.sum()) == 4 and g.y.shape == (n,) and g.num_classes == 3
    with pytest.raises(GraphError, match=r"has 3 splits, asked for split 5"):
        from_pyg(data, "m", split=5)


def test_missing_fields():
    with pytest.raises(GraphError, match=r"'nofeat': has no node features"):
        from_pyg(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), y=torch.zeros(2)), "nofeat")
    with pytest.raises(GraphError, match=r"'nolab': has no labels"):
        from_pyg(Data(x=torch.ones(2, 1), edge_index=torch.zeros(2, 0, dtype=torch.long)), "nolab")


def test_num_classes_survives_round_trip(small_graph):
    g = small_graph(c=3)
    g.y[g.y == 2] = 1  # the highest class is absent: num_classes is not max + 1
    assert from_pyg(to_pyg(g), "small").num_classes == 3
