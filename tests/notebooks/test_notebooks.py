"""The student notebooks: stored outputs, replay on both tracks, live on both tracks, hygiene.

* regression: each notebook re-executed in **replay** mode (modern track) must reproduce the
  outputs committed with it (pytest-notebook; images and volatile strings ignored).
  Regenerate them with ``.venv/bin/python scripts/record_notebooks.py --store-replay-outputs``.
* replay on the **legacy** track runs top to bottom, its check cells pass.
* **live** (``-m live``, root): each notebook drives real labs on both tracks; no error, every
  check — hidden ones included — passes with the solutions that the source notebooks contain.
* hygiene: short cells, no function definitions, objectives first, clean metadata, small outputs,
  recordings present for every session of every notebook on both tracks.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from . import nbtools
from .nbtools import (
    DATA,
    MAX_CAPTURE,
    MAX_CELL_OUTPUT,
    MAX_NOTEBOOK,
    TRACKS,
    assert_metadata_clean,
    assert_student_version_degrades_gracefully,
    check_results,
    code_cells,
    errors,
    execute,
    notebook_id,
    outputs_text,
    path_of,
    read,
)

NAMES = ["00-orientation", "01-first-call"]


def session_names(nb) -> list[str]:
    """Every recording a notebook's sessions read: a diagnosis has one per fault (every
    student's lab replays)."""
    from labkit.teaching.first_call import CALL_FAULTS
    from labkit.teaching.orientation import REGISTRATION_FAULTS
    source = "\n".join(c.source for c in code_cells(nb))
    names = re.findall(r'Session\.(?:start|with_carol)\(\s*"([^"]+)"', source)
    for diagnosis in re.findall(r'Session\.call_diagnosis\(\s*"([^"]+)"', source):
        names += [f"{diagnosis}-{n}" for n in range(1, len(CALL_FAULTS) + 1)]
    for diagnosis in re.findall(r'Session\.registration_diagnosis\(\s*"([^"]+)"', source):
        names += [f"{diagnosis}-{n}" for n in range(1, len(REGISTRATION_FAULTS) + 1)]
    return names


# -- (1) regression: stored outputs == a fresh replay run (modern track) -----------------------
@pytest.mark.parametrize("name", NAMES)
def test_stored_outputs_match_replay(name, monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, path_of(name), 120)


# -- (2) replay on the legacy track ------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_replay_legacy_runs(name):
    nb = execute(name, {"LABKIT_MODE": "replay", "LABKIT_TRACK": "legacy"}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "✗" not in text, "a check cell failed"
    assert "PJSIP" not in "\n".join(line for line in text.splitlines() if "Dial(" in line)
    if name == "00-orientation":
        assert "chan_sip.so" in text and "Asterisk 16." in text
    else:
        assert "Dial(SIP/${EXTEN},20)" in text
    # The configure exercises' probes need a live lab: in replay they say so and count nothing.
    failed = [r for r in check_results(nb) if not r[1] and "checked on a live lab" not in r[2]]
    assert failed == []


# -- (3) live, both tracks ---------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("name", NAMES)
def test_live_runs_and_checks_pass(name, track):
    nb = execute(name, {"LABKIT_MODE": "live", "LABKIT_TRACK": track}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Mode: **live**" in text and f"Track: **{track}**" in text
    assert "✗" not in text, "a check cell failed"
    results = check_results(nb)
    assert results, "no checks registered"
    assert [r for r in results if not r[1]] == []


# -- (4) hygiene -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_execution_counts_in_order(name):
    nbtools.assert_execution_counts_clean(read(name))


@pytest.mark.parametrize("name", NAMES)
def test_outputs_small(name):
    nbtools.assert_outputs_small(name)


@pytest.mark.parametrize("name", NAMES)
def test_cells_short_and_without_functions(name):
    nbtools.assert_cells_short_and_plain(read(name))


@pytest.mark.parametrize("name", NAMES)
def test_structure(name):
    nb = read(name)
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert nb.cells[0].cell_type == "markdown" and "Objectives" in markdown[0].source
    cells = code_cells(nb)
    first, last = cells[0].source, cells[-1].source
    assert "from labkit.teaching import Session" in first and "from labkit.grading import checks" in first
    assert f'session = Session.start("{name}")' in first and "session.banner()" in first
    assert "session.close()" in last
    # every exercise: nbgrader solution markers + metadata; every check has a check cell
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert exercises, "no exercise"
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    ids = {c.id for c in checks.registered(notebook_id(nb))}
    shown = set(re.findall(r'checks\.run\(\s*"[^"]+",\s*"([^"]+)"', "\n".join(c.source for c in cells)))
    assert shown == ids
    assert any(c.hidden for c in checks.registered(notebook_id(nb))), "no hidden check"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_clean(name):
    assert_metadata_clean(read(name))


@pytest.mark.parametrize("name", NAMES)
def test_recordings_present(name):
    for session in session_names(read(name)):
        for track in TRACKS:
            assert (DATA / "recorded" / f"{session}-{track}").is_dir(), (session, track)
            capture = DATA / "captures" / f"{session}-{track}.pcap"
            assert capture.exists() and 0 < capture.stat().st_size < MAX_CAPTURE, capture


# -- (5) the student version: solutions removed, the notebook still goes to the end -----------


@pytest.mark.parametrize("name", NAMES)
def test_student_version_fails_checks_gracefully(name, tmp_path):
    assert_student_version_degrades_gracefully(name)


# -- no personal data of the report anywhere in the tree ---------------------------------------
def test_the_report_detector_finds_each_form(monkeypatch):
    # Fictional stand-ins, digested like the report's own values: an address, a number in any
    # prefix form, a user name in any case.
    fakes = {"203.0.113.99", "199001111", "mallory"}
    monkeypatch.setattr(nbtools, "REPORT_DIGESTS", frozenset(nbtools._digest(f) for f in fakes))
    text = "host 203.0.113.99, line 0033199001111 (+33 199001111), user Mallory@sip.example"
    assert nbtools.report_data_in(text) == sorted(fakes)
    assert nbtools.report_data_in("203.0.113.990 1990011 mallor") == []


def test_no_personal_data_of_the_report_in_the_tree():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=nbtools.ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    found = {}
    for name in filter(None, files):
        path = nbtools.ROOT / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:          # captures, audio, images
            continue
        if hits := nbtools.report_data_in(text):
            found[name] = hits
    assert found == {}
