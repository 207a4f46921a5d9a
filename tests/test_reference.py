"""Semantics of the reference oracle (DESIGN §3) that do not need processes."""

from __future__ import annotations

import pytest
import torch

from gnnpipe.config import config_from_dict
from gnnpipe.data import load_graph
from gnnpipe.partition.chunker import PlanSpec, build_plan
from gnnpipe.reference import Reference
from gnnpipe.train.executor import SingleDeviceExecutor

SBM = {"name": "sbm", "num_nodes": 300, "avg_degree": 8.0, "num_features": 24, "num_classes": 4, "seed": 3}


def cfg(arch="gcnii", chunks=1, ways=1, dropout=0.0, **parallel):
    return config_from_dict(
        {
            "dataset": SBM,
            "model": {"arch": arch, "layers": 8, "hidden": 16, "dropout": dropout},
            "parallel": {"chunks": chunks, "ways": ways, **parallel},
            "train": {"dtype": "float64", "seed": 2},
        }
    )


@pytest.fixture(scope="module")
def graph():
    return load_graph(cfg().dataset)


def reference(c, graph) -> Reference:
    if c.parallel.chunks > 1:  # METIS parts (a GPU machine's image may lack pymetis: scripts/gpu_check.sh)
        pytest.importorskip("pymetis")
    return Reference(c, graph, build_plan(graph, PlanSpec(c.parallel.chunks, c.parallel.ways)))


@pytest.mark.parametrize("arch", ["gcn", "sage", "gcnii", "resgcn"])
def test_one_chunk_equals_single_device_even_with_dropout(graph, arch):
    c = cfg(arch, dropout=0.5)
    ref, sd = reference(c, graph), SingleDeviceExecutor(c, graph)
    for e in range(3):
        assert ref.train_epoch(e).loss == pytest.approx(sd.train_epoch(e).loss, rel=1e-12)


def test_warmup_exact_epochs_train_like_a_single_device(graph):
    ref = reference(cfg(chunks=8, warmup_exact_epochs=2), graph)
    sd = SingleDeviceExecutor(cfg(), graph)
    for e in range(2):
        assert ref.train_epoch(e).loss == pytest.approx(sd.train_epoch(e).loss, rel=1e-12)
    assert ref.train_epoch(2).loss != pytest.approx(sd.train_epoch(2).loss, rel=1e-6)  # history from now on


def test_historical_reads_change_the_result(graph):
    """With several chunks, neighbours not yet computed are read from (zero-initialised) history."""
    ref, sd = reference(cfg(chunks=8), graph), SingleDeviceExecutor(cfg(), graph)
    assert ref.train_epoch(0).loss != pytest.approx(sd.train_epoch(0).loss, rel=1e-6)


def test_cross_chunk_gradient_is_scaled_linearly(graph):
    """Two chunks, fixed order: chunk 1 reads chunk 0 fresh (one hop, so the epoch-0 gradient is affine in the
    scale: g(2) - g(0) == 2 (g(1) - g(0))); chunk 0 reads chunk 1's zero history, a constant."""
    grads = {}
    for s in (0.0, 1.0, 2.0):
        ref = reference(cfg(chunks=2, cross_chunk_grad_scale=s, chunk_order="fixed"), graph)
        ref.record_grads = True
        ref.train_epoch(0)
        grads[s] = ref.last_grads
    moved = 0.0
    for n in grads[0.0]:
        d1, d2 = grads[1.0][n] - grads[0.0][n], grads[2.0][n] - grads[0.0][n]
        torch.testing.assert_close(d2, 2 * d1, rtol=1e-9, atol=1e-12)
        moved += float(d1.abs().sum())
    assert moved > 0  # the scale does act: fresh cross-chunk reads carry gradient


def test_hybrid_with_one_chunk_per_way_is_exact(graph):
    """W ways with one chunk each: every read is fresh (graph parallelism)."""
    ref, sd = reference(cfg(chunks=4, ways=4), graph), SingleDeviceExecutor(cfg(), graph)
    for e in range(2):
        assert ref.train_epoch(e).loss == pytest.approx(sd.train_epoch(e).loss, rel=1e-10)
