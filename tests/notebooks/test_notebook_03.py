"""Notebook 03 (SIP over TLS): stored outputs, replay on both tracks, live on both tracks, hygiene.

The same conventions as ``test_notebook_02.py``:

* regression: re-executed in **replay** mode (modern track), the notebook reproduces the outputs
  committed with it (pytest-notebook; images and volatile strings ignored); regenerate them with
  ``.venv/bin/python scripts/record_notebooks.py 03-tls --store-replay-outputs``;
* replay on the **legacy** track runs top to bottom, every check passes (hidden ones included);
  so does the diagnosis lab of **every** fault, on both tracks (each student gets one);
* **live** (``-m live``, root): real labs on both tracks, every check passes;
* hygiene: short cells, no function definitions, objectives first, clean metadata, small
  outputs, recordings and captures (with and without keys) present for every session;
* the checks judge the *answers* (plain data) against truths they compute themselves — the
  kit's recordings, the workshop CA made again from the student's id — and tell right answers
  from wrong ones and from swapped recordings; the configure exercises (the TLS lines, the
  diagnosis's fix) are live probes on a fresh lab (``-m live``);
* ``labkit grade`` scores the notebook: right answers score; wrong answers, forged results, a
  CA of one's own and another student's lab do not;
* the student version (solutions removed) fails its checks without breaking anything else.
"""
from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
from types import SimpleNamespace

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

NAME = "03-tls"
PATH = path_of(NAME)
TIMEOUT = 180                  # per cell: a live step restarts Asterisk
PBX_NAME = "pbx.office.example"


# -- small helpers -----------------------------------------------------------------------------
def read():
    return nbtools.read(NAME)


def execute(env: dict[str, str], *, report_checks: bool = False, nb=None, allow_errors=False):
    return nbtools.execute(NAME, env, report_checks=report_checks, timeout=TIMEOUT, nb=nb,
                           allow_errors=allow_errors)


def sessions(nb) -> list[str]:
    """The recording names of the notebook's sessions; the diagnosis lab has one per fault."""
    from labkit.teaching.session import TLS_FAULTS
    source = "\n".join(c.source for c in code_cells(nb))
    names = re.findall(r'Session\.start\(\s*"([^"]+)"', source)
    for base in re.findall(r'Session\.diagnosis\(\s*"([^"]+)"', source):
        names += [f"{base}-{n}" for n in range(1, len(TLS_FAULTS) + 1)]
    return names


def replayed(name, track, **kwargs):
    """A session of the recording, as the notebook's cells left it."""
    from labkit.teaching.session import Session
    session = Session.start(name, "tls-office", track=track, mode="replay", **kwargs)
    session.recorder.replay_all()
    return session


def probed_here(result) -> bool:
    """A configure exercise's result in replay mode: not judged, the grader probes a live lab."""
    return result[0] in PROBED and not result[1] and "checked on a live lab by the grader" in result[2]


def student_ids() -> dict[str, str]:
    """A student id that gets each fault."""
    from labkit.teaching.session import TLS_FAULTS, pick_fault
    found: dict[str, str] = {}
    i = 0
    while len(found) < len(TLS_FAULTS):
        found.setdefault(pick_fault(f"student-{i}")[1], f"student-{i}")
        i += 1
    return found


# -- (1) regression: stored outputs == a fresh replay run (modern track) --------------------------
def test_stored_outputs_match_replay(monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, PATH, TIMEOUT)


