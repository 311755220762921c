"""Notebook 07 (hardening: a public PBX attacked, then defended): stored outputs, replay, live,
hygiene, checks.

The conventions of ``test_notebook_06.py``:

* regression: re-executed in **replay** mode (modern track), the notebook reproduces the outputs
  committed with it; regenerate them with
  ``.venv/bin/python scripts/record_notebooks.py 07-hardening --store-replay-outputs``;
* replay on the **legacy** track runs top to bottom and every check that replay can judge passes;
* **live** (``-m live``, root): real labs on both tracks, every check passes (the probes included);
* hygiene: short cells, no function definitions, objectives first, clean metadata, small
  outputs, recordings and captures present for every session, no personal data of the report;
* the checks tell right answers from wrong ones, the firewall and jail texts are data, and the
  student version fails its checks without breaking anything else.
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

NAME = "07-hardening"
PATH = path_of(NAME)
TIMEOUT = 200
NOT_RUN = "checked on a live lab"
SESSIONS = {"07-attack": ("internet",), "07-crack": ("internet",), "07-ban": ("internet",),
            "07-chain": ("carrier", "lan", "internet")}
PROBED = {"firewall-blocks", "jail-bans"}
JUDGED = {"scan-answer", "predict-enumeration", "crack-registers", "firewall-valid", "jail-valid", "audit-fixed",
          "predict-exposure"}


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
    assert "Asterisk PBX (labkit modern)" in text and "friendly-scanner" in text
    assert "svwar gives up" in text
    assert "12345678" in text                                   # the dictionary password, found
    assert "203.0.113.66" in text                               # banned
    assert "everything else" in text and "sip.weak-secret" in text
    assert "✗" not in text


# -- (2) replay on the legacy track --------------------------------------------------------------
def test_replay_legacy_runs():
    nb = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": tracks.LEGACY.name}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "Asterisk PBX (labkit legacy)" in text
    assert "reqauth" in text                                    # svwar listed the extensions
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
    assert re.search(r'session = Session\.start\("07-attack", "exposed-pbx"', first)
    source = "\n".join(c.source for c in cells)
    started = re.findall(r"^(\w+) = Session\.start(?:_variant)?\(", source, re.M)
    closed = re.findall(r"^(\w+)\.close\(\)", source, re.M)
    assert sorted(started) == sorted(closed) == ["ban", "chain", "crack", "session"]
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert len(exercises) == 7
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    registered = checks.registered(NAME)
    shown = set(re.findall(r'checks\.run\(\s*"07-hardening",\s*"([^"]+)"', source))
    assert shown == {c.id for c in registered} == JUDGED | PROBED
    assert {c.id for c in registered if c.probe} == PROBED
    predict = next(i for i, c in enumerate(cells) if "session.predict(" in c.source)
    reveal = next(i for i, c in enumerate(cells) if 'label="svwar-leaky"' in c.source)
    assert "### BEGIN SOLUTION" in cells[predict].source and predict < reveal
    predict = next(i for i, c in enumerate(cells) if "chain.predict(" in c.source)
    reveal = next(i for i, c in enumerate(cells) if "chain.call_number(" in c.source)
    shown = next(i for i, c in enumerate(cells) if "chain.exposure(" in c.source)
    assert "### BEGIN SOLUTION" in cells[predict].source and predict < reveal < shown
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    before = prose.split("**What to look at.**\n\n* **chan_sip**")[0]
    for code in ("404", "403", "Not found", "Not Found"):
        assert code not in before, f"{code} is said before it is predicted"
    for term in ("fail2ban + firewall SIP", "alwaysauthreject", "friendly-scanner", "maxretry", "findtime",
                 "bantime", "policy: drop", "labkit audit", "tlscipher=ALL", "sip.conf.sample", "toll fraud",
                 "RFC 3398 §8.2.6.1"):
        assert term in prose, term


def test_code_is_track_neutral():
    code = "\n".join(c.source for c in code_cells(read()) if "### BEGIN SOLUTION" not in c.source)
    for word in ("SIP/", "sip show", "pjsip show", "chan_sip", "legacy", "modern"):
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
    for name in SESSIONS:
        for track in TRACKS:
            assert (DATA / "recorded" / f"{name}-{track}" / "session.json").is_file(), (name, track)
            file = f"captures/{name}-{track}.pcap"
            assert (DATA / file).is_file() and 0 < (DATA / file).stat().st_size < nbtools.MAX_CAPTURE, file
            assert file in files, file


# -- (5) the checks judge answers against the truths they compute ------------------------------
FIREWALL = """
allow:
  - {proto: udp, ports: "5060", source: alice}
  - {proto: udp, ports: "5060", source: bob}
  - {proto: udp, ports: "10000-20000"}
