"""Native kernels built on first use (gnnpipe/kernels_build.py): where the sources and the cache are, and the
one-line reasons when the build cannot run. Cheap: nothing here compiles."""

from __future__ import annotations

import shutil

import torch

from gnnpipe import kernels_build


def test_sources_are_found_and_the_cache_is_keyed_by_torch_and_their_hash(tmp_path, monkeypatch):
    src = kernels_build.sources()
    assert src is not None and (src / "module.cpp").is_file()
    monkeypatch.setenv("GNNPIPE_KERNEL_CACHE", str(tmp_path / "cache"))
    where = kernels_build.cache_dir(src)
    assert where.parent == tmp_path / "cache" and torch.__version__.replace("+", "_") in where.name
    copy = tmp_path / "csrc"
    shutil.copytree(src, copy)
    assert kernels_build.cache_dir(copy) == where  # the same sources: the same build
    (copy / "spmm.cpp").write_text((copy / "spmm.cpp").read_text() + "\n// changed\n")
    assert kernels_build.cache_dir(copy) != where  # changed sources: a new build, never a stale one


def test_no_compiler_or_build_off_is_one_line_reason(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-gnnpipe")
    mod, why = kernels_build.build_on_first_use()
    assert mod is None and why == "no C++ compiler (no-such-compiler-gnnpipe) to build them on first use"
    monkeypatch.setenv("GNNPIPE_BUILD_EXT", "0")
    mod, why = kernels_build.build_on_first_use()
    assert mod is None and "\n" not in why and "GNNPIPE_BUILD_EXT=0" in why
