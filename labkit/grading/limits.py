"""What the grader bounds for each notebook it runs, and how a hit is told to the student.

==========  ==================  ===========================================================
limit       default             how
==========  ==================  ===========================================================
time        60 s per cell,      nbclient's per-cell timeout and the grader's own deadline
            600 s per notebook  (``grade(timeout=, total_timeout=)``; not in :class:`Limits`)
memory      2 GiB               ``RLIMIT_AS`` of every process of the notebook (prlimit(1)):
                                an allocation beyond it fails (Python: ``MemoryError``)
processes   64                  ``RLIMIT_NPROC``: processes *and threads* of the notebook's
                                own uid (each notebook run has a uid of its own), see
                                setrlimit(2); a fork beyond it fails with ``EAGAIN``
disk        256 MiB             size of the tmpfs holding the notebook's folder, and of the
                                one on ``/tmp`` (each; RAM-backed, bwrap ``--size``)
output      16 MiB              output the grader receives from one notebook's cells
                                (characters of text: streams, displays, errors); the
                                notebook is stopped beyond it (one zmq message larger than
                                that is refused by the socket itself: ``ZMQ_MAXMSGSIZE``)
==========  ==================  ===========================================================

Address space is not memory used: in the sandbox (one BLAS thread), a kernel that imported
numpy, pandas, matplotlib and the kit and ran tshark maps 0.8 GiB for 0.12 GiB resident.
``RLIMIT_AS`` bounds one process, so a notebook's memory is bounded by processes × memory,
plus its two tmpfs.  A memory cgroup would bound the sum itself (tmpfs pages included), but
this machine mounts cgroup v1 and the kit's targets (Debian 12/13, Ubuntu 22.04+) run
cgroup v2 under systemd, where a cgroup of our own needs systemd's delegation: rlimits work
the same everywhere.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from labkit.errors import GradingError

__all__ = ["KiB", "MiB", "GiB", "Limits", "size", "explain_error", "cell_time_line",
           "notebook_time_line", "output_line"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limits:
    """Resource limits of one notebook run (time limits are ``grade``'s timeouts)."""
    memory_bytes: int = 2 * GiB
    processes: int = 64
    disk_bytes: int = 256 * MiB
    output_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "processes", "disk_bytes", "output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise GradingError(f"the {name.replace('_', ' ')} limit must be a positive "
                                   f"whole number, not {value!r}")


def size(n: int) -> str:
    """``2 GiB``, ``256 MiB``, ``1.5 MiB``, ``512 bytes``."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{n} bytes"


# errno -> what the sandbox refused (the errno is in the text of an OSError: "[Errno 30] …")
_REFUSED = {
    30: "tried to write outside its folder",                  # EROFS
    13: "was refused access to a file or folder",             # EACCES
    1: "tried something the grading sandbox does not allow",  # EPERM
    3: "tried to signal a process outside the notebook",      # ESRCH
    101: "tried to use the network (there is none while grading)",   # ENETUNREACH
    111: "tried to use the network (there is none while grading)",   # ECONNREFUSED
    99: "tried to use the network (there is none while grading)",    # EADDRNOTAVAIL
}
_ERRNO = re.compile(r"^\[Errno (-?\d+)\]")  # how OSError (and subclasses) begin their text


def explain_error(label: str, ename: str, evalue: str, limits: Limits) -> str | None:
    """A feedback line when a cell's error is a limit or the sandbox saying no, else None."""
    match = _ERRNO.match(evalue)
    errno = int(match.group(1)) if match else None
    detail = " ".join(evalue.split())[:160]
    if ename == "MemoryError":
        return f"{label} was stopped: it tried to use more than {size(limits.memory_bytes)} of memory"
    if errno == 11 or "can't start new thread" in evalue:      # EAGAIN from fork/clone
        return (f"{label} was stopped: it tried to run more than {limits.processes} "
                "processes and threads at once")
    if errno == 28:                                               # ENOSPC
        return (f"{label} was stopped: it filled the {size(limits.disk_bytes)} of disk "
                "a notebook gets")
    if ename == "gaierror":
        return f"{label} {_REFUSED[101]}: {detail}"
    if errno in _REFUSED:
        return f"{label} {_REFUSED[errno]}: {detail}"
    return None


def cell_time_line(label: str, seconds: float) -> str:
    return f"{label} was stopped: it ran longer than the {seconds:g} s a cell may take"


def notebook_time_line(label: str, seconds: float, *, before: bool) -> str:
    where = f"the notebook was stopped before {label}" if before else f"{label} was stopped"
    return f"{where}: the notebook ran longer than the {seconds:g} s it may take"


def output_line(label: str, limit: int) -> str:
    return f"{label} was stopped: the notebook's output went over {size(limit)}"