def test_stored_outputs_show_the_measurements():
    """What the prose claims is in the stored (modern) outputs."""
    text = outputs_text(read())
    assert "Track: **modern**" in text and "Mode: **replay**" in text
    assert "LISTEN" in text and "0.0.0.0:5061" in text                  # 5061 listens
    assert ";transport=TLS" in text                                       # pjsip show aor 6000
    assert "Verified peername: pbx.office.example" in text
    assert "x509: Use -help for summary." in text                         # the report's -day
    assert "method = tlsv1_2" in text and "method = sslv23" in text
    assert "SIP over TLS, as the student wrote it" in text
    assert "Request: REGISTER sip:pbx.office.example;transport=tls" in text   # decrypted
    assert "Via: SIP/2.0/TLS 192.168.0.11:5061" in text
    assert "RSA key exchange decrypted with the server key" in text
    assert "ECDHE: the server key cannot decrypt it" in text
    assert "handshake_failure" in text                                    # RSA kx refused
    assert "nothing listens on TCP port 5061" in text                     # key owned by root
    assert "not readable" in text
    for seen in ("10 certificate has expired", "62 hostname mismatch", "20 unable to get local issuer",
                 "18 self-signed certificate", "key values mismatch"):
        assert seen in text, seen
    # the key that does not match: PJSIP resets the connection (the probe's errno or the phone says so)
    assert "connection reset" in text.lower()
    assert "✗" not in text


# -- (2) replay on the legacy track, and every diagnosis lab -----------------------------------
def test_replay_legacy_runs():
    nb = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": "legacy"}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "Prim.Transp. : TLS" in text                                   # the report's proof
    assert "tlsdisablev12 = no" in text and "tlsenable = yes" in text
    assert "fopen: Permission denied" in text                             # chan_sip's unreadable key
    assert "pjsip show" not in text
    assert "✗" not in text, "a check cell failed"
    assert [r for r in check_results(nb) if not r[1] and not probed_here(r)] == []
    assert {r[0] for r in check_results(nb) if probed_here(r)} == PROBED


@pytest.mark.parametrize("track", TRACKS)
def test_every_diagnosis_lab_replays_and_its_solution_passes(track):
    """Each fault a student may get has a recording on each track, and the notebook's solution
    names and fixes it (only the diagnosis part is run: the rest does not depend on the id)."""
    nb = read()
    cells = code_cells(nb)
    first = cells[0]
    start = next(i for i, c in enumerate(cells) if "Session.diagnosis(" in c.source)
    part = [first, *cells[start:]]
    for fault, student in student_ids().items():
        small = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.source) for c in part],
                                         metadata=nb.metadata)
        small.cells.append(nbformat.v4.new_code_cell(
            "import json as _json\n"
            "print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in checks.run_all('03-tls') "
            "if r.id.startswith('diagnose')]))"))
        out = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": track, "LABKIT_STUDENT": student}, nb=small)
        assert errors(out) == [], (fault, errors(out))
        results = check_results(out)
        assert [r for r in results if r[0] == "diagnose-name" and r[1]], (fault, results)
        assert [r for r in results if not r[1] and not probed_here(r)] == [], fault


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
    assert len(results) >= 10
    assert [r for r in results if not r[1]] == []          # the live probes included


# -- (4) hygiene -----------------------------------------------------------------------------------
def test_cells_short_and_without_functions():
    nbtools.assert_cells_short_and_plain(read())


def test_structure():
    nb = read()
    assert nb.cells[0].cell_type == "markdown" and "**Objectives.**" in nb.cells[0].source
    cells = code_cells(nb)
    first, last = cells[0].source, cells[-1].source
    assert "from labkit.teaching import Session" in first and "from labkit.grading import checks" in first
    assert re.search(r'session = Session\.start\("03-[\w-]+", "tls-office"', first)
    assert "session.banner()" in first
    assert "session.close()" in last
    source = "\n".join(c.source for c in cells)
    started = re.findall(r"^(\w+) = Session\.(?:start|diagnosis)\(", source, re.M)
    closed = re.findall(r"^(\w+)\.close\(\)", source, re.M)
    assert sorted(started) == sorted(closed)
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert len(exercises) == 5
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    registered = checks.registered(NAME)
    shown = set(re.findall(r'checks\.run\(\s*"03-tls",\s*"([^"]+)"', source))
    assert shown == {c.id for c in registered}
    assert any(c.hidden for c in registered), "no hidden check"
    # a prediction is noted in the exercise cell itself, before the cell that reveals it
    predict = next(i for i, c in enumerate(cells) if "session.predict(" in c.source)
    assert "### BEGIN SOLUTION" in cells[predict].source
    reveal = next(i for i, c in enumerate(cells) if 'version="1.0"' in c.source)
    assert predict < reveal
    # the report's words, where they help
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for term in ("Ajout TLS", "clef privée", "autorité de certification", "C'est le même pem",
                 "écoute bien sur le port 5061", "Prim.Transp. : TLS", "RFC 8996", "RFC 9325"):
        assert term in prose, term


