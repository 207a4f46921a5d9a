"""Install GNNPipe; build the optional C++ kernels (``gnnpipe._C``, csrc/) when torch and a compiler are present.

The extension is optional: when torch cannot be imported at build time (pip's build isolation; bootstrap.sh
passes ``--no-build-isolation``), or compiling fails, the package installs without it and runs on the
pure-torch kernels. The reason is written to ``build/gnnpipe_C.status`` for ``gnnpipe info``.
Set ``GNNPIPE_BUILD_EXT=0`` to skip the build.

Either way the C++ sources travel inside the package (``gnnpipe/_csrc/``, copied by ``build_py``), so an
install without the extension builds it on first use (``gnnpipe/kernels_build.py``).
"""

import os
import traceback
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
STATUS = ROOT / "build" / "gnnpipe_C.status"


def _reqs(name: str) -> list[str]:
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _status(text: str) -> None:
    try:
        STATUS.parent.mkdir(exist_ok=True)
        STATUS.write_text(text.rstrip() + "\n")
    except OSError:
        pass


def _extension():
    """``(ext_modules, cmdclass)`` for the C++ kernels, or empty ones (with the reason recorded)."""
    if os.environ.get("GNNPIPE_BUILD_EXT", "1") == "0":
        _status("not built: GNNPIPE_BUILD_EXT=0")
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except Exception as e:  # noqa: BLE001 - any failure means: install without the extension
        _status(f"not built: torch not importable at build time ({type(e).__name__}: {e})")
        return [], {}

    class OptionalBuildExtension(BuildExtension):
        """Compile failures leave the package installable (pure-torch kernels) instead of failing the install."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as e:  # noqa: BLE001
                msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                _status(f"not built: compiling csrc/ failed ({type(e).__name__}: {msg})")
                print("[gnnpipe] WARNING: building the C++ kernels failed; using the pure-torch kernels")
                traceback.print_exc()
                self.extensions = []  # nothing to copy in place or to put in the wheel
                return
            _status("built")

    ext = CppExtension(
        "gnnpipe._C",
        ["csrc/module.cpp", "csrc/spmm.cpp", "csrc/dropout.cpp"],
        extra_compile_args=["-O3", "-fopenmp", "-DNDEBUG"],
        extra_link_args=["-fopenmp"],
        depends=["csrc/kernels.h", "csrc/spmm_kernel.inc"],
    )
    return [ext], {"build_ext": OptionalBuildExtension}  # ninja (parallel compiles) when installed


class BuildPyWithSources(build_py):
    """Copy csrc/ into the built package as gnnpipe/_csrc/ (what kernels_build.py compiles on first use)."""

    def run(self):
        super().run()
        dst = Path(self.build_lib) / "gnnpipe" / "_csrc"
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted((ROOT / "csrc").iterdir()):
            if f.suffix in (".cpp", ".h", ".inc"):
                self.copy_file(str(f), str(dst / f.name))


ext_modules, cmdclass = _extension()
cmdclass = {**cmdclass, "build_py": BuildPyWithSources}

setup(
    name="gnnpipe",
    version="0.1.0",
    description="Pipelined model parallelism for full-graph training of deep GNNs (GNNPipe)",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gnnpipe", "gnnpipe.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # torch is a requirement but never pinned here: a machine with a CUDA torch keeps it (bootstrap.sh installs
    # the pinned CPU wheel only when torch is missing).
    install_requires=["torch>=2.2"] + _reqs("requirements.txt"),
    extras_require={"test": _reqs("requirements-test.txt"), "mpi": ["mpi4py>=3.1"]},
    entry_points={"console_scripts": ["gnnpipe=gnnpipe.cli:main"]},
)
