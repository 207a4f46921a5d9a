"""Command line: ``gnnpipe train | partition | profile | plan | schedule | config | world-size | info``.

The only module that parses argv. User errors (bad config, bad data) print one clear line and exit 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time

__all__ = ["main"]


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, help="experiment YAML file")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. model.layers=32 train.lr=1e-3")


def _cmd_train(args: argparse.Namespace) -> int:
    from gnnpipe.config import load_config
    from gnnpipe.train.run import run_training

    cfg = load_config(args.config, args.overrides)
    run_training(cfg, metrics_out=args.metrics_out, resume=args.resume)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy
    import torch
    import torch.distributed as dist

    import gnnpipe
    from gnnpipe.kernels import describe

    print(f"gnnpipe {gnnpipe.__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    print(f"torch {torch.__version__}, numpy {numpy.__version__}")
    for mod in ("torch_geometric", "pymetis", "ogb", "yaml", "networkx", "mpi4py"):
        try:
            m = __import__(mod)
            print(f"{mod} {getattr(m, '__version__', 'installed')}")
        except ImportError:
            print(f"{mod} not installed")
    print(f"cpu threads {torch.get_num_threads()}")
    cuda = torch.cuda.is_available()
    print(f"cuda available {cuda}" + (f", {torch.cuda.device_count()} device(s)" if cuda else ""))
    if cuda:
        for i in range(torch.cuda.device_count()):
            print(f"  cuda:{i} {torch.cuda.get_device_name(i)}")
    backends = [b for b in ("gloo", "nccl", "mpi") if getattr(dist, f"is_{b}_available")()]
    print(f"torch.distributed backends: {', '.join(backends) or 'none'}")
    print(describe())  # which aggregation kernels run (native gnnpipe._C or torch) and why
    return 0


def _config_for(args: argparse.Namespace):
    """The config of ``--config`` (+ overrides), or one built from ``--dataset/--chunks/--ways/...`` flags."""
    from gnnpipe.config import load_config

    overrides = list(args.overrides)
    flags = ("dataset.name", "parallel.chunks", "parallel.ways", "parallel.stages", "model.layers", "model.hidden")
    for flag, key in ((k.split(".")[1].replace("name", "dataset"), k) for k in flags):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)


def _cmd_partition(args: argparse.Namespace) -> int:
    from gnnpipe.data import load_graph
    from gnnpipe.partition.chunker import save_plan
    from gnnpipe.partition.stats import format_plan_report
    from gnnpipe.profile.volumes import strategies_for, volume_of, with_degrees
    from gnnpipe.train.run import plan_for

    cfg = _config_for(args)
    t0 = time.perf_counter()
    graph = load_graph(cfg.dataset)
    t1 = time.perf_counter()
    plan = plan_for(cfg, graph)
    t2 = time.perf_counter()
    if args.out:
        save_plan(plan, args.out)
    workers = args.workers or max(cfg.parallel.world_size, 2)
    volumes = {}
    for s in strategies_for(cfg, workers):
        scfg = with_degrees(cfg, s)
        volumes[f"{s.name} {s.ways}x{s.stages} C={s.chunks}"] = volume_of(scfg, graph, plan_for(scfg, graph))
    print(format_plan_report(plan, graph, volumes))
    print(
        f"model {cfg.model.arch} L={cfg.model.layers} hidden={cfg.model.hidden}, {workers} workers; "
        f"load {t1 - t0:.2f}s, plan {t2 - t1:.2f}s" + (f"; plan saved to {args.out}" if args.out else "")
    )
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from gnnpipe.data import load_graph
    from gnnpipe.profile.report import profile, profile_table, write_json

    cfg = _config_for(args)
    graph = load_graph(cfg.dataset)
    workers = args.workers or max(cfg.parallel.world_size, 2)
    rows = profile(cfg, graph, workers=workers, measure_epochs=args.measure, nodes=args.nodes)
    print(profile_table(rows))
    if args.json:
        write_json(rows, args.json, workers)
    if args.measure:
        bad = [r["strategy"] for r in rows if r["measured"] != r["analytic"]]
        if bad:
            print(f"measured != analytic for: {', '.join(bad)}", file=sys.stderr)
            return 1
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from gnnpipe.config import load_config
    from gnnpipe.plan.costs import parse_link
    from gnnpipe.plan.planner import plan_command
    from gnnpipe.plan.report import parse_memory, parse_projection

    return plan_command(
        load_config(args.config, args.overrides),
        workers=args.workers,
        memory=parse_memory(args.memory) if args.memory is not None else None,
        link=parse_link(args.link) if args.link is not None else None,
        projections=[parse_projection(t) for t in args.project],
        json_path=args.json,
        config_path=args.write,
        recalibrate=args.recalibrate,
        nodes=args.nodes,
    )


def _one_line_error(message: str):
    """argparse's error for ``gnnpipe plan``, as one line and exit code 2."""
    print(f"gnnpipe plan: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _count(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse reports anything else, exit code 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; allowed: an integer >= {minimum}")
        return value

    return parse