def test_code_is_track_neutral():
    """Track-specific names live in the markdown tables, not in code cells (the prediction's
    solution may say which track it answers for)."""
    code = "\n".join(c.source for c in code_cells(read()) if "### BEGIN SOLUTION" not in c.source)
    for word in ("tlsenable", "sip show", "pjsip show", "sip.conf", "pjsip.conf", "chan_sip"):
        assert word not in code, word


def test_no_personal_data_from_the_report():
    text = PATH.read_text()
    assert nbtools.report_data_in(text) == []
    # Images left out: base64 of a PNG can hold any four characters.
    readable = re.sub(r'"image/png": "[^"]*"', '"image/png": ""', text)
    for forbidden in ("0033", "SessionTalk"):              # the report's operator and softphone
        assert forbidden not in readable, forbidden


def test_execution_counts_and_metadata_clean():
    nbtools.assert_execution_counts_clean(read())


def test_outputs_small():
    nbtools.assert_outputs_small(NAME)


def test_recordings_present():
    found = sessions(read())
    assert len(found) >= 10
    for name in found:
        for track in TRACKS:
            assert (DATA / "recorded" / f"{name}-{track}" / "session.json").is_file(), (name, track)
            for suffix in (".pcap", "-with-keys.pcapng"):
                capture = DATA / "captures" / f"{name}-{track}{suffix}"
                assert capture.exists() and 0 < capture.stat().st_size < MAX_CAPTURE, capture


def test_recorded_captures_are_unreadable_without_keys_and_readable_with_them():
    from labkit import analysis
    for track in TRACKS:
        plain = DATA / "captures" / f"03-tls-{track}.pcap"
        keyed = DATA / "captures" / f"03-tls-{track}-with-keys.pcapng"
        assert len(analysis.sip_messages(plain)) == 0
        sip = analysis.sip_messages(keyed)
        assert {"REGISTER", "INVITE", "BYE"} <= set(sip.method) and set(sip.transport) == {"TLS"}


def test_manifest_lists_the_captures():
    manifest = json.loads((DATA / "manifest.json").read_text())
    files = {c["file"] for c in manifest["captures"]}
    for name in sessions(read()):
        for track in TRACKS:
            for suffix in (".pcap", "-with-keys.pcapng"):
                assert f"captures/{name}-{track}{suffix}" in files, (name, track, suffix)


