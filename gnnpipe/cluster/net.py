"""The emulated cluster's network: K node namespaces and one switch namespace, shaped links, state file.

Node k is the namespace ``gnp-<name>-n<k>`` with ``lo`` up (its workers talk over it, unshaped, like GPUs in
one box) and one veth ``gnp0`` at ``10.77.0.<k+1>/24``; its peer ``n<k>`` sits in ``gnp-<name>-sw`` on the
bridge ``gnpbr``. Every veth end is created inside its namespace: the host's own interfaces, routes and ``lo``
are never touched, and the addresses route nowhere but between these namespaces. Each link is shaped on
both ends' egress (tbf at the rate; netem delay of half the latency per end where the kernel has netem),
so a byte between two nodes crosses two tbf queues of the same rate and, with netem, sees the latency once.
Names resolve inside the nodes: ``ip netns exec`` reads ``/etc/netns/<ns>/hosts`` (written here) for
``/etc/hosts``, which names every node and gives the machine's hostname node k's own address (reverse
lookups of the node addresses answer at once; torchrun's c10d rendezvous can host its store).
State: ``$GNNPIPE_CLUSTER_STATE`` (default ``/run/gnnpipe-cluster``) ``/<name>.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["PREFIX", "Cluster", "ClusterError", "check_privileges", "down", "down_all", "kill_namespace_pids",
           "load", "namespaces_of", "parse_rate", "parse_time", "format_rate", "up"]  # fmt: skip

PREFIX = "gnp-"
SUBNET = "10.77.0"
NODE_IF = "gnp0"
BRIDGE = "gnpbr"
NETNS_ETC = Path("/etc/netns")  # iproute2's per-namespace /etc overlay
_NAME = re.compile(r"^[a-z0-9]{1,12}$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps)$")
_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s*(us|ms|s)$")


class ClusterError(Exception):
    """A one-line error for the command line (exit 2): bad input, no privileges, a cluster in the way."""


def state_dir() -> Path:
    return Path(os.environ.get("GNNPIPE_CLUSTER_STATE", "/run/gnnpipe-cluster"))


def parse_rate(text: str) -> int:
    """``200mbit``, ``1gbit``, ``50mbit``, ``12.5mbps`` (bytes, as tc reads it) -> bits/s; ``unshaped``/``0`` -> 0."""
    t = text.strip().lower()
    if t in ("unshaped", "0", "none"):
        return 0
    m = _RATE.match(t)
    if not m:
        raise ClusterError(f"--rate {text!r}: expected e.g. 200mbit, 1gbit, 50mbit, 10mbps, or unshaped")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}[m.group(2)]
    bps = float(m.group(1)) * scale * (8 if m.group(3) == "bps" else 1)
    if bps < 8000:
        raise ClusterError(f"--rate {text!r}: below 8kbit (use 'unshaped' for no shaping)")
    return int(bps)


def format_rate(bps: int) -> str:
    if bps == 0:
        return "unshaped"
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale and bps % (scale // 1000 or 1) == 0:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"


def parse_time(text: str) -> float:
    m = _TIME.match(text.strip().lower())
    if not m:
        raise ClusterError(f"--latency {text!r}: expected e.g. 500us, 2ms, 0.1s")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


@dataclass
class Cluster:
    name: str
    nodes: int
    rate_bps: int  # 0: unshaped
    latency_s: float | None = None  # asked for; applied only where latency_emulated
    latency_emulated: bool = False
    burst_bytes: int = 0

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.name}-sw"

    def ns(self, k: int) -> str:
        return f"{PREFIX}{self.name}-n{k}"

    def addr(self, k: int) -> str:
        return f"{SUBNET}.{k + 1}"

    def namespaces(self) -> list[str]:
        return [self.ns(k) for k in range(self.nodes)] + [self.switch]

    def describe(self) -> str:
        lat = (
            ""
            if self.latency_s is None
            else f", latency {self.latency_s * 1e3:g} ms" + ("" if self.latency_emulated else " (not emulated)")
        )
        nodes = ", ".join(f"{self.ns(k)} {self.addr(k)}" for k in range(self.nodes))
        return f"cluster {self.name}: {self.nodes} nodes ({nodes}); inter-node links {format_rate(self.rate_bps)}{lat}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ClusterError(f"'{' '.join(args)}' failed: {' '.join(proc.stderr.split()) or proc.returncode}")
    return proc


def check_privileges() -> None:
    """Root and ``ip``/``tc``, else ClusterError (the caller prints one line and exits 2)."""
    if os.geteuid() != 0:
        raise ClusterError("the emulated cluster needs root (network namespaces, veth, tc); run it as root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise ClusterError(f"the emulated cluster needs '{tool}' (iproute2), which is not on PATH")


def existing_namespaces() -> list[str]:
    proc = _ip("ip", "netns", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def namespaces_of(name: str | None) -> list[str]:
    """Our namespaces that exist: the named cluster's, or (None) every one with our prefix."""
    head = PREFIX if name is None else f"{PREFIX}{name}-"
    return [ns for ns in existing_namespaces() if ns.startswith(head)]


def load(name: str) -> Cluster | None:
    path = state_dir() / f"{name}.json"
    if not path.exists() or not namespaces_of(name):
        return None
    return Cluster(**json.loads(path.read_text()))


