"""Recorded processes: killing exactly what a lab started, and reading a daemon's log.

Nothing is ever killed by name: a :class:`~labkit.state.ProcessRecord` holds a pid *and*
its start time, so a reused pid is never mistaken for ours.
"""
from __future__ import annotations

import signal
from pathlib import Path

import psutil

from labkit.state import ProcessRecord


def log_tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def send_signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


def kill_tree(pid: int) -> None:
    """SIGKILL a recorded process and every descendant (children first found, then killed)."""
    try:
        root = psutil.Process(pid)
        family = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for proc in family:
        send_signal(proc, signal.SIGKILL)
    psutil.wait_procs(family, timeout=3)


def kill_recorded(record: ProcessRecord) -> bool:
    """Kill a recorded process tree if it is still the process we started."""
    proc = record.process()
    if proc is None:
        return False
    kill_tree(proc.pid)
    return True