# -- the checks judge the answers against truths they compute: right passes, wrong fails -------
# The answers as the grader receives them (plain values, JSON round trip); the truth from the
# recordings the checks open themselves and from the workshop CA the grader makes again
# (checks.evaluate: what labkit grade does).  The configure exercises are live probes: not run
# here (see test_live_probes_judge_the_text_on_a_fresh_lab and the grading tests).
SOLUTION = {
    "sip_tls": "tlsenable = yes\ntlsbindaddr = 0.0.0.0:5061\ntlscertfile = /etc/asterisk/tls/pbx.crt\n"
               "tlsprivatekey = /etc/asterisk/tls/pbx.key\ntlscafile = /etc/asterisk/tls/ca.crt\n"
               "tlscipher = ECDHE+AESGCM:ECDHE+CHACHA20\ntlsdisablev1 = yes\ntlsdisablev11 = yes\n"
               "transport = udp,tls\n",
    "pjsip_tls": "[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0:5061\n"
                 "cert_file = /etc/asterisk/tls/pbx.crt\npriv_key_file = /etc/asterisk/tls/pbx.key\n"
                 "ca_list_file = /etc/asterisk/tls/ca.crt\nmethod = sslv23\n",
}
# The same lines written differently (comments, spacing): still right.
RESTYLED = {
    "sip_tls": "; mine\n" + SOLUTION["sip_tls"].replace(" = ", "="),
    "pjsip_tls": SOLUTION["pjsip_tls"].replace(" = ", "   =   ") + "; end\n",
}
WRONG_STANZA = {
    "sip_tls": "tlsenable = yes\ntlsbindaddr = 0.0.0.0:5061\ntlscertfile = /etc/asterisk/tls/pbx.pem\n"
               "tlscipher = ALL\ntlsclientmethod = tlsv1\n",
    "pjsip_tls": "[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0:5061\n"
                 "cert_file = /etc/asterisk/tls/pbx.crt\npriv_key_file = /etc/asterisk/tls/pbx.key\n"
                 "method = tlsv1_2\n",
}
FIX = "certificate:\n  variant: good\n  owner: asterisk\n"
#: the configure exercises: measured by a live probe on a fresh lab (never judged in replay)
PROBED = {"stanza-registers", "stanza-versions", "diagnose-fixed"}
JUDGED = {"cert-verifies", "cert-san-lifetime", "predict-tls10-alert", "predict-tls13-only",
          "stanza-other-generation", "wire-via-sent-by", "wire-rport", "diagnose-name"}
RECORDINGS = ["03-tls", *(f"03-diagnose-{n}" for n in range(1, 7))]


def _pem(issued) -> dict[str, str]:
    from labkit import pki
    return {"pbx_crt": pki.cert_pem(issued.cert).decode(), "pbx_key": pki.key_pem(issued.key).decode()}


def _report_certificate(folder) -> dict[str, str]:
    """The report's certificate: self-signed, ten years, no subjectAltName."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(folder / "pbx.key"), "-out", str(folder / "pbx.crt"), "-days", "3655",
                    "-subj", f"/CN={PBX_NAME}"], check=True, capture_output=True)
    return {"pbx_crt": (folder / "pbx.crt").read_text(), "pbx_key": (folder / "pbx.key").read_text()}


def _wire_answers(session) -> tuple[str, int]:
    """Bob's values, read from the raw text the way a student does."""
    register = session.message("REGISTER", src="bob")
    answer = session.message(401, dst="bob")
    return (register.split("Via: SIP/2.0/TLS ")[1].split(";")[0],
            int(answer.split("rport=")[1].split(";")[0].split()[0]))


def _right(track) -> dict:
    """What the solutions hand in, for the default student id."""
    from labkit.teaching.session import pick_fault, workshop_ca
    via, rport = _wire_answers(replayed("03-tls", track))
    return {**_pem(workshop_ca().issue_server([PBX_NAME])), **SOLUTION, "tls10_alert": 70,
            "tls13_only": 70 if track == "modern" else "TLSv1.3", "via_sent_by": via, "rport": rport,
            "fault": pick_fault()[1], "fix": FIX}


def _failed(results) -> dict[str, str]:
    return {r.id: r.message for r in results if not r.passed and not r.not_run}


