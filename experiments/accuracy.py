# .venv/bin/python experiments/accuracy.py --suite pipeline --save   (suites: experiments/suites/*.yaml; --dry-run)
"""Run an accuracy suite (``experiments/suites/<name>.yaml``) through ``./launch.sh`` and print its checks.

Each experiment of the suite runs once per seed as its own ``./launch.sh`` subprocess (see
``experiments/suite_runs.py``); the finished runs are read back as ``RunSummary`` objects and turned into
``<suite>[-e<N>].{csv,json,png}`` (one row per run, then mean/std per experiment, the checks; see
``experiments/suite_report.py``). Where everything goes:

- ``--save``: ``experiments/results/accuracy/`` (the committed evidence; its ``runs/`` is ignored by git);
- ``--out DIR``: ``DIR`` (and ``DIR/runs``), e.g. to resume an earlier unsaved invocation;
- otherwise a fresh ``experiments/results/tmp/accuracy/<suite>-<time>/`` (ignored by git).

So an invocation never leaves the tree dirty unless asked to. A run whose metrics exist in the folder and whose
stored config equals what its command resolves to now is skipped unless ``--force``: an interrupted suite resumes,
and two suites that share an experiment (same name, same command) share its runs. ``--report`` rebuilds the
tables from finished runs without running anything. Exit status 1 when a run or a judged check failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from experiments.suite_report import build_report, format_tables, plot, write_tables  # noqa: E402
from experiments.suite_runs import (  # noqa: E402
    SCRATCH,
    Run,
    add_run_options,
    check_run_options,
    finished_results,
    repo_relative,
    run_all,
)  # noqa: E402
from experiments.suites import SuiteError, load_suite, suite_names, suite_path  # noqa: E402

EVIDENCE = REPO / "experiments" / "results" / "accuracy"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", required=True, help=f"a shipped suite ({', '.join(suite_names())}) or a YAML path")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the suite's)")
    ap.add_argument("--epochs", type=int, help="override train.epochs for every run")
    ap.add_argument("--only", help="comma-separated experiment names of the suite to run")
    add_run_options(ap, EVIDENCE)
    args = ap.parse_args(argv)
    check_run_options(ap, args)
    try:
        args.suite = load_suite(suite_path(args.suite))
    except SuiteError as exc:
        ap.error(str(exc))
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be >= 1")
    try:
        args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else args.suite.seeds
    except ValueError:
        ap.error(f"--seeds = {args.seeds!r}; expected comma-separated integers, e.g. 1,2,3")
    if args.only:
        names = args.suite.experiment_names()
        unknown = sorted(set(args.only.split(",")) - set(names))
        if unknown:
            ap.error(f"--only: {unknown} not in suite {args.suite.name}: {names}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suite = args.suite
    out = EVIDENCE if args.save else args.out or SCRATCH / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out.resolve()
    all_runs = [Run(e, s, args.epochs, out / "runs") for e in suite.experiments for s in args.seeds]
    runs = [r for r in all_runs if not args.only or r.exp.name in args.only.split(",")]
    if args.dry_run:
        print("\n".join(r.shell_command() for r in runs))
        return 0

    t0 = time.perf_counter()
    failed = run_all([] if args.report else runs, force=args.force, timeout_s=args.timeout)
    print(f"suite {suite.name}: {time.perf_counter() - t0:.0f}s wall", flush=True)
    results, unreadable = finished_results(all_runs)  # the tables cover every finished run of the suite
    failed += unreadable
    if not results:
        print(f"no finished runs in {repo_relative(out / 'runs')}")
        return 1
    report = build_report(suite, results)
    stem = out / (suite.name + (f"-e{args.epochs}" if args.epochs else ""))
    meta = {"suite": suite.name, "seeds": list(args.seeds), "epochs_override": args.epochs, "failed": failed}
    write_tables(report, stem, meta)
    plot(report, stem)
    print("\n" + format_tables(report))
    print(f"\nwrote {repo_relative(stem)}.{{csv,json,png}}")
    if failed:
        print(f"FAILED runs: {', '.join(failed)}")
    return 1 if failed or report.failed_checks() else 0


if __name__ == "__main__":
    sys.exit(main())
