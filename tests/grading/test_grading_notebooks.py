"""``labkit grade`` on the kit's own notebooks 00, 01, 02a and 02b, as an instructor uses it:
``labkit release`` writes the student copies, the class hands in, the grader runs every
submission in its sandbox (replay) and the probes of the configure and diagnosis exercises on
fresh live labs.  The instructor's copy (the solutions) earns every point of every check; the
student copy handed in untouched earns none — neither a check that reads the wire, nor a
prediction, nor a probe.

Live (root, lab images): the probes build labs.  The submissions' folder names are the student
ids, so each diagnosis lab is the one its id draws (the solutions read the fault from the wire).
"""
from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest

from labkit.grading import checks
from labkit.grading.grade import grade, release

pytestmark = pytest.mark.live
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["00-orientation", "01-first-call", "02a-nat-home", "02b-nat-vps"]


def test_instructor_copies_get_every_point_and_untouched_student_copies_none(tmp_path):
    source, subs = tmp_path / "source", tmp_path / "submissions"
    source.mkdir()
    for name in NAMES:
        (source / f"{name}.ipynb").write_bytes((NOTEBOOKS / f"{name}.ipynb").read_bytes())
    released = {path.stem: path for path in release(source, tmp_path / "release")}
    assert set(released) == set(NAMES)
    for name in NAMES:
        for student, path in (("instructor", source / f"{name}.ipynb"), ("student", released[name])):
            (subs / student).mkdir(parents=True, exist_ok=True)
            nbformat.write(nbformat.read(str(path), as_version=4), str(subs / student / f"{name}.ipynb"))
    out = tmp_path / "grades" / "grades.csv"
    report = grade(subs, out, source=source, timeout=180, total_timeout=1800, jobs=2)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for name in NAMES:
        registered = {c.id: c.points for c in checks.registered(name)}
        mine = {r["check"]: r for r in rows if r["student"] == "instructor" and r["notebook"] == name}
        assert set(mine) == set(registered), name
        lost = {c: (r["status"], r["message"]) for c, r in mine.items() if float(r["points"]) != registered[c]}
        assert lost == {}, (name, lost)
        theirs = {r["check"]: r for r in rows if r["student"] == "student" and r["notebook"] == name}
        assert set(theirs) == set(registered), name
        earned = {c: r["message"] for c, r in theirs.items() if float(r["points"]) != 0}
        assert earned == {}, (name, earned)
    assert report.total("instructor")[0] == report.total("instructor")[1] > 0
    assert report.total("student")[0] == 0