@pytest.fixture
def default_student(monkeypatch):
    monkeypatch.delenv("LABKIT_STUDENT", raising=False)


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, tmp_path, default_student):
    from labkit.grading import checks
    from labkit.teaching.session import TLS_FAULTS

    right = _right(track)
    results = checks.evaluate(NAME, right, track=track)
    assert {r.id for r in results} == JUDGED | PROBED
    assert {r.id for r in results if r.not_run} == PROBED          # live probes: not judged here
    assert _failed(results) == {}
    assert {r.id for r in results if r.passed} == JUDGED
    # the same, written differently: lines restyled, a prediction given in words
    restyled = {**right, **RESTYLED, "tls10_alert": "protocol_version",
                "tls13_only": "70" if track == "modern" else "TLS 1.3"}
    assert _failed(checks.evaluate(NAME, restyled, track=track)) == {}

    wrong_fault = next(f for f in TLS_FAULTS if f != right["fault"])
    alice_via = replayed("03-tls", track).message("REGISTER", src="alice").split("Via: SIP/2.0/TLS ")[1].split(";")[0]
    wrong = {**_report_certificate(tmp_path / "report"), **WRONG_STANZA, "tls10_alert": 40,
             "tls13_only": "TLSv1.3" if track == "modern" else 70, "via_sent_by": alice_via, "rport": 5061,
             "fault": wrong_fault, "fix": FIX}
    failed = _failed(checks.evaluate(NAME, wrong, track=track))
    assert set(failed) == JUDGED, failed
    assert "18 at 0 depth lookup: self-signed" in failed["cert-verifies"]
    assert "no DNS name" in failed["cert-san-lifetime"]
    assert "you predicted 40" in failed["predict-tls10-alert"]
    other = failed["stanza-other-generation"]
    assert ("method = tlsv1_2" in other) if track == "legacy" else ("tlscipher = ALL" in other), other
    assert failed["wire-rport"] == "you said 5061" and failed["diagnose-name"] == f"you said {wrong_fault}"

    # a missing variable is a readable failure, not a crash
    missing = checks.evaluate(NAME, {}, track=track)
    assert not any(r.passed for r in missing)
    assert all("is not defined" in r.message for r in missing if not r.not_run), [r.message for r in missing]
    # answers of the wrong type: failures with a reason
    odd = {**right, "pbx_crt": 42, "rport": True, "tls10_alert": None, "sip_tls": ["tlsenable = yes"]}
    failed = _failed(checks.evaluate(NAME, odd, track=track))
    assert {"cert-verifies", "cert-san-lifetime", "wire-rport", "predict-tls10-alert"} <= set(failed)
    assert "should be the text of" in failed["cert-san-lifetime"]


def test_the_certificate_must_chain_to_the_students_own_workshop_ca(default_student):
    """The CA is the one the grader makes again from the student's id: a CA of one's own under
    the same name, another student's workshop CA, or a key of another certificate fail."""
    from labkit import pki
    from labkit.grading import checks
    from labkit.grading.answers import Answers
    from labkit.grading.truth import Truth
    from labkit.teaching.session import workshop_ca

    right = _right("modern")
    own_ca = pki.LabCA.create("Office Lab CA")
    failed = _failed(checks.evaluate(NAME, {**right, **_pem(own_ca.issue_server([PBX_NAME]))}, track="modern"))
    assert set(failed) == {"cert-verifies"} and "20 at 0 depth lookup" in failed["cert-verifies"], failed
    other = _pem(workshop_ca("someone-else").issue_server([PBX_NAME]))
    failed = _failed(checks.evaluate(NAME, {**right, **other}, track="modern"))
    assert set(failed) == {"cert-verifies"}, failed
    mismatched = {**right, "pbx_key": _pem(workshop_ca().issue_server([PBX_NAME]))["pbx_key"]}
    failed = _failed(checks.evaluate(NAME, mismatched, track="modern"))
    assert failed == {"cert-verifies": "pbx.key is not the private key of pbx.crt"}
    # graded under its own id, the student's own CA's certificate passes, the default one does not
    cert = checks.find(NAME, "cert-verifies")
    truth = Truth(NAME, "modern", student="someone-else")
    assert checks.judge(cert, Answers(other), truth).passed
    assert not checks.judge(cert, Answers({k: right[k] for k in ("pbx_crt", "pbx_key")}), truth).passed
    # the CA is the same each time for an id, and the workshop folder holds it
    assert workshop_ca("x").cert.public_key() == workshop_ca("x").cert.public_key()
    session = replayed("03-tls", "modern")
    work = session.certificate_workshop()
    assert pki.load_certificate(work / "ca.crt").public_key() == workshop_ca().cert.public_key()


