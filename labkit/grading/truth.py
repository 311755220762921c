"""Where a check's truth comes from: recordings that the checking code opens itself.

An exercise module declares the sessions its notebook starts (name, lab, captured places,
overrides: what the notebook passes to ``Session.start``)::

    recording("02a-nat-home", "02-forward", lab="home-pbx", capture=("lan", "internet"))

A check reads them through the :class:`Truth` it is given: ``truth.session("02-forward")``
is a :class:`labkit.teaching.Session` opened by *this* code, ``Session.start(name, lab,
mode="replay", track=…, capture=…, overrides=…)`` with every recorded entry taken
(``recorder.replay_all()``: the session as the notebook's cells left it, its marks and
measured conversations included).  Never an object of the student's namespace.

Where the files come from:

* the kit's recordings (``data/recorded``, ``data/captures``) on the grading track: what
  ``labkit grade`` uses, and what ``checks.run`` uses in a notebook in replay mode — the very
  files the student's own replay session shows;
* any folder in the same layout (``recorded/<name>-<track>/session.json``,
  ``captures/<name>-<track>[-<place>].pcap``), ``Truth(…, data=folder)``: e.g. the capture
  files of a submission graded live later, copied out of the student's folder by the grader;
* in a notebook in live mode (outside grading): the capture files and the log of the
  notebook's own live sessions, laid out as such a folder and opened the same way.

Opened sessions are cached (one per source, track and declaration); :data:`LOCK` serialises
what opens and reads them (the grader judges several notebooks in threads).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError

__all__ = ["LOCK", "Recording", "Truth", "TruthUnavailable", "recording", "recordings"]

#: held while a truth is opened or read (pandas tables are built lazily, in place)
LOCK = threading.RLock()


class TruthUnavailable(LabkitError):
    """The checking code cannot open what a check's truth comes from."""


@dataclass(frozen=True)
class Recording:
    """One session a notebook starts, as the checks open it."""
    notebook: str
    name: str
    lab: str = "first-call"
    capture: tuple[str, ...] = ("lan",)
    overrides_json: str = "{}"

    @property
    def overrides(self) -> dict[str, Any]:
        return json.loads(self.overrides_json)


# notebook id -> recording name -> Recording
_RECORDINGS: dict[str, dict[str, Recording]] = {}
# (source, track, Recording) -> opened Session
_OPENED: dict[tuple, Any] = {}


def recording(notebook: str, name: str, lab: str = "first-call", *, capture: tuple[str, ...] = ("lan",),
              overrides: dict | None = None) -> Recording:
    """Declare that *notebook* starts the session *name* (as ``Session.start(name, lab,
    capture=…, overrides=…)``); its checks may then read ``truth.session(name)``."""
    if not all(isinstance(x, str) and x for x in (notebook, name, lab)):
        raise ValueError("recording(notebook, name, lab): non-empty strings")
    capture = tuple(capture)
    if not capture or not all(isinstance(p, str) and p for p in capture):
        raise ValueError(f"recording {name}: capture names at least one place")
    rec = Recording(notebook, name, lab, capture, json.dumps(overrides or {}, sort_keys=True))
    _RECORDINGS.setdefault(notebook, {})[name] = rec
    return rec


def recordings(notebook: str) -> list[Recording]:
    """The sessions *notebook* declares, in declaration order."""
    return list(_RECORDINGS.get(notebook, {}).values())


