"""How a group of workers ends when something goes wrong: fast, everywhere, and with one line (DESIGN §4).

A worker must never wait ``parallel.timeout_s`` for a peer that is itself gone or waiting. Three mechanisms,
all through the rendezvous store (``parallel/comm.py`` hands it in; nothing here calls a collective):

- **The failure board.** The first worker to fail publishes one line (rank, phase, error) under a store key;
  a counter decides who was first, so every worker reports the same root cause. The others read it, say
  they stopped because of it, and exit :data:`EXIT_PEER` (17).
- **The watchdog** thread beats a heartbeat counter and, every ``interval_s``, reads the board (a peer's
  published failure ends this worker within about a second) and the others' heartbeats (a peer whose
  counter stops for ``dead_after_s`` died or hung: a SIGKILL, a SIGSTOP; a store round that the store's host
  does not answer for as long likewise, so the store rounds run in their own thread). It also takes
  SIGINT/SIGTERM: the main thread may be blocked inside a transfer, so the signal reaches the watchdog through
  a wake-up pipe, and the worker publishes "interrupted by SIGINT" and exits ``128 + signal`` at once -- or,
  while ``on_signal`` is set and takes it (``train/stopping.py``: checkpoints on), stops at the next epoch
  boundary after a final checkpoint. A step that holds the GIL for long marks the heartbeat busy (:meth:`pause`).
- **One end per process** (:func:`claim_end`): the main thread (an exception here) or the watchdog, whichever
  comes first, reports; the other stays quiet. After the main thread has claimed the end, the watchdog
  still exits the process if it is alive :data:`BACKSTOP_S` seconds later (a hung teardown).

Under ``launch.sh`` (``GNNPIPE_STATUS_DIR`` set) a worker writes its line to ``<dir>/rank<k>.a<attempt>``
instead of stderr, and the launcher prints the root cause once, with its exit code (:func:`report_end`).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = [
    "BACKSTOP_S",
    "EXIT_PEER",
    "FailureBoard",
    "Watchdog",
    "await_end",
    "claim_end",
    "hard_exit",
    "report_end",
]

EXIT_PEER = 17  # this worker stopped because another failed, died or hung (not its own error)
BACKSTOP_S = 5.0
STATUS_DIR_ENV = "GNNPIPE_STATUS_DIR"
LINE_PREFIX = "gnnpipe: error: "  # the CLI sets its own: "gnnpipe train: error: "
_N, _LINE, _ACK = "gnnpipe/failed/n", "gnnpipe/failed/line", "gnnpipe/failed/ack"
_JOINED, _LEFT = "gnnpipe/failed/joined", "gnnpipe/failed/left"  # processes that used the board / are done with it

_end_lock = threading.Lock()
_end: dict[str, object] = {}  # who claimed this process's end ("by"), when ("at"), its exit code ("code")


def claim_end(by: str, code: int) -> bool:
    """True for the first caller in this process: it reports and exits; every later caller stays quiet."""
    with _end_lock:
        if _end:
            return False
        _end.update(by=by, at=time.monotonic(), code=code)
        return True


def await_end(code: int) -> None:
    """Another thread claimed this process's end and is reporting it: wait for its exit (bounded)."""
    time.sleep(BACKSTOP_S + 5.0)
    hard_exit(code)


def report_end(line: str, code: int, *, root: bool, rank: int | None = None) -> None:
    """This process's one line (after :data:`LINE_PREFIX`): on stderr, or under launch.sh in
    ``$GNNPIPE_STATUS_DIR/rank<k>.a<attempt>`` (``attempt``: torchrun's restart count) as
    ``<code> <root|peer> <line>`` (the launcher prints the root cause of the last attempt once)."""
    line = LINE_PREFIX + line
    status_dir = os.environ.get(STATUS_DIR_ENV)
    if status_dir:
        rank = rank if rank is not None else int(os.environ.get("RANK", "0"))
        try:
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun's restarts (--max-restarts)
            path = os.path.join(status_dir, f"rank{rank}.a{attempt}")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(f"{code} {'root' if root else 'peer'} {line}\n")
            os.replace(path + ".tmp", path)
            return
        except OSError:
            pass  # the launcher's directory is gone: say it here instead
    print(line, file=sys.stderr, flush=True)


def hard_exit(code: int):
    """Exit now, without interpreter teardown (a process group with pending transfers can block it)."""
    if _board is not None:
        _board.leave()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


