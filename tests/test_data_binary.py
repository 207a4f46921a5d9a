"""The authors' binary format: round trips, the doubled edge array, partitions, and an error per bad file."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gnnpipe.data import GraphError, read_binary, read_partitions, write_binary, write_partitions
from gnnpipe.data.binary import read_meta


@pytest.mark.parametrize("multi_label", [False, True])
def test_round_trip(tmp_path, small_graph, assert_same_graph, multi_label):
    g = small_graph(multi_label=multi_label)
    write_binary(g, tmp_path / "g")
    back = read_binary(tmp_path / "g")
    assert_same_graph(g, back)
    assert back.multi_label == multi_label
    assert back.name == "g"


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    e=st.integers(0, 80),
    f=st.integers(0, 4),
    c=st.integers(1, 5),
    multi_label=st.booleans(),
    doubled=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(small_graph, assert_same_graph, n, e, f, c, multi_label, doubled, seed):
    g = small_graph(n=n, e=e, f=f, c=c, multi_label=multi_label, seed=seed)
    with tempfile.TemporaryDirectory() as d:
        write_binary(g, d)
        if doubled:  # the partitioner's layout: the edge array a second time
            pairs = np.fromfile(f"{d}/edge_list.bin", dtype=np.uint32)
            np.concatenate([pairs, pairs]).tofile(f"{d}/edge_list.bin")
        back = read_binary(d, multi_label=multi_label)
    assert_same_graph(g, back)


def test_cora_round_trip(tmp_path, dataset_cfg, assert_same_graph):
    from gnnpipe.data import load_graph

    g = load_graph(dataset_cfg(name="cora"))
    write_binary(g, tmp_path)
    meta = read_meta(tmp_path)
    assert (meta.num_nodes, meta.num_edges, meta.num_features, meta.num_classes) == (2708, 10556, 1433, 7)
    assert_same_graph(g, read_binary(tmp_path))


def test_partitioner_doubled_edge_array_accepted(tmp_path, small_graph, assert_same_graph):
    g = small_graph()
    write_binary(g, tmp_path)
    pairs = np.fromfile(tmp_path / "edge_list.bin", dtype=np.uint32).reshape(-1, 2)
    csc = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]
    np.concatenate([pairs, csc]).tofile(tmp_path / "edge_list.bin")
    assert_same_graph(g, read_binary(tmp_path))


def test_single_label_override_and_empty_rows(tmp_path, small_graph):
    g = small_graph()
    write_binary(g, tmp_path)
    assert (read_binary(tmp_path).y == -1).sum() == (g.y == -1).sum()  # empty one-hot row = unlabelled
    forced = read_binary(tmp_path, multi_label=True)
    assert forced.y.shape == (g.num_nodes, g.num_classes) and forced.y.dtype == torch.float32


def test_partitions(tmp_path, small_graph):
    write_binary(small_graph(n=40), tmp_path)
    bounds = torch.tensor([0, 10, 10, 25, 40])
    write_partitions(tmp_path, bounds)
    assert torch.equal(read_partitions(tmp_path, 4), bounds)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 10\n10 25\n", r"has 2 lines, expected 3"),
        ("0 10\n11 25\n25 40\n", r"line 2 .*starting at 10"),
        ("0 10\n10 25\n25 39\n", r"end at 39, expected N = 40"),
        ("0 10\n10 x\n25 40\n", r"line 2 is '10 x'"),
    ],
)
def test_bad_partitions(tmp_path, small_graph, text, match):
    write_binary(small_graph(n=40), tmp_path)
    (tmp_path / "3_parts").mkdir()
    (tmp_path / "3_parts" / "partitions.txt").write_text(text)
    with pytest.raises(GraphError, match=r"partitions\.txt.*" + match):
        read_partitions(tmp_path, 3)


def _truncate(path, nbytes=4):
    data = path.read_bytes()
    path.write_bytes(data[:-nbytes])


def _edit_text(path, old, new):
    path.write_text(path.read_text().replace(old, new, 1))


def _set_edge(path, value):
    a = np.fromfile(path, dtype=np.uint32)
    a[3] = value
    a.tofile(path)


def _label_rows(path, rows):
    np.zeros((rows, 3), dtype=np.float32).tofile(path)


def _label_value(path):
    a = np.fromfile(path, dtype=np.float32)
    a[0] = 0.5
    a.tofile(path)


BAD_CASES = {
    "truncated edges": ("edge_list.bin", lambda p: _truncate(p), r"size \d+ bytes does not match"),
    "edge id out of range": ("edge_list.bin", lambda p: _set_edge(p, 40), r"out of range \[0, 40\)"),
    "truncated features": ("feature.bin", lambda p: _truncate(p), r"truncated"),
    "feature rows": ("feature.bin", lambda p: np.zeros((39, 5), np.float32).tofile(p), r"holds 39 rows of 5"),
    "NaN feature": ("feature.bin", lambda p: np.full((40, 5), np.nan, np.float32).tofile(p), r"NaN"),
    "label rows": ("label.bin", lambda p: _label_rows(p, 41), r"holds 41 rows of 3 .* N = 40"),
    "truncated labels": ("label.bin", lambda p: _truncate(p, 2), r"truncated"),
    "label value": ("label.bin", _label_value, r"must be 0/1"),
    "split code 5": (
        "split.txt",
        lambda p: p.write_text("".join(f"{v} 5\n" for v in range(40))),
        r"line 1: split code 5",
    ),
    "split id": ("split.txt", lambda p: _edit_text(p, "\n39 ", "\n40 "), r"vertex id 40 out of range"),
    "split short": ("split.txt", lambda p: p.write_text("0 0\n1 1\n"), r"has 2 lines, expected 40"),
    "split dup": ("split.txt", lambda p: _edit_text(p, "\n39 ", "\n38 "), r"vertex 39 has no line"),
    "split text": ("split.txt", lambda p: _edit_text(p, "\n3 ", "\nthree "), r"line 4 is 'three"),
    "meta words": ("meta_data.txt", lambda p: p.write_text("forty 160 5 3\n"), r"malformed"),
    "meta count": ("meta_data.txt", lambda p: p.write_text("40 160 5\n"), r"'N E F C'"),
    "meta negative": ("meta_data.txt", lambda p: p.write_text("40 -1 5 3\n"), r"non-negative"),
    "meta wrong E": ("meta_data.txt", lambda p: p.write_text("40 161 5 3\n"), r"does not match meta_data"),
    "missing labels": ("label.bin", lambda p: p.unlink(), r"not found"),
    "meta latin-1": ("meta_data.txt", lambda p: p.write_bytes("40 160 5 3 \u00e9\n".encode("latin-1")), r"not UTF-8"),
    "meta binary": ("meta_data.txt", lambda p: p.write_bytes(b"\x80\x02\xff"), r"byte 0x80 at offset 0"),
    "split utf-16": ("split.txt", lambda p: p.write_text("0 0\n", encoding="utf-16"), r"not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_names_the_file(tmp_path, small_graph, case):
    fname, corrupt, match = BAD_CASES[case]
    write_binary(small_graph(n=40, e=160, f=5, c=3), tmp_path)
    corrupt(tmp_path / fname)
    with pytest.raises(GraphError, match=match) as info:
        read_binary(tmp_path)
    assert fname in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(GraphError, match=r"directory .*nope.* not found"):
        read_binary(tmp_path / "nope")


def test_write_rejects_overlapping_splits(tmp_path, small_graph):
    g = small_graph()
    g.val_mask[:] = g.train_mask
    g.train_mask[0] = g.val_mask[0] = True
    with pytest.raises(GraphError, match=r"vertex \d+ is in two splits"):
        write_binary(g, tmp_path)