@pytest.mark.parametrize("track", TRACKS)
def test_checks_refuse_swapped_artifacts(track, tmp_path, default_student):
    """The truth is the kit's recording of each lab: another lab's files in its place fail the
    checks that read them, and the student's namespace is never read."""
    from labkit.grading import checks
    from labkit.teaching.session import Session, pick_fault

    right = _right(track)
    # notebook 01's UDP lab handed in as the TLS lab: no TLS probe, no REGISTER over TLS
    udp = nbtools.recordings_folder(tmp_path / "udp", track, RECORDINGS, {"03-tls": "01-first-call"})
    failed = _failed(checks.evaluate(NAME, right, track=track, data=udp))
    assert {"predict-tls10-alert", "predict-tls13-only", "wire-via-sent-by", "wire-rport"} <= set(failed)
    assert "diagnose-name" not in failed
    # another fault's recording in place of the student's lab
    number, _ = pick_fault()
    other = 1 if number != 1 else 2
    swapped = nbtools.recordings_folder(tmp_path / "fault", track, RECORDINGS,
                                        {f"03-diagnose-{number}": f"03-diagnose-{other}"})
    failed = _failed(checks.evaluate(NAME, right, track=track, data=swapped))
    assert set(failed) == {"diagnose-name"} and "not the lab your id gives" in failed["diagnose-name"], failed
    # a session in the student's namespace (whatever it holds) is never read
    fake = Session.start("01-first-call", "first-call", track=track, mode="replay")
    fake.recorder.replay_all()
    fake.recorder.entries.append({"kind": "tls-probe", "args": {"version": "1.0"},
                                  "result": {"connected": False, "alert": 40}})
    assert checks.run(NAME, "wire-via-sent-by", {**right, "session": fake}).passed
    assert not checks.run(NAME, "predict-tls10-alert", {**right, "session": fake, "tls10_alert": 40}).passed


@pytest.mark.live
def test_live_probes_judge_the_text_on_a_fresh_lab(default_student):
    """The configure exercises on the modern track: right text and fix pass, wrong fail."""
    from labkit.grading import checks
    right = _right("modern")
    wrong = {**right, "pjsip_tls": SOLUTION["pjsip_tls"].replace("0.0.0.0:5061", "0.0.0.0:5062"),
             "fix": "certificate:\n  variant: expired\n"}
    got = {r.id: r for r in checks.evaluate(NAME, right, track="modern", probes=True) if r.id in PROBED}
    assert {i: r.passed for i, r in got.items()} == dict.fromkeys(PROBED, True), [r.line() for r in got.values()]
    got = {r.id: r for r in checks.evaluate(NAME, wrong, track="modern", probes=True) if r.id in PROBED}
    assert {i: r.passed for i, r in got.items()} == dict.fromkeys(PROBED, False), [r.line() for r in got.values()]
    assert "did not register" in got["stanza-registers"].message
    assert "still did not register" in got["diagnose-fixed"].message
    # a fix that is not lab-file lines of this exercise is refused before any lab is made
    refused = checks.evaluate(NAME, {**right, "fix": "pbx:\n  tls: {}\n"}, track="modern", probes=True)
    message = next(r.message for r in refused if r.id == "diagnose-fixed")
    assert "not a setting of this exercise" in message


