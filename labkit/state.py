"""Where labs live on disk, and the record of everything a running lab created.

A lab directory (``$LABKIT_HOME/labs/<name>/``, default ``/var/lib/labkit``) holds:

* ``state.json`` – the record: namespaces, processes (pid + start time), temporary dirs.
  Every resource is written here *before* it is created, so that a crash at any moment
  leaves a record that ``labkit clean`` can follow (the containerlab lab directory idea).
* ``config/`` – rendered daemon configurations (kept, shown in notebooks);
* ``logs/``, ``captures/`` – outputs, kept after ``down`` for the student to read;
* ``run/`` – daemon state (databases, sockets, spools); temporary, removed on ``down``.

Only what is recorded is ever removed or killed: never anything found by name.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


def home() -> Path:
    return Path(os.environ.get("LABKIT_HOME", "/var/lib/labkit"))


def labs_root() -> Path:
    return home() / "labs"


def lab_dir(name: str) -> Path:
    return labs_root() / name


@dataclass
class ProcessRecord:
    """A process we started, identified by pid *and* start time (pids get reused)."""

    name: str
    pid: int
    create_time: float
    argv: list[str]

    @classmethod
    def of(cls, name: str, pid: int, argv: list[str]) -> ProcessRecord:
        try:
            created = psutil.Process(pid).create_time()
        except psutil.Error:
            created = 0.0
        return cls(name=name, pid=pid, create_time=created, argv=argv)

    def process(self) -> psutil.Process | None:
        """The live process, or None if it has exited or its pid was reused."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.05:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


@dataclass
class LabRecord:
    """The persisted record of one lab; saved atomically after every change."""

    name: str
    lab_file: str = ""
    track: str = ""
    owner_pid: int = 0
    started_at: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return lab_dir(self.name) / "state.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, name: str) -> LabRecord | None:
        path = lab_dir(name) / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # A torn record (crash while writing is prevented by os.replace, but a full
            # disk is not): keep what can be read so clean still removes the namespaces.
            data = {"name": name, "namespaces": _guess_namespaces(name)}
        procs = [ProcessRecord(**p) for p in data.pop("processes", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(processes=procs, **known)

    # -- recording ------------------------------------------------------------------
    def add_namespace(self, name: str) -> None:
        if name not in self.namespaces:
            self.namespaces.append(name)
            self.save()

    def add_process(self, record: ProcessRecord) -> None:
        self.processes.append(record)
        self.save()

    def forget_process(self, pid: int) -> None:
        self.processes = [p for p in self.processes if p.pid != pid]
        self.save()

    def add_temp_dir(self, path: Path) -> None:
        if str(path) not in self.temp_dirs:
            self.temp_dirs.append(str(path))
            self.save()



def recorded_labs() -> list[LabRecord]:
    root = labs_root()
    if not root.is_dir():
        return []
    records = []
    for state in sorted(root.glob("*/state.json")):
        record = LabRecord.load(state.parent.name)
        if record is not None:
            records.append(record)
    return records


def namespace_prefix(lab: str) -> str:
    return f"lk-{lab}-"


def _guess_namespaces(lab: str) -> list[str]:
    """Namespaces carrying this lab's prefix: only used when its record is unreadable."""
    netns_dir = Path("/run/netns")
    if not netns_dir.is_dir():
        return []
    return sorted(p.name for p in netns_dir.iterdir() if p.name.startswith(namespace_prefix(lab)))
