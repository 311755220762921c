"""CPU time of a daemon and its children, for the benchmarks (psutil, from /proc)."""
from __future__ import annotations

import psutil


def cpu_seconds(process: psutil.Process | None) -> float:
    """User + system CPU seconds of ``process`` and its children (0 for those already gone)."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)] if process else []:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total
