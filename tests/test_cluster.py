"""The emulated cluster (scripts/cluster.sh, gnnpipe/cluster/): namespaces and shaped links, a 2-node job equal
bit for bit to the same job on one node, and nothing left behind after success, failure or SIGINT.

Needs root and network namespaces (skipped, saying which, where either is missing)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = str(ROOT / "scripts" / "cluster.sh")
CFG = ROOT / "experiments" / "configs" / "default.yaml"
SMALL = ["train.epochs=3", "train.eval_every=1", "parallel.chunks=4"]


def _namespaces_refused() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, tc)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (ip, tc)"
    probe = f"gnp-probe{os.getpid()}"
    proc = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None if proc.returncode == 0 else f"ip netns add refused: {proc.stderr.strip()}"


pytestmark = pytest.mark.skipif(bool(_namespaces_refused()), reason=str(_namespaces_refused()))


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "GNNPIPE_PYTHON": sys.executable, "GNNPIPE_CACHE": str(tmp_path / "cache"),
            "GNNPIPE_CLUSTER_STATE": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}  # fmt: skip


def name(tag: str) -> str:
    return f"t{os.getpid() % 100000}{tag}"  # unique per test process: parallel test runs do not collide


def ours(cluster: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"gnp-{cluster}-")]


def cluster(env, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CLUSTER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def nothing_left(tmp_path: Path, cluster_name: str) -> None:
    assert ours(cluster_name) == [], f"namespaces left: {ours(cluster_name)}"
    assert not list(Path("/etc/netns").glob(f"gnp-{cluster_name}-*"))
    left = subprocess.run(["pgrep", "-af", f"log.dir={tmp_path / 'runs'}"], capture_output=True, text=True).stdout
    assert not left, f"processes of the run left: {left}"


@pytest.fixture
def teardown(env):
    names: list[str] = []
    yield names
    for n in names:
        cluster(env, "down", "--name", n)


# ---------------------------------------------------------------------------------------------- the network
def test_up_refuses_a_second_up_and_down_removes_everything(env, teardown):
    n = name("u")
    teardown.append(n)
    p = cluster(env, "up", "--nodes", "3", "--rate", "200mbit", "--name", n)
    assert p.returncode == 0, p.stderr
    assert sorted(ours(n)) == [f"gnp-{n}-n0", f"gnp-{n}-n1", f"gnp-{n}-n2", f"gnp-{n}-sw"]
    for ns, dev in ((f"gnp-{n}-n1", "gnp0"), (f"gnp-{n}-sw", "n1")):  # both ends of a link are shaped
        qdisc = subprocess.run(["tc", "-n", ns, "qdisc", "show", "dev", dev], capture_output=True, text=True).stdout
        assert "tbf" in qdisc and "rate 200Mbit" in qdisc, qdisc
    lo = subprocess.run(["ip", "-n", f"gnp-{n}-n0", "link", "show", "lo"], capture_output=True, text=True).stdout
    assert "UP" in lo
    again = cluster(env, "up", "--nodes", "2", "--rate", "1gbit", "--name", n)
    assert again.returncode == 2 and "is up already" in again.stderr and len(again.stderr.splitlines()) == 1
    state = json.loads(cluster(env, "status", "--name", n).stdout)
    assert state["nodes"] == 3 and state["rate_bps"] == 200_000_000
    assert cluster(env, "down", "--name", n).returncode == 0
    assert ours(n) == [] and not (Path(env["GNNPIPE_CLUSTER_STATE"]) / f"{n}.json").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["up", "--nodes", "2", "--rate", "fast"], "--rate 'fast': expected e.g. 200mbit"),
        (["up", "--nodes", "2", "--rate", "1gbit", "--name", "Bad-Name"], "--name 'Bad-Name'"),
        (["run", "--name", "absent", str(CFG)], "is not up: give --nodes K --rate R"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(env, args, fragment):
    p = cluster(env, *args)
    assert p.returncode == 2 and fragment in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_without_root_one_line_and_exit_2(env):
    cmd = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        CLUSTER,
        "up",
        "--nodes",
        "2",
        "--rate",
        "1gbit",
    ]
    p = subprocess.run(cmd, cwd=ROOT, env={**env, "GNNPIPE_PYTHON": "python3"}, capture_output=True, text=True)
    assert p.returncode == 2 and "needs root" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


SOCKET_PEER = """
import socket, sys, time
mode, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, 5999)); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); got = 0
    while got < n:
        b = c.recv(1 << 20)
        if not b: break
        got += len(b)
    c.sendall(b"k")
else:
    c = socket.create_connection((addr, 5999)); t0 = time.monotonic(); c.sendall(b"x" * n); c.recv(1)
    print(time.monotonic() - t0, flush=True)
