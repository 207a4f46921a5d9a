"""The one memory measurement: resettable peaks, phase probes, bytes saved for backward."""

from __future__ import annotations

import torch

from gnnpipe.memory import MemoryProbe, SavedTensors, current_bytes, peak_bytes, reset_peak, tensor_bytes


def test_reset_peak_forgets_an_earlier_allocation():
    x = torch.ones(40_000_000)  # 160 MB, touched
    del x
    before = peak_bytes()
    assert reset_peak()
    assert peak_bytes() < before - 100e6
    assert peak_bytes() >= current_bytes() - 4096


def test_probe_measures_each_phase_on_its_own():
    probe = MemoryProbe("cpu")
    x = torch.ones(25_000_000)  # 100 MB, freed before the phase ends
    del x
    big = probe.phase("big")
    small = probe.phase("small")
    assert big["peak_growth"] > 90e6
    assert small["peak_growth"] < big["peak_growth"] - 80e6
    assert probe.peak_growth() == big["peak_growth"]


def test_saved_tensors_counts_each_storage_once_and_masks_apart():
    w = torch.randn(1000, 100, requires_grad=True)
    keep = torch.rand(1000, 100) > 0.5
    with SavedTensors() as saved:
        y = torch.relu(w * keep)  # mul saves keep (bool); relu saves its output
        z = (y * 2).sum()
    assert saved.mask_bytes == tensor_bytes(keep)
    assert saved.bytes == tensor_bytes(keep) + tensor_bytes(y)
    z.backward()
