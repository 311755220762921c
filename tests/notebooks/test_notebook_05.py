"""Notebook 05 (the SIP trunk to the carrier): stored outputs, replay, live, hygiene, checks.

The conventions of ``test_notebook_03.py``:

* regression: re-executed in **replay** mode (modern track), the notebook reproduces the outputs
  committed with it; regenerate them with
  ``.venv/bin/python scripts/record_notebooks.py 05-trunk --store-replay-outputs``;
* replay on the **legacy** track runs top to bottom and every check passes; so does the
  diagnosis lab of **every** fault, on both tracks;
* **live** (``-m live``, root): real labs on both tracks, every check passes;
* hygiene: short cells, no function definitions, objectives first, clean metadata, small
  outputs, recordings and captures present for every session, no personal data of the report;
* the checks tell right answers from wrong ones, and the student version fails its checks
  without breaking anything else.
"""
from __future__ import annotations

import json
import re

import nbformat
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
    outputs_text,
    path_of,
)

NAME = "05-trunk"
PATH = path_of(NAME)
TIMEOUT = 180


def read():
    return nbtools.read(NAME)


def execute(env: dict[str, str], *, report_checks: bool = False, nb=None):
    return nbtools.execute(NAME, env, report_checks=report_checks, timeout=TIMEOUT, nb=nb)


NOT_RUN = "checked on a live lab"


def failures(nb) -> list[list]:
    """The failed checks of a run, the live probes that replay cannot run left out."""
    return [r for r in check_results(nb) if not r[1] and NOT_RUN not in r[2]]


def sessions(nb) -> list[str]:
    from labkit.teaching.trunk import TRUNK_FAULTS
    source = "\n".join(c.source for c in code_cells(nb))
    names = re.findall(r'Session\.start\(\s*"([^"]+)"', source)
    for base in re.findall(r'Session\.trunk_diagnosis\(\s*"([^"]+)"', source):
        names += [f"{base}-{n}" for n in range(1, len(TRUNK_FAULTS) + 1)]
    return names


def replayed(name, track, overrides):
    from labkit.teaching.session import Session
    session = Session.start(name, "trunk-office", track=track, mode="replay", capture=("internet",),
                            overrides=overrides)
    session.recorder.replay_all()
    return session


def student_ids() -> dict[str, str]:
    from labkit.teaching.trunk import TRUNK_FAULTS, pick_trunk_fault
    found: dict[str, str] = {}
    i = 0
    while len(found) < len(TRUNK_FAULTS):
        found.setdefault(pick_trunk_fault(f"student-{i}")[1], f"student-{i}")
        i += 1
    return found


# -- (1) regression ------------------------------------------------------------------------------
def test_stored_outputs_match_replay(monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, PATH, TIMEOUT)


def test_stored_outputs_show_the_measurements():
    text = outputs_text(read())
    assert "Track: **modern**" in text and "Mode: **replay**" in text
    assert "CNAME" in text and "sbc1.carrier.example" in text and "SIP+D2U" in text
    assert "NXDOMAIN" in text
    assert "No response received from 'sip:sip.carrier.example'" in text
    assert "Unauthorized" in text and "Registered" in text
    assert "Domain not bound" in text and "Wrong login or password" in text and "Wrong domain" in text
    assert "Proxy Authentication Required" in text and "Session Progress" in text
    assert "outbound_proxy = sip:proxy.carrier.example" in text and ";lr" in text
    assert "✗" not in text


# -- (2) replay on the legacy track, and every diagnosis lab -----------------------------------
def test_replay_legacy_runs():
    nb = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": "legacy"}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert 'getaddrinfo("sip.carrier.example"' in text and "to (null) returned -1" in text
    assert "register => 0033199001234@sip.carrier.example:" in text
    assert "pjsip show" not in text
    assert "✗" not in text, "a check cell failed"
    assert failures(nb) == []


@pytest.mark.parametrize("track", TRACKS)
def test_every_diagnosis_lab_replays_and_its_solution_passes(track):
    nb = read()
    cells = code_cells(nb)
    start = next(i for i, c in enumerate(cells) if "Session.trunk_diagnosis(" in c.source)
    part = [cells[0], *cells[start:]]
    for fault, student in student_ids().items():
        small = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.source) for c in part],
                                         metadata=nb.metadata)
        small.cells.append(nbformat.v4.new_code_cell(
            "import json as _json\n"
            "print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in checks.run_all('05-trunk') "
            "if r.id.startswith('diagnose')]))"))
        out = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": track, "LABKIT_STUDENT": student}, nb=small)
        assert errors(out) == [], (fault, errors(out))
        assert failures(out) == [], fault


