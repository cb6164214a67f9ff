"""Peak memory of one job, measured honestly or not at all."""

from __future__ import annotations

from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak_rss() -> bool:
    """Linux resets the process's peak RSS (VmHWM) when 5 is written to clear_refs."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Context manager: ``peak_mb`` is CUDA's max allocated, or the process's peak RSS on the CPU.

    ``peak_mb`` stays ``None`` where the peak cannot be reset to the job's start (not Linux).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self._measurable = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._measurable = True
        else:
            self._measurable = _reset_peak_rss()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._measurable:
            return
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mb = _peak_rss_mb()
