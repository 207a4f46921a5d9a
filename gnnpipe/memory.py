"""The project's one way to measure memory: peak and current resident memory of this process, resettable.

On CPU (Linux) the peak is the kernel's high-water mark of the resident set (``VmHWM`` in /proc/self/status),
which ``reset_peak`` lowers to the current resident size (writing ``5`` to /proc/self/clear_refs), so a run can
measure each phase (loading, planning, training) on its own. ``ru_maxrss`` is not used: after fork + exec it
starts at the parent's size. On CUDA the allocator's statistics are used (``max_memory_allocated``, reset with
``reset_peak_memory_stats``). Every benchmark and the run summary go through these functions.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["MemoryProbe", "SavedTensors", "current_bytes", "peak_bytes", "reset_peak", "tensor_bytes", "tune_allocator"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_field(name: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None where /proc is not available."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_bytes(device: torch.device | str = "cpu") -> int:
    """Resident memory now: RSS on CPU, bytes allocated by torch on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    rss = _status_field("VmRSS")
    return rss if rss is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_bytes(device: torch.device | str = "cpu") -> int:
    """Peak resident memory since the process started or since the last :func:`reset_peak`."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    hwm = _status_field("VmHWM")
    if hwm is None:  # not Linux: the process-lifetime peak (cannot be reset)
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return max(hwm, current_bytes(device))


def reset_peak(device: torch.device | str = "cpu") -> bool:
    """Lower the peak to the current resident size; False where the platform cannot (the peak then keeps
    counting from the process start, an over-estimate of later phases)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes of the tensors' elements (views counted at their own size; None counts 0)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass
class MemoryProbe:
    """Phase-by-phase peaks of one process: ``probe.phase("load")`` records the peak since the previous phase
    mark (and the resident size at its end), then resets the peak for the next phase."""

    device: torch.device
    baseline: int = 0

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.baseline = current_bytes(self.device)
        self.phases: dict[str, dict[str, int]] = {}
        reset_peak(self.device)

    def phase(self, name: str) -> dict[str, int]:
        """Close phase ``name``: its peak and end resident size, both as growth over the probe's baseline."""
        rec = {
            "peak_growth": peak_bytes(self.device) - self.baseline,
            "end_growth": current_bytes(self.device) - self.baseline,
        }
        self.phases[name] = rec
        reset_peak(self.device)
        return rec

    def peak_growth(self) -> int:
        """Largest phase peak so far (growth over the baseline)."""
        return max((r["peak_growth"] for r in self.phases.values()), default=0)

    def overall_peak(self) -> int:
        """Peak resident memory since the probe started: the largest closed phase or the open one."""
        return self.baseline + max(self.peak_growth(), peak_bytes(self.device) - self.baseline)

    def report(self) -> dict[str, int]:
        """``baseline_rss`` (resident size when the probe started, after imports) and every closed phase's
        ``peak_growth_<phase>`` and ``end_growth_<phase>``: the run summary's memory section."""
        out = {"baseline_rss": self.baseline}
        for name, rec in self.phases.items():
            out[f"peak_growth_{name}"] = rec["peak_growth"]
            out[f"end_growth_{name}"] = rec["end_growth"]
        return out


class SavedTensors:
    """Bytes autograd saves for backward while active (``with counter:``), one count per storage.

    ``bytes`` is the sum over distinct storages packed by autograd; ``mask_bytes`` the part in bool/uint8
    tensors (dropout masks). Read them at the end of the forward, when everything saved is alive. Storages of
    ``exclude`` (e.g. the input features, held and counted anyway) are not counted.
    """

    def __init__(self, exclude: tuple[torch.Tensor | None, ...] = ()) -> None:
        self.storages: dict[int, tuple[int, bool]] = {}
        self._skip = {t.untyped_storage().data_ptr() for t in exclude if t is not None}
        self._ctx = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in self._skip:
            self.storages[s.data_ptr()] = (s.nbytes(), t.dtype in (torch.bool, torch.uint8))
        return t

    def __enter__(self) -> SavedTensors:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def add(self, *tensors: torch.Tensor | None) -> None:
        """Count tensors kept outside autograd (e.g. a recomputing stage's saved inputs) the same way."""
        for t in tensors:
            if t is not None:
                self._pack(t)

    @property
    def bytes(self) -> int:
        return sum(n for n, _ in self.storages.values())

    @property
    def mask_bytes(self) -> int:
        return sum(n for n, is_mask in self.storages.values() if is_mask)


def tune_allocator(mmap_threshold: int = 1 << 16) -> bool:
    """Serve every allocation of ``mmap_threshold`` bytes or more with its own mapping (glibc ``mallopt``), so
    memory freed between chunks and layers goes back to the system at once. glibc's default raises the
    threshold after the first large free, after which freed activation buffers stay in the heap and the
    resident size only grows. False where not glibc (then nothing changes)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold)))
    except (OSError, AttributeError):
        return False