# -- labkit grade scores the notebook: right answers score, wrong, forged and swapped do not -------
FORGER = '''\
import json
from labkit import pki
from labkit.grading import checks
own = pki.LabCA.create("Office Lab CA")            # a CA of its own, under the workshop CA's name
issued = own.issue_server(["pbx.office.example"])
pbx_crt, pbx_key = pki.cert_pem(issued.cert).decode(), pki.key_pem(issued.key).decode()
own.write(work)                                     # and put in the workshop folder as its CA
session.recorder.entries.append({"kind": "tls-probe", "args": {"version": "1.0"},
                                 "result": {"connected": False, "alert": 99}})
tls10_alert, tls13_only, via_sent_by, rport, fault = 99, 99, "10.9.9.9:1", 1, "forged"
checks.run = checks.run_all = lambda *a, **k: print("✓ 1/1 cert-verifies")
claims = {"labkit_answers": 1, "notebook": "03-tls", "answers": {"tls10_alert": {"value": 70}},
          "results": [{"id": "cert-verifies", "passed": True, "points": 9}]}
for name in ("answers.json", "report.json", "/tmp/answers.json"):
    with open(name, "w") as fh:
        json.dump(claims, fh)
print("✓ 1/1 cert-verifies\\n✓ 1/1 predict-tls10-alert\\n✓ 2/2 diagnose-fixed")
'''

#: the solutions' answers, wrong: the report's certificate, wrong predictions, lines and fault
WRONG_SOLUTIONS = [
    '!openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {work}/pbx.key '
    '-out {work}/pbx.crt -days 3655 -subj "/CN=pbx.office.example" 2>/dev/null',
    'tls10_alert = 40\ntls13_only = "TLSv1.3"',
    f'sip_tls = {WRONG_STANZA["sip_tls"]!r}\npjsip_tls = {WRONG_STANZA["pjsip_tls"].replace("5061", "5062")!r}',
    'via_sent_by = "192.168.0.11:5061"\nrport = 5061',
    'fault = "self-signed" if broken.name.endswith("-5") else "unreadable-key"\n'
    'fix = "certificate:\\n  variant: expired\\n"',
]


def _solved_with(nb, solutions: list[str]):
    nb = copy.deepcopy(nb)
    cells = [c for c in nb.cells if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source]
    assert len(cells) == len(solutions)
    for cell, code in zip(cells, solutions):
        cell.source = nbtools.SOLUTION.sub(lambda _m, code=code: code, cell.source)
    return nb


def _grade_rows(path) -> dict[tuple[str, str], dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {(r["student"], r["check"]): r for r in csv.DictReader(fh)}


def _submit(subs, student: str, nb) -> None:
    (subs / student).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(subs / student / f"{NAME}.ipynb"))


