"""Which aggregation/dropout kernels run: the C++ extension ``gnnpipe._C`` (csrc/) or pure torch, and why.

``pip install -e .`` compiles csrc/ when torch and a C++ compiler are present (setup.py). An install without
the extension (e.g. ``pip install .`` under build isolation) builds it on first use into a cache keyed by the
torch version and the sources (``kernels_build.py``); where that cannot work (no compiler, no ninja), the
package runs on torch's kernels after a one-line notice. The choice is made once per process:

* ``GNNPIPE_KERNELS=torch``  -- pure torch, even if the extension is built;
* ``GNNPIPE_KERNELS=native`` -- the extension; an error (naming the reason) if it cannot be imported;
* unset or ``auto``          -- the extension when it imports, else torch.

The native kernels cover CPU tensors of float32/float64; other devices and dtypes (CUDA, bfloat16) always take
the torch path, whatever the backend. :func:`use` forces a backend in-process (tests, benchmarks).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

__all__ = [
    "ENV",
    "BACKENDS",
    "Backend",
    "KernelError",
    "backend",
    "extension",
    "native",
    "use",
    "describe",
    "native_ok",
]

ENV = "GNNPIPE_KERNELS"
BACKENDS = ("torch", "native")
_BUILD_STATUS = Path(__file__).resolve().parents[1] / "build" / "gnnpipe_C.status"  # written by setup.py
_NATIVE_DTYPES = (torch.float32, torch.float64)


class KernelError(RuntimeError):
    """The requested kernel backend cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Backend:
    name: str  # "native" | "torch"
    reason: str  # why this one was chosen (one line)
    module: ModuleType | None  # gnnpipe._C when name == "native"


_import_result: tuple[ModuleType | None, str] | None = None
_forced: str | None = None
_resolved: Backend | None = None


def _import_native() -> tuple[ModuleType | None, str]:
    """``(gnnpipe._C, "")`` or ``(None, why it is missing)``; tried once."""
    global _import_result
    if _import_result is None:
        try:
            from gnnpipe import _C  # type: ignore[attr-defined]

            _import_result = (_C, "")
        except ImportError as e:
            from gnnpipe.kernels_build import build_on_first_use

            mod, built_why = build_on_first_use()
            if mod is not None:
                _import_result = (mod, "")
                return _import_result
            why = f"gnnpipe._C not importable ({e}); {built_why}"
            if _BUILD_STATUS.is_file():
                status = _BUILD_STATUS.read_text().strip().splitlines()
                if status and status[0] != "built":
                    why += f"; last build: {status[0]}"
            _import_result = (None, why)
            print(f"gnnpipe: native kernels unavailable, using torch's: {built_why}", file=sys.stderr, flush=True)
    return _import_result


def _resolve(requested: str, origin: str) -> Backend:
    """The backend for ``requested`` (``auto`` | ``torch`` | ``native``); ``origin`` says who asked."""
    if requested not in ("auto", *BACKENDS):
        raise KernelError(f"{origin}: {requested!r} is not a kernel backend; allowed: auto, {', '.join(BACKENDS)}")
    if requested == "torch":
        return Backend("torch", f"forced by {origin}", None)
    mod, why = _import_native()
    if mod is None:
        if requested == "native":
            raise KernelError(f"{origin} asks for the native kernels but {why}")
        return Backend("torch", why, None)
    how = "built extension found" if mod.__name__ == "gnnpipe._C" else "built on first use"
    return Backend("native", f"forced by {origin}" if requested == "native" else how, mod)


def backend() -> Backend:
    """The backend of this process (resolved on first use from :data:`ENV`; see :func:`use`)."""
    global _resolved
    if _resolved is None:
        if _forced is not None:
            _resolved = _resolve(_forced, "kernels.use()")
        else:
            value = os.environ.get(ENV, "").strip().lower() or "auto"
            _resolved = _resolve(value, f"{ENV}={value}")
    return _resolved


@contextmanager
def use(name: str) -> Iterator[Backend]:
    """Run a block with backend ``name`` (``torch`` | ``native`` | ``auto``), then restore the previous one."""
    global _forced, _resolved
    saved = (_forced, _resolved)
    _forced, _resolved = name, None
    try:
        yield backend()
    finally:
        _forced, _resolved = saved


def extension() -> ModuleType | None:
    """``gnnpipe._C`` if it imports, whatever backend is selected."""
    return _import_native()[0]


def native() -> ModuleType | None:
    """``gnnpipe._C`` if the native backend is selected, else None."""
    return backend().module


def native_ok(t: torch.Tensor) -> ModuleType | None:
    """``gnnpipe._C`` if the native backend is selected and covers ``t`` (CPU, float32/float64), else None."""
    mod = backend().module
    if mod is not None and t.device.type == "cpu" and t.dtype in _NATIVE_DTYPES:
        return mod
    return None


def describe() -> str:
    """One line for ``gnnpipe info``: the backend, what it runs on, and why it was chosen."""
    try:
        b = backend()
    except KernelError as e:
        return f"kernels: error: {e}"
    if b.name == "native":
        omp = "OpenMP" if b.module.has_openmp() else "no OpenMP"
        return f"kernels: native (gnnpipe._C, {b.module.isa()}, {omp}, {torch.get_num_threads()} threads): {b.reason}"
    return f"kernels: torch: {b.reason}"
