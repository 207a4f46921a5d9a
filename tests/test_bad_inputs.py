"""The bad-input suite (issue 13): every case is a user error that must end with exit code 2 and one line
naming the problem -- never a traceback, a hang or a silent run.

One table, by what is wrong: configs, the four on-disk dataset formats (planetoid, npz, binary, ogb), plans,
checkpoints, CLI arguments of every subcommand, and launch.sh. A case builds its inputs under ``tmp_path`` and
returns the argv; in-process cases call ``gnnpipe.cli.main`` (argparse's ``SystemExit`` caught), the launch.sh
cases run it as a subprocess (they fail before any worker starts). Other modules hold more cases of the same
kind (tests/test_reliability.py, test_launch.py, test_cli.py, test_config.py, test_resume.py); a few cases here
repeat a class tested there in another form (invalid YAML, a top level that is not a mapping, a missing config
file, non-UTF-8, no subcommand, a checkpoint of another config), the others are new.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gnnpipe.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "dataset: {name: sbm, num_nodes: 60, avg_degree: 4.0, num_features: 8, num_classes: 3}\n"
    "model: {arch: gcn, layers: 2, hidden: 8}\n"
    "train: {epochs: 2, eval_every: 1, warmup_epochs: 0}\n"
    "log: {progress: false}\n"
)


def _cfg(tmp: Path, text: str = TINY, name: str = "c.yaml") -> str:
    (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(tmp / name)


def _train(tmp: Path, *overrides: str, text: str = TINY) -> list[str]:
    return ["train", "--config", _cfg(tmp, text), f"log.dir={tmp / 'runs'}", *overrides]


def _config(text: str | bytes, *overrides: str) -> Callable[[Path], list[str]]:
    """``gnnpipe config`` of a YAML text: loads and validates, trains nothing."""
    return lambda tmp: ["config", "--config", _cfg(tmp, text), *overrides]


def _over(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["config", "--config", _cfg(tmp), *overrides]


# ---------------------------------------------------------------------------------------------- datasets
def _graph():
    from gnnpipe.config import config_from_dict
    from gnnpipe.data import load_graph

    return load_graph(config_from_dict({"dataset": {"name": "sbm", "num_nodes": 40, "num_classes": 3}}).dataset)


def _npz(edit: Callable[[dict], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        from gnnpipe.data import write_npz

        path = write_npz(_graph(), tmp / "g.npz")
        z = dict(np.load(path))
        edit(z)
        np.savez(path, **z)
        return _train(tmp, "dataset.name=npz", f"dataset.path={path}")

    return make


def _npz_bytes(data: bytes) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "g.npz").write_bytes(data)
        return _train(tmp, "dataset.name=npz", f"dataset.path={tmp / 'g.npz'}")

    return make


def _binary(edit: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        from gnnpipe.data import write_binary

        d = write_binary(_graph(), tmp / "bin")
        edit(Path(d))
        return _train(tmp, "dataset.name=binary", f"dataset.path={d}")

    return make


def _planetoid(edit: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        raw = tmp / "ds" / "planetoid" / "Cora" / "raw"
        shutil.copytree(ROOT / "datasets" / "planetoid" / "Cora" / "raw", raw)
        edit(raw)
        return _train(tmp, "dataset.name=cora", f"dataset.root={tmp / 'ds'}")

    return make


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _ogb(edit: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        import pandas as pd

        raw = tmp / "ogb" / "ogbn_arxiv" / "raw"
        raw.mkdir(parents=True)

        def csv(name: str, a) -> None:
            pd.DataFrame(np.asarray(a)).to_csv(raw / name, header=False, index=False, compression="gzip")

        csv("edge.csv.gz", [[0, 1], [1, 2], [2, 3], [3, 0]])
        csv("num-node-list.csv.gz", [[4]])
        csv("num-edge-list.csv.gz", [[4]])
        csv("node-feat.csv.gz", np.ones((4, 3), dtype=np.float32))
        csv("node-label.csv.gz", [[0], [1], [0], [1]])
        for part, ids in (("train", [0, 1]), ("valid", [2]), ("test", [3])):
            (raw.parent / "split" / "time").mkdir(parents=True, exist_ok=True)
            pd.DataFrame(np.array(ids)[:, None]).to_csv(
                raw.parent / "split" / "time" / f"{part}.csv.gz", header=False, index=False, compression="gzip"
            )
        edit(raw)
        return _train(tmp, "dataset.name=ogbn-arxiv", f"dataset.root={tmp / 'ogb'}", "parallel.chunks=1")

    return make


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data)


def _gz_csv(name: str, rows: list[list[int]]) -> Callable[[Path], None]:
    def edit(raw: Path) -> None:
        import pandas as pd

        pd.DataFrame(np.asarray(rows)).to_csv(raw / name, header=False, index=False, compression="gzip")

    return edit


# ---------------------------------------------------------------------------------------------- checkpoints
def _run_with_checkpoints(tmp: Path) -> Path:
    assert main(_train(tmp, "train.checkpoint_every=1")) == 0
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir


def _resume(edit: Callable[[Path], None], *overrides: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        run_dir = _run_with_checkpoints(tmp)
        edit(run_dir / "checkpoints")
        return [*_train(tmp, "train.checkpoint_every=1", *overrides), "--resume", str(run_dir)]

    return make


def _each_manifest(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda root: [fn(m) for m in root.glob("epoch*/manifest.json")]


def _truncate_shards(root: Path) -> None:
    for shard in root.glob("epoch*/rank0.pt"):
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])


def _manifest_edit(key: str, value) -> Callable[[Path], None]:
    def edit(m: Path) -> None:
        d = json.loads(m.read_text())
        d[key] = value
        m.write_text(json.dumps(d))

    return edit


# ---------------------------------------------------------------------------------------------- the table
CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # configs: syntax, structure, keys, types, ranges, duplicates, encodings, overrides
    "config YAML syntax": (_config("model: {layers: 2\n"), "c.yaml"),
    "config top level a list": (_config("- model\n- train\n"), "mapping"),
    "config section a number": (_config("model: 3\n"), "model"),
    "config unknown section": (_config("optimizer: {lr: 1}\n"), "optimizer"),
    "config int given as word": (_config("model: {layers: two}\n"), "model.layers"),
    "config int given as float": (_config("model: {hidden: 2.5}\n"), "model.hidden"),
    "config str given as list": (_config("model: {arch: [gcn]}\n"), "model.arch"),
    "config bool given as number": (_config("log: {trace: 3}\n"), "log.trace"),
    "config hidden negative": (_config("model: {hidden: -4}\n"), "model.hidden"),
    "config nested duplicate key": (_config("model: {layers: 2, layers: 3}\n"), "duplicate key 'model.layers'"),
    "config UTF-16": (_config("model: {layers: 2}\n".encode("utf-16")), "UTF-8"),
    "config Latin-1 value": (_config(b"dataset: {name: caf\xe9}\n"), "UTF-8"),
    "config file missing": (lambda tmp: ["config", "--config", str(tmp / "none.yaml")], "none.yaml"),
    "override without =": (_over("model.layers"), "model.layers"),
    "override unknown key": (_over("train.momentum=0.9"), "train.momentum"),
    "override bad YAML value": (_over("model.hidden=[8"), "model.hidden"),
    "override no section": (_over("layers=4"), "layers"),
    "heartbeat timeout below 2 s": (_over("parallel.heartbeat_timeout_s=1"), "parallel.heartbeat_timeout_s"),
    "heartbeat timeout infinite": (_over("parallel.heartbeat_timeout_s=.inf"), "parallel.heartbeat_timeout_s"),
    "chunks not a multiple of ways": (_over("parallel.ways=2", "parallel.chunks=3"), "parallel.chunks"),
    "checkpoint_every negative": (_over("train.checkpoint_every=-1"), "train.checkpoint_every"),
    "transfer timeout zero": (_over("parallel.timeout_s=0"), "parallel.timeout_s"),
    "ways zero": (_over("parallel.ways=0"), "parallel.ways"),
    # datasets: planetoid
    "planetoid raw files missing": (_planetoid(lambda raw: (raw / "ind.cora.tx").unlink()), "ind.cora.tx"),
    "planetoid pickle garbage": (_planetoid(_write("ind.cora.x", b"not a pickle")), "ind.cora.x"),
    "planetoid pickle runs code": (_planetoid(_write("ind.cora.allx", pickle.dumps(_Evil()))), "ind.cora.allx"),
    "planetoid test.index not ints": (_planetoid(_write("ind.cora.test.index", b"1\nx\n")), "test.index"),
    # datasets: npz
    "npz not a zip": (_npz_bytes(b"hello"), "g.npz: not an .npz file"),
    "npz without labels": (_npz(lambda z: z.pop("labels")), "no labels"),
    "npz edge out of range": (_npz(lambda z: z.__setitem__("adj_indices", z["adj_indices"] + 1000)), "out of range"),
    "npz NaN features": (_npz(lambda z: z.__setitem__("attr_matrix", z["attr_matrix"] * np.nan)), "NaN"),
    "npz path missing": (lambda tmp: _train(tmp, "dataset.name=npz", f"dataset.path={tmp / 'x.npz'}"), "x.npz"),
    "npz path a directory": (
        lambda tmp: _train(tmp, "dataset.name=npz", f"dataset.path={tmp}"),
        "is a directory; expected a file",
    ),
    # datasets: binary
    "binary meta_data.txt missing": (_binary(lambda d: (d / "meta_data.txt").unlink()), "meta_data.txt"),
    "binary meta_data.txt not numbers": (_binary(_write("meta_data.txt", b"a b c\n")), "meta_data.txt"),
    "binary edge_list.bin truncated": (
        _binary(lambda d: (d / "edge_list.bin").write_bytes((d / "edge_list.bin").read_bytes()[:-3])),
        "edge_list.bin",
    ),
    "binary split.txt bad line": (_binary(_write("split.txt", b"0 zero\n")), "split.txt"),
    # datasets: ogb
    "ogb dataset directory missing": (
        lambda tmp: _train(tmp, "dataset.name=ogbn-arxiv", f"dataset.root={tmp}"),
        "ogbn_arxiv",
    ),
    "ogb edge out of range": (_ogb(_gz_csv("edge.csv.gz", [[0, 9]])), "out of range"),
    "ogb labels wrong count": (_ogb(_gz_csv("node-label.csv.gz", [[0]])), "node-label"),
    "ogb csv garbage": (_ogb(_write("num-node-list.csv.gz", b"\x1f\x8bnot gzip")), "num-node-list"),
    # plans and layer splits
    "partition more chunks than vertices": (
        lambda tmp: ["partition", "--config", _cfg(tmp), "--chunks", "100"],
        "parallel.chunks = 100",
    ),
    "partition ways not dividing chunks": (
        lambda tmp: ["partition", "--config", _cfg(tmp), "--chunks", "3", "--ways", "2"],
        "parallel.chunks",
    ),
    "stage_split a number": (_over("parallel.stages=2", "parallel.stage_split=1.5"), "parallel.stage_split"),
    "schedule epoch out of range": (
        lambda tmp: ["schedule", "--config", _cfg(tmp), "--epoch", "5"],
        "--epoch 5",
    ),
    # checkpoints
    "checkpoint manifest not JSON": (_resume(_each_manifest(lambda m: m.write_text("{"))), "no complete checkpoint"),
    "checkpoint manifest other format": (
        _resume(_each_manifest(_manifest_edit("format", 99))),
        "no complete checkpoint",
    ),
    "checkpoint shard truncated": (_resume(_truncate_shards), "no complete checkpoint"),
    "checkpoint of another config": (_resume(lambda root: None, "model.hidden=16"), "model.hidden: 8 there"),
    "resume a file": (lambda tmp: [*_train(tmp), "--resume", _cfg(tmp, "x", "f.txt")], "not a run directory"),
    # CLI arguments of every subcommand
    "cli no subcommand": (lambda tmp: [], "command"),
    "cli unknown subcommand": (lambda tmp: ["fit"], "'fit'"),
    "train without --config": (lambda tmp: ["train"], "--config"),
    "train unknown flag": (lambda tmp: [*_train(tmp), "--epochs", "3"], "--epochs"),
    "train --metrics-out under a file": (
        lambda tmp: [*_train(tmp), "--metrics-out", f"{_cfg(tmp, 'x', 'f.txt')}/m.json"],
        "is a file",
    ),
    "partition --workers 0": (lambda tmp: ["partition", "--config", _cfg(tmp), "--workers", "0"], ">= 1"),
    "partition --chunks a word": (lambda tmp: ["partition", "--config", _cfg(tmp), "--chunks", "x"], "--chunks"),
    "profile --measure a word": (lambda tmp: ["profile", "--config", _cfg(tmp), "--measure", "x"], "--measure"),
    "schedule --epoch a word": (lambda tmp: ["schedule", "--config", _cfg(tmp), "--epoch", "x"], "--epoch"),
    "config --explain with a config": (lambda tmp: ["config", "--explain", "--config", _cfg(tmp)], "--explain"),
    "world-size --max-restarts -1": (
        lambda tmp: ["world-size", "--config", _cfg(tmp), "--max-restarts", "-1"],
        "--max-restarts",
    ),
    "world-size restarts without checkpoints": (
        lambda tmp: ["world-size", "--config", _cfg(tmp), "--max-restarts", "1"],
        "train.checkpoint_every = 0",
    ),
    "info with an argument": (lambda tmp: ["info", "extra"], "extra"),
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNPIPE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_exit_2_and_one_line(case, tmp_path, capsys):
    make, fragment = CASES[case]
    argv = make(tmp_path)
    capsys.readouterr()  # what building the inputs printed
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("gnnpipe") and ": error: " in lines[0], lines[0]
    assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------- launch.sh
LAUNCH_CASES = {
    "launch.sh no arguments": ([], "usage: ./launch.sh"),
    "launch.sh config missing": (["{tmp}/none.yaml"], "none.yaml"),
    "launch.sh --max-restarts a word": (["{cfg}", "--max-restarts", "some"], "expected an integer >= 0"),
    "launch.sh --max-restarts without value": (["{cfg}", "--max-restarts"], "needs a value"),
    "launch.sh restarts without checkpoints": (["{cfg}", "--max-restarts", "2"], "train.checkpoint_every = 0"),
    "launch.sh --mpirun with restarts": (["--mpirun", "{cfg}", "--max-restarts=1"], "mpirun cannot restart"),
}


@pytest.mark.parametrize("case", list(LAUNCH_CASES))
def test_launch_bad_input_is_exit_2_and_one_line(case, tmp_path):
    args, fragment = LAUNCH_CASES[case]
    sub = {"tmp": str(tmp_path), "cfg": _cfg(tmp_path)}
    env = {**os.environ, "GNNPIPE_PYTHON": sys.executable, "GNNPIPE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["./launch.sh", *(a.format(**sub) for a in args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and fragment in lines[0], proc.stderr[-3000:]


def test_the_suite_has_at_least_60_cases():
    """The issue asks for 60 or more cases in all; this module alone has more than 60 distinct ones."""
    assert len(CASES) + len(LAUNCH_CASES) >= 60
