"""``data/manifest.json``: what each recorded capture is, how it was made, and its hash.

Both recording scripts (``scripts/record_reference.py``, ``scripts/record_notebooks.py``)
write through here, so every capture in ``data/captures/`` has one entry: scenario, track,
software versions of the images it was recorded with, date, sha256, size, and what it shows.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path

from labkit import images, resources, tracks

DATA = resources.data_dir()
MANIFEST = DATA / "manifest.json"


def entry(capture: Path, *, scenario: str, track: str, lab: str, what: str, **extra) -> dict:
    info = images.image_info(tracks.get(track).image)
    phones = images.image_info(tracks.TOOLS_IMAGE)
    return {
        "file": str(capture.relative_to(DATA)),
        "scenario": scenario, "track": track, "lab": lab, "what_it_shows": what,
        "software": {"asterisk": info.versions.get("asterisk") if info else None,
                     "baresip": phones.versions.get("baresip") if phones else None,
                     "image": f"{track}-{info.key}" if info else None},
        "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sha256": hashlib.sha256(capture.read_bytes()).hexdigest(),
        "bytes": capture.stat().st_size,
        **extra,
    }


def load() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"captures": []}


def update(entries: list[dict]) -> None:
    """Add or replace entries (by file), keep the list sorted, write the manifest."""
    manifest = load()
    files = {e["file"] for e in entries}
    manifest["captures"] = sorted([c for c in manifest["captures"] if c["file"] not in files] + entries,
                                  key=lambda c: c["file"])
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def notebook_sessions(notebook: Path) -> set[str]:
    """The recording names a notebook starts: the first string of each ``Session.<start>("…"``
    call (a diagnosis records ``<name>-<number>``: see :func:`owns`)."""
    source = notebook.read_text()
    return set(re.findall(r'Session\.\w+\(\s*\\?"([\w.-]+)\\?"', source))


def owns(names: set[str], scenario: str) -> bool:
    """Whether a capture's scenario (``<session>[-<number>]``) is one of these sessions."""
    return scenario in names or re.sub(r"-\d+$", "", scenario) in names
