"""``scripts/cluster.sh up | run | down`` (``python -m gnnpipe.cluster``): the emulated cluster's command line.

  up   --nodes K --rate R [--latency T] [--name N]       create the namespaces and the shaped links
  run  [--name N] [--nodes K --rate R [--latency T]] [--pin] [--timeout S] [--metrics-out P] CONFIG [overrides]
       ./launch.sh on every node; a cluster that is not up is brought up for the run and taken down after it
  down [--name N] | --all                                kill every process in the namespaces, delete them
  status [--name N]                                      the cluster's state file, if it is up

Errors (bad input, not root, namespaces refused, a cluster in the way): one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict

from gnnpipe.cluster.job import Job
from gnnpipe.cluster.net import ClusterError, check_privileges, down, load, namespaces_of, parse_rate, parse_time, up

DEFAULT_NAME = "default"


def _log(line: str) -> None:
    print(f"cluster.sh: {line}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/cluster.sh", description="An emulated multi-node cluster (DESIGN §4).")
    sub = p.add_subparsers(dest="cmd", required=True)

    def cluster_args(q: argparse.ArgumentParser, required: bool) -> None:
        q.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name, 1-12 of [a-z0-9] (default {DEFAULT_NAME})")
        q.add_argument("--nodes", type=int, required=required, help="number of nodes (network namespaces)")
        q.add_argument("--rate", required=required, help="inter-node link rate each way: 200mbit, 1gbit, unshaped")
        q.add_argument("--latency", help="one-way node-to-node latency, e.g. 1ms (needs netem in the kernel)")

    cluster_args(sub.add_parser("up", help="create the cluster"), True)
    r = sub.add_parser("run", help="run ./launch.sh CONFIG on every node")
    cluster_args(r, False)
    r.add_argument("--pin", action="store_true", help="pin node k's processes to core k mod ncores (taskset)")
    r.add_argument("--timeout", type=float, help="stop the job (exit 124) after this many seconds")
    r.add_argument("--metrics-out", help="the run summary JSON (written by rank 0, on node 0)")
    r.add_argument("config", help="the YAML config, then its overrides section.key=value")
    d = sub.add_parser("down", help="remove the cluster")
    d.add_argument("--name", default=DEFAULT_NAME)
    d.add_argument("--all", action="store_true", help="every namespace with our prefix (gnp-)")
    s = sub.add_parser("status", help="print the cluster's state")
    s.add_argument("--name", default=DEFAULT_NAME)
    return p


def _up(a) -> int:
    latency = None if a.latency is None else parse_time(a.latency)
    c = up(a.name, a.nodes, parse_rate(a.rate), latency, log=_log)
    _log(c.describe())
    return 0


def _down(a) -> int:
    check_privileges()
    gone = down(None if a.all else a.name)
    _log(f"removed {len(gone)} namespaces" + (f": {', '.join(gone)}" if gone else ""))
    return 0


def _status(a) -> int:
    check_privileges()
    c = load(a.name)
    if c is None:
        _log(f"cluster {a.name} is not up")
        return 1
    print(json.dumps(asdict(c), indent=2))
    return 0


def _run(a) -> int:
    check_privileges()
    job, ours, c = None, False, load(a.name)
    if c is None:
        if namespaces_of(a.name):
            raise ClusterError(
                f"namespaces of cluster {a.name!r} exist without its state file; "
                f"remove them: scripts/cluster.sh down --name {a.name}"
            )
        if a.rate is None:
            raise ClusterError(f"cluster {a.name!r} is not up: give --nodes K --rate R to bring it up for this run")
        rate, latency = parse_rate(a.rate), None if a.latency is None else parse_time(a.latency)
    elif a.nodes is not None and a.nodes != c.nodes:
        raise ClusterError(f"cluster {a.name!r} is up with {c.nodes} nodes, not --nodes {a.nodes}")
    job = Job(c, a.config, a.overrides, metrics_out=a.metrics_out, pin=a.pin, timeout_s=a.timeout)  # type: ignore[arg-type]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, job.on_signal)
    try:
        if c is None:
            ours = True
            c = job.c = up(a.name, a.nodes or 2, rate, latency, log=_log)
            _log(c.describe() + " (up for this run)")
        if job.signal is not None:
            return 128 + job.signal
        job.start()
        return job.wait()
    finally:
        job.kill_all()
        if ours:
            down(a.name)


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a, rest = p.parse_known_args(argv)
    bad = [x for x in rest if a.cmd != "run" or x.startswith("-") or "=" not in x]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    a.overrides = rest
    try:
        return {"up": _up, "down": _down, "run": _run, "status": _status}[a.cmd](a)
    except ClusterError as e:
        print(f"cluster.sh: error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
