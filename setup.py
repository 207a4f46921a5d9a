from pathlib import Path

from setuptools import find_packages, setup


def _reqs(name: str) -> list[str]:
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


setup(
    name="gnnpipe",
    version="0.1.0",
    description="Pipelined model parallelism for full-graph training of deep GNNs (GNNPipe)",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gnnpipe", "gnnpipe.*"]),
    # torch is a requirement but never pinned here: a machine with a CUDA torch keeps it (bootstrap.sh installs
    # the pinned CPU wheel only when torch is missing).
    install_requires=["torch>=2.2"] + _reqs("requirements.txt"),
    extras_require={"test": _reqs("requirements-test.txt"), "mpi": ["mpi4py>=3.1"]},
    entry_points={"console_scripts": ["gnnpipe=gnnpipe.cli:main"]},
)
