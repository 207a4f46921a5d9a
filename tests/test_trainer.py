"""The epoch loop on the single-device executor: determinism, best-valid tracking, metrics files, the log."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from gnnpipe.config import ExperimentConfig, config_from_dict, config_to_dict
from gnnpipe.data import load_graph
from gnnpipe.data.graph import Graph
from gnnpipe.train.executor import BREAKDOWN_KEYS, SingleDeviceExecutor
from gnnpipe.train.trainer import RunSummary, format_bytes, train

EPOCHS = 12


def _cfg(**sections: dict) -> ExperimentConfig:
    data = {
        "dataset": {"name": "sbm", "num_nodes": 200, "avg_degree": 6.0, "num_features": 16, "num_classes": 4},
        "model": {"arch": "gcnii", "layers": 4, "hidden": 16, "dropout": 0.5},
        "train": {"epochs": EPOCHS, "eval_every": 3, "lr": 0.01, "seed": 1, "warmup_epochs": 2},
        "log": {"progress": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return config_from_dict(data, "test")


@pytest.fixture(scope="module")
def graph() -> Graph:
    return load_graph(_cfg().dataset)


def _run(cfg: ExperimentConfig, graph: Graph, **kwargs) -> tuple[RunSummary, list[str], SingleDeviceExecutor]:
    lines: list[str] = []
    ex = SingleDeviceExecutor(cfg, graph)
    summary = train(cfg, ex, print_fn=lines.append, **kwargs)
    return summary, lines, ex


@pytest.fixture(scope="module")
def run(graph, tmp_path_factory):
    """One run with every output on: (summary, printed lines, executor, metrics path, run dir, log file)."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = _cfg()
    metrics, run_dir, log_file = tmp / "out" / "m.json", tmp / "run", tmp / "run" / "rank0.log"
    summary, lines, ex = _run(cfg, graph, metrics_out=metrics, run_dir=run_dir, log_file=log_file)
    return summary, lines, ex, metrics, run_dir, log_file


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_bitwise_identical_losses(graph, run):
    summary = run[0]
    again, _, _ = _run(_cfg(), graph)
    assert len(summary.losses) == EPOCHS
    assert again.losses == summary.losses  # float equality: bitwise
    assert again.evals == summary.evals
    assert all(math.isfinite(x) for x in summary.losses)


def test_different_seed_gives_different_losses(graph, run):
    other, _, _ = _run(_cfg(train={"seed": 2}), graph)
    assert other.losses != run[0].losses


def test_training_reduces_the_loss(run):
    losses = run[0].losses
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------- best valid
def test_evals_at_eval_every_and_the_last_epoch(graph):
    s, _, _ = _run(_cfg(train={"epochs": 7, "eval_every": 3}), graph)
    assert [e["epoch"] for e in s.evals] == [2, 5, 6]


def test_best_valid_tracking(run):
    s, _, ex = run[:3]
    assert [e["epoch"] for e in s.evals] == [2, 5, 8, 11]
    vals = [e["val"] for e in s.evals]
    best = s.evals[vals.index(max(vals))]  # the first eval reaching the highest valid accuracy
    assert s.best_val_acc == best["val"]
    assert s.test_acc == best["test"]
    assert s.best_epoch == best["epoch"]
    # the executor is left holding the best-valid weights: evaluating again reproduces that eval exactly
    acc = ex.evaluate()
    assert (acc.train, acc.val, acc.test) == (best["train"], best["val"], best["test"])


class _ScriptedExecutor(SingleDeviceExecutor):
    """Real training, but the valid/test accuracies follow a script (so the best epoch is known)."""

    def __init__(self, cfg, graph, script):
        super().__init__(cfg, graph)
        self.script = list(script)

    def evaluate(self):
        from gnnpipe.train.metrics import Accuracies

        val, test = self.script.pop(0)
        return Accuracies(0.0, val, test)


def test_best_valid_is_the_first_maximum_not_the_last_eval(graph):
    cfg = _cfg(train={"epochs": 5, "eval_every": 1})
    ex = _ScriptedExecutor(cfg, graph, [(0.1, 0.9), (0.5, 0.2), (0.5, 0.3), (0.4, 0.8), (0.2, 0.7)])
    s = train(cfg, ex, print_fn=lambda _: None)
    assert (s.best_val_acc, s.test_acc, s.best_epoch) == (0.5, 0.2, 1)


