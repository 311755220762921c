"""A fault per student: which one of an exercise's faults a student's diagnosis lab hides.

A *diagnose* exercise (``../shared/EXERCISES.md``) gives each student a lab with one fault
drawn from a short list, so that a class cannot pass one answer around.  The draw is a hash of
the student's id (``LABKIT_STUDENT``, set by the release or the hub; a fixed default for the
stored outputs) salted with the exercise's topic: the same student gets the same fault in the
notebook, in replay and in the grader, and different exercises draw independently.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

#: The student id used when ``LABKIT_STUDENT`` is not set (and for the stored outputs).
DEFAULT_STUDENT = "student"


def student_id(student: str | None = None) -> str:
    """``student``, else ``LABKIT_STUDENT``, else :data:`DEFAULT_STUDENT`."""
    if student is None:
        student = os.environ.get("LABKIT_STUDENT", "").strip()
    return student or DEFAULT_STUDENT


def pick(topic: str, faults: Sequence[str], student: str | None = None) -> tuple[int, str]:
    """(number from 1, name) of the fault of ``faults`` the student's lab of ``topic`` hides."""
    names = list(faults)
    digest = hashlib.sha256(f"labkit-{topic}-fault:{student_id(student)}".encode()).digest()
    index = int.from_bytes(digest[:8], "big") % len(names)
    return index + 1, names[index]


def ids_drawing_each(pick, faults: Sequence[str]) -> dict[str, str]:
    """A student id that draws each of ``faults`` through ``pick`` (the default student's fault
    first, then ``student-0``, ``student-1`` …): the ids to record every fault's lab with."""
    found = {pick(DEFAULT_STUDENT)[1]: DEFAULT_STUDENT}
    i = 0
    while len(found) < len(faults):
        found.setdefault(pick(f"student-{i}")[1], f"student-{i}")
        i += 1
    return found


def read_fix_lines(text: str, keys: Mapping[str, str], error: type[Exception], example: str) -> dict[str, Any]:
    """The keys of a diagnosis fix written as lab-file lines (YAML ``key: value``), only those of
    ``keys`` (key → where it goes); anything else raises ``error`` with the reason and the keys
    allowed.  ``example`` is a key to show in the messages."""
    from labkit.spec.load import YamlTextError, yaml_text
    if not isinstance(text, str) or not text.strip():
        raise error(f"The fix should be text: lab-file lines such as `{example}: …`, one key a line "
                    f"(keys: {', '.join(keys)}).")
    try:
        value = yaml_text(text)
    except YamlTextError as exc:
        raise error(f"Your fix is not valid YAML: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise error(f"The fix should be lines `key: value` (a YAML mapping), e.g. `{example}: …`; "
                    f"keys: {', '.join(keys)}.")
    unknown = [str(k) for k in value if k not in keys]
    if unknown:
        raise error(f"{', '.join(map(repr, unknown))}: not a key this exercise lets you change; "
                    + "; ".join(f"{k}: {place}" for k, place in keys.items()) + ".")
    return dict(value)