def up(name: str, nodes: int, rate_bps: int, latency_s: float | None = None, log=print) -> Cluster:
    """Create the cluster; refuses (ClusterError) when namespaces of that name exist. A partial cluster left
    by a failure while creating it is removed before the error propagates."""
    check_privileges()
    if not _NAME.match(name):
        raise ClusterError(f"--name {name!r}: expected 1-12 lowercase letters or digits")
    if not 1 <= nodes <= 250:
        raise ClusterError(f"--nodes {nodes}: expected 1 to 250")
    there = namespaces_of(name)
    if there:
        raise ClusterError(
            f"cluster {name!r} is up already ({', '.join(there)}); "
            f"take it down first: scripts/cluster.sh down --name {name}"
        )
    c = Cluster(name, nodes, rate_bps, latency_s, burst_bytes=max(rate_bps // 8 // 1000, 32 * 1024))
    try:
        _create(c, log)
        state_dir().mkdir(parents=True, exist_ok=True)
        (state_dir() / f"{name}.json").write_text(json.dumps(asdict(c), indent=2))
    except BaseException:
        down(name)
        raise
    return c


def _create(c: Cluster, log) -> None:
    try:
        _ip("ip", "netns", "add", c.switch)
    except ClusterError as e:
        raise ClusterError(f"network namespaces are refused here: {e}") from None
    _ip("ip", "-n", c.switch, "link", "add", BRIDGE, "type", "bridge")
    _ip("ip", "-n", c.switch, "link", "set", BRIDGE, "up")
    for k in range(c.nodes):
        ns, peer = c.ns(k), f"n{k}"
        _ip("ip", "netns", "add", ns)
        _ip("ip", "-n", ns, "link", "set", "lo", "up")
        _ip("ip", "link", "add", NODE_IF, "netns", ns, "type", "veth", "peer", "name", peer, "netns", c.switch)
        _ip("ip", "-n", c.switch, "link", "set", peer, "master", BRIDGE)
        _ip("ip", "-n", c.switch, "link", "set", peer, "up")
        _ip("ip", "-n", ns, "addr", "add", f"{c.addr(k)}/24", "dev", NODE_IF)
        _ip("ip", "-n", ns, "link", "set", NODE_IF, "up")
        _shape(c, ns, NODE_IF, log)
        _shape(c, c.switch, peer, log)
    for k in range(c.nodes):
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost", "::ffff:127.0.0.1\tlocalhost"]
        for j in range(c.nodes):  # and as IPv4-mapped IPv6: how a dual-stack server (TCPStore) sees its clients
            names = c.ns(j) + (f" {socket.gethostname()}" if j == k else "")
            lines += [f"{c.addr(j)}\t{names}", f"::ffff:{c.addr(j)}\t{names}"]
        (NETNS_ETC / c.ns(k)).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / c.ns(k) / "hosts").write_text("\n".join(lines) + "\n")


def _shape(c: Cluster, ns: str, dev: str, log) -> None:
    parent = ["root"]
    if c.latency_s is not None:
        delay_us = max(int(c.latency_s * 1e6 / 2), 1)  # half on each end: node to node sees the whole latency
        netem = _ip("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "delay",
                    f"{delay_us}us", "limit", "100000", check=False)  # fmt: skip
        if netem.returncode == 0:
            c.latency_emulated, parent = True, ["parent", "1:1"]
        elif not c.latency_emulated and ns == c.ns(0) and dev == NODE_IF:
            log(f"cluster {c.name}: latency is not emulated (kernel without netem: {' '.join(netem.stderr.split())})")
    if c.rate_bps:
        _ip("tc", "-n", ns, "qdisc", "add", "dev", dev, *parent, "handle", "10:", "tbf", "rate",
            f"{c.rate_bps}bit", "burst", str(c.burst_bytes), "latency", "100ms")  # fmt: skip


def kill_namespace_pids(namespaces: list[str], grace_s: float = 3.0) -> list[int]:
    """SIGTERM every process in the namespaces, SIGKILL what is left after ``grace_s``; wait until none is
    left (10 s at most). Returns the pids that were found."""
    found: set[int] = set()

    def alive() -> set[int]:
        pids = set()
        for ns in namespaces:
            out = _ip("ip", "netns", "pids", ns, check=False).stdout
            pids |= {int(p) for p in out.split() if p.isdigit()}
        return pids - {os.getpid()}

    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        pids = alive()
        found |= pids
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = alive()
        if not pids:
            break
    return sorted(found)


def down(name: str | None) -> list[str]:
    """Kill every process in the cluster's namespaces (``None``: every cluster's), delete the namespaces (their
    veths go with them) and the state file(s). Returns the namespaces removed."""
    there = namespaces_of(name)
    kill_namespace_pids(there)
    for ns in there:
        _ip("ip", "netns", "del", ns, check=False)
    head = PREFIX if name is None else f"{PREFIX}{name}-"
    for d in NETNS_ETC.glob(f"{head}*") if NETNS_ETC.is_dir() else []:
        shutil.rmtree(d, ignore_errors=True)
    states = state_dir().glob("*.json") if name is None else [state_dir() / f"{name}.json"]
    for path in states:
        path.unlink(missing_ok=True)
    left = [ns for ns in namespaces_of(name) if ns in there]
    if left:
        raise ClusterError(f"could not delete namespaces {', '.join(left)}")
    return there


def down_all() -> list[str]:
    return down(None)
