# .venv/bin/python experiments/accuracy.py --suite pipeline   (foundation | graph4 | pipeline | tune16; --dry-run)
"""Accuracy acceptance suites: named experiments, each run through the user path ``./launch.sh``.

An experiment is (config file, overrides, seeds). Every run is one subprocess

    OMP_NUM_THREADS=1 ./launch.sh CONFIG overrides... train.seed=K [train.epochs=N] log.progress=false \
        log.dir=... --metrics-out F

(``launch.sh`` starts torchrun on ways*stages workers for multi-worker configs; every process, single-device
ones too, gets one intra-op thread, see ``_env``). Its metrics JSON (``gnnpipe.train.trainer.RunSummary``) is kept in
``experiments/results/accuracy/runs/<experiment>-s<seed>[-e<N>].json`` with a ``.run.json`` sidecar (command,
wall time, load average). A run whose metrics exist, and whose stored config equals the config the command
resolves to now, is skipped unless ``--force``: an interrupted suite resumes, and two suites that share an
experiment (same name, same command) share its runs. The suite's table goes to
``experiments/results/accuracy/<suite>[-e<N>].{csv,json,png}`` (one row per run, then mean/std per experiment;
the PNG has test accuracy per experiment and the mean training-loss curves; ``--report`` rebuilds them
without running anything). Per-run stdout goes to ``experiments/results/tmp/accuracy/logs`` (ignored by git).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "accuracy"
TMP = ROOT / "experiments" / "results" / "tmp" / "accuracy"
CFG = "experiments/configs"


@dataclass(frozen=True)
class Experiment:
    """One arm of a suite. ``target``: absolute test-accuracy bar; ``baseline``: the arm whose mean test
    accuracy this one must match within ``tolerance`` points (``accept=False``: reported, not judged)."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    target: float | None = None
    baseline: str | None = None
    tolerance: float = 1.0
    accept: bool = True


def _pipeline_suite() -> list[Experiment]:
    arms = []
    for ds in ("cora", "citeseer"):
        single, pipe = f"{ds}_gcnii32_single", f"{ds}_gcnii32_pipe4"
        arms += [
            Experiment(single, f"{CFG}/{single}.yaml"),
            Experiment(pipe, f"{CFG}/{pipe}.yaml", baseline=single),
            Experiment(
                f"{pipe}_gs1",
                f"{CFG}/{pipe}.yaml",
                ("parallel.cross_chunk_grad_scale=1.0",),
                baseline=single,
                accept=False,
            ),
            Experiment(
                f"{pipe}_fixed", f"{CFG}/{pipe}.yaml", ("parallel.chunk_order=fixed",), baseline=single, accept=False
            ),
        ]
    return arms


# the GCNII paper's Cora recipe with one weight decay for all weights (the config first shipped); the tune16
# arms change one key each, spelled out in full so that they do not move when the shipped config does
GCNII16_RECIPE = {
    "train.lr": "0.01",
    "train.weight_decay": "5e-4",
    "train.layer_weight_decay": "null",
    "train.epochs": "400",
    "train.eval_every": "5",
    "model.dropout": "0.6",
    "model.lam": "0.5",
    "model.init": "xavier",
}


def _tune16_suite() -> list[Experiment]:
    variants = [("base", {}), ("eval1", {"train.eval_every": "1"}), ("init_pytorch", {"model.init": "pytorch"})]
    variants += [("lr5e-3", {"train.lr": "0.005"}), ("drop0.5", {"model.dropout": "0.5"})]
    variants += [("lam1.0", {"model.lam": "1.0"})]
    variants += [(f"wd{wd}_e1000", {"train.weight_decay": wd, "train.epochs": "1000"}) for wd in ("5e-4", "1e-3")]
    variants += [(f"wd{wd}_e1000", {"train.weight_decay": wd, "train.epochs": "1000"}) for wd in ("5e-3", "1e-2")]
    # the paper's split decay (0.01 on the GCNII layers' weights, 5e-4 on the dense input/output layers)
    variants += [("lwd0.01", {"train.layer_weight_decay": "0.01"})]
    variants += [("lwd0.01_e1000", {"train.layer_weight_decay": "0.01", "train.epochs": "1000"})]
    return [
        Experiment(
            f"cora_gcnii16_{tag}",
            f"{CFG}/cora_gcnii16.yaml",
            tuple(f"{k}={v}" for k, v in {**GCNII16_RECIPE, **change}.items()),
        )
        for tag, change in variants
    ]


