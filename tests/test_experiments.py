"""The accuracy suites as data (experiments/suites/*.yaml), their runner's commands and its tables and plot.

Fast: nothing here trains. The suites must load, name configs that load with their overrides, and reproduce
the commands recorded in the committed results; broken suite files must fail naming the file and the key.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

from gnnpipe.config import load_config
from gnnpipe.train.trainer import RunSummary

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the experiments package sits beside gnnpipe and is not installed
    sys.path.insert(0, str(REPO))

from experiments import accuracy  # noqa: E402
from experiments.suite_report import build_report, format_tables, plot, write_tables  # noqa: E402
from experiments.suite_runs import Run, RunRecord, RunResult, read_summary  # noqa: E402
from experiments.suites import (  # noqa: E402
    SUITE_DIR,
    Check,
    Experiment,
    Suite,
    SuiteError,
    load_suite,
    load_suites,
    merge_overrides,
    suite_names,
)

EVIDENCE = REPO / "experiments" / "results" / "accuracy"
GOOD = """
seeds: [1, 2]
overrides: [train.epochs=5, model.dropout=0.5]
experiments:
  - {name: single, config: experiments/configs/cora_gcnii16.yaml}
  - {name: graph4, config: experiments/configs/cora_gcnii16_graph4.yaml, overrides: [model.dropout=0.0]}
checks:
  - {experiment: single, at_least: 80.0}
  - {experiment: graph4, baseline: single, tolerance: 1.0}
