"""Build the native kernels on first use, for installs that came without them (DESIGN §8).

``pip install .`` under pip's build isolation (or any install where torch was not importable at build time)
ships the package without ``gnnpipe._C``. The first process that wants the kernels then compiles the C++
sources (``csrc/`` beside the package in a checkout, ``gnnpipe/_csrc/`` in an installed copy) with
``torch.utils.cpp_extension.load`` into a cache directory keyed by the torch version and a hash of the sources:
``$GNNPIPE_KERNEL_CACHE`` or ``~/.cache/gnnpipe/kernels/<torch>-<hash>/``. A file lock serialises the build, so
workers that start at once build it once and the others load the result. ``GNNPIPE_BUILD_EXT=0`` turns the
build off. Every failure (no compiler, no ninja, a compile error) is one line, and the caller falls back to
torch's kernels.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["build_on_first_use", "cache_dir", "sources"]

SOURCES = ("module.cpp", "spmm.cpp", "dropout.cpp")
DEPENDS = ("kernels.h", "spmm_kernel.inc")


def sources() -> Path | None:
    """The folder holding the C++ sources: the installed copy, else the checkout's ``csrc/``."""
    here = Path(__file__).resolve().parent
    for d in (here / "_csrc", here.parent / "csrc"):
        if all((d / f).is_file() for f in SOURCES + DEPENDS):
            return d
    return None


def cache_dir(src: Path) -> Path:
    """Where the build for this torch and these sources lives."""
    h = hashlib.sha256()
    for f in SOURCES + DEPENDS:
        h.update(f.encode() + b"\0" + (src / f).read_bytes())
    root = os.environ.get("GNNPIPE_KERNEL_CACHE") or Path.home() / ".cache" / "gnnpipe" / "kernels"
    tag = f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}-{h.hexdigest()[:12]}"
    return Path(root) / tag.replace("+", "_")


def build_on_first_use() -> tuple[ModuleType | None, str]:
    """``(module, "")`` after loading (and if need be building) the kernels, or ``(None, one-line reason)``."""
    if os.environ.get("GNNPIPE_BUILD_EXT", "1") == "0":
        return None, "no build on first use (GNNPIPE_BUILD_EXT=0)"
    src = sources()
    if src is None:
        return None, "no C++ sources to build on first use (neither gnnpipe/_csrc nor csrc/)"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return None, f"no C++ compiler ({cxx}) to build them on first use"
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        return None, "ninja not found to build them on first use (pip install ninja)"
    where = cache_dir(src)
    try:
        where.mkdir(parents=True, exist_ok=True)
        with open(where / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then load what it built
            fresh = not any(where.glob("*.so"))
            if fresh:
                print(f"gnnpipe: building the native kernels once, into {where}", file=sys.stderr, flush=True)
            mod = cpp_extension.load(
                name="gnnpipe_C",
                sources=[str(src / f) for f in SOURCES],
                extra_cflags=["-O3", "-fopenmp", "-DNDEBUG"],
                extra_ldflags=["-fopenmp"],
                build_directory=str(where),
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - any failure: torch's kernels, with the reason
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        return None, f"building them on first use failed ({type(e).__name__}: {msg[:200]})"
    return mod, ""