# ---------------------------------------------------------------------------------------------- outputs
def test_metrics_json(run):
    s, _, _, metrics, _, _ = run
    m = json.loads(metrics.read_text())
    for key in ("test_acc", "best_val_acc", "best_epoch", "epoch_time_s", "git_rev"):
        assert key in m
    assert m["test_acc"] == s.test_acc and m["best_val_acc"] == s.best_val_acc and m["best_epoch"] == s.best_epoch
    assert m["epoch_time_s"] > 0
    assert set(m["comm_bytes_per_epoch"]) == {"layer", "graph", "weight"}
    assert m["comm_bytes_per_epoch"] == {"layer": 0, "graph": 0, "weight": 0}  # one device: no communication
    assert isinstance(m["peak_memory_bytes"], list) and len(m["peak_memory_bytes"]) == 1
    assert all(isinstance(b, int) and b > 0 for b in m["peak_memory_bytes"])
    assert set(m["config"]) == {"dataset", "model", "parallel", "train", "log"}
    assert m["config"] == config_to_dict(_cfg())
    assert config_from_dict(m["config"]) == _cfg()  # the embedded config reproduces the run
    assert isinstance(m["git_rev"], str) and m["git_rev"]
    assert set(m["breakdown_s"]) == set(BREAKDOWN_KEYS)


def test_epoch_time_excludes_warmup_epochs(run):
    s, _, _, _, run_dir, _ = run
    with open(run_dir / "epochs.csv") as f:
        times = [float(r["time"]) for r in csv.DictReader(f)]
    assert s.epoch_time_s == pytest.approx(sum(times[2:]) / (EPOCHS - 2))


