"""The GCNII of ``gnnpipe.models.deep.build_model(arch="gcnii")`` built from PyG's ``GCN2Conv``, and its trainer:
the reference side of ``experiments/bench_single.py``.

``GCN2Conv(shared_weights=True, normalize=False)`` is given the GCN-normalised adjacency as a ``torch.sparse_csr``
tensor, its fastest path without torch-sparse: ``propagate`` sees a sparse tensor and calls
``message_and_aggregate`` -> ``torch_geometric.utils.spmm`` -> ``torch.sparse.mm``. (The ``edge_index`` path
gathers and scatters [E, d] messages: several times slower.)
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCN2Conv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

from gnnpipe.config import ExperimentConfig
from gnnpipe.data.graph import Graph
from gnnpipe.models.deep import DeepGNN


class PygGCNII(nn.Module):
    """The GCNII of ``build_model(arch="gcnii")`` written with PyG's ``GCN2Conv`` (PyG's example network)."""

    def __init__(
        self, in_dim: int, hidden: int, num_classes: int, layers: int, dropout: float, alpha: float, lam: float
    ):
        super().__init__()
        self.p = dropout
        self.encoder = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(
            GCN2Conv(hidden, alpha=alpha, theta=lam, layer=i + 1, shared_weights=True, normalize=False)
            for i in range(layers)
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, adj_t: torch.Tensor) -> torch.Tensor:
        """``x: [N, F]``, ``adj_t``: [N, N] sparse CSR, row v = in-edges of v. Returns logits ``[N, C]``."""
        h = h0 = torch.relu(self.encoder(F.dropout(x, self.p, self.training)))
        for conv in self.convs:
            h = torch.relu(conv(F.dropout(h, self.p, self.training), h0, adj_t))
        return self.head(F.dropout(h, self.p, self.training))


def pyg_adjacency(graph: Graph, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as PyG builds it (``gcn_norm``), as a ``torch.sparse_csr`` ``adj_t``."""
    src, dst = graph.edges()
    edge_index, weight = gcn_norm(torch.stack([src, dst]), None, graph.num_nodes, add_self_loops=True, dtype=dtype)
    with warnings.catch_warnings():  # "sparse CSR support is in beta", "invariant checks disabled"
        warnings.simplefilter("ignore", UserWarning)
        # adj_t[target, source]: rows are destinations, as MessagePassing expects of a sparse adjacency
        return to_torch_csr_tensor(edge_index.flip(0), weight, size=(graph.num_nodes, graph.num_nodes))


def copy_weights(ours: DeepGNN, ref: PygGCNII) -> None:
    """Give ``ref`` the weights of ``ours`` (GCN2Conv computes ``s @ weight1``, we ``s @ W^T``)."""
    with torch.no_grad():
        ref.encoder.weight.copy_(ours.encoder.lin.weight)
        ref.encoder.bias.copy_(ours.encoder.lin.bias)
        for layer, conv in zip(ours.layers, ref.convs, strict=True):
            conv.weight1.copy_(layer.lin.weight.t())
        ref.head.weight.copy_(ours.head.lin.weight)
        ref.head.bias.copy_(ours.head.lin.bias)


class PygTrainer:
    """Full-graph training of :class:`PygGCNII`, one epoch as the executor does it (same optimiser)."""

    def __init__(self, cfg: ExperimentConfig, graph: Graph, weights_from: DeepGNN):
        m = cfg.model
        self.model = PygGCNII(graph.num_features, m.hidden, graph.num_classes, m.layers, m.dropout, m.alpha, m.lam)
        copy_weights(weights_from, self.model)
        self.adj_t = pyg_adjacency(graph)
        self.x = graph.x.to(torch.float32)
        self.y = graph.y
        self.train_idx = graph.train_mask.nonzero().flatten()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.x, self.adj_t)
        loss = F.cross_entropy(logits[self.train_idx], self.y[self.train_idx])
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        self.model.eval()
        return self.model(self.x, self.adj_t)