# -- (3) live, both tracks ---------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.parametrize("track", TRACKS)
def test_live_runs_and_checks_pass(track):
    nb = execute({"LABKIT_MODE": "live", "LABKIT_TRACK": track}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Mode: **live**" in text and f"Track: **{track}**" in text
    assert "✗" not in text, "a check cell failed"
    results = check_results(nb)
    assert len(results) >= 9
    assert [r for r in results if not r[1]] == []


# -- (4) hygiene -----------------------------------------------------------------------------------
def test_cells_short_and_without_functions():
    nbtools.assert_cells_short_and_plain(read())


def test_structure():
    nb = read()
    assert nb.cells[0].cell_type == "markdown" and "**Objectives.**" in nb.cells[0].source
    cells = code_cells(nb)
    first, last = cells[0].source, cells[-1].source
    assert "from labkit.teaching import Session" in first and "from labkit.grading import checks" in first
    assert re.search(r'session = Session\.start\("05-trunk", "trunk-office"', first)
    assert "session.banner()" in first and "session.close()" in last
    source = "\n".join(c.source for c in cells)
    started = re.findall(r"^(\w+) = Session\.(?:start|trunk_diagnosis)\(", source, re.M)
    closed = re.findall(r"^(\w+)\.close\(\)", source, re.M)
    assert sorted(started) == sorted(closed)
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert len(exercises) == 4
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    registered = checks.registered(NAME)
    shown = set(re.findall(r'checks\.run\(\s*"05-trunk",\s*"([^"]+)"', source))
    assert shown == {c.id for c in registered}
    assert any(c.hidden for c in registered) and any(c.probe for c in registered)
    predict = next(i for i, c in enumerate(cells) if "mistakes.predict(" in c.source)
    reveal = next(i for i, c in enumerate(cells) if 'switch("register-to-proxy"' in c.source)
    assert "### BEGIN SOLUTION" in cells[predict].source and predict < reveal
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    before = prose.split("### Exercise 1")[0]
    for code in ("404", "403", "400"):
        assert code not in before, f"{code} is said before it is predicted"
    for term in ("RFC 3263", "RFC 3261 §22", "NAPTR", "SRV", "/etc/hosts", "forbidden_retry_interval",
                 "register_retry_403", ";lr", "early media", "getaddrinfo", "c'est normal"):
        assert term in prose, term


def test_code_is_track_neutral():
    code = "\n".join(c.source for c in code_cells(read()) if "### BEGIN SOLUTION" not in c.source)
    for word in ("sip show", "pjsip show", "chan_sip", "sip.conf"):
        assert word not in code, word


def test_no_personal_data_from_the_report():
    text = PATH.read_text()
    assert nbtools.report_data_in(text) == []
    for forbidden in ("ovh.net",):              # the report's operator and softphone
        assert forbidden not in text, forbidden


def test_execution_counts_and_metadata_clean():
    nbtools.assert_execution_counts_clean(read())


def test_outputs_small():
    nbtools.assert_outputs_small(NAME)


def test_recordings_present():
    found = sessions(read())
    assert len(found) >= 6
    for name in found:
        for track in TRACKS:
            assert (DATA / "recorded" / f"{name}-{track}" / "session.json").is_file(), (name, track)
            capture = DATA / "captures" / f"{name}-{track}.pcap"
            assert capture.exists() and 0 < capture.stat().st_size < MAX_CAPTURE, capture


def test_manifest_lists_the_captures():
    manifest = json.loads((DATA / "manifest.json").read_text())
    files = {c["file"] for c in manifest["captures"]}
    for name in sessions(read()):
        for track in TRACKS:
            assert f"captures/{name}-{track}.pcap" in files, (name, track)


# -- (5) the checks judge answers against the truths they compute ------------------------------
PROBED = {"trunk-registers-and-calls", "diagnose-fixed"}
JUDGED = {"predict-register-to-proxy", "predict-wrong-password", "predict-wrong-domain", "wire-cseq-after-407",
          "wire-early-media", "trunk-letter", "trunk-other-generation", "diagnose-name"}


def _solutions() -> dict[str, str]:
    from tests.unit.test_trunk_text import PJSIP, SIP
    return {"trunk_sip": SIP, "trunk_pjsip": PJSIP}


def _right(track) -> dict:
    from labkit.teaching.trunk import letter_overrides, pick_trunk_fault
    main = replayed("05-trunk", track, letter_overrides())
    invite = main.raw("INVITE", since="call", index=1)
    progress = main.raw(183, since="call")
    return {"predict_proxy": 404, "predict_password": 403, "predict_wrong_domain": 400,
            "cseq_after_407": int(invite.split("CSeq: ")[1].split()[0]),
            "early_media_from": progress.split("c=IN IP4 ")[1].split()[0] + ":"
                                + progress.split("m=audio ")[1].split()[0],
            **_solutions(), "fault": pick_trunk_fault()[1], "fix": "domain: sip.carrier.example"}


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, monkeypatch):
    from labkit.grading import checks
    from labkit.teaching.trunk import TRUNK_FAULTS
    monkeypatch.delenv("LABKIT_STUDENT", raising=False)
    right = _right(track)
    results = checks.evaluate(NAME, right, track=track)
    assert {r.id for r in results} == JUDGED | PROBED
    assert {r.id for r in results if r.not_run} == PROBED
    assert {r.id: r.message for r in results if not r.passed and not r.not_run} == {}
    wrong = {**right, "predict_proxy": 401, "predict_password": 401, "predict_wrong_domain": 407,
             "cseq_after_407": right["cseq_after_407"] - 1,
             "early_media_from": "203.0.113.10:" + right["early_media_from"].split(":")[1],
             "trunk_sip": right["trunk_sip"].replace("@proxy.carrier.example/", "@sip.carrier.example/")
                                            .replace("outboundproxy = proxy.carrier.example\n", ""),
             "trunk_pjsip": right["trunk_pjsip"].replace("sip:sip.carrier.example\n", "sip:proxy.carrier.example\n"),
             "fault": next(f for f in TRUNK_FAULTS if f != right["fault"])}
    failed = {r.id: r.message for r in checks.evaluate(NAME, wrong, track=track) if not r.passed and not r.not_run}
    assert set(failed) == JUDGED, failed
    assert "you predicted 401" in failed["predict-register-to-proxy"]
    missing = checks.evaluate(NAME, {}, track=track)
    assert not any(r.passed for r in missing)


def test_student_version_degrades_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)
