"""Timeline of an epoch: per-worker spans written as a Chrome / Perfetto trace (``chrome://tracing``).

One process track per worker (rank, with its way and stage in the name) and two threads in it: ``compute``
(per chunk and layer) and ``comm`` (sends, receives and the waits inside them). Times are microseconds
since the tracer was created; all workers on one machine share the clock, so tracks line up.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Tracer", "write_chrome_trace"]

_THREADS = {"compute": 0, "comm": 1}


class Tracer:
    def __init__(self, rank: int, enabled: bool):
        self.rank = rank
        self.enabled = enabled
        self.events: list[dict] = []

    @contextmanager
    def span(self, name: str, track: str, **args):
        if not self.enabled:
            yield
            return
        t0 = time.time()
        try:
            yield
        finally:
            t1 = time.time()
            self.events.append({
                "name": name, "ph": "X", "ts": t0 * 1e6, "dur": (t1 - t0) * 1e6,
                "pid": self.rank, "tid": _THREADS[track], "cat": track, "args": args,
            })  # fmt: skip


def write_chrome_trace(path: str | Path, events_per_rank: list[list[dict]], names: list[str]) -> None:
    """Write every worker's events (rank order) with process/thread names as one trace JSON file."""
    events: list[dict] = []
    t_min = min((e["ts"] for evs in events_per_rank for e in evs), default=0.0)
    for rank, evs in enumerate(events_per_rank):
        events.append({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": names[rank]}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": rank, "args": {"sort_index": rank}})
        for tname, tid in _THREADS.items():
            events.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid, "args": {"name": tname}})
        events += [{**e, "ts": e["ts"] - t_min} for e in evs]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
