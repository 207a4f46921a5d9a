"""Chunk plan invariants (property tests on random small graphs), storage and caching."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pymetis
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gnnpipe.partition.chunker as chunker
from gnnpipe.data.graph import Graph
from gnnpipe.partition import (
    PlanError,
    PlanSpec,
    build_plan,
    get_or_build_plan,
    load_plan,
    partition,
    plan_from_parts,
    save_plan,
)


def make_graph(n: int, edges: list[tuple[int, int]], name: str = "g") -> Graph:
    src = torch.tensor([e[0] for e in edges], dtype=torch.int64)
    dst = torch.tensor([e[1] for e in edges], dtype=torch.int64)
    x = torch.arange(n * 2, dtype=torch.float32).view(n, 2)
    y = torch.arange(n, dtype=torch.int64) % 3
    masks = [torch.arange(n) % 3 == i for i in range(3)]
    return Graph.from_edges(name, src, dst, x, y, *masks, num_classes=3)


@st.composite
def graph_and_degrees(draw, max_n: int = 40):
    n = draw(st.integers(1, max_n))
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n + 5))
    ways = draw(st.integers(1, min(n, 3)))
    per_way = draw(st.integers(1, max(1, min(4, n // ways))))
    method = draw(st.sampled_from(["metis", "metis_kway", "random", "contiguous"]))
    seed = draw(st.integers(0, 3))
    return make_graph(n, edges), ways * per_way, ways, method, seed


FAST = settings(max_examples=60, deadline=None)


def old_edges(g: Graph) -> list[tuple[int, int]]:
    src, dst = g.edges()
    return list(zip(src.tolist(), dst.tolist(), strict=True))


# ---------------------------------------------------------------------------------------------- properties
@FAST
@given(graph_and_degrees())
def test_permutation_and_chunks(case):
    g, C, W, method, seed = case
    n = g.num_nodes
    plan = build_plan(g, PlanSpec(C, W, method, seed))
    assert torch.equal(torch.sort(plan.perm).values, torch.arange(n))  # bijection
    assert torch.equal(plan.perm[plan.inv_perm], torch.arange(n))
    assert plan.bounds[0] == 0 and plan.bounds[-1] == n
    assert bool((plan.chunk_sizes() > 0).all())  # tiles [0, N) with no empty chunk
    # each chunk is exactly one part, parts in id order, original order kept inside
    parts = partition(g, C, method=method, seed=seed)
    for c in range(C):
        b, e = plan.chunk_range(c)
        assert plan.inv_perm[b:e].tolist() == torch.nonzero(parts == c).flatten().tolist()
    # ways own contiguous blocks of chunks
    assert plan.chunk_way.tolist() == [c // (C // W) for c in range(C)]
    for w in range(W):
        cs = plan.chunks_of_way(w)
        assert plan.way_range(w) == (plan.chunk_range(cs[0])[0], plan.chunk_range(cs[-1])[1])
    assert torch.equal(plan.vertex_way(), plan.chunk_way[plan.vertex_chunk()])


@FAST
@given(graph_and_degrees())
def test_blocks_ext_and_halos_match_brute_force(case):
    g, C, W, method, seed = case
    plan = build_plan(g, PlanSpec(C, W, method, seed))
    chunk = plan.vertex_chunk().tolist()
    way = plan.vertex_way().tolist()
    perm = plan.perm.tolist()
    blocks = [[0] * C for _ in range(C)]
    ext = [set() for _ in range(C)]
    fwd = {(c, w2): set() for c in range(C) for w2 in range(W)}
    bwd = {(c, w2): set() for c in range(C) for w2 in range(W)}
    for u_old, v_old in old_edges(g):
        u, v = perm[u_old], perm[v_old]
        blocks[chunk[v]][chunk[u]] += 1  # every edge counted in exactly one block
        if chunk[u] != chunk[v]:
            ext[chunk[v]].add(u)
        if way[u] != way[v]:
            fwd[(chunk[u], way[v])].add(u)
            bwd[(chunk[v], way[u])].add(v)
    assert plan.block_counts.tolist() == blocks
    assert int(plan.block_counts.sum()) == g.num_edges
    for c in range(C):
        assert plan.ext(c).tolist() == sorted(ext[c])
        for w2 in range(W):
            assert plan.halo_fwd(c, w2).tolist() == sorted(fwd[(c, w2)])
            assert plan.halo_bwd(c, w2).tolist() == sorted(bwd[(c, w2)])


@FAST
@given(graph_and_degrees(max_n=25))
def test_permute_then_inverse_restores_graph(case):
    g, C, W, method, seed = case
    plan = build_plan(g, PlanSpec(C, W, method, seed))
    gp = plan.permute(g)
    assert torch.equal(gp.x, g.x[plan.inv_perm])
    back = gp.permute(plan.inv_perm)
    for name in ("indptr", "indices", "x", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    # chunk blocks read off the permuted graph agree with the plan
    src, dst = gp.edges()
    vc = plan.vertex_chunk()
    counts = torch.bincount(vc[dst] * C + vc[src], minlength=C * C).view(C, C)
    assert torch.equal(counts, plan.block_counts)


@settings(max_examples=25, deadline=None)
@given(graph_and_degrees(max_n=25))
def test_saved_plan_loads_identically_and_other_graph_is_refused(case):
    g, C, W, method, seed = case
    plan = build_plan(g, PlanSpec(C, W, method, seed))
    other = make_graph(g.num_nodes + 1, [(0, g.num_nodes)], name="other")
    with tempfile.TemporaryDirectory() as d:
        save_plan(plan, Path(d) / "plan")
        loaded = load_plan(Path(d) / "plan", g)
        assert loaded == plan
        with pytest.raises(PlanError, match="structure hash"):
            load_plan(Path(d) / "plan", other)


# ---------------------------------------------------------------------------------------------- literal cases
def ring(n: int) -> Graph:
    return make_graph(n, [(i, (i + 1) % n) for i in range(n)] + [((i + 1) % n, i) for i in range(n)])


def test_literal_plan_from_parts():
    # 6 vertices, path 0->1->2->3->4->5, parts interleaved: part 0 = {0, 2, 4}, part 1 = {1, 3, 5}
    g = make_graph(6, [(i, i + 1) for i in range(5)])
    plan = plan_from_parts(g, torch.tensor([0, 1, 0, 1, 0, 1]), PlanSpec(2, 2, method="custom"))
    assert plan.perm.tolist() == [0, 3, 1, 4, 2, 5]
    assert plan.inv_perm.tolist() == [0, 2, 4, 1, 3, 5]
    assert plan.bounds.tolist() == [0, 3, 6] and plan.way_bounds.tolist() == [0, 3, 6]
    # every edge crosses: 0->1, 2->3, 4->5 go from chunk 0 into chunk 1, 1->2, 3->4 the other way
    assert plan.block_counts.tolist() == [[0, 2], [3, 0]]
    assert plan.ext(0).tolist() == [3, 4]  # old 1, 3 (new 3, 4) feed old 2, 4
    assert plan.ext(1).tolist() == [0, 1, 2]
    assert plan.halo_fwd(0, 1).tolist() == [0, 1, 2] and plan.halo_fwd(0, 0).numel() == 0
    assert plan.halo_bwd(0, 1).tolist() == [1, 2]  # new 1, 2 = old 2, 4 have in-edges from part 1
    assert plan.halo_bwd(1, 0).tolist() == [3, 4, 5]


def test_one_way_has_no_halos():
    plan = build_plan(ring(12), PlanSpec(chunks=4, ways=1))
    assert plan.halo_fwd_vertices.numel() == 0 and plan.halo_bwd_vertices.numel() == 0
    assert plan.halo_fwd_offsets.shape == (5,)


def test_degree_errors():
    g = ring(8)
    with pytest.raises(ValueError, match=r"chunks=6 must be divisible by ways=4"):
        build_plan(g, PlanSpec(chunks=6, ways=4))
    with pytest.raises(ValueError, match="exceeds the number of vertices"):
        build_plan(g, PlanSpec(chunks=9, ways=1))
    with pytest.raises(ValueError, match="ways must be a positive integer"):
        build_plan(g, PlanSpec(chunks=4, ways=0))
    with pytest.raises(ValueError, match=r"part ids must lie in \[0, 2\)"):
        plan_from_parts(g, torch.full((8,), -1, dtype=torch.int64), PlanSpec(2, 1, method="custom"))
    with pytest.raises(ValueError, match="is empty"):
        plan_from_parts(g, torch.zeros(8, dtype=torch.int64), PlanSpec(2, 1, method="custom"))


# ---------------------------------------------------------------------------------------------- storage
def test_load_refuses_version_corruption_and_mixing(tmp_path):
    g = ring(20)
    plan = build_plan(g, PlanSpec(chunks=4, ways=2))
    save_plan(plan, tmp_path / "p")
    meta_path = tmp_path / "p" / "plan.json"
    meta = json.loads(meta_path.read_text())

    meta_path.write_text(json.dumps({**meta, "version": meta["version"] + 1}))
    with pytest.raises(PlanError, match="version"):
        load_plan(tmp_path / "p", g)

    meta_path.write_text("{not json")
    with pytest.raises(PlanError, match="unreadable"):
        load_plan(tmp_path / "p", g)

    meta_path.write_text(json.dumps(meta))
    (tmp_path / "p" / "tensors.pt").write_bytes(b"garbage")
    with pytest.raises(PlanError, match="unreadable"):
        load_plan(tmp_path / "p", g)

    # tensors of another plan next to this metadata: the digest catches it
    save_plan(build_plan(g, PlanSpec(chunks=4, ways=2, method="random")), tmp_path / "q")
    (tmp_path / "p" / "tensors.pt").write_bytes((tmp_path / "q" / "tensors.pt").read_bytes())
    with pytest.raises(PlanError, match="does not match"):
        load_plan(tmp_path / "p", g)

    with pytest.raises(PlanError, match="no chunk plan"):
        load_plan(tmp_path / "missing", g)


def test_get_or_build_plan_caches(tmp_path, monkeypatch):
    g = ring(30)
    first = get_or_build_plan(g, PlanSpec(chunks=6, ways=3), cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [f"plan_v1_{g.structure_hash()}_C6_W3_metis_s0_none"]

    def boom(*args, **kwargs):
        raise AssertionError("should have been served from the cache")

    monkeypatch.setattr(chunker, "build_plan", boom)
    assert get_or_build_plan(g, PlanSpec(chunks=6, ways=3), cache_dir=tmp_path) == first
    monkeypatch.undo()

    # a different way count builds a new plan but reuses the cached METIS partition
    monkeypatch.setattr(pymetis, "part_graph", boom)
    other = get_or_build_plan(g, PlanSpec(chunks=6, ways=2), cache_dir=tmp_path)
    assert torch.equal(other.perm, first.perm) and other.num_ways == 2
    monkeypatch.undo()

    # a corrupt cached plan is rebuilt with a warning
    (tmp_path / f"plan_v1_{g.structure_hash()}_C6_W3_metis_s0_none" / "tensors.pt").write_bytes(b"x")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = get_or_build_plan(g, PlanSpec(chunks=6, ways=3), cache_dir=tmp_path)
    assert again == first