class FailureBoard:
    """The first failure of a run, published in the rendezvous store. ``store``: a c10d Store. One per process
    (the watchdog's), shared by the main thread."""

    def __init__(self, store, world: int, *, hosts_store: bool = False):
        self.store, self.world = store, world
        self.hosts_store = hosts_store  # the store lives in this process: leave last
        self.first = False  # this process published the first failure
        self._read = False  # this process has read (and acknowledged) another's
        self._joined = self._left = False

    def _join(self) -> None:
        if not self._joined:
            self._joined = True
            self.store.add(_JOINED, 1)

    def publish(self, line: str, wait_s: float = 5.0) -> str | None:
        """Publish ``line`` if no worker failed before; return None then, else the first worker's line."""
        if self._read or self.first:
            return self.published() if self._read else None
        self._join()
        if self.store.add(_N, 1) == 1:
            self.store.set(_LINE, line)
            self.first = True
            return None
        deadline = time.monotonic() + wait_s  # the first is between its add and its set
        while time.monotonic() < deadline:
            first = self.published()
            if first is not None:
                return first
            time.sleep(0.05)
        return None

    def published(self) -> str | None:
        """Another worker's published failure, if any (does not block); the first read acknowledges it."""
        if self.first or not self.store.check([_LINE]):
            return None
        self._join()
        line = self.store.get(_LINE).decode("utf-8", "replace")
        if not self._read:
            self._read = True
            self.store.add(_ACK, 1)
        return line

    def wait_read(self, timeout_s: float) -> None:
        """Wait until every other worker has read the published line, or ``timeout_s`` (a dead one never
        will): the store may live in this process (rank 0 hosts it without a launcher)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.store.add(_ACK, 0) < self.world - 1:
            time.sleep(0.05)

    def leave(self, timeout_s: float = 3.0) -> None:
        """This process's last store operation before it exits after a failure. The process that hosts the
        store first waits (up to ``timeout_s``) for every process that used the board to leave: its exit ends
        every store call, and a peer cut off mid-call would report a lost store, not the failure."""
        if self._left or not self._joined:
            return
        self._left = True
        try:
            self.store.add(_LEFT, 1)
            deadline = time.monotonic() + timeout_s
            while self.hosts_store and time.monotonic() < deadline:
                if self.store.add(_LEFT, 0) >= self.store.add(_JOINED, 0):
                    break
                time.sleep(0.05)
        except Exception:
            pass


_board: FailureBoard | None = None  # this process's, for hard_exit


class Watchdog(threading.Thread):
    """Heartbeat, the failure board, lost peers and SIGINT/SIGTERM, every ``interval_s`` (see the module doc).

    ``describe(rank)`` names a rank for messages (e.g. ``rank 1 (way 0, stage 1, layers 4-7)``).
    """

    def __init__(
        self,
        store,
        rank: int,
        world: int,
        interval_s: float,
        dead_after_s: float,
        describe: Callable[[int], str] = lambda r: f"rank {r}",
        hosts_store: bool = False,
    ):
        global _board
        super().__init__(daemon=True, name="gnnpipe-watchdog")
        self.store, self.rank, self.world = store, rank, world
        self.interval, self.dead_after = interval_s, dead_after_s
        self.describe = describe
        self.board = _board = FailureBoard(store, world, hosts_store=hosts_store)
        self._stop = threading.Event()
        self._paused = threading.Event()  # a long GIL-holding step: the heartbeat says "busy"
        self.on_signal: Callable[[int], bool] | None = None  # True: the signal is handled (a graceful stop)
        self._wake_r: int | None = None
        self._old_handlers: dict[int, object] = {}

    # ------------------------------------------------------------------ signals (main thread only)
    def take_signals(self) -> None:
        """Route SIGINT/SIGTERM to this thread (a wake-up pipe): the main thread may be blocked in C++."""
        if threading.current_thread() is not threading.main_thread():
            return
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[sig] = signal.signal(sig, lambda s, f: None)  # the watchdog acts
            signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            self._wake_r = r
        except (ValueError, OSError):
            self.release_signals()

    def release_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            signal.set_wakeup_fd(-1)
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)
        except (ValueError, OSError, TypeError):
            pass
        self._old_handlers.clear()

    def _wait(self) -> int | None:
        """Sleep one interval; the first signal that arrived meanwhile, if any."""
        if self._wake_r is None:
            self._stop.wait(self.interval)
            return None
        ready, _, _ = select.select([self._wake_r], [], [], self.interval)
        if not ready:
            return None
        try:
            data = os.read(self._wake_r, 64)
        except OSError:
            return None
        return next((b for b in data if b in (signal.SIGINT, signal.SIGTERM)), None)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Every interval: signals, the backstop, then one store round in its own thread. A store round that
        does not finish within ``dead_after_s`` means the store's host (rank 0, or the launcher) is hung, e.g.
        SIGSTOPped: a store call to it would block this thread for good, so it never runs here."""
        beat, answered = 0, [time.monotonic()]
        last_seen: dict[int, tuple[str, float]] = {}
        pending: threading.Thread | None = None
        while not self._stop.is_set():
            sig = self._wait()
            if self._stop.is_set():
                return
            if sig is not None and not (self.on_signal is not None and self.on_signal(sig)):
                self.interrupted(sig)
            self._backstop()
            if pending is not None and pending.is_alive():
                if time.monotonic() - answered[0] > self.dead_after:
                    why = f"the rendezvous store has not answered for {self.dead_after:.0f}s"
                    self._die(
                        f"{self.describe(self.rank)} stopped: {why}; rank 0 or the launcher died or hung", EXIT_PEER
                    )
                continue
            beat += 1
            pending = threading.Thread(target=self._round, args=(beat, last_seen, answered), daemon=True)
            pending.start()

    def _round(self, beat: int, last_seen: dict[int, tuple[str, float]], answered: list[float]) -> None:
        """Beat, read the failure board and the others' heartbeats (one store round)."""
        try:
            if not self._paused.is_set():
                self.store.set(f"gnnpipe/hb/{self.rank}", str(beat))
            first = self.board.published()
            if first is not None:
                self._die(f"{self.describe(self.rank)} stopped: {first}", EXIT_PEER)
            now = time.monotonic()
            for r in range(self.world):
                if r == self.rank:
                    continue
                v = self.store.get(f"gnnpipe/hb/{r}").decode()
                if v in ("done", "busy"):
                    last_seen.pop(r, None)
                    continue
                if r not in last_seen or last_seen[r][0] != v:
                    last_seen[r] = (v, now)
                elif now - last_seen[r][1] > self.dead_after:
                    why = f"no heartbeat for {self.dead_after:.0f}s (worker died or hung)"
                    self._die(f"{self.describe(self.rank)} stopped: lost {self.describe(r)}: {why}", EXIT_PEER)
            answered[0] = time.monotonic()
        except Exception as e:  # the store itself is gone: its host (rank 0 or the launcher) died
            if self._stop.is_set():
                return
            why = f"lost the rendezvous store ({type(e).__name__}: {str(e)[:200]})"
            why += "; rank 0 or the launcher died or hung"
            self._die(f"{self.describe(self.rank)} stopped: {why}", EXIT_PEER)

    def interrupted(self, sig: int) -> None:
        """End this worker for signal ``sig`` now: publish it (the others stop), report, exit ``128 + sig``."""
        name = signal.Signals(sig).name
        code = 128 + sig
        if not claim_end("watchdog", code):
            return
        line = f"{self.describe(self.rank)} interrupted by {name}"
        try:
            first = self.board.publish(line, wait_s=1.0)
            if first is None:
                self.board.wait_read(1.5 * self.interval + 0.2)
        except Exception:
            first = None
        if first is None:
            report_end(line, code, root=True, rank=self.rank)
        else:
            report_end(f"{self.describe(self.rank)} stopped ({name}): {first}", code, root=False, rank=self.rank)
        hard_exit(code)

    def _die(self, line: str, code: int) -> None:
        if claim_end("watchdog", code):
            report_end(line, code, root=False, rank=self.rank)
            hard_exit(code)

    def _backstop(self) -> None:
        """The main thread claimed this process's end (it is reporting an error); make sure it does end."""
        with _end_lock:
            at, code = _end.get("at"), _end.get("code")
        if at is not None and time.monotonic() - at > BACKSTOP_S:
            hard_exit(int(code))

    def pause(self) -> None:
        self._paused.set()
        self.store.set(f"gnnpipe/hb/{self.rank}", "busy")

    def resume(self) -> None:
        self._paused.clear()

    def finish(self) -> None:
        """A clean end: stop watching, tell the others this worker is done (not dead)."""
        self._stop.set()
        self.release_signals()
        try:
            self.store.set(f"gnnpipe/hb/{self.rank}", "done")
        except Exception:
            pass