"""


# ---------------------------------------------------------------------------------------------- shipped suites
def test_every_shipped_suite_loads_and_validates():
    suites = load_suites()
    assert {"foundation", "graph4", "pipeline", "tune16"} <= set(suites) == set(suite_names())
    for name, suite in suites.items():
        assert suite.name == name and suite.seeds and suite.experiments
        names = suite.experiment_names()
        for c in suite.checks:
            assert c.experiment in names and (c.baseline is None or c.baseline in names)


@pytest.mark.parametrize("name", suite_names())
def test_every_config_a_suite_names_loads_with_its_overrides(name):
    suite = load_suite(SUITE_DIR / f"{name}.yaml")
    for exp in suite.experiments:
        assert exp.config.startswith("experiments/configs/") and (REPO / exp.config).is_file()
        run = Run(exp, suite.seeds[0], None, REPO / "unused")
        cfg = load_config(REPO / exp.config, run.overrides())  # validates every override's key and value
        assert cfg.train.seed == suite.seeds[0]


@pytest.mark.parametrize("name", ["foundation", "graph4", "pipeline"])
def test_saved_suites_reproduce_the_commands_of_the_committed_results(name):
    """``--save`` runs exactly the commands that made experiments/results/accuracy/<suite>.json. (tune16's
    table predates spelling its recipe out in full; its runs are checked by id below.)"""
    recorded = [r["command"] for r in json.loads((EVIDENCE / f"{name}.json").read_text())["runs"]]
    suite = load_suite(SUITE_DIR / f"{name}.yaml")
    runs = [Run(e, s, None, EVIDENCE / "runs") for e in suite.experiments for s in suite.seeds]
    assert [r.shell_command() for r in runs] == recorded


@pytest.mark.parametrize("name", suite_names())
def test_committed_results_have_the_suites_runs(name):
    path = EVIDENCE / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"no committed results for {name}")
    doc = json.loads(path.read_text())
    suite = load_suite(SUITE_DIR / f"{name}.yaml")
    assert [(r["experiment"], r["seed"]) for r in doc["runs"]] == [
        (e.name, s) for e in suite.experiments for s in suite.seeds
    ]
    assert [c["check"] for c in doc["acceptance"]] == [c.label for c in suite.checks]


def test_dry_run_prints_commands_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    assert accuracy.main(["--suite", "graph4", "--dry-run", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(ln.startswith("OMP_NUM_THREADS=1 ./launch.sh experiments/configs/") for ln in lines)
    assert f"--metrics-out {out}/runs/cora_gcnii16_nodrop-s1.json" in lines[2]
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- loading
def test_suite_overrides_come_first_and_an_experiment_replaces_a_key_in_place(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    suite = load_suite(path)
    assert suite.name == "mine" and suite.seeds == (1, 2)
    assert suite.experiments[0] == Experiment(
        "single", "experiments/configs/cora_gcnii16.yaml", ("train.epochs=5", "model.dropout=0.5")
    )
    assert suite.experiments[1].overrides == ("train.epochs=5", "model.dropout=0.0")
    assert suite.checks == (
        Check("single", at_least=80.0),
        Check("graph4", baseline="single", tolerance=1.0),
    )
    assert merge_overrides(("a.b=1", "c.d=2"), ("c.d=3", "e.f=4")) == ("a.b=1", "c.d=3", "e.f=4")


@pytest.mark.parametrize(
    ("old", "new", "key", "says"),
    [
        ("seeds: [1, 2]", "seeds: []", "seeds", "non-empty list of integers"),
        ("seeds: [1, 2]", "seed: [1, 2]", "seed", "unknown key; allowed: description, seeds"),
        ("cora_gcnii16.yaml}", "nope.yaml}", "experiments[0].config", "'experiments/configs/nope.yaml' is not a file"),
        ("name: graph4,", "name: single,", "experiments[1].name", "'single' appears twice"),
        ("name: graph4,", "name: 'a b',", "experiments[1].name", "letters, digits"),
        ("[model.dropout=0.0]", "[dropout]", "experiments[1].overrides[0]", "'section.key=value'"),
        ("[model.dropout=0.0]", "[train.seed=3]", "experiments[1].overrides[0]", "set by the runner"),
        ("{experiment: single, at_least", "{experiment: other, at_least", "checks[0].experiment", "not an experiment"),
        ("at_least: 80.0}", "at_least: high}", "checks[0].at_least", "expected a number"),
        ("baseline: single, ", "", "checks[1]", "exactly one of 'at_least'"),
        (", tolerance: 1.0}", "}", "checks[1].tolerance", "needs a tolerance"),
        ("tolerance: 1.0}", "tolerance: -1}", "checks[1].tolerance", "expected >= 0"),
        ("tolerance: 1.0}", "tolerance: 1.0, metric: loss}", "checks[1].metric", "allowed: test_acc, best_val_acc"),
        ("tolerance: 1.0}", "tolerance: 1.0, judged: maybe}", "checks[1].judged", "true or false"),
        ("  - {experiment: single, at_least: 80.0}", "  - [single]", "checks[0]", "expected a mapping"),
    ],
)
def test_a_bad_suite_file_names_the_file_and_the_key(tmp_path, old, new, key, says):
    assert old in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}: ") and says in msg, msg


def test_unreadable_or_non_mapping_suite_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [1\n")
    with pytest.raises(SuiteError, match=r"bad\.yaml: not valid YAML"):
        load_suite(bad)
    bad.write_text("- 1\n")
    with pytest.raises(SuiteError, match=r"bad\.yaml: top level: got list; expected a mapping"):
        load_suite(bad)
    with pytest.raises(SuiteError, match="missing.yaml: cannot read"):
        load_suite(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------------------------- results
def fake_summary(test_acc: float, losses: list[float], workers: int = 1) -> RunSummary:
    """A RunSummary as a finished run writes it: the fields the tables read are set, any other field without a
    default is None (so the test follows RunSummary as it grows or sheds fields)."""
    values = dict(
        test_acc=test_acc,
        best_val_acc=test_acc - 0.01,
        best_epoch=len(losses) - 1,
        epoch_time_s=0.1,
        comm_bytes_per_epoch={"layer": 0, "graph": 100 * (workers - 1), "weight": 10 * (workers - 1)},
        losses=losses,
        peak_memory_bytes=[300 << 20] * workers,
        config={
            "dataset": {"name": "cora"},
            "model": {"layers": 16},
            "parallel": {"ways": workers, "stages": 1},
            "train": {"epochs": len(losses)},
        },
    )
    kwargs = {}
    for f in dataclasses.fields(RunSummary):
        if f.name in values:
            kwargs[f.name] = values[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None
    return RunSummary(**kwargs)


def fake_results() -> tuple[Suite, list[RunResult]]:
    exps = (Experiment("single", "a.yaml"), Experiment("graph4", "b.yaml"), Experiment("ablation", "b.yaml"))
    checks = (
        Check("single", at_least=80.0),
        Check("graph4", baseline="single", tolerance=1.0),
        Check("ablation", baseline="single", tolerance=1.0, judged=False),
        Check("graph4", metric="best_val_acc", at_least=90.0),
    )
    suite = Suite("fake", Path("fake.yaml"), (1, 2), exps, checks)
    accs = {"single": (0.82, 0.84), "graph4": (0.825, 0.835), "ablation": (0.80, 0.80)}
    results = []
    for e in exps:
        for seed, acc in zip(suite.seeds, accs[e.name], strict=True):
            losses = [1.0, 0.5 + 0.01 * seed, 0.25 + (0.02 if e.name == "graph4" else 0.0)]
            summary = fake_summary(acc, losses, workers=4 if e.name != "single" else 1)
            results.append(RunResult(e.name, seed, summary, RunRecord(f"cmd {e.name} {seed}", 0, 10.0 * seed, 0.5)))
    return suite, results


def test_report_tables_checks_and_plot_on_a_fake_result_set(tmp_path):
    suite, results = fake_results()
    report = build_report(suite, results)
    assert [s["experiment"] for s in report.summary] == ["single", "graph4", "ablation"]
    single = report.summary[0]
    assert single["n"] == 2 and single["seeds"] == "1,2"
    assert single["test_acc_mean"] == pytest.approx(83.0) and single["test_acc_std"] == pytest.approx(math.sqrt(2))
    assert report.rows[2]["workers"] == 4 and report.rows[2]["comm_bytes_per_epoch"] == 330
    by = {(c["experiment"], c["check"]): c for c in report.checks}
    assert by[("single", "test acc >= 80.0")]["pass"] is True
    g4 = by[("graph4", "|mean - single| <= 1.0")]
    assert g4["value"] == pytest.approx(0.0, abs=1e-9) and g4["pass"] is True
    assert g4["max_loss_gap"] == pytest.approx(0.02) and g4["mean_loss_gap"] == pytest.approx(0.02 / 3)
    ablation = by[("ablation", "|mean - single| <= 1.0")]
    assert ablation["value"] == pytest.approx(-3.0) and ablation["pass"] is None  # reported, not judged
    assert by[("graph4", "best val acc >= 90.0")]["pass"] is False
    assert report.failed_checks() == [by[("graph4", "best val acc >= 90.0")]]
    assert report.targets == {"single": 80.0}

    stem = tmp_path / "fake"
    csv_path, json_path = write_tables(report, stem, {"suite": "fake", "seeds": [1, 2]})
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["1", "2", "mean", "std"] * 3
    assert list(rows[0])[-1] == "command" and rows[0]["command"] == "cmd single 1"
    doc = json.loads(json_path.read_text())
    assert doc["suite"] == "fake" and len(doc["runs"]) == 6 and doc["acceptance"] == report.checks
    assert plot(report, stem).stat().st_size > 0

    text = format_tables(report)
    assert "PASS  single" in text and "FAIL  graph4" in text and "info  ablation" in text


def test_a_partial_result_set_judges_only_what_finished():
    suite, results = fake_results()
    report = build_report(suite, [r for r in results if r.experiment != "single"])
    assert [c["check"] for c in report.checks] == ["best val acc >= 90.0"]


def test_read_summary_round_trips_and_names_a_file_that_is_not_one(tmp_path):
    summary = fake_summary(0.8, [1.0, 0.5])
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**summary.to_json(), "added_later": 1}))
    assert read_summary(path) == summary
    path.write_text(json.dumps({"test_acc": 0.8}))
    with pytest.raises(ValueError, match=r"m\.json: not a run summary; it lacks best_val_acc"):
        read_summary(path)
