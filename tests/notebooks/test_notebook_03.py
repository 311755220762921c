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
* the checks tell right answers from wrong ones and from swapped labs, and the student version
  (solutions removed) fails its checks without breaking anything else.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess

import nbformat
import pytest
from pytest_notebook.nb_regression import NBRegressionFixture

from . import nbtools
from .nbtools import (
    DATA,
    DIFF_IGNORE,
    DIFF_REPLACE,
    MAX_CAPTURE,
    MAX_CELL_OUTPUT,
    MAX_NOTEBOOK,
    NOTEBOOKS,
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
    monkeypatch.setenv("LABKIT_MODE", "replay")
    monkeypatch.setenv("LABKIT_TRACK", "modern")
    monkeypatch.setenv("LABKIT_RECORD", "0")
    monkeypatch.delenv("LABKIT_STUDENT", raising=False)
    fixture = NBRegressionFixture(
        exec_timeout=TIMEOUT, exec_cwd=str(NOTEBOOKS),
        exec_env={"LABKIT_MODE": "replay", "LABKIT_TRACK": "modern", "LABKIT_RECORD": "0"},
        diff_ignore=DIFF_IGNORE, diff_replace=DIFF_REPLACE, diff_use_color=False)
    fixture.check(str(PATH))


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
                 "18 self-signed certificate", "key values mismatch", "connection reset"):
        assert seen in text, seen
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
    assert [r for r in check_results(nb) if not r[1]] == []


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
        assert [r for r in check_results(out) if not r[1]] == [], fault


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
    assert [r for r in results if not r[1]] == []


# -- (4) hygiene -----------------------------------------------------------------------------------
def test_cells_short_and_without_functions():
    cells = code_cells(read())
    lengths = [len(c.source.strip().splitlines()) for c in cells]
    assert statistics.median(lengths) <= 3, lengths
    for cell in cells:
        assert not re.search(r"(^|\s)(async\s+)?def\s", cell.source), cell.source
        assert "lambda" not in cell.source and "class " not in cell.source, cell.source
        assert "subprocess" not in cell.source and "import os" not in cell.source, cell.source


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
    for forbidden in ("86.195.60.74", "78.240.123.89", "0033", "asadek", "choucheh", "Sadek", "SessionTalk"):
        assert forbidden not in text, forbidden


def test_execution_counts_and_metadata_clean():
    nb = read()
    counts = [c.execution_count for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)) or all(c is None for c in counts), counts
    assert_metadata_clean(nb)
    for cell in code_cells(nb):
        for out in cell.outputs:
            if out.output_type == "execute_result":
                assert out.execution_count == cell.execution_count


def test_outputs_small():
    assert PATH.stat().st_size < MAX_NOTEBOOK
    for i, cell in enumerate(code_cells(read())):
        size = len(json.dumps(cell.get("outputs", [])))
        assert size <= MAX_CELL_OUTPUT, f"code cell {i}: {size} bytes of output"


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


# -- the checks judge the lab and the answers: right answers pass, wrong ones fail ----------------
SOLUTION = {
    "sip_tls": "tlsenable = yes\ntlsbindaddr = 0.0.0.0:5061\ntlscertfile = /etc/asterisk/tls/pbx.crt\n"
               "tlsprivatekey = /etc/asterisk/tls/pbx.key\ntlscafile = /etc/asterisk/tls/ca.crt\n"
               "tlscipher = ECDHE+AESGCM:ECDHE+CHACHA20\ntlsdisablev1 = yes\ntlsdisablev11 = yes\n"
               "transport = udp,tls\n",
    "pjsip_tls": "[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0:5061\n"
                 "cert_file = /etc/asterisk/tls/pbx.crt\npriv_key_file = /etc/asterisk/tls/pbx.key\n"
                 "ca_list_file = /etc/asterisk/tls/ca.crt\nmethod = sslv23\n",
}
# The same lines written differently (comments, spacing, order of nothing else): still yours.
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


def _good_certificate(session):
    from labkit import pki
    work = session.certificate_workshop()
    pki.LabCA.load(work).issue_server([PBX_NAME]).write(work, "pbx")


def _report_certificate(session):
    """The report's certificate: self-signed, ten years, no subjectAltName."""
    work = session.certificate_workshop()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(work / "pbx.key"), "-out", str(work / "pbx.crt"), "-days", "3655",
                    "-subj", f"/CN={PBX_NAME}"], check=True, capture_output=True)


