"""Checkpoints: atomic writes, ``weights_only`` loads, and a CheckpointError naming the path otherwise."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from gnnpipe.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class Payload:
    """An arbitrary picklable object: a checkpoint must never unpickle it (it could run code on load)."""

    def __init__(self) -> None:
        self.secret = 42

    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def _state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"layer0.weight": torch.randn(4, 3, generator=g), "layer0.bias": torch.zeros(4)},
        "optimizer": {"step": torch.tensor(7), "exp_avg": [torch.randn(2, generator=g), torch.ones(2, 2)]},
        "epoch": 12,
        "best_val": 0.81,
        "arch": "gcnii",
        "labels": torch.arange(5, dtype=torch.int64),
        "double": torch.randn(3, generator=g).to(torch.float64),
    }


def _assert_equal(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_equal(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_equal(x, y)
    else:
        assert a == b


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "dir" / "ckpt.pt"  # parents are created
    state = _state()
    save_checkpoint(path, state)
    _assert_equal(load_checkpoint(path), state)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_overwrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state())
    save_checkpoint(path, {"epoch": 1})
    assert load_checkpoint(path) == {"epoch": 1}


def test_failed_save_keeps_the_old_checkpoint_and_no_temp_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on where the lambda lives
        save_checkpoint(path, {"bad": lambda: None})  # a lambda cannot be pickled
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"], ids=["empty", "text", "zip"]
)
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "cannot load checkpoint" in str(info.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot load checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_arbitrary_pickled_object_is_refused(tmp_path, capfd):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "should-not-run" not in capfd.readouterr().out


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path)


def test_checkpoint_error_is_a_user_error():
    from gnnpipe.user_errors import USER_ERRORS

    assert issubclass(CheckpointError, USER_ERRORS)