SUITES: dict[str, tuple[list[Experiment], tuple[int, ...]]] = {
    "foundation": (
        [
            Experiment("cora_gcn2", f"{CFG}/cora_gcn2.yaml", target=80.0),
            Experiment("cora_gcnii16", f"{CFG}/cora_gcnii16.yaml", target=82.0),
        ],
        (1,),
    ),
    "graph4": (
        [
            Experiment("cora_gcnii16", f"{CFG}/cora_gcnii16.yaml"),
            Experiment("cora_gcnii16_graph4", f"{CFG}/cora_gcnii16_graph4.yaml", baseline="cora_gcnii16"),
            # without dropout nothing is keyed per chunk: the two must agree up to float32 rounding
            Experiment("cora_gcnii16_nodrop", f"{CFG}/cora_gcnii16.yaml", ("model.dropout=0.0",)),
            Experiment(
                "cora_gcnii16_graph4_nodrop",
                f"{CFG}/cora_gcnii16_graph4.yaml",
                ("model.dropout=0.0",),
                baseline="cora_gcnii16_nodrop",
            ),
        ],
        (1,),
    ),
    "pipeline": (_pipeline_suite(), (1, 2, 3)),
    # how cora_gcnii16.yaml's shipped hyper-parameters were chosen: by mean best-valid accuracy over 3 seeds
    "tune16": (_tune16_suite(), (1, 2, 3)),
}


# ---------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Run:
    exp: Experiment
    seed: int
    epochs: int | None

    @property
    def run_id(self) -> str:
        return f"{self.exp.name}-s{self.seed}" + (f"-e{self.epochs}" if self.epochs else "")

    @property
    def metrics(self) -> Path:
        return OUT / "runs" / f"{self.run_id}.json"

    @property
    def sidecar(self) -> Path:
        return OUT / "runs" / f"{self.run_id}.run.json"

    def overrides(self) -> list[str]:
        ov = [*self.exp.overrides, f"train.seed={self.seed}"]
        return ov + ([f"train.epochs={self.epochs}"] if self.epochs else [])

    def command(self, metrics_out: Path) -> list[str]:
        log_dir = (TMP / "runs").relative_to(ROOT)
        return [
            "./launch.sh",
            self.exp.config,
            *self.overrides(),
            "log.progress=false",
            f"log.dir={log_dir}",
            "--metrics-out",
            str(metrics_out.relative_to(ROOT)),
        ]


def _resolved_config(run: Run) -> dict:
    """The config (minus ``log``) that the run's command resolves to, as stored in the metrics JSON."""
    from gnnpipe.config import config_to_dict, load_config

    d = config_to_dict(load_config(ROOT / run.exp.config, run.overrides()))
    d.pop("log")
    return d


def _is_done(run: Run) -> bool:
    """Metrics exist and were made with the config the command resolves to now (a key added to gnnpipe's
    config since then counts as unchanged when the run resolves it to its default)."""
    from gnnpipe.config import ExperimentConfig, config_to_dict

    if not (run.metrics.is_file() and run.sidecar.is_file()):
        return False
    stored = json.loads(run.metrics.read_text())["config"]
    defaults = config_to_dict(ExperimentConfig())
    now = _resolved_config(run)
    for section, values in now.items():
        for key, value in values.items():
            if key not in stored.get(section, {}) and value == defaults[section][key]:
                stored[section][key] = value
    stored.pop("log", None)
    if stored != now:
        print(f"  {run.run_id}: stored metrics were made with another config; rerunning")
        return False
    return True


