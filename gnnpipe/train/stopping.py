"""SIGINT/SIGTERM while training with checkpoints on: stop at the next epoch boundary, after a final
checkpoint (DESIGN §4, §9).

Without checkpoints a signal ends a run at once (``parallel/liveness.py``; the CLI's KeyboardInterrupt on one
process). With ``train.checkpoint_every > 0``, inside the epoch loop, a signal is only *recorded*: the
current epoch is finished, then every worker learns at the boundary (one small all-gather per epoch, the
first boundary at which any worker has a signal) that the run stops, they write the checkpoint of that epoch
together and exit ``128 + signal``. So the checkpoint is a complete, consistent one of an epoch boundary and
``--resume`` goes on from the next epoch bit-exactly. A signal that reaches only some workers is enough.

The bound: if the boundary and the checkpoint are not done :data:`GRACE_S` seconds after the signal (a long
epoch, a peer stuck), the current epoch is abandoned and the worker ends as without checkpoints; the newest
periodic checkpoint stays the one to resume from (an unfinished one has no manifest and is never used).
"""

from __future__ import annotations

import signal
import threading
import time

from gnnpipe.parallel import liveness
from gnnpipe.train.executor import Executor

__all__ = ["GRACE_S", "GracefulStop", "StopRequested", "requested"]

GRACE_S = 2.5  # then every process is gone within 5 s of the signal, with or without a final checkpoint


_active: GracefulStop | None = None  # this process's open window, if any


def requested() -> int | None:
    """The signal this process received in the open window, if any: the run stops at the next boundary."""
    return _active.sig if _active is not None else None


class StopRequested(Exception):
    """Every worker stopped at the same epoch boundary because of ``sig``, after its final checkpoint."""

    def __init__(self, sig: int, epoch: int, run_dir: object):
        name = signal.Signals(sig).name
        super().__init__(
            f"interrupted by {name}: stopped after epoch {epoch} with a final checkpoint; go on with --resume {run_dir}"
        )
        self.sig, self.epoch, self.exit_code = sig, epoch, 128 + sig


class GracefulStop:
    """The epoch loop's window for graceful stops: ``with GracefulStop(executor, enabled):`` and, after each
    epoch, ``stop.agreed()``. Outside the window (setup, summary) signals act at once as before."""

    def __init__(self, executor: Executor, enabled: bool):
        self.executor, self.enabled = executor, enabled
        comm = getattr(executor, "comm", None)
        self.watchdog = comm.watchdog if comm is not None else None
        self.sig: int | None = None
        self.at: float | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        global _active
        if not self.enabled:
            return self
        _active = self
        if self.watchdog is not None:  # the watchdog receives the signals of a worker of a group
            self.watchdog.on_signal = self.request
        elif threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, lambda s, f: self.request(s))
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None
        if self.watchdog is not None:
            self.watchdog.on_signal = None
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def request(self, sig: int) -> bool:
        """Record ``sig`` (the first one); start the :data:`GRACE_S` backstop. True: handled."""
        if self.sig is None:
            self.sig, self.at = sig, time.monotonic()
            threading.Thread(target=self._backstop, daemon=True, name="gnnpipe-stop").start()
        return True

    def _backstop(self) -> None:
        time.sleep(GRACE_S)
        sig = int(self.sig)  # type: ignore[arg-type]
        if self.watchdog is not None:
            self.watchdog.on_signal = None
            self.watchdog.interrupted(sig)  # publish, report, exit: the others follow within a heartbeat
        elif liveness.claim_end("stop", 128 + sig):
            liveness.report_end(f"interrupted ({signal.Signals(sig).name})", 128 + sig, root=True)
            liveness.hard_exit(128 + sig)

    def agreed(self) -> int | None:
        """Collective, at an epoch boundary: the signal any worker has received so far, or None."""
        if not self.enabled:
            return None
        return max(self.executor.gather(self.sig or 0)) or None