class Truth:
    """What the checks of one notebook read their truth from (see the module's text).

    *track* is the track the notebook ran on; *student* the student's id (the folder name
    when graded, ``LABKIT_STUDENT`` in a notebook; None: not known), for exercises that give
    each student a lab of their own; *data* a folder in the kit's layout (None: the kit's own
    recordings); *live* recording name → a live ``Session`` of the notebook's kernel whose
    files are opened instead (only ever built by :meth:`local`, outside grading).
    """

    def __init__(self, notebook: str, track: str, *, student: str | None = None, data: Path | None = None,
                 live: Mapping[str, Any] | None = None):
        from labkit import tracks
        self.notebook = notebook
        self.track = tracks.get(track).name
        self.student = student
        self.data = Path(data) if data is not None else None
        self._live = dict(live or {})

    def __repr__(self) -> str:
        where = "the kit's recordings" if self.data is None else str(self.data)
        return f"<Truth {self.notebook} {self.track} from {where}>"

    def declared(self, name: str) -> Recording:
        rec = _RECORDINGS.get(self.notebook, {}).get(name)
        if rec is None:
            known = ", ".join(_RECORDINGS.get(self.notebook, {})) or "none"
            raise TruthUnavailable(f"a bug in the check: session {name!r} is not declared for "
                                   f"{self.notebook} (declared: {known})",
                                   hint=f'recording("{self.notebook}", "{name}", lab=…) in the exercise module')
        return rec

    def session(self, name: str):
        """The session *name* of this notebook, opened by the checking code (cached)."""
        rec = self.declared(name)
        with LOCK:
            live = self._live.get(name)
            if live is not None:
                key = ("live", id(live), len(live.recorder.entries), _capture_stopped(live), self.track, rec)
            else:
                key = (str(self.data), self.track, rec)
            if key not in _OPENED:
                data = self.data if live is None else _lay_out(live, rec)
                _OPENED[key] = _open(rec, live.track if live is not None else self.track, data)
            return _OPENED[key]

    def open_all(self) -> None:
        """Open every declared session now (the grader does, before any notebook runs)."""
        for rec in recordings(self.notebook):
            self.session(rec.name)

    @classmethod
    def local(cls, notebook: str, namespace: Mapping[str, Any]) -> Truth:
        """The truth for ``checks.run`` in a notebook, outside grading: the kit's recordings
        on the track of the notebook's sessions; the notebook's own files for a session it
        runs live.  Only real ``Session`` objects are looked at, and only for their track,
        their capture files and their log."""
        from labkit.teaching.session import Session, default_track
        declared = {r.name for r in recordings(notebook)}
        found: dict[str, Any] = {}
        try:
            values = list(namespace.values())
        except Exception:
            values = []
        for value in values:
            if type(value) is Session and value.name in declared:
                found.setdefault(value.name, value)
        track = next((s.track for s in found.values()), None) or default_track()
        live = {name: s for name, s in found.items() if s.mode == "live"}
        return cls(notebook, track, student=os.environ.get("LABKIT_STUDENT", "").strip() or None, live=live)


def _open(rec: Recording, track: str, data: Path | None):
    from labkit.teaching.session import Session
    kind = Session if data is None else _rooted(data)
    try:
        session = kind.start(rec.name, rec.lab, track=track, mode="replay", capture=rec.capture,
                             overrides=rec.overrides or None)
        session.recorder.replay_all()
    except LabkitError as exc:
        raise TruthUnavailable(f"the recording {rec.name} ({track}) cannot be opened: {exc.message}",
                               cause=exc.cause, hint=exc.hint) from None
    return session


def _rooted(data: Path):
    """``Session`` reading its recording and captures under *data* instead of the kit's data/."""
    from labkit.teaching.session import Session

    class RootedSession(Session):
        @property
        def recorded_dir(self) -> Path:
            return data / "recorded" / f"{self.name}-{self.track}"

        def _recorded_pcap(self, place: str) -> Path:
            suffix = "" if place == self.places[0] else f"-{place}"
            return data / "captures" / f"{self.name}-{self.track}{suffix}.pcap"

    return RootedSession


_LAID_OUT: list[Path] = []


def _capture_stopped(live) -> bool:
    """Whether the live session's captures were already stopped (read once by the notebook)."""
    return bool(getattr(live, "_pcaps", None))


def _lay_out(live, rec: Recording) -> Path:
    """A live session's capture files and log, as a folder in the kit's layout."""
    root = Path(tempfile.mkdtemp(prefix="labkit-truth-"))
    if not _LAID_OUT:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _LAID_OUT])
    _LAID_OUT.append(root)
    recorded = root / "recorded" / f"{rec.name}-{live.track}"
    recorded.mkdir(parents=True)
    (recorded / "session.json").write_text(json.dumps({"entries": live.recorder.entries}, default=str))
    captures = root / "captures"
    captures.mkdir()
    if not _capture_stopped(live):
        # Reading a live capture stops it: a check that reads only the log (a prediction)
        # must not cut short what the notebook's later cells capture.
        return root
    try:
        for index, place in enumerate(rec.capture):
            suffix = "" if index == 0 else f"-{place}"
            stem = f"{rec.name}-{live.track}{suffix}"
            (captures / f"{stem}.pcap").symlink_to(Path(live.pcap_at(place)).resolve())
            try:  # the capture with its TLS keys, when the lab made one
                (captures / f"{stem}-with-keys.pcapng").symlink_to(Path(live.pcap_with_keys(place)).resolve())
            except (LabkitError, AttributeError, OSError):
                pass
    except (LabkitError, AttributeError) as exc:
        raise TruthUnavailable(f"the live session {rec.name} has no capture to read: {exc}") from None
    return root