"""


def _transfer_s(n: str, size: int) -> float:
    recv = subprocess.Popen(["ip", "netns", "exec", f"gnp-{n}-n1", sys.executable, "-c", SOCKET_PEER, "recv",
                             "10.77.0.2", str(size)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert recv.stdout.readline().strip() == "ready"
        send = subprocess.run(["ip", "netns", "exec", f"gnp-{n}-n0", sys.executable, "-c", SOCKET_PEER, "send",
                               "10.77.0.2", str(size)], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert send.returncode == 0, send.stderr
        return float(send.stdout)
    finally:
        recv.kill()
        recv.wait()


def test_links_are_shaped_at_the_rate_and_unshaped_is_much_faster(env, teardown):
    size, rate = 4_000_000, 50_000_000  # 32 Mbit over a 50 Mbit/s link: at least 0.64 s
    shaped, free = name("s"), name("f")
    teardown += [shaped, free]
    assert cluster(env, "up", "--nodes", "2", "--rate", "50mbit", "--name", shaped).returncode == 0
    assert cluster(env, "up", "--nodes", "2", "--rate", "unshaped", "--name", free).returncode == 0
    t_shaped, t_free = _transfer_s(shaped, size), _transfer_s(free, size)
    floor = (size - 64 * 1024) * 8 / rate  # the token bucket's burst goes through at once, on both ends
    assert t_shaped >= floor, f"{size} B in {t_shaped:.3f}s: faster than 50 Mbit/s"
    assert t_shaped < 3 * size * 8 / rate, f"{t_shaped:.3f}s: far slower than the rate"
    assert t_free < t_shaped / 5, f"unshaped {t_free:.3f}s vs shaped {t_shaped:.3f}s"


# ---------------------------------------------------------------------------------------------- jobs
def _metrics(path: Path) -> dict:
    m = json.loads(path.read_text())
    return {k: m[k] for k in ("losses", "test_acc", "best_val_acc", "best_epoch", "evals", "comm_bytes_per_epoch")}


def test_two_nodes_by_two_workers_equal_one_node_by_four_bitwise(env, tmp_path, teardown):
    n = name("j")
    teardown.append(n)
    job = [str(CFG), *SMALL, "parallel.ways=2", "parallel.stages=2", f"log.dir={tmp_path / 'runs'}"]
    host = subprocess.run(["./launch.sh", *job, "--metrics-out", str(tmp_path / "host.json")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert host.returncode == 0, host.stderr[-3000:]
    t0 = time.monotonic()
    p = cluster(env, "run", "--nodes", "2", "--rate", "1gbit", "--name", n, *job,
                "--metrics-out", str(tmp_path / "cluster.json"))  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.count("Epoch 0000") == 3 and f"cluster {n}: 2 nodes" in p.stderr  # node 0 streams rank 0
    a, b = _metrics(tmp_path / "host.json"), _metrics(tmp_path / "cluster.json")
    assert len(a["losses"]) == 3 and a == b  # floats from JSON: equal means bitwise (repr round-trips)
    print(f"cluster run {time.monotonic() - t0:.1f}s")
    nothing_left(tmp_path, n)


def test_a_failed_job_leaves_nothing_and_keeps_the_root_cause(env, tmp_path):
    n = name("x")
    bad = ["dataset.name=sbm", "dataset.num_nodes=3", "dataset.avg_degree=1", "dataset.num_classes=2"]
    p = cluster(env, "run", "--nodes", "2", "--rate", "1gbit", "--name", n, str(CFG), *SMALL, *bad,
                f"log.dir={tmp_path / 'runs'}")  # fmt: skip
    assert p.returncode == 2, p.stderr[-3000:]
    assert "parallel.chunks = 4 but the graph has 3 vertices" in p.stderr and "Traceback" not in p.stderr
    nothing_left(tmp_path, n)


def test_sigint_mid_epoch_leaves_nothing(env, tmp_path):
    n = name("i")
    out = open(tmp_path / "out.txt", "w")  # noqa: SIM115
    cmd = [CLUSTER, "run", "--nodes", "2", "--rate", "1gbit", "--name", n, str(CFG), "train.epochs=100000",
           "train.eval_every=100000", f"log.dir={tmp_path / 'runs'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "Epoch 00002" not in (tmp_path / "out.txt").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "out.txt").read_text()[-3000:]
        time.sleep(0.05)
    assert ours(n), "the cluster is not up during the run"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (tmp_path / "out.txt").read_text()[-3000:]
    took = time.monotonic() - t0
    nothing_left(tmp_path, n)
    assert took < 15.0, f"cluster.sh took {took:.1f}s to end and clean up after SIGINT"
