"""Notebook 06 (routing calls and caller ID): stored outputs, replay, live, hygiene, checks.

The conventions of ``test_notebook_05.py``:

* regression: re-executed in **replay** mode (modern track), the notebook reproduces the outputs
  committed with it; regenerate them with
  ``.venv/bin/python scripts/record_notebooks.py 06-dialplan-callerid --store-replay-outputs``;
* replay on the **legacy** track runs top to bottom and every check that replay can judge passes;
* **live** (``-m live``, root): real labs on both tracks, every check passes (the probes included);
* hygiene: short cells, no function definitions, objectives first, clean metadata, small
  outputs, recordings and captures present for every session, no personal data of the report;
* the checks tell right answers from wrong ones, the dialplan text is refused where it runs
  more than routing, and the student version fails its checks without breaking anything else.
"""
from __future__ import annotations

import json
import re

import pytest

from labkit import tracks

from . import nbtools
from .nbtools import (
    DATA,
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

NAME = "06-dialplan-callerid"
PATH = path_of(NAME)
TIMEOUT = 200
NOT_RUN = "checked on a live lab"
SESSIONS = {"06-routing": ("internet", "office"), "06-mine": ("internet",)}


def read():
    return nbtools.read(NAME)


def execute(env: dict[str, str], *, report_checks: bool = False, nb=None):
    return nbtools.execute(NAME, env, report_checks=report_checks, timeout=TIMEOUT, nb=nb)


def failures(nb) -> list[list]:
    return [r for r in check_results(nb) if not r[1] and NOT_RUN not in r[2]]


# -- (1) regression ------------------------------------------------------------------------------
def test_stored_outputs_match_replay(monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, PATH, TIMEOUT)


def test_stored_outputs_show_the_measurements():
    text = outputs_text(read())
    assert "Track: **modern**" in text and "Mode: **replay**" in text
    assert "_0[1-7]XXXXXXXX" in text and "NoOp(route national)" in text
    assert "484 Address Incomplete" in text and "404 Not Found" in text
    assert "0033199001235" in text and "0199001235" in text          # the alias's DID, and as Carol sees it
    assert "anonymous" in text and "Caller ID not allowed" in text
    assert "DID none, the s fallback" in text
    assert "✗" not in text


# -- (2) replay on the legacy track --------------------------------------------------------------
def test_replay_legacy_runs():
    nb = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": tracks.LEGACY.name}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "Dial(SIP/330,20,tr)" in text and "PJSIP/" not in text
    assert "✗" not in text, "a check cell failed"
    assert failures(nb) == []


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
    assert len(results) == len(JUDGED | PROBED)
    assert [r for r in results if not r[1]] == []


# -- (4) hygiene -----------------------------------------------------------------------------------
def test_cells_short_and_without_functions():
    nbtools.assert_cells_short_and_plain(read())


def test_structure():
    nb = read()
    assert nb.cells[0].cell_type == "markdown" and "**Objectives.**" in nb.cells[0].source
    cells = code_cells(nb)
    first = cells[0].source
    assert "from labkit.teaching import Session" in first and "from labkit.grading import checks" in first
    assert re.search(r'session = Session\.start\("06-routing", "dialplan-office"', first)
    source = "\n".join(c.source for c in cells)
    started = re.findall(r"^(\w+) = Session\.start\(", source, re.M)
    closed = re.findall(r"^(\w+)\.close\(\)", source, re.M)
    assert sorted(started) == sorted(closed) == ["mine", "session"]
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert len(exercises) == 4
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    registered = checks.registered(NAME)
    shown = set(re.findall(r'checks\.run\(\s*"06-dialplan-callerid",\s*"([^"]+)"', source))
    assert shown == {c.id for c in registered}
    assert sum(1 for c in registered if c.probe) == 3
    predict = next(i for i, c in enumerate(cells) if "session.predict(" in c.source)
    reveal = next(i for i, c in enumerate(cells) if "session.match_table(numbers)" in c.source)
    assert "### BEGIN SOLUTION" in cells[predict].source and predict < reveal
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    before = prose.split("### Exercise 1")[0] + prose.split("### Exercise 1")[1].split("**What to look at.**")[0]
    for code in ("484", "404", "Address Incomplete"):
        assert code not in before, f"{code} is said before it is predicted"
    assert "Caller ID not allowed" not in prose.split("### Exercise 4")[1].split("checks.run")[0]
    for term in ("sortant-ovh", "ovh-sip", "RFC 3325", "RFC 3323", "Remote-Party-ID", "Privacy: id",
                 "trust_id_outbound", "allow_overlap", "§21.4.22", "`t`", "`r`", "`s`", "contact_user",
                 "`!`", "`N`", "`Z`", "one X short"):
        assert term in prose, term


def test_code_is_track_neutral():
    code = "\n".join(c.source for c in code_cells(read()) if "### BEGIN SOLUTION" not in c.source)
    for word in ("SIP/", "sip show", "pjsip show", "chan_sip", "sip.conf"):
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


def test_recordings_present_and_listed():
    manifest = json.loads((DATA / "manifest.json").read_text())
    files = {c["file"] for c in manifest["captures"]}
    for name, places in SESSIONS.items():
        for track in TRACKS:
            assert (DATA / "recorded" / f"{name}-{track}" / "session.json").is_file(), (name, track)
            for i, place in enumerate(places):
                file = f"captures/{name}-{track}{'' if i == 0 else '-' + place}.pcap"
                assert (DATA / file).is_file() and 0 < (DATA / file).stat().st_size < nbtools.MAX_CAPTURE, file
                assert file in files, file


# -- (5) the checks judge answers against the truths they compute ------------------------------
PROBED = {"outgoing-routes", "incoming-routes", "alias-presented"}
JUDGED = {"predict-winners", "predict-refusals", "contexts-valid", "refused-call"}


def _contexts(tech: str) -> str:
    return f"""
[outgoing]
exten => 330,1,Dial({tech}/330,20,tr)
same => n,Hangup()
exten => 520,1,Dial({tech}/520,20,tr)
exten => _0[1-7]XXXXXXXX,1,Goto(trunk-out,${{EXTEN}},1)
exten => _09XXXXXXXX,1,Goto(trunk-out,${{EXTEN}},1)
exten => 112,1,Goto(trunk-out,${{EXTEN}},1)
[incoming]
exten => 0033199001234,1,Dial({tech}/520,20,tr)
exten => 0199001234,1,Goto(0033199001234,1)
exten => 0033199001235,1,Dial({tech}/330,20,tr)
exten => 0199001235,1,Goto(0033199001235,1)
exten => s,1,Dial({tech}/330&{tech}/520,20)
"""


def _right(track) -> dict:
    tech = tracks.get(track).channel_tech
    # What the notebook's solution reads with session.raw(…, since="refused"), as the tests of
    # the stored outputs show it (the replayed session's capture reads stop at each cell's time).
    return {"predict_winners": "520 _0[1-7]XXXXXXXX _09XXXXXXXX none none _3651. none",
            "predict_nine_digits": 484, "predict_112": "404 Not Found",
            "my_contexts": _contexts(tech), "alias_dialplan": "[trunk-out]\nexten => _X.,1,Dial(x)\n",
            "refused_reason": "Caller ID not allowed", "refused_number": "0033353010001"}


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track):
    from labkit.grading import checks
    right = _right(track)
    results = checks.evaluate(NAME, right, track=track)
    assert {r.id for r in results} == JUDGED | PROBED
    assert {r.id for r in results if r.not_run} == PROBED
    assert {r.id: r.message for r in results if not r.passed and not r.not_run} == {}
    wrong = {**right, "predict_winners": "520 _0[1-7]XXXXXXXX _09XXXXXXXX none _0[1-7]XXXXXXXX _3651. none",
             "predict_nine_digits": 404, "predict_112": 484,
             "my_contexts": re.sub(r"Dial\((PJSIP|SIP)/", "Dial(IAX2/", right["my_contexts"]),
             "refused_reason": "Forbidden", "refused_number": "0033199001234"}
    failed = {r.id: r.message for r in checks.evaluate(NAME, wrong, track=track) if not r.passed and not r.not_run}
    assert set(failed) == JUDGED, failed
    assert "wrong for 063998000" in failed["predict-winners"]
    missing = checks.evaluate(NAME, {}, track=track)
    assert not any(r.passed for r in missing)


