"""Each layer equals the PyG layer it is named after (copied weights), and models build at any depth."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import GCN2Conv, GCNConv, SAGEConv
from torch_geometric.nn.models import DeepGCNLayer

from gnnpipe.config import ModelConfig
from gnnpipe.data.graph import Graph
from gnnpipe.models.deep import build_model
from gnnpipe.models.layers import GCNIILayer, GCNLayer, ResGCNLayer, SAGELayer
from gnnpipe.models.ops import RowCtx, SparseOp

EVAL = RowCtx(training=False)


def random_graph(n: int = 60, e: int = 300, f: int = 12, seed: int = 0) -> Graph:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n, (e,), generator=g)
    x = torch.randn(n, f, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    masks = [torch.rand(n, generator=g) < 0.5 for _ in range(3)]
    return Graph.from_edges("rand", src, dst, x, y, *masks, num_classes=3).to_undirected()


def apply_layer(layer, graph: Graph, h: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    op = SparseOp(*graph.norm_values(layer.agg_kind), graph.num_nodes)
    z, r = layer.pre(h, EVAL)
    return layer.post(op @ z, r, h0, EVAL)


def edge_index(graph: Graph) -> torch.Tensor:
    src, dst = graph.edges()
    return torch.stack([src, dst])


@pytest.fixture(scope="module")
def graph() -> Graph:
    return random_graph()


def test_gcn_layer_equals_gcnconv(graph):
    ours = GCNLayer(0, 12, 8, dropout=0.0, last=True).double()
    ref = GCNConv(12, 8).double()
    with torch.no_grad():
        ref.lin.weight.copy_(ours.lin.weight)
        ref.bias.copy_(torch.randn(8, dtype=torch.float64))
        ours.bias.copy_(ref.bias)
    torch.testing.assert_close(apply_layer(ours, graph, graph.x), ref(graph.x, edge_index(graph)), rtol=1e-5, atol=1e-5)


def test_sage_layer_equals_sageconv(graph):
    ours = SAGELayer(0, 12, 8, dropout=0.0, last=True).double()
    ref = SAGEConv(12, 8, aggr="mean").double()
    with torch.no_grad():
        ref.lin_l.weight.copy_(ours.lin_l.weight)
        ref.lin_l.bias.copy_(ours.lin_l.bias.normal_())
        ref.lin_r.weight.copy_(ours.lin_r.weight)
    torch.testing.assert_close(apply_layer(ours, graph, graph.x), ref(graph.x, edge_index(graph)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index", [0, 5])
def test_gcnii_layer_equals_gcn2conv(graph, index):
    h = torch.randn(graph.num_nodes, 16, dtype=torch.float64)
    h0 = torch.randn(graph.num_nodes, 16, dtype=torch.float64)
    ours = GCNIILayer(index, 16, dropout=0.0, alpha=0.1, lam=0.5).double()
    ref = GCN2Conv(16, alpha=0.1, theta=0.5, layer=index + 1, shared_weights=True).double()
    with torch.no_grad():
        ref.weight1.copy_(ours.lin.weight.t())
    expected = torch.relu(ref(h, h0, edge_index(graph)))
    torch.testing.assert_close(apply_layer(ours, graph, h, h0), expected, rtol=1e-5, atol=1e-5)


def test_resgcn_layer_equals_deepgcnlayer_resplus(graph):
    h = torch.randn(graph.num_nodes, 16, dtype=torch.float64)
    ours = ResGCNLayer(0, 16, dropout=0.0).double()
    conv = SAGEConv(16, 16, aggr="mean")
    ref = DeepGCNLayer(conv, torch.nn.LayerNorm(16), torch.nn.ReLU(), block="res+", dropout=0.0).double()
    with torch.no_grad():
        ours.norm.weight.normal_()
        ours.norm.bias.normal_()
        ref.norm.load_state_dict(ours.norm.state_dict())
        conv.lin_l.weight.copy_(ours.lin_l.weight)
        conv.lin_l.bias.copy_(ours.lin_l.bias.normal_())
        conv.lin_r.weight.copy_(ours.lin_r.weight)
    ref.eval()
    torch.testing.assert_close(apply_layer(ours, graph, h), ref(h, edge_index(graph)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gcn", "sage", "gcnii", "resgcn"])
@pytest.mark.parametrize("layers", [2, 16, 64])
def test_models_build_and_train_at_depth(graph, arch, layers):
    cfg = ModelConfig(arch=arch, layers=layers, hidden=8, dropout=0.5)
    model = build_model(cfg, graph.num_features, graph.num_classes, seed=0).double()
    op = SparseOp(*graph.norm_values(model.agg_kind), graph.num_nodes)
    out = model.forward_full(graph.x, op, RowCtx(training=True, seed=1))
    assert out.shape == (graph.num_nodes, graph.num_classes)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the first layer receives gradient through all the layers above it, for every architecture. Plain GCN's
    # gradient vanishes with depth (no residual: about 1e-13 at depth 64 in float64) but is not zero; the
    # residual architectures keep it large. GCNII's initial residual also reaches the encoder.
    first = model.layers[0]
    weight = first.lin_l.weight if arch in ("sage", "resgcn") else first.lin.weight
    assert weight.grad.abs().sum() > 0, (arch, layers)
    if arch != "gcn":
        assert weight.grad.abs().sum() > 1e-3, (arch, layers, weight.grad.abs().sum())
    if arch == "gcnii":
        assert model.encoder.lin.weight.grad.abs().sum() > 1e-3
    dims = model.dims()
    assert len(dims.agg_widths) == layers and dims.h0_width == (8 if arch == "gcnii" else 0)


def test_same_seed_same_weights_different_seed_differs():
    cfg = ModelConfig(arch="gcnii", layers=4, hidden=8)
    a, b, c = (build_model(cfg, 5, 3, seed=s) for s in (1, 1, 2))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_xavier_bound_is_the_authors():
    cfg = ModelConfig(arch="gcn", layers=2, hidden=300, init="xavier")
    model = build_model(cfg, 100, 3, seed=0)
    w = model.layers[0].lin.weight  # [300, 100]
    bound = (5.0 / (100 + 300)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound


def test_dropout_mask_depends_only_on_its_key():
    x = torch.ones(10, 4)
    a = RowCtx(training=True, seed=3, epoch=2, chunk=1).dropout(x, 0.5, site=7)
    b = RowCtx(training=True, seed=3, epoch=2, chunk=1).dropout(x, 0.5, site=7)
    c = RowCtx(training=True, seed=3, epoch=3, chunk=1).dropout(x, 0.5, site=7)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 2.0}