def _add_plan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset.name (instead of or on top of --config)")
    p.add_argument("--chunks", type=int)
    p.add_argument("--ways", type=int)
    p.add_argument("--stages", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--workers", type=_count(1), help="worker count for the strategy comparison (default: ways*stages)")


def _cmd_world_size(args: argparse.Namespace) -> int:
    from gnnpipe.config import ConfigError, load_config
    from gnnpipe.parallel.dims import ParallelDims

    cfg = load_config(args.config, args.overrides)
    if args.max_restarts and not cfg.train.checkpoint_every:
        raise ConfigError(
            f"--max-restarts {args.max_restarts}: a restarted run goes on from its newest checkpoint, but "
            f"{cfg.source} has train.checkpoint_every = 0 (none); set e.g. train.checkpoint_every=1"
        )
    print(ParallelDims.from_config(cfg).world_size)
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from gnnpipe.config import ConfigError, load_config
    from gnnpipe.parallel.schedule import schedule_tables

    cfg = load_config(args.config, args.overrides)
    if args.epoch < 0 or args.epoch >= cfg.train.epochs:
        raise ConfigError(f"--epoch {args.epoch}: allowed 0 .. train.epochs - 1 ({cfg.train.epochs - 1})")
    costs = None
    if cfg.parallel.chunk_order == "degree":  # the order depends on the chunks' in-edges: needs the plan
        from gnnpipe.data import load_graph
        from gnnpipe.train.run import plan_for

        graph = load_graph(cfg.dataset)
        plan = plan_for(cfg, graph)
        costs = plan.block_counts.sum(1).view(plan.num_ways, plan.chunks_per_way).sum(0)
    print(schedule_tables(cfg, epoch=args.epoch, costs=costs, evaluation=args.eval))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from gnnpipe.config import ConfigError, config_to_yaml, explain, load_config

    if args.explain:
        if args.config or args.overrides:  # nothing a user wrote is silently dropped
            raise ConfigError("--explain lists every key with its default; it takes no --config or overrides")
        print(explain())
    else:
        print(config_to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line and exit code 2, like every other user error (its usage text would
    be several lines); ``--help`` still prints the usage."""

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    import gnnpipe

    parser = _Parser(prog="gnnpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gnnpipe {gnnpipe.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model as the config describes")
    _add_config_args(p)
    p.add_argument("--metrics-out", help="write the run summary JSON here")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="go on in RUN_DIR from its newest complete checkpoint (same config; train.epochs may be larger)",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("partition", help="build (or load) the chunk plan; print its statistics and volumes")
    _add_config_args(p, required=False)
    _add_plan_flags(p)
    p.add_argument("--out", help="also save the plan to this directory")
    p.set_defaults(func=_cmd_partition)

    p = sub.add_parser("profile", help="per-epoch communication volume by strategy: analytic and measured")
    _add_config_args(p, required=False)
    _add_plan_flags(p)
    p.add_argument(
        "--measure",
        type=_count(0),
        default=0,
        metavar="EPOCHS",
        help="also run EPOCHS epochs of each strategy on local gloo workers and count the bytes",
    )
    p.add_argument("--json", help="write the table as JSON here")
    p.add_argument("--nodes", type=_count(1), default=1, help="split the bytes by link for workers on this many nodes")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("plan", help="predict epoch time, memory and bytes of ways x stages x chunks; rank; choose")
    _add_config_args(p)
    p.error = _one_line_error
    p.add_argument("--workers", type=_count(1), required=True, help="how many workers to plan for")
    p.add_argument("--memory", help="memory budget per worker, e.g. 24GB or 16GiB (default: none)")
    p.add_argument("--nodes", type=_count(1), default=1, help="nodes the workers are spread over (default 1)")
    p.add_argument("--link", help="RATE[,LATENCY[,BURST]], e.g. 25GB/s,5us or 200mbit: between nodes with --nodes")
    p.add_argument("--json", help="write every candidate and the chosen one (best) as JSON here")
    p.add_argument("--write", metavar="CONFIG", help="write the chosen config here (runs with ./launch.sh CONFIG)")
    p.add_argument(
        "--project", action="append", default=[], help="also project, e.g. 8xGPU,link=300GB/s,2us,layer_ms=1.5"
    )
    p.add_argument("--recalibrate", action="store_true", help="measure again even if a calibration is cached")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("world-size", help="print ways*stages of a config (used by launch.sh)")
    _add_config_args(p)
    p.add_argument(
        "--max-restarts",
        type=_count(0),
        default=0,
        metavar="N",
        help="also check the config allows N elastic restarts (they need train.checkpoint_every > 0)",
    )
    p.set_defaults(func=_cmd_world_size)

    p = sub.add_parser("schedule", help="print every worker's action table for one epoch: exactly what runs")
    _add_config_args(p)
    p.add_argument("--epoch", type=int, default=0, help="which epoch (the chunk order changes per epoch)")
    p.add_argument("--eval", action="store_true", help="also print the evaluation schedule")
    p.set_defaults(func=_cmd_schedule)

    p = sub.add_parser("config", help="print the resolved config as YAML, or (--explain) every key described")
    _add_config_args(p, required=False)
    p.add_argument("--explain", action="store_true", help="list every key: type, allowed values, default, description")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("info", help="print versions, devices and distributed backends")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; every expected failure ends with one line on stderr and its exit code: 2 for bad
    input (config, data, paths, arguments), 17 for a worker stopped by another's failure, 130 for Ctrl-C, 1
    for an environment error (disk full). A worker of a group exits at once (its process group is gone);
    under launch.sh its line goes to the launcher, which prints the run's root cause once."""
    if "torch" not in sys.modules:  # c10d's C++ warnings about sockets of peers that already exited are noise
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    from gnnpipe.parallel import liveness
    from gnnpipe.train.run import RunFailed, exit_code_of
    from gnnpipe.train.stopping import StopRequested
    from gnnpipe.user_errors import USER_ERRORS

    parser = build_parser()
    if (sys.argv[1:] if argv is None else argv)[:1] == ["plan"]:  # newer commands: argument errors in one line
        parser.error = _one_line_error
    args = parser.parse_args(argv)
    liveness.LINE_PREFIX = f"gnnpipe {args.command}: error: "
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started as a background job (SIGINT inherited as
        signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored): a run must still stop on SIGINT
    try:
        return int(args.func(args) or 0)
    except StopRequested as e:  # SIGINT/SIGTERM with checkpoints on: stopped after a final checkpoint
        if liveness.claim_end("main", e.exit_code):
            liveness.report_end(str(e), e.exit_code, root=True)
            liveness.hard_exit(e.exit_code)
        liveness.await_end(e.exit_code)
    except RunFailed as e:
        liveness.report_end(e.line, e.exit_code, root=e.root)
        liveness.hard_exit(e.exit_code)
    except USER_ERRORS as e:
        code = exit_code_of(e)  # 2; 17 for a transfer or group that failed (a peer's problem, not input)
        liveness.report_end(" ".join(str(e).splitlines()), code, root=True)
        return code
    except KeyboardInterrupt:  # exit now: an interrupt can land anywhere, and teardown must not wait on it
        liveness.report_end("interrupted (SIGINT)", 130, root=True)
        liveness.hard_exit(130)
    except (OSError, MemoryError) as e:  # the machine, not the input and not a bug: no traceback
        liveness.report_end(f"{type(e).__name__}: {e}", 1, root=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