def _env() -> dict[str, str]:
    """One intra-op thread per process for every run, as torchrun gives each worker: a single-device run
    with torch's default (one thread per core) on this shared 2-core machine measured 3.3 s/epoch instead of
    0.14 s (oversubscribed OpenMP threads spin). Threads change timings only, not the arithmetic's meaning."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def execute(run: Run, timeout_s: float) -> bool:
    """Run one experiment seed through launch.sh; True on success (metrics written)."""
    partial = run.metrics.with_suffix(".partial.json")
    cmd = run.command(partial)
    log = TMP / "logs" / f"{run.run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    run.metrics.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    print(f"  {run.run_id}: OMP_NUM_THREADS=1 {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the session we started: launch.sh, torchrun, its workers
            proc.wait()
            rc = "timeout"
    wall = time.perf_counter() - t0
    ok = rc == 0 and partial.is_file()
    side = {"command": "OMP_NUM_THREADS=1 " + " ".join(run.command(run.metrics)), "rc": rc, "wall_s": wall}
    side["loadavg_1m_at_start"] = load
    if ok:
        partial.replace(run.metrics)
        run.sidecar.write_text(json.dumps(side, indent=2))
        print(f"  {run.run_id}: done in {wall:.0f}s", flush=True)
    else:
        print(f"  {run.run_id}: FAILED (rc={rc}) after {wall:.0f}s; see {log.relative_to(ROOT)}", flush=True)
    return ok


def row_of(run: Run, suite: str) -> dict:
    m = json.loads(run.metrics.read_text())
    side = json.loads(run.sidecar.read_text())
    comm = m["comm_bytes_per_epoch"]
    cfg = m["config"]
    return {
        "suite": suite,
        "experiment": run.exp.name,
        "seed": run.seed,
        "dataset": cfg["dataset"]["name"],
        "layers": cfg["model"]["layers"],
        "workers": cfg["parallel"]["ways"] * cfg["parallel"]["stages"],
        "epochs": cfg["train"]["epochs"],
        "test_acc": 100.0 * m["test_acc"],
        "best_val_acc": 100.0 * m["best_val_acc"],
        "best_epoch": m["best_epoch"],
        "final_loss": m["losses"][-1],
        "epoch_time_s": m["epoch_time_s"],
        "comm_layer_bytes": comm["layer"],
        "comm_graph_bytes": comm["graph"],
        "comm_weight_bytes": comm["weight"],
        "comm_bytes_per_epoch": sum(comm.values()),
        "wall_s": side["wall_s"],
        "command": side["command"],
    }


# ---------------------------------------------------------------------------------------------- tables
STAT_KEYS = ("test_acc", "best_val_acc", "best_epoch", "final_loss", "epoch_time_s", "comm_bytes_per_epoch", "wall_s")


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample std (0 for one seed) of every numeric column, per experiment, in suite order."""
    out = []
    for name in dict.fromkeys(r["experiment"] for r in rows):
        mine = [r for r in rows if r["experiment"] == name]
        s = {"experiment": name, "n": len(mine), "seeds": ",".join(str(r["seed"]) for r in mine)}
        for k in STAT_KEYS:
            vals = [float(r[k]) for r in mine]
            s[f"{k}_mean"] = statistics.fmean(vals)
            s[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def _loss_gaps(runs: list[Run], name: str, baseline: str) -> tuple[float, float]:
    """Largest and mean |loss - baseline loss| per epoch, over the seeds both arms ran (nan if none)."""
    curves = {(r.exp.name, r.seed): json.loads(r.metrics.read_text())["losses"] for r in runs}
    gaps = [
        abs(a - b)
        for (n, seed) in curves
        if n == name and (baseline, seed) in curves
        for a, b in zip(curves[(name, seed)], curves[(baseline, seed)], strict=False)
    ]
    return (max(gaps), statistics.fmean(gaps)) if gaps else (float("nan"), float("nan"))


def acceptance(exps: list[Experiment], summary: list[dict], runs: list[Run]) -> list[dict]:
    """Targets and baseline comparisons; a comparison also gives the largest per-epoch training-loss gap."""
    by = {s["experiment"]: s for s in summary}
    out = []
    for e in exps:
        if e.name not in by:
            continue
        mean = by[e.name]["test_acc_mean"]
        if e.target is not None:
            out.append({"experiment": e.name, "check": f"test acc >= {e.target:.1f}", "value": mean})
            out[-1]["pass"] = mean >= e.target
        if e.baseline is not None and e.baseline in by:
            diff = mean - by[e.baseline]["test_acc_mean"]
            check = f"|mean - {e.baseline}| <= {e.tolerance:.1f}"
            ok = abs(diff) <= e.tolerance
            out.append({"experiment": e.name, "check": check, "value": diff, "pass": ok if e.accept else None})
            out[-1]["max_loss_gap"], out[-1]["mean_loss_gap"] = _loss_gaps(runs, e.name, e.baseline)
    return out


def write_outputs(stem: Path, rows: list[dict], summary: list[dict], checks: list[dict], meta: dict) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    cols = [k for k in rows[0] if k != "command"] + ["command"]
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for s in summary:
            for r in rows:
                if r["experiment"] == s["experiment"]:
                    w.writerow({k: _fmt(r[k]) for k in cols})
            for stat in ("mean", "std"):
                rec = {"experiment": s["experiment"], "seed": stat, "suite": rows[0]["suite"]}
                rec.update({k: _fmt(s[f"{k}_{stat}"]) for k in STAT_KEYS})
                w.writerow(rec)
    doc = {**meta, "runs": rows, "summary": summary, "acceptance": checks}
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2))


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def plot(stem: Path, runs: list[Run], rows: list[dict], summary: list[dict], exps: list[Experiment]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
    names = [s["experiment"] for s in summary]
    xs = range(len(names))
    ax.errorbar(
        xs, [s["test_acc_mean"] for s in summary], yerr=[s["test_acc_std"] for s in summary], fmt="o", capsize=5
    )
    for i, name in enumerate(names):
        pts = [r["test_acc"] for r in rows if r["experiment"] == name]
        ax.scatter([i + 0.12] * len(pts), pts, s=12, color="gray", zorder=3)
    targets = {e.name: e.target for e in exps if e.target is not None}
    for i, name in enumerate(names):
        if name in targets:
            ax.hlines(targets[name], i - 0.3, i + 0.3, colors="red", linestyles="--")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%) at best valid epoch")
    ax.set_title(f"{stem.name}: mean ± std over seeds (gray: seeds, red: target)")
    ax.grid(alpha=0.3)
    ax2.set_prop_cycle(color=plt.cm.tab20.colors)  # suites have up to ~12 arms
    for name in names:
        curves = [json.loads(r.metrics.read_text())["losses"] for r in runs if r.exp.name == name]
        n = min(len(c) for c in curves)
        ax2.plot([statistics.fmean(c[i] for c in curves) for i in range(n)], label=name, lw=1)
    ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (mean over seeds)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)


