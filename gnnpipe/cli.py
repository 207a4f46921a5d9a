"""Command line: ``gnnpipe train | partition | info`` (also ``python -m gnnpipe``).

The only module that parses argv. User errors (bad config, bad data) print one clear line and exit 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import platform
import sys

__all__ = ["main"]


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, help="experiment YAML file")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. model.layers=32 train.lr=1e-3")


def _cmd_train(args: argparse.Namespace) -> int:
    from gnnpipe.config import load_config
    from gnnpipe.train.run import run_training

    cfg = load_config(args.config, args.overrides)
    run_training(cfg, metrics_out=args.metrics_out)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy
    import torch
    import torch.distributed as dist

    import gnnpipe

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
    return 0


def _cmd_world_size(args: argparse.Namespace) -> int:
    from gnnpipe.config import load_config

    print(load_config(args.config, args.overrides).parallel.world_size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnnpipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model as the config describes")
    _add_config_args(p)
    p.add_argument("--metrics-out", help="write the run summary JSON here")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("world-size", help="print ways*stages of a config (used by launch.sh)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_world_size)

    p = sub.add_parser("info", help="print versions, devices and distributed backends")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gnnpipe.user_errors import USER_ERRORS

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"gnnpipe {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
