"""Removing what a lab made, from its record alone; and finding what is left.

After a clean ``down``, an exception, Ctrl-C or ``labkit clean`` after a crash, nothing of
a lab may remain: no process, no namespace, no mount, no ``run/`` directory.  Everything is
found through the lab's record (pids with start times, namespace names, directories) —
never by process name.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil

from labkit.images import images_dir
from labkit.net import netns
from labkit.net.netns import Namespace
from labkit.services.processes import kill_recorded
from labkit.state import LabRecord, lab_dir, namespace_prefix


def clean_record(record: LabRecord) -> list[str]:
    """Remove everything a lab record lists; return what was removed (for messages)."""
    removed = []
    for proc in list(record.processes):
        if kill_recorded(proc):
            removed.append(f"process {proc.pid} ({proc.name})")
    for name in reversed(record.namespaces):
        namespace = Namespace(name)
        if namespace.exists():
            # Anything still in a namespace we made is ours (e.g. a daemon whose record was
            # lost mid-write); the namespace identifies it, not its name.
            for pid in namespace.pids():
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            namespace.delete()
            removed.append(f"namespace {name}")
    for path in record.temp_dirs:
        if Path(path).exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"directory {path}")
    try:
        record.path.unlink()
    except FileNotFoundError:
        pass
    return removed


def leftovers(name: str) -> list[str]:
    """Everything of lab ``name`` that still exists: namespaces, processes, mounts, dirs.

    Empty after a clean ``down`` or ``labkit clean``; tests assert it, notebooks show it.
    """
    found = [f"namespace {n}" for n in netns.existing_namespaces()
             if n.startswith(namespace_prefix(name))]
    record = LabRecord.load(name)
    if record is not None:
        found.append(f"record {record.path}")
        found += [f"process {p.pid} ({p.name})" for p in record.processes if p.process() is not None]
    run = lab_dir(name) / "run"
    if run.exists():
        found.append(f"directory {run}")
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            mount_point = line.split()[4]
            if mount_point.startswith(str(lab_dir(name))) or \
                    mount_point.startswith(f"/run/netns/{namespace_prefix(name)}"):
                found.append(f"mount {mount_point}")
    return found


def unrecorded_leftovers(records: list[LabRecord] | None = None) -> list[str]:
    """Namespaces named like a lab's and processes of lab images that no record explains.

    For reports only (``labkit clean``, the end of a test run): they are found by their
    names and command lines, so nothing is ever killed from here — a person decides.
    ``records`` are the labs known to be running (their namespaces and process trees are
    explained).
    """
    records = records or []
    explained_ns = {n for r in records for n in r.namespaces}
    explained_pids: set[int] = set()
    for record in records:
        for proc_record in record.processes:
            proc = proc_record.process()
            if proc is not None:
                try:
                    explained_pids |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
                except psutil.Error:
                    pass
    stray_ns = [n for n in netns.existing_namespaces() if n.startswith("lk-") and n not in explained_ns]
    found = [f"namespace {n}" for n in stray_ns]
    stray_inodes = set()
    for name in stray_ns:
        try:
            stray_inodes.add(os.stat(netns.NETNS_DIR / name).st_ino)
        except OSError:
            pass
    images = str(images_dir())
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in explained_pids or proc.pid == os.getpid():
            continue
        command = " ".join(proc.info["cmdline"] or [])
        try:
            in_stray_namespace = os.stat(f"/proc/{proc.pid}/ns/net").st_ino in stray_inodes
        except OSError:
            in_stray_namespace = False
        if images in command or "netns exec lk-" in command or in_stray_namespace:
            found.append(f"process {proc.pid} ({command[:120]})")
    return found