def _another_id(student: str) -> str:
    """A student id whose diagnosis lab hides another fault than *student*'s."""
    from labkit.teaching.session import pick_fault
    mine = pick_fault(student)[1]
    return next(other for fault, other in student_ids().items() if fault != mine)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run of notebook 03 (replay, in the sandbox, probes off): an honest student,
    a wrong one, a forger (fake results, a CA of its own, a doctored session log, patched
    checks) and a swapper (the diagnosis lab of another student's id)."""
    from labkit.grading.grade import grade, release
    root = tmp_path_factory.mktemp("grade03")
    source = root / "source"
    source.mkdir()
    (source / PATH.name).write_bytes(PATH.read_bytes())
    (released,) = release(source / PATH.name, root / "release")
    honest = read()
    subs = root / "submissions"
    _submit(subs, "honest", honest)
    _submit(subs, "wrong", _solved_with(honest, WRONG_SOLUTIONS))
    forger = nbformat.read(str(released), as_version=4)
    for cell in forger.cells:
        cell.source = cell.source.replace("raise NotImplementedError()", "pass")
    forger.cells.append(nbformat.v4.new_code_cell(FORGER))
    _submit(subs, "forger", forger)
    swapper = copy.deepcopy(honest)
    at = next(i for i, c in enumerate(swapper.cells) if "Session.diagnosis(" in c.source)
    swapper.cells.insert(at, nbformat.v4.new_code_cell(
        f"import os\nos.environ['LABKIT_STUDENT'] = {_another_id('swapper')!r}"))
    _submit(subs, "swapper", swapper)
    out = root / "grades" / "grades.csv"
    report = grade(subs, out, source=source, timeout=TIMEOUT, total_timeout=1200, jobs=4, probes=False)
    feedback = {p.stem: p.read_text() for p in (out.parent / "feedback").iterdir()}
    return SimpleNamespace(rows=_grade_rows(out), report=report, feedback=feedback)


def _got(graded, student: str) -> dict[str, tuple[str, str]]:
    return {check: (row["points"], row["status"]) for (who, check), row in graded.rows.items() if who == student}


def test_grading_scores_the_honest_notebook(graded):
    got = _got(graded, "honest")
    assert set(got) == JUDGED | PROBED
    assert {c: got[c][1] for c in JUDGED} == dict.fromkeys(JUDGED, "pass"), graded.feedback["honest"]
    assert {c: got[c] for c in PROBED} == dict.fromkeys(PROBED, ("0", "not-run"))
    assert not any("old-style" in note for note in graded.report.notes), graded.report.notes


def test_grading_fails_wrong_answers(graded):
    got = _got(graded, "wrong")
    assert {c: got[c] for c in JUDGED} == dict.fromkeys(JUDGED, ("0", "fail")), graded.feedback["wrong"]
    assert "18 at 0 depth lookup: self-signed" in graded.rows[("wrong", "cert-verifies")]["message"]


def test_grading_ignores_forged_results_and_a_ca_of_ones_own(graded):
    """Fake answers files, ✓ lines, patched checks, a doctored session log and a certificate
    signed by a CA the student made under the workshop CA's name earn nothing; only the
    certificate's own properties (its SAN, its lifetime) are what they are."""
    got = _got(graded, "forger")
    assert got.pop("cert-san-lifetime") == ("1", "pass")
    assert {c: s for c, (_, s) in got.items()} == {**dict.fromkeys(JUDGED - {"cert-san-lifetime"}, "fail"),
                                                   **dict.fromkeys(PROBED, "fail")}, graded.feedback["forger"]
    assert all(points == "0" for points, _ in got.values())
    assert "20 at 0 depth lookup" in graded.rows[("forger", "cert-verifies")]["message"]
    assert graded.rows[("forger", "predict-tls10-alert")]["message"] == "you predicted 99"
    assert "✓" not in graded.feedback["forger"].split("cert-verifies", 1)[1].split("\n", 1)[0]


def test_grading_judges_the_lab_of_the_students_own_id(graded):
    got = _got(graded, "swapper")
    assert got["diagnose-name"] == ("0", "fail"), graded.feedback["swapper"]
    assert {c: got[c][1] for c in JUDGED - {"diagnose-name"}} == dict.fromkeys(JUDGED - {"diagnose-name"}, "pass")


@pytest.mark.live
def test_grading_runs_the_probes_of_the_configure_exercises(tmp_path):
    """labkit grade with live probes: the honest text and fix score, the wrong ones do not."""
    from labkit.grading.grade import grade
    honest = read()
    subs = tmp_path / "subs"
    _submit(subs, "honest", honest)
    _submit(subs, "wrong", _solved_with(honest, WRONG_SOLUTIONS))
    out = tmp_path / "g" / "g.csv"
    grade(subs, out, timeout=TIMEOUT, total_timeout=1200, jobs=2)
    rows = _grade_rows(out)
    for check in PROBED:
        assert rows[("honest", check)]["status"] == "pass", rows[("honest", check)]
        assert rows[("wrong", check)]["status"] == "fail", rows[("wrong", check)]
    assert rows[("honest", "stanza-registers")]["points"] == "2"


# -- the student version: solutions removed, the notebook still goes to the end ------------------
def test_student_version_fails_checks_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)