"""
REPORT_SIP_CONF = nbtools.ROOT / "configs" / "audit" / "report-weak" / "sip.conf"
JAIL = "[asterisk]\nenabled = true\nmaxretry = 3\nfindtime = 600\nbantime = 3600\n"


def _fixed_sip_conf() -> str:
    text = REPORT_SIP_CONF.read_text()
    text = text.replace("tlscipher=ALL", "tlscipher=ECDHE+AESGCM:ECDHE+CHACHA20")
    text = re.sub(r"tlsclientmethod=tlsv1[^\n]*\n", "", text)
    for secret in ("Wq3-tK9vLp2xZr7b", "Hn5-yB8cRm1sJd4f", "Pz6-gT2wQk9vNe3a", "Lc7-xF4hVu8mYs2r"):
        text = text.replace("secret=test", f"secret={secret}", 1)
    return text


def _right(track) -> dict:
    from labkit.grading.exercises import nb07
    from labkit.grading.truth import Truth
    truth = Truth(NAME, track)
    return {"scan_answer": nb07.scan_answer(truth.session(nb07.MAIN)),
            "predict_unknown": nb07.enumeration_answer(truth.session(nb07.MAIN)),
            "crack_registers": nb07.crack_registers(truth.session(nb07.CRACK)),
            "my_firewall": FIREWALL, "my_jail": JAIL, "fixed_sip_conf": _fixed_sip_conf(),
            "predict_readable": nb07.readable_by_segment(truth.session(nb07.CHAIN))}


def test_the_truths_differ_per_track_as_the_lesson_says():
    from labkit.grading.exercises import nb07
    from labkit.grading.truth import Truth
    legacy, modern = Truth(NAME, "legacy"), Truth(NAME, "modern")
    assert nb07.enumeration_answer(legacy.session(nb07.MAIN)) == 404    # the leak
    assert nb07.enumeration_answer(modern.session(nb07.MAIN)) == 401    # PJSIP: challenged like any user
    assert nb07.scan_answer(legacy.session(nb07.MAIN)) == 404
    assert nb07.scan_answer(modern.session(nb07.MAIN)) == 401
    for truth in (legacy, modern):   # measured from the captures: the trunk crosses the Internet in clear
        assert nb07.readable_by_segment(truth.session(nb07.CHAIN)) == {
            "lan": [], "internet": ["sip", "media"], "carrier": ["sip", "media"]}


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track):
    from labkit.grading import checks
    right = _right(track)
    results = checks.evaluate(NAME, right, track=track)
    assert {r.id for r in results} == JUDGED | PROBED
    assert {r.id for r in results if r.not_run} <= PROBED
    assert {r.id: r.message for r in results if not r.passed and not r.not_run} == {}
    wrong = {**right, "scan_answer": 200, "predict_unknown": 403,
             "crack_registers": right["crack_registers"] + 1,
             "my_firewall": "allow:\n  - {proto: udp, ports: '5060; flush ruleset'}\n",
             "my_jail": "[asterisk]\nenabled = true\naction = iptables-allports\n",
             "fixed_sip_conf": REPORT_SIP_CONF.read_text(),
             # the usual belief: "TLS + SRTP" protects the Internet; the trunk crosses it in clear
             "predict_readable": {"lan": [], "internet": [], "carrier": ["sip", "media"]}}
    failed = {r.id: r.message for r in checks.evaluate(NAME, wrong, track=track) if not r.passed and not r.not_run}
    assert set(failed) == JUDGED, failed
    assert "sip.weak-secret" in failed["audit-fixed"]
    # The probes' texts are validated as data before any lab: the right ones pass, the wrong refused.
    from labkit.errors import LabkitError
    from labkit.grading import probes
    for id, variable, why in (("firewall-blocks", "my_firewall", "ports"),
                              ("jail-bans", "my_jail", "not an option of this exercise")):
        probe = checks.find(NAME, id).probe
        assert probes.validate(probe, right[variable], track)
        with pytest.raises(LabkitError, match=re.escape(why)):
            probes.validate(probe, wrong[variable], track)
    missing = checks.evaluate(NAME, {}, track=track)
    assert not any(r.passed for r in missing)


@pytest.mark.parametrize("text, why", [
    ("allow: [{proto: udp, ports: '5060', source: alice}]\nchain: input\n", "not a key of firewall"),
    ("allow: [{proto: udp, ports: '5060', source: 'alice; drop'}]\n", "source"),
    ("allow: [{proto: icmp, ports: '1'}]\n", "proto"),
    ("allow: [{proto: udp, ports: '5060', comment: 'x\"; flush ruleset'}]\n", "comment"),
    ("!!python/object/apply:os.system ['id']\n", "not valid YAML"),
])
def test_firewall_text_is_data(text, why):
    from labkit.errors import LabkitError
    from labkit.teaching.hardening import firewall_overrides
    with pytest.raises(LabkitError, match=re.escape(why)):
        firewall_overrides(text)


@pytest.mark.parametrize("text, why", [
    ("[asterisk]\nenabled = true\nbanaction = iptables\n", "not an option of this exercise"),
    ("[sshd]\nenabled = true\n", "[asterisk] jail only"),
    ("[asterisk]\nmaxretry = 3\n", "enabled = true"),
    ("[asterisk]\nenabled = true\nbantime = 1h\n", "a whole number"),
    ("[asterisk]\nenabled = true\nmaxretry = 0\n", "maxretry"),
    ("%(known/ignorecommand)s\n", "not option = value"),
])
def test_jail_text_is_data(text, why):
    from labkit.errors import LabkitError
    from labkit.teaching.hardening import jail_overrides
    with pytest.raises(LabkitError, match=re.escape(why)):
        jail_overrides(text)


def test_student_version_degrades_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)
