"""One ``./launch.sh`` job on every node of an emulated cluster (static rendezvous at node 0's address).

Node k runs ``ip netns exec gnp-<name>-n<k> [taskset -c core] ./launch.sh CONFIG overrides -- --nnodes=K
--node_rank=k --nproc_per_node=W/K --master_addr=<node 0> --master_port=<free port>`` with
``GLOO_SOCKET_IFNAME`` = the node's veth and one ``GNNPIPE_CACHE`` for all nodes, in a process group of its
own. Node 0's output is this process's; the others' goes to log files, printed when a node fails. The exit
code is that of the node that failed first (one only stopped by another's failure, 17, counts last), else 0.
SIGINT/SIGTERM are forwarded to every node; what is still running after the grace period is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gnnpipe.cluster.net import NODE_IF, Cluster, ClusterError

__all__ = ["Job", "world_size"]

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 10.0  # after a signal or a failed node: how long the other nodes get to end on their own
FAILED_NODE_GRACE_S = 30.0


def python() -> str:
    py = os.environ.get("GNNPIPE_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
    return py if os.access(py, os.X_OK) else sys.executable


def world_size(config: str, overrides: list[str]) -> int:
    """ways*stages of the config, by the same command launch.sh uses; a bad config is a ClusterError."""
    proc = subprocess.run([python(), "-m", "gnnpipe", "world-size", "--config", config, *overrides], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise ClusterError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "world-size failed")
    return int(proc.stdout.split()[-1])


def free_port(ns: str) -> int:
    """A TCP port free inside the namespace (asked of the kernel there)."""
    code = "import socket; s=socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"cannot run a process in namespace {ns}: {' '.join(proc.stderr.split())}")
    return int(proc.stdout.strip())


class Job:
    def __init__(self, cluster: Cluster, config: str, args: list[str], *, metrics_out: str | None = None,
                 pin: bool = False, timeout_s: float | None = None) -> None:  # fmt: skip
        self.c, self.config, self.args = cluster, config, args
        self.metrics_out, self.pin, self.timeout_s = metrics_out, pin, timeout_s
        self.procs: list[subprocess.Popen] = []
        self.codes: dict[int, int] = {}  # node -> exit code, in the order the nodes ended
        self.logdir = Path()  # made by start()
        self.signal: int | None = None

    def command(self, k: int, world: int, port: int) -> list[str]:
        c = self.c
        pin = []
        if self.pin:
            cores = sorted(os.sched_getaffinity(0))
            pin = ["taskset", "-c", str(cores[k % len(cores)])]
        metrics = ["--metrics-out", self.metrics_out] if self.metrics_out and k == 0 else []
        torchrun = [f"--nnodes={c.nodes}", f"--node_rank={k}", f"--nproc_per_node={world // c.nodes}",
                    f"--master_addr={c.addr(0)}", f"--master_port={port}"]  # fmt: skip
        return ["ip", "netns", "exec", c.ns(k), *pin, str(ROOT / "launch.sh"), self.config, *self.args, *metrics,
                "--", *torchrun]  # fmt: skip

    def start(self) -> None:
        overrides = [a for a in self.args if "=" in a and not a.startswith("-")]
        world = world_size(self.config, overrides)
        if world % self.c.nodes:
            raise ClusterError(
                f"{self.config}: ways*stages = {world} workers do not split evenly over {self.c.nodes} nodes"
            )
        port = free_port(self.c.ns(0))
        self.logdir = Path(tempfile.mkdtemp(prefix=f"gnnpipe-cluster-{self.c.name}-"))
        cache = os.environ.get("GNNPIPE_CACHE", str(ROOT / ".cache" / "gnnpipe"))
        env = {**os.environ, "GLOO_SOCKET_IFNAME": NODE_IF, "GNNPIPE_CACHE": str(Path(cache).resolve())}
        for k in range(self.c.nodes):
            out = None if k == 0 else open(self.logdir / f"node{k}.log", "w")  # noqa: SIM115
            try:
                self.procs.append(subprocess.Popen(self.command(k, world, port), cwd=ROOT, env=env, stdout=out,
                                                   stderr=None if k == 0 else subprocess.STDOUT,
                                                   start_new_session=True))  # fmt: skip
            finally:
                if out is not None:
                    out.close()

    def on_signal(self, signum, _frame) -> None:
        if self.signal is None:
            self.signal = signum

    def wait(self) -> int:
        """Until every node has ended (forwarding a signal, ending the rest after a failure or the timeout)."""
        t0 = time.monotonic()
        stop_at: float | None = None  # when the nodes still running get SIGKILL
        forwarded = False
        while len(self.codes) < len(self.procs):
            for k, p in enumerate(self.procs):
                if k not in self.codes and p.poll() is not None:
                    self.codes[k] = p.returncode if p.returncode >= 0 else 128 - p.returncode
            now = time.monotonic()
            if self.signal is not None and not forwarded:
                forwarded = True
                self._send(self.signal)
                stop_at = now + STOP_GRACE_S
            elif self.timeout_s is not None and now - t0 > self.timeout_s and not forwarded:
                print(f"cluster.sh: the job ran past --timeout {self.timeout_s:g}s; stopping it", file=sys.stderr)
                forwarded = True
                self.codes.setdefault(-1, 124)
                self._send(signal.SIGTERM)
                stop_at = now + STOP_GRACE_S
            elif stop_at is None and any(v != 0 for v in self.codes.values()):
                stop_at = now + FAILED_NODE_GRACE_S  # the others normally end within seconds (failure board)
            if stop_at is not None and now > stop_at:
                self._send(signal.SIGKILL)
                stop_at = now + 3600
            time.sleep(0.05)
        return self.report()

    def _send(self, sig: int) -> None:
        for k, p in enumerate(self.procs):
            if k not in self.codes:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass

    def report(self) -> int:
        """The job's exit code; a failed node's log (nodes other than 0) is printed."""
        for k, code in self.codes.items():
            if k > 0 and code != 0 and self.signal is None:
                log = (self.logdir / f"node{k}.log").read_text(errors="replace").splitlines()
                print(f"cluster.sh: node {k} ({self.c.ns(k)}) exited with {code}; its output "
                      f"({self.logdir / f'node{k}.log'}, last 40 lines):", file=sys.stderr)  # fmt: skip
                print("\n".join(f"  node{k}| {line}" for line in log[-40:]), file=sys.stderr, flush=True)
        # the root cause: a node whose workers stopped because another node's failed exits 17 (DESIGN §4)
        failed = sorted((code == 17, i) for i, code in enumerate(self.codes.values()) if code != 0)
        failed = [list(self.codes.values())[i] for _, i in failed]
        if self.signal is not None:
            return 128 + self.signal
        if not failed and self.logdir.is_dir():
            for p in self.logdir.iterdir():
                p.unlink()
            self.logdir.rmdir()
        return failed[0] if failed else 0

    def kill_all(self) -> None:
        """SIGKILL whatever of the job's process groups is left (after the grace periods, or on an error)."""
        for p in self.procs:  # the group outlives its leader while a worker in it runs
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