def test_run_dir_has_epochs_csv_and_summary(run):
    s, _, _, _, run_dir, _ = run
    with open(run_dir / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == EPOCHS
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    assert [float(r["loss"]) for r in rows] == pytest.approx(s.losses)
    assert {"epoch", "time", "loss", "train", "val", "test", *BREAKDOWN_KEYS} <= set(rows[0])
    evaluated = [int(r["epoch"]) for r in rows if r["val"] != ""]
    assert evaluated == [e["epoch"] for e in s.evals]
    assert json.loads((run_dir / "summary.json").read_text())["best_epoch"] == s.best_epoch


def test_logger_lines(run):
    s, lines, _, _, _, log_file = run
    epoch_lines = [ln for ln in lines if ln.startswith("Epoch ")]
    assert len(epoch_lines) == EPOCHS
    assert epoch_lines[0].startswith("Epoch 00000 | Time ")
    for part in ("Compute", "Comm-layer", "Comm-graph", "Bubble", "Loss"):
        assert part in epoch_lines[0]
    assert "Val" not in epoch_lines[0] and "Val" in epoch_lines[2]  # accuracies only at eval epochs
    assert lines[-1].startswith("Highest valid acc")
    assert f"at epoch {s.best_epoch}" in lines[-1]
    assert any(ln.startswith("Peak memory per worker (1)") for ln in lines)
    assert any(ln.startswith("Communication per epoch") for ln in lines)
    assert log_file.read_text().splitlines() == lines  # the log file holds what was printed


def test_progress_bar_on_a_terminal_keeps_every_epoch_in_the_log_file(graph, tmp_path, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = Tty()
    monkeypatch.setattr("sys.stdout", bar)
    cfg = _cfg(train={"epochs": 6, "eval_every": 3}, log={"progress": True})
    lines: list[str] = []
    train(cfg, SingleDeviceExecutor(cfg, graph), print_fn=lines.append, log_file=tmp_path / "r.log")
    assert "6/6" not in bar.getvalue() and "5/6" in bar.getvalue()  # the bar drew the non-eval epochs
    assert [ln[:11] for ln in lines if ln.startswith("Epoch ")] == ["Epoch 00002", "Epoch 00005"]
    logged = [ln for ln in (tmp_path / "r.log").read_text().splitlines() if ln.startswith("Epoch ")]
    assert len(logged) == 6


def test_non_logger_prints_nothing_but_writes_its_log(graph, tmp_path):
    cfg = _cfg(train={"epochs": 3, "eval_every": 3})
    ex = SingleDeviceExecutor(cfg, graph)
    ex.is_logger = False
    lines: list[str] = []
    train(cfg, ex, print_fn=lines.append, log_file=tmp_path / "rank1.log", metrics_out=tmp_path / "m.json")
    assert lines == []
    assert not (tmp_path / "m.json").exists()  # only the logger writes the summary
    assert sum(ln.startswith("Epoch ") for ln in (tmp_path / "rank1.log").read_text().splitlines()) == 3


def test_gcn2_single_eval(graph):
    s, lines, _ = _run(_cfg(model={"arch": "gcn", "layers": 2}, train={"epochs": 4, "eval_every": 10}), graph)
    assert [e["epoch"] for e in s.evals] == [3]  # the last epoch is always evaluated
    assert s.best_epoch == 3 and 0.0 <= s.test_acc <= 1.0


def test_format_bytes():
    assert format_bytes(0) == "0 B"
    assert format_bytes(999) == "999 B"
    assert format_bytes(1500) == "1.500 KB"
    assert format_bytes(2.5e9) == "2.500 GB"
    assert format_bytes(3e15) == "3000.000 TB"


# ---------------------------------------------------------------------------------------------- non-finite, paths
def _poisoned(cfg: ExperimentConfig, graph: Graph, bad_epoch: int) -> SingleDeviceExecutor:
    """Real training whose loss (and so every gradient) is NaN in ``bad_epoch``."""
    ex = SingleDeviceExecutor(cfg, graph)
    real = ex.loss
    ex.loss = lambda epoch: real(epoch) * (float("nan") if epoch == bad_epoch else 1.0)
    return ex


def test_non_finite_loss_stops_naming_epoch_and_layer(graph, tmp_path):
    from gnnpipe.train.trainer import NonFiniteError

    cfg = _cfg(train={"epochs": 6})
    pattern = r"epoch 3: non-finite loss nan, non-finite gradient in \d+ of \d+ tensors, first in the input encoder"
    with pytest.raises(NonFiniteError, match=pattern):
        train(cfg, _poisoned(cfg, graph, 3), print_fn=lambda _: None, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()  # stopped: no summary of a broken run


def test_non_finite_skip_drops_that_update_and_goes_on(graph):
    cfg = _cfg(train={"epochs": 6, "on_nonfinite": "skip"})
    ex = _poisoned(cfg, graph, 3)
    lines: list[str] = []
    seen: dict[int, dict] = {}
    real_epoch = ex.train_epoch

    def train_epoch(epoch):
        stats = real_epoch(epoch)
        seen[epoch] = {k: v.clone() for k, v in ex.model.state_dict().items()}
        return stats

    ex.train_epoch = train_epoch
    s = train(cfg, ex, print_fn=lines.append)
    assert math.isnan(s.losses[3]) and all(math.isfinite(v) for i, v in enumerate(s.losses) if i != 3)
    assert all(torch.equal(seen[2][k], seen[3][k]) for k in seen[2])  # epoch 3 changed no weight
    assert any("epoch 3: non-finite loss nan" in ln and "update dropped" in ln for ln in lines)


def test_non_finite_skip_still_stops_when_it_never_recovers(graph):
    from gnnpipe.train.trainer import MAX_SKIPPED_IN_A_ROW, NonFiniteError

    cfg = _cfg(train={"epochs": 30, "on_nonfinite": "skip"})
    ex = SingleDeviceExecutor(cfg, graph)
    real = ex.loss
    ex.loss = lambda epoch: real(epoch) * (float("nan") if epoch >= 2 else 1.0)
    with pytest.raises(NonFiniteError, match=rf"epoch {2 + MAX_SKIPPED_IN_A_ROW - 1}: .*in a row"):
        train(cfg, ex, print_fn=lambda _: None)


def test_metrics_out_that_is_a_directory_is_refused_before_training(graph, tmp_path):
    from gnnpipe.config import ConfigError

    cfg = _cfg(train={"epochs": 2})
    ex = SingleDeviceExecutor(cfg, graph)
    ex.train_epoch = None  # training must not start
    with pytest.raises(ConfigError, match="is a directory"):
        train(cfg, ex, metrics_out=tmp_path, print_fn=lambda _: None)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, so no file can be created under it"):
        train(cfg, ex, metrics_out=tmp_path / "file" / "m.json", print_fn=lambda _: None)


def test_run_dir_files_are_written_before_the_metrics_file(graph, tmp_path, monkeypatch):
    from gnnpipe.train import trainer

    cfg = _cfg(train={"epochs": 2})
    monkeypatch.setattr(trainer, "check_output_file", lambda *a: None)  # a path that fails only at the end
    (tmp_path / "blocked").write_text("")
    with pytest.raises(OSError):
        train(cfg, SingleDeviceExecutor(cfg, graph), metrics_out=tmp_path / "blocked" / "m.json",
              run_dir=tmp_path / "run", print_fn=lambda _: None)  # fmt: skip
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "epochs.csv").is_file()


def test_a_non_finite_gradient_with_a_finite_loss_names_its_layer(graph):
    from gnnpipe.train.trainer import NonFiniteError

    cfg = _cfg(train={"epochs": 4})
    ex = SingleDeviceExecutor(cfg, graph)
    ex.model.layers[1].lin.weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteError, match=r"epoch 0: finite loss, non-finite gradient in 1 of \d+ tensors, "
                                             r"first in layer 1 \(layers\.1\.lin\.weight\)"):  # fmt: skip
        train(cfg, ex, print_fn=lambda _: None)