def _wire_answers(session) -> tuple[str, int]:
    """Bob's values, read from the raw text the way a student does."""
    register = session.message("REGISTER", src="bob")
    answer = session.message(401, dst="bob")
    return (register.split("Via: SIP/2.0/TLS ")[1].split(";")[0],
            int(answer.split("rport=")[1].split(";")[0].split()[0]))


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track):
    from labkit.grading import checks
    from labkit.teaching.session import TLS_FAULTS, pick_fault

    number, fault = pick_fault("student")
    ns = {"session": replayed("03-tls", track), "mine": replayed("03-mine", track),
          "broken": replayed(f"03-diagnose-{number}", track, overrides={"pbx": {"tls": TLS_FAULTS[fault]}},
                             wait_registered=False)}
    _good_certificate(ns["session"])
    via, rport = _wire_answers(ns["session"])
    tls13 = 70 if track == "modern" else "TLSv1.3"
    right = {**ns, **SOLUTION, "tls10_alert": 70, "tls13_only": tls13,
             "via_sent_by": via, "rport": rport, "fault": fault}
    assert [(r.id, r.message) for r in checks.run_all(NAME, right) if not r.passed] == []
    # the same, written differently: lines restyled, a prediction given in words
    restyled = {**right, **RESTYLED, "tls10_alert": "protocol_version",
                "tls13_only": "70" if track == "modern" else "TLS 1.3"}
    assert [(r.id, r.message) for r in checks.run_all(NAME, restyled) if not r.passed] == []

    wrong_fault = next(f for f in TLS_FAULTS if f != fault)
    alice_via = ns["session"].message("REGISTER", src="alice").split("Via: SIP/2.0/TLS ")[1].split(";")[0]
    wrong = {**ns, **WRONG_STANZA, "tls10_alert": 40, "tls13_only": "TLSv1.3" if track == "modern" else 70,
             "via_sent_by": alice_via, "rport": 5061, "fault": wrong_fault}
    _report_certificate(ns["session"])
    failed = {r.id: r.message for r in checks.run_all(NAME, wrong) if not r.passed}
    passed = [r.id for r in checks.run_all(NAME, wrong) if r.passed]
    assert passed == ["diagnose-fixed"], passed       # the lab itself was fixed: a measure, not an answer
    assert "18 at 0 depth lookup: self-signed" in failed["cert-verifies"]
    assert "no DNS name" in failed["cert-san-lifetime"]
    assert "never ran with your" in failed["stanza-registers"]
    other = failed["stanza-other-generation"]
    assert "method = tlsv1_2" in other or "tlscipher = ALL" in other, other

    # a missing variable is a readable failure, not a crash (what needs no variable is measured)
    missing = checks.run_all(NAME, ns)
    assert [r.id for r in missing if r.passed] == ["diagnose-fixed"]
    assert all("is not defined" in r.message for r in missing
               if not r.passed and not r.id.startswith("cert-")), [r.message for r in missing]


@pytest.mark.parametrize("track", TRACKS)
def test_checks_refuse_swapped_and_unfixed_labs(track, tmp_path):
    from labkit.grading import checks
    from labkit.teaching.session import TLS_FAULTS, Session, pick_fault

    number, fault = pick_fault("student")
    session, mine = replayed("03-tls", track), replayed("03-mine", track)
    broken = replayed(f"03-diagnose-{number}", track, overrides={"pbx": {"tls": TLS_FAULTS[fault]}},
                      wait_registered=False)
    _good_certificate(session)
    via, rport = _wire_answers(session)
    right = {"session": session, "mine": mine, "broken": broken, **SOLUTION, "tls10_alert": 70,
             "tls13_only": 70 if track == "modern" else "TLSv1.3", "via_sent_by": via, "rport": rport,
             "fault": fault}

    def failing(ns):
        return {r.id: r.message for r in checks.run_all(NAME, ns) if not r.passed}

    # the healthy lab offered as the broken one: it hides no fault
    failed = failing({**right, "broken": session})
    assert set(failed) == {"diagnose-name", "diagnose-fixed"} and "hides no fault" in failed["diagnose-name"]
    # the broken lab, not fixed: its log stops before the student's change
    unfixed = replayed(f"03-diagnose-{number}", track, overrides={"pbx": {"tls": TLS_FAULTS[fault]}},
                       wait_registered=False)
    first_change = next(i for i, e in enumerate(unfixed.recorder.entries) if e["kind"] == "configure-tls")
    unfixed.recorder.entries = unfixed.recorder.entries[:first_change]
    failed = failing({**right, "broken": unfixed})
    assert set(failed) == {"diagnose-fixed"} and "never reconfigured" in failed["diagnose-fixed"]
    # the lab that kept the kit's own TLS lines offered as the student's
    failed = failing({**right, "mine": session})
    assert {"stanza-registers", "stanza-versions"} <= set(failed)
    # predictions noted after the reveal do not count
    late = replayed("03-tls", track)
    predictions = [e for e in late.recorder.entries if e["kind"] == "prediction"]
    late.recorder.entries = [e for e in late.recorder.entries if e["kind"] != "prediction"] + predictions
    late.workshop, late.workshop_ca = session.workshop, session.workshop_ca
    failed = failing({**right, "session": late})
    assert {"predict-tls10-alert", "predict-tls13-only"} <= set(failed)
    assert "before the probe" in failed["predict-tls10-alert"]
    # a prediction changed after the reveal does not count either
    failed = failing({**right, "tls10_alert": 45})
    assert "you predicted 70" in failed["predict-tls10-alert"]
    # a capture of SIP over UDP (notebook 01) offered for the wire exercise
    udp = Session.start("01-first-call", "first-call", track=track, mode="replay")
    udp.workshop, udp.workshop_ca = session.workshop, session.workshop_ca
    failed = failing({**right, "session": udp})
    assert {"wire-via-sent-by", "wire-rport"} <= set(failed)
    # a key others can read
    (session.workshop / "pbx.key").chmod(0o644)
    assert "chmod 600" in failing(right)["cert-verifies"]


# -- the student version: solutions removed, the notebook still goes to the end ------------------
def test_student_version_fails_checks_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)
