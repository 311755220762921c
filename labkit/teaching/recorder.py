"""One ordered log of everything a notebook asked its lab, so that replay answers each cell
with what *that* cell got.

Live, every question a :class:`~labkit.teaching.session.Session` puts to the lab (a CLI
command, a rendered file, the registrations, a call, a NAT step, a mark) is an entry
``{"kind", "args", "result"}`` appended in order; with ``LABKIT_RECORD=1`` the log is written
to ``data/recorded/<session>-<track>/session.json`` after each entry.  In replay the same
question gets the answer recorded for the same occurrence: the second ``sip show peers``
of a notebook (after a fix) replays the second answer, not the last one.  Asking a question
more often than it was recorded (a student re-running a cell) replays its last answer.

What the notebook itself says — a student's prediction written down before the cell that shows
the outcome — is *noted* (:meth:`Recorder.note`) in the same order, in both modes, and never
replayed: a check can see that the prediction came before the reveal.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.errors import LabStateError

RECORD_HINT = "re-record it: sudo .venv/bin/python scripts/record_notebooks.py"


def _key(kind: str, args: dict[str, Any]) -> str:
    return kind + json.dumps(args, sort_keys=True)


class Recorder:
    """The log of one session: written live, read in replay."""

    def __init__(self, path: Path, *, replay: bool, write: bool = False, about: dict | None = None):
        self.path = path
        self.replay = replay
        self.write = write and not replay
        self.about = about or {}
        self.entries: list[dict[str, Any]] = []
        self._asked: Counter[str] = Counter()
        self._recorded: dict[str, list[dict[str, Any]]] = {}
        self._recorded_in_order: list[dict[str, Any]] = []
        if replay:
            self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            raise LabStateError(f"No recording {self.path}.",
                                cause="this part was never recorded, or data/ is incomplete",
                                hint=f"run it live (as root), or {RECORD_HINT}")
        try:
            entries = json.loads(self.path.read_text())["entries"]
            for entry in entries:
                if "result" not in entry:
                    raise KeyError("result")
                self._recorded.setdefault(_key(entry["kind"], entry["args"]), []).append(entry)
        except (ValueError, KeyError, TypeError) as exc:
            raise LabStateError(f"The recording {self.path} cannot be read ({type(exc).__name__}: {exc}).",
                                cause="the file was cut short or edited by hand",
                                hint=RECORD_HINT) from None
        self._recorded_in_order = entries

    def replay_all(self) -> None:
        """Take every recorded entry as asked: the session as the notebook's cells left it."""
        self.entries = list(self._recorded_in_order)

    def __call__(self, kind: str, args: dict[str, Any], compute: Callable[[], Any],
                 stored: Callable[[Any], Any] | None = None) -> Any:
        """Live: ``compute()`` and log its (JSON) result; replay: the recorded result.

        ``stored`` turns a live result into what the log keeps (e.g. memory addresses in a
        CLI output shortened, so that recordings do not change for nothing); live callers
        still get the real result.
        """
        key = _key(kind, args)
        occurrence = self._asked[key]
        self._asked[key] += 1
        if self.replay:
            recorded = self._recorded.get(key)
            if not recorded:
                what = f"{kind} {json.dumps(args)}" if args else kind
                raise LabStateError(f"The recording {self.path.parent.name} has no answer to {what}.",
                                    cause="replay can only show what was asked when it was recorded "
                                          "(or the notebook changed since)",
                                    hint=f"run it live to ask the lab, or {RECORD_HINT}")
            entry = recorded[min(occurrence, len(recorded) - 1)]
            self.entries.append(entry)
            return entry["result"]
        result = compute()
        self.entries.append({"kind": kind, "args": args,
                             "result": stored(result) if stored else result})
        if self.write:
            self.save()
        return result

    def note(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Log something the *notebook* says (a student's prediction), in order with what the
        lab was asked, in both modes: it is never answered from a recording.  Returns the entry."""
        entry = {"kind": kind, "args": json.loads(json.dumps(args, default=str)), "result": None}
        self.entries.append(entry)
        if self.write:
            self.save()
        return entry

    def results(self, kind: str) -> list[Any]:
        """The results of every ``kind`` entry of this session so far, in order."""
        return [e["result"] for e in self.entries if e["kind"] == kind]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({**self.about, "entries": self.entries}, indent=1) + "\n")