def print_tables(rows: list[dict], summary: list[dict], checks: list[dict]) -> None:
    print(f"\n{'experiment':<28} {'seed':>4} {'test':>6} {'val':>6} {'best_ep':>7} {'loss':>7} "
          f"{'epoch_s':>8} {'comm/epoch':>11} {'wall_s':>7}")  # fmt: skip
    for s in summary:
        for r in (r for r in rows if r["experiment"] == s["experiment"]):
            print(
                f"{r['experiment']:<28} {r['seed']:>4} {r['test_acc']:6.2f} {r['best_val_acc']:6.2f} "
                f"{r['best_epoch']:7d} {r['final_loss']:7.4f} {r['epoch_time_s']:8.3f} "
                f"{r['comm_bytes_per_epoch'] / 1e6:9.2f}MB {r['wall_s']:7.0f}"
            )
        print(
            f"{s['experiment']:<28} {'mean':>4} {s['test_acc_mean']:6.2f} {s['best_val_acc_mean']:6.2f} "
            f"{s['best_epoch_mean']:7.0f} {s['final_loss_mean']:7.4f} {s['epoch_time_s_mean']:8.3f} "
            f"{s['comm_bytes_per_epoch_mean'] / 1e6:9.2f}MB {s['wall_s_mean']:7.0f}"
        )
        if s["n"] > 1:
            print(f"{'':<28} {'std':>4} {s['test_acc_std']:6.2f} {s['best_val_acc_std']:6.2f}")
    if checks:
        print()
    for c in checks:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[c["pass"]]
        gap = ""
        if "max_loss_gap" in c:
            gap = f"   |loss gap| max {c['max_loss_gap']:.2e} mean {c['mean_loss_gap']:.2e}"
        print(f"{verdict:<5} {c['experiment']:<28} {c['check']:<40} {c['value']:+.2f}{gap}")


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", choices=sorted(SUITES), required=True)
    ap.add_argument("--seeds", help="comma-separated seeds (default: the suite's)")
    ap.add_argument("--epochs", type=int, help="override train.epochs for every run")
    ap.add_argument("--only", help="comma-separated experiment names of the suite to run")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--report", action="store_true", help="run nothing; rebuild the tables from finished runs")
    ap.add_argument("--force", action="store_true", help="rerun runs whose metrics already exist")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run before it is killed")
    args = ap.parse_args(argv)

    exps, default_seeds = SUITES[args.suite]
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else default_seeds
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be >= 1")
    all_runs = [Run(e, s, args.epochs) for e in exps for s in seeds]  # the tables cover all finished ones
    runs = all_runs
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {e.name for e in exps}
        if unknown:
            ap.error(f"--only: {sorted(unknown)} not in suite {args.suite}: {[e.name for e in exps]}")
        runs = [r for r in all_runs if r.exp.name in wanted]

    if args.dry_run:
        for r in runs:
            print("OMP_NUM_THREADS=1", " ".join(r.command(r.metrics)))
        return 0

    sys.path.insert(0, str(ROOT))  # for _resolved_config when run without the package installed
    failed = []
    t0 = time.perf_counter()
    for i, r in enumerate([] if args.report else runs):
        print(f"[{i + 1}/{len(runs)}] {r.run_id}", flush=True)
        if not args.force and _is_done(r):
            print(f"  {r.run_id}: metrics exist, skipped", flush=True)
            continue
        if not execute(r, args.timeout):
            failed.append(r.run_id)
    print(f"suite {args.suite}: {time.perf_counter() - t0:.0f}s wall", flush=True)

    done = [r for r in all_runs if r.metrics.is_file() and r.sidecar.is_file()]
    if not done:
        print("no finished runs")
        return 1
    rows = [row_of(r, args.suite) for r in done]
    summary = summarise(rows)
    checks = acceptance(exps, summary, done)
    stem = OUT / (args.suite + (f"-e{args.epochs}" if args.epochs else ""))
    meta = {"suite": args.suite, "seeds": list(seeds), "epochs_override": args.epochs, "failed": failed}
    write_outputs(stem, rows, summary, checks, meta)
    plot(stem, done, rows, summary, exps)
    print_tables(rows, summary, checks)
    print(f"\nwrote {stem.relative_to(ROOT)}.{{csv,json,png}}")
    if failed:
        print(f"FAILED runs: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