@pytest.mark.parametrize("text, why", [
    ("[outgoing]\nexten => _X.,1,System(touch /tmp/x)\n", "not an application"),
    ("[outgoing]\nexten => _X.,1,NoOp(${SHELL(id)})\n", "only ${EXTEN}"),
    ("[outgoing]\nexten => _X.,1,Set(GLOBAL(x)=1)\n", "only Set(CALLERID"),
    ("[outgoing]\nexten => _X.,1,Dial(PJSIP/330,20,U(sub))\n", "no function calls"),
    ("#include /etc/passwd\n[outgoing]\nexten => 1,1,NoOp()\n", "only [context]"),
    ("[default]\nexten => 1,1,NoOp()\n", "not a context of this exercise"),
    ("[outgoing]\nexten => 1,1,Dial(SIP/330)\n", "this track dials PJSIP"),
])
def test_dialplan_text_is_data(text, why):
    from labkit.teaching.dialplan import DialplanTextError, dialplan_contexts
    with pytest.raises(DialplanTextError, match=re.escape(why)):
        dialplan_contexts(text, tech="PJSIP")


def test_the_lab_model_refuses_a_did_the_account_does_not_own():
    from labkit.grading.exercises.nb06 import contexts_problems
    text = _contexts("PJSIP").replace("0033199001235,1,Dial", "0033199009999,1,Dial")
    _, problems = contexts_problems(text, "PJSIP")
    assert problems and "0033199009999" in " ".join(problems)


def test_student_version_degrades_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)
