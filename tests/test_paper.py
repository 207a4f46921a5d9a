"""experiments/paper.py and paper_report.py: every arm is a valid config with the degrees it names, and the
tables, ratios and plots come out right on a fake set of finished runs (fast: nothing here trains)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gnnpipe.config import load_config
from gnnpipe.train.outputs import RunSummary

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the experiments package sits beside gnnpipe and is not installed
    sys.path.insert(0, str(REPO))

from experiments import paper  # noqa: E402
from experiments.paper_report import compress_rows, markdown_tables, summaries, write_all  # noqa: E402
from experiments.suite_runs import RunRecord, RunResult  # noqa: E402


def test_every_arm_is_a_valid_config_with_the_degrees_model_and_setting_it_names():
    arms = paper.arms()
    names = [a.experiment.name for a in arms]
    n_matrix = len(paper.DATASETS) * len(paper.MODELS) * len(paper.STRATEGIES)
    assert len(set(names)) == len(names) == n_matrix + len(paper.COMPRESS_ARMS) * len(paper.COMPRESS)
    for a in arms:
        cfg = load_config(REPO / a.experiment.config, list(a.experiment.overrides))
        p = cfg.parallel
        assert (p.ways, p.stages, p.chunks) == paper.STRATEGIES[a.strategy]
        assert cfg.model.arch == a.model and cfg.model.layers == paper.LAYERS and p.compress == a.compress
        assert cfg.dataset.name == a.dataset
    # subsets keep the order and drop the compression arms without GCNII
    sub = paper.arms(("sbm",), ("gcn",))
    assert [a.experiment.name for a in sub] == ["sbm-gcn-graph", "sbm-gcn-pipeline", "sbm-gcn-hybrid"]


def test_bad_arguments_are_one_line_errors(capsys):
    for argv in (["--datasets", "cora,pubmed"], ["--models", ""], ["--epochs", "0"], ["--report"]):
        with pytest.raises(SystemExit) as exc:
            paper.parse_args(argv)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def fake_result(arm: paper.Arm, seed: int, acc: float, traffic: int) -> RunResult:
    comm = {"layer": traffic, "graph": 0, "weight": 10}
    summary = RunSummary(
        test_acc=acc, best_val_acc=acc + 0.01, best_epoch=4, epoch_time_s=0.5, comm_bytes_per_epoch=comm,
        comm_bytes_per_epoch_analytic=dict(comm), peak_memory_bytes=[300 << 20, 310 << 20], losses=[1.0, 0.5],
        breakdown_s={}, breakdown_per_worker_s=[], config={"train": {"epochs": 5}}, git_rev="x",
        evals=[{"epoch": e, "train": acc, "val": acc, "test": acc * e / 4} for e in range(0, 5, 2)],
        memory=[{"peak_growth_train": 40 << 20, "peak_growth_eval": 50 << 20}, {"peak_growth_train": 60 << 20}],
    )  # fmt: skip
    return RunResult(arm.experiment.name, seed, summary, RunRecord(f"cmd {arm.experiment.name}", 0, 9.0, 0.1))


def fake_depth() -> list[dict]:
    rows = []
    for layers in paper.DEPTHS:
        for strategy, total in (("graph", 100 * layers), ("pipeline", 300), ("hybrid", 50 * layers + 100)):
            measured = total if layers <= 8 else None
            rows.append({"dataset": "cora", "layers": layers, "strategy": strategy, "total_analytic": total,
                         "total_measured": measured})  # fmt: skip
    return rows


def test_tables_ratios_and_plots_on_fake_runs(tmp_path):
    plan = paper.arms(("cora",), ("gcnii", "resgcn"))
    results = []
    for a in plan:
        traffic = {"none": 400, "bf16": 200, "fp16": 200, "int8": 100}[a.compress]
        for seed, acc in ((1, 0.80), (2, 0.84)):
            results.append(fake_result(a, seed, acc, traffic))
    meta = {"seeds": [1, 2], "layers": 32, "epochs": 5, "command": "python experiments/paper.py --out x"}
    ratio = write_all(tmp_path, plan, results, fake_depth(), meta)
    assert ratio == pytest.approx(100 * 32 / 300)
    for f in ("matrix.csv", "matrix.json", "table.md", "depth.csv", "compress.csv", "matrix.png", "curves.png",
              "depth.png", "compress.png"):  # fmt: skip
        assert (tmp_path / f).stat().st_size > 0, f

    doc = json.loads((tmp_path / "matrix.json").read_text())
    runs = [r for r in doc["runs"] if r["seed"] != "mean"]
    assert len(runs) == 2 * len(plan) and runs[0]["peak_growth_bytes"] == 60 << 20
    assert all(r["measured_equals_analytic"] for r in runs)

    summary = summaries(plan, runs)
    gcnii = next(s for s in summary if (s["model"], s["strategy"], s["compress"]) == ("gcnii", "pipeline", "none"))
    assert gcnii["seeds"] == 2 and gcnii["test_acc"] == pytest.approx(82.0)
    assert gcnii["test_acc_std"] == pytest.approx(2 * 2**0.5)

    table = markdown_tables(summary, meta)
    assert "| cora | gcnii | 82.0 ± 2.8 | 82.0 ± 2.8 | 82.0 ± 2.8 |" in table
    assert "| cora | resgcn |" in table and "int8" not in table  # only the uncompressed arms
    assert "0.50 · 0.0 · 60" in table  # epoch s · MiB per epoch · peak growth MiB
    partial = markdown_tables(summaries(plan, [r for r in runs if r["seed"] == 1 or r["model"] != "resgcn"]), meta)
    assert "| cora | resgcn | 80.0 (n=1) |" in partial and "| cora | gcnii | 82.0 ± 2.8 |" in partial

    comp = compress_rows(summary)
    assert [(r["strategy"], r["compress"]) for r in comp] == [
        (st, how) for st in ("graph", "pipeline") for how in ("none", "bf16", "fp16", "int8")
    ]  # the uncompressed twin first, in matrix order
    assert [r["ratio_vs_none"] for r in comp[:4]] == [1.0, 2.0, 2.0, 4.0]

    depth = json.loads((tmp_path / "depth.json").read_text())["runs"]
    at8 = next(r for r in depth if r["layers"] == 8 and r["strategy"] == "graph")
    assert at8["ratio_graph_over_pipeline"] == pytest.approx(800 / 300)


def test_volume_rows_are_reused_where_measured_as_asked_and_report_measures_nothing(tmp_path, monkeypatch):
    path = tmp_path / "depth.json"
    rows = fake_depth()
    path.write_text(json.dumps({"meta": {}, "runs": rows}))
    quick_cora = paper.Mode("q", (1,), 3, ())
    have = paper.cached_depth(path, quick_cora)
    assert set(have) == {("cora", L) for L in paper.DEPTHS} and sum(have.values(), []) == rows
    measured = paper.Mode("m", (1,), 3, ("cora",))
    assert set(paper.cached_depth(path, measured)) == {("cora", L) for L in paper.DEPTHS if L <= 8}
    assert paper.cached_depth(tmp_path / "none.json", quick_cora) == {}
    asked = []  # (dataset, depth, epochs measured) of every profile the volumes call for

    def fake_profile(cfg, graph, workers, measure_epochs):
        asked.append((cfg.dataset.name, cfg.model.layers, measure_epochs))
        kinds = {"layer": 1, "graph": 2, "weight": 3}
        return [{"strategy": "graph", "ways": 4, "stages": 1, "chunks": 4, "analytic": kinds, "measured": kinds}]

    monkeypatch.setattr("gnnpipe.profile.report.profile", fake_profile)
    monkeypatch.setattr("gnnpipe.data.load_graph", lambda cfg: None)
    out = paper.depth_volumes(measured, ("cora",), paper.cached_depth(path, measured))
    assert asked == [("cora", L, 1) for L in paper.DEPTHS if L > 8]  # only the points not measured yet
    assert [r["layers"] for r in out] == sorted(r["layers"] for r in out)
    asked.clear()
    paper.depth_volumes(measured, ("cora",), {}, measure=False)  # --report: analytic only
    assert asked == [("cora", L, 0) for L in paper.DEPTHS]
