"""Peak memory of a run: the CUDA allocator's counters, or the process's peak resident set on the CPU."""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # reported in KiB
    except OSError:
        pass
    return None


def reset_peak_memory(device: torch.device) -> float:
    """Start a peak-memory count; returns the memory in use now (MiB).

    CUDA: the allocator's counters.  CPU (Linux): the peak resident set size
    (VmHWM) is reset to the current one; elsewhere the process's lifetime peak
    is all there is.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _proc_status_mb("VmRSS") or 0.0


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or on the CPU the peak resident set size, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
