"""Discrete-event simulation of one training epoch of every worker (DESIGN §10).

Each worker runs its list of :class:`Task` in order, as the engine runs its action list (DESIGN §5). The
dependencies between workers are the ones the engine has: a receive waits for the matching send (the k-th
receive from a peer takes the k-th message that peer sent to it: transfers between two ranks are FIFO), a
halo exchange posts its sends and waits for one message from every peer, a collective ends for all its
members when the last one has arrived. A stage send is non-blocking but is retired before the next send to
the same peer goes out (at most one in flight per direction, DESIGN §5), and a link carries one message at a
time. Workers that compute at the same moment share the machine: each progresses at
``min(1, capacity / active)`` of its calibrated speed (``capacity``: how many workers the cores run at full
speed at once: ``cores / threads`` on a CPU, infinite when each worker has its own device). With other
runnable processes on the machine (``background``, sampled during calibration), the share is
``min(1, capacity / (active + background))`` over the calibration's ``min(1, capacity / (1 + background))``.
A worker that blocked on communication (its message, or its send's retirement, was not there when it asked)
and is released while the computing workers and the background fill every core runs again ``wake_s`` later:
it waits for a time slice (``plan/sharing.py`` measures it). On several nodes (``Machine.wire``) a message
between ranks of different nodes also crosses the link between the two nodes: one serial resource per
direction of each node pair, shared by every message crossing that way at the same time, a token bucket of
``bandwidth`` with ``burst`` bytes (as tc's tbf shapes a link), then ``latency_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Task", "Machine", "Wire", "WorkerTimes", "SimResult", "simulate", "BREAKDOWN"]

BREAKDOWN = ("compute", "comm", "overhead", "bubble")
_EPS = 1e-12


@dataclass(frozen=True)
class Task:
    """One step of a worker. ``kind``: ``compute`` (``seconds`` of work alone on the machine), ``send``
    (``nbytes[0]`` to ``peers[0]``), ``recv`` (from ``peers[0]``), ``exchange`` (send ``nbytes[i]`` to
    ``peers[i]`` and receive one message from each), ``collective`` (all of ``peers``, this worker included,
    then ``seconds`` more), ``flush`` (until this worker's sends have arrived). ``bubble``: waiting in it
    counts as pipeline fill/drain, not communication. ``overhead``: a compute task that is the CPU work of
    messages (packing, posting, the transport's threads, unpacking): it shares the cores like compute and is
    booked as ``overhead``."""

    kind: str
    seconds: float = 0.0
    peers: tuple[int, ...] = ()
    nbytes: tuple[int, ...] = ()
    bubble: bool = False
    label: str = ""
    overhead: bool = False


@dataclass(frozen=True)
class Wire:
    """The links between nodes: ``node_of[rank]``; each direction of each node pair is a token bucket of
    ``bandwidth`` bytes/s holding up to ``burst`` bytes (full at the start), plus ``latency_s`` per message."""

    node_of: tuple[int, ...]
    latency_s: float
    bandwidth: float
    burst: float = 0.0

    def crosses(self, a: int, b: int) -> bool:
        return self.node_of[a] != self.node_of[b]


@dataclass(frozen=True)
class Machine:
    capacity: float  # workers computing at full speed at once (cores / threads on a CPU; inf with a device each)
    latency_s: float  # per message
    bandwidth: float  # bytes / s per link
    background: float = 0.0  # other runnable processes (in worker units) when the calibration was measured
    wake_s: float = 0.0  # a blocked worker's wait for a core when its message arrives and every core is busy
    exchange_latency_s: float | None = None  # per message of a halo exchange (None: ``latency_s``)
    wire: Wire | None = None  # several nodes: the links between them

    def rate(self, active: int) -> float:
        """Speed of each of ``active`` computing workers relative to the one calibration worker: the cores are
        shared by the active workers and the background, as they were by one worker and the background."""
        if active <= 0 or self.capacity == float("inf"):
            return 1.0
        return min(1.0, self.capacity / (active + self.background)) / min(1.0, self.capacity / (1 + self.background))

    def cores_busy(self, active: int) -> bool:
        """Whether ``active`` computing workers and the background leave no core free."""
        return self.capacity != float("inf") and active + self.background >= self.capacity

    def transfer_s(self, nbytes: int, exchange: bool = False) -> float:
        latency = self.exchange_latency_s if exchange and self.exchange_latency_s is not None else self.latency_s
        return latency + nbytes / self.bandwidth


@dataclass
class WorkerTimes:
    """Seconds of one worker's epoch by what it was doing (``compute`` and ``overhead`` include the slow-down
    from sharing the cores)."""

    end: float = 0.0
    compute: float = 0.0
    comm: float = 0.0
    overhead: float = 0.0
    bubble: float = 0.0


@dataclass
class SimResult:
    workers: list[WorkerTimes]
    messages: list[tuple[int, int, int, str]] = field(default_factory=list)  # (src, dst, bytes, label)

    @property
    def makespan(self) -> float:
        return max(w.end for w in self.workers)


class _Sim:
    def __init__(self, tasks: list[list[Task]], m: Machine):
        self.tasks, self.m = tasks, m
        n = len(tasks)
        self.idx = [0] * n
        self.state = ["ready"] * n  # ready | compute | wait | blocked | done
        self.remaining = [0.0] * n
        self.until = [0.0] * n
        self.started = [0.0] * n
        self.posted = [False] * n
        self.send_end = [0.0] * n  # exchange: when this worker's own sends have arrived
        self.blocked_on_comm = [False] * n  # its current wait is for communication that was not there yet
        self.exchange_blocked = [False] * n  # exchange: a peer's message was missing when it looked
        self.pending: dict[int, list[int]] = {}  # exchange: peers whose message has not been taken yet
        self.now = 0.0
        self.inbox: dict[tuple[int, int], list[float]] = {}  # (src, dst) -> arrival time of each message
        self.taken: dict[tuple[int, int], int] = {}
        self.link_free: dict[tuple[int, int], float] = {}
        self.bucket: dict[tuple[int, int], tuple[float, float]] = {}  # node pair -> (free from, tokens then)
        self.coll_seq: dict[tuple[int, tuple[int, ...]], int] = {}
        self.coll: dict[tuple[tuple[int, ...], int], dict[int, float]] = {}
        self.out = [WorkerTimes() for _ in range(n)]
        self.messages: list[tuple[int, int, int, str]] = []

    def post(self, src: int, dst: int, nbytes: int, t: float, label: str, exchange: bool = False) -> float:
        key = (src, dst)
        t0 = max(t, self.link_free.get(key, 0.0))
        arrival = t0 + self.m.transfer_s(nbytes, exchange)
        wire = self.m.wire
        if wire is not None and wire.crosses(src, dst):  # the nodes' shared link: wait for it, then for tokens
            pair = (wire.node_of[src], wire.node_of[dst])
            free, tokens = self.bucket.get(pair, (0.0, wire.burst))
            start = max(t0, free)
            tokens = min(wire.burst, tokens + (start - free) * wire.bandwidth)
            done = start + max(nbytes - tokens, 0.0) / wire.bandwidth
            self.bucket[pair] = (done, max(tokens - nbytes, 0.0))
            arrival = max(arrival, done + wire.latency_s)
        self.link_free[key] = arrival
        self.inbox.setdefault(key, []).append(arrival)
        self.messages.append((src, dst, nbytes, label))
        return arrival

    def take(self, src: int, dst: int) -> float | None:
        key = (src, dst)
        k = self.taken.get(key, 0)
        box = self.inbox.get(key, [])
        if k >= len(box):
            return None
        self.taken[key] = k + 1
        return box[k]

    def wait(self, i: int, t: float, *, blocked: bool = False, comm: bool = True) -> None:
        """Worker i waits until ``t``; ``blocked``: it already waited for a message that was not there."""
        self.state[i], self.until[i] = "wait", max(t, self.now)
        self.blocked_on_comm[i] = comm and (blocked or t > self.now + _EPS)

    def release(self, i: int) -> None:
        """Worker i's wait is over: it goes on, or first waits ``wake_s`` for a core if it was blocked on
        communication and every core is busy."""
        blocked, self.blocked_on_comm[i] = self.blocked_on_comm[i], False
        if blocked and self.m.wake_s > 0 and self.m.cores_busy(sum(s == "compute" for s in self.state)):
            self.until[i] = self.now + self.m.wake_s
            return
        self.finish(i)

    def start(self, i: int) -> bool:
        """Begin (or retry) worker i's current task; True when its state changed."""
        if self.idx[i] >= len(self.tasks[i]):
            self.state[i] = "done"
            self.out[i].end = self.now
            return True
        t = self.tasks[i][self.idx[i]]
        if not self.posted[i]:
            self.started[i] = self.now
        if t.kind == "compute":
            self.state[i], self.remaining[i] = "compute", t.seconds
            return True
        if t.kind == "send":
            # retire the previous send to this peer first, then post (non-blocking)
            t0 = max(self.now, self.link_free.get((i, t.peers[0]), 0.0))
            self.post(i, t.peers[0], t.nbytes[0], t0, t.label)
            self.wait(i, t0)
            return True
        if t.kind == "flush":  # wait until this worker's sends have arrived (before an epoch-end collective)
            self.wait(i, max([self.now] + [v for (src, _), v in self.link_free.items() if src == i]))
            return True
        if t.kind == "recv":
            arrival = self.take(t.peers[0], i)
            if arrival is None:
                changed, self.state[i], self.posted[i] = self.state[i] != "blocked", "blocked", True
                return changed
            self.wait(i, arrival, blocked=self.posted[i])
            return True
        if t.kind == "exchange":
            if not self.posted[i]:
                self.send_end[i] = max(
                    [self.now]
                    + [self.post(i, p, b, self.now, t.label, True) for p, b in zip(t.peers, t.nbytes, strict=True)]
                )
                self.posted[i], self.state[i] = True, "blocked"
                self.pending[i] = list(t.peers)
                self.exchange_blocked[i] = False
            left = []
            for p in self.pending[i]:
                arrival = self.take(p, i)
                if arrival is None:
                    left.append(p)
                else:
                    self.send_end[i] = max(self.send_end[i], arrival)
            self.pending[i] = left
            if left:
                self.exchange_blocked[i] = True
                return False
            self.wait(i, self.send_end[i], blocked=self.exchange_blocked[i])
            return True
        if t.kind == "collective":
            group = tuple(sorted(t.peers))
            if not self.posted[i]:
                seq = self.coll_seq.get((i, group), 0)
                self.coll_seq[(i, group)] = seq + 1
                self.coll.setdefault((group, seq), {})[i] = self.now
                self.posted[i], self.state[i] = True, "blocked"
                arrived = self.coll[(group, seq)]
                if len(arrived) == len(group):  # measured over all its members as they are: no wake added
                    end = max(arrived.values()) + t.seconds
                    for j in group:
                        self.wait(j, end, comm=False)
                return True
            return False
        raise ValueError(f"unknown task kind {t.kind!r}")

    def finish(self, i: int) -> None:
        t = self.tasks[i][self.idx[i]]
        spent = self.now - self.started[i]
        w = self.out[i]
        if t.kind == "compute" and t.overhead:
            w.overhead += spent
        elif t.kind == "compute":
            w.compute += spent
        elif t.bubble:
            w.bubble += spent
        else:
            w.comm += spent
        self.idx[i] += 1
        self.posted[i] = False
        self.state[i] = "ready"

    def run(self) -> SimResult:
        n = len(self.tasks)
        while True:
            changed = True
            while changed:
                changed = False
                for i in range(n):
                    if self.state[i] in ("ready", "blocked") and self.start(i):
                        changed = True
                    if self.state[i] == "wait" and self.until[i] <= self.now + _EPS:
                        self.release(i)
                        changed = True
            if all(s == "done" for s in self.state):
                return SimResult(self.out, self.messages)
            active = [i for i in range(n) if self.state[i] == "compute"]
            rate = self.m.rate(len(active))
            times = [self.until[i] for i in range(n) if self.state[i] == "wait"]
            times += [self.now + self.remaining[i] / rate for i in active]
            if not times:
                stuck = {i: self.tasks[i][self.idx[i]] for i in range(n) if self.state[i] == "blocked"}
                raise RuntimeError(f"simulated schedule deadlocks: {stuck}")
            t_next = min(times)
            for i in active:
                self.remaining[i] -= (t_next - self.now) * rate
            self.now = t_next
            for i in active:
                if self.remaining[i] <= _EPS * max(1.0, t_next):
                    self.finish(i)


def simulate(tasks: list[list[Task]], machine: Machine) -> SimResult:
    """Run every worker's ``tasks`` from time 0; each worker's times by kind and the messages sent."""
    if not machine.capacity > 0 or not machine.bandwidth > 0 or machine.latency_s < 0:
        raise ValueError(f"machine needs capacity > 0, bandwidth > 0, latency >= 0; got {machine}")
    return _Sim(tasks, machine).run()
