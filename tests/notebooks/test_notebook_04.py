"""Notebook 04 (SRTP): stored outputs, replay on both tracks, live on both tracks, hygiene, checks.

The same conventions as ``test_notebook_03.py``:

* regression: re-executed in **replay** mode (modern track), the notebook reproduces the outputs
  committed with it; regenerate them with
  ``.venv/bin/python scripts/record_notebooks.py 04-srtp --store-replay-outputs``;
* replay on the **legacy** track runs top to bottom and every check passes (hidden ones included;
  the configure exercise's live probe is "not run" in replay, never a pass);
* **live** (``-m live``, root): real labs on both tracks, every check passes (the probe included);
* hygiene: short cells, no function definitions, objectives first, clean metadata, small
  outputs, recordings and captures present for every session;
* the checks tell right answers from wrong ones and from swapped recordings (``checks.evaluate``:
  plain answers, truth from the recordings, as ``labkit grade`` does), the configure exercise's
  text is refused or accepted as a lab file would be, and the student version (solutions
  removed) fails its checks without breaking anything else.
"""
from __future__ import annotations

import json
import re

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

NAME = "04-srtp"
PATH = path_of(NAME)
TIMEOUT = 240                  # per cell: a live check probes a fresh lab


def read():
    return nbtools.read(NAME)


def execute(env: dict[str, str], *, report_checks: bool = False, nb=None, allow_errors=False):
    return nbtools.execute(NAME, env, report_checks=report_checks, timeout=TIMEOUT, nb=nb,
                           allow_errors=allow_errors)


def sessions(nb) -> list[str]:
    """The recording names of the notebook's own sessions (not notebook 01's, opened in replay)."""
    source = "\n".join(c.source for c in code_cells(nb))
    return [n for n in re.findall(r'Session\.start\(\s*"([^"]+)"', source) if n.startswith("04-")]


def replayed(name, track, overrides=None):
    from labkit.teaching.session import Session
    session = Session.start(name, "srtp-office", track=track, mode="replay", overrides=overrides)
    session.recorder.replay_all()
    return session


# -- (1) regression: stored outputs == a fresh replay run (modern track) --------------------------
def test_stored_outputs_match_replay(monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, PATH, TIMEOUT)


def test_stored_outputs_show_the_measurements():
    """What the prose claims is in the stored (modern) outputs."""
    text = outputs_text(read())
    assert "Track: **modern**" in text and "Mode: **replay**" in text
    assert "media_encryption = sdes" in text                              # the rendered endpoint
    assert "Not Acceptable Here" in text                                  # the report's lines, a mismatch
    assert "m=audio" in text and "RTP/SAVPF" in text and "a=ice-ufrag" in text and "typ host" in text
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in text           # raw SDP
    assert "decrypted with the key from SDP" in text
    assert "authentication failures" in text                              # the wrong key
    assert "no key in any readable SDP" in text                           # TLS hides the keys
    assert "UDP/TLS/RTP/SAVPF" in text and "a=fingerprint:SHA-256" in text and "DTLS-SRTP" in text
    assert "✗" not in text


# -- (2) replay on the legacy track --------------------------------------------------------------
def test_replay_legacy_runs():
    nb = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": "legacy"}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "encryption = yes" in text and "media_encryption" not in text.split("checks.run")[0]
    assert "✗" not in text, "a check cell failed"
    results = check_results(nb)
    failed = [r for r in results if not r[1]]
    # the configure exercise is measured on a live lab by the grader: in replay it is not run
    assert [r[0] for r in failed] == ["srtp-lines"], failed
    assert "live lab" in failed[0][2]


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
    assert len(results) == 7
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
    assert re.search(r'session = Session\.start\("04-srtp", "srtp-office"', first)
    assert "session.banner()" in first
    assert "session.close()" in last
    source = "\n".join(c.source for c in cells)
    started = re.findall(r"^(\w+) = Session\.start\(", source, re.M)
    closed = re.findall(r"^(\w+)\.close\(\)", source, re.M)
    assert sorted(started) == sorted(closed)
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert len(exercises) == 4
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    registered = checks.registered(NAME)
    shown = set(re.findall(r'checks\.run\(\s*"04-srtp",\s*"([^"]+)"', source))
    assert shown == {c.id for c in registered}
    assert any(c.hidden for c in registered), "no hidden check"
    assert any(c.probe is not None for c in registered), "no configure exercise"
    assert all(not c.legacy for c in registered), "old-style checks"
    # the prediction is noted in the exercise cell itself, before the call that reveals it
    predict = next(i for i, c in enumerate(cells) if "report.predict(" in c.source)
    assert "### BEGIN SOLUTION" in cells[predict].source
    reveal = next(i for i, c in enumerate(cells) if c.source.startswith("report.talk("))
    assert predict < reveal
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for term in ("chiffrement des appels", "encryption=yes", "avpf=yes", "force_avp=yes", "icesupport=yes",
                 "media_encryption=sdes", "media_encryption_optimistic", "RTP/SAVP",
                 "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:", "RFC 3711", "RFC 4568", "RFC 5763", "RFC 5764",
                 "de bout en bout"):
        assert term in prose, term


def test_code_is_track_neutral():
    code = "\n".join(c.source for c in code_cells(read()) if "### BEGIN SOLUTION" not in c.source)
    for word in ("sip show", "pjsip show", "sip.conf", "pjsip.conf", "chan_sip", 'track == "'):
        assert word not in code, word


def test_no_personal_data_from_the_report():
    text = PATH.read_text()
    assert nbtools.report_data_in(text) == []
    for forbidden in ("0033", "ovh-1"):              # the report's operator and softphone
        assert forbidden not in text, forbidden


def test_execution_counts_and_metadata_clean():
    nbtools.assert_execution_counts_clean(read())


def test_outputs_small():
    nbtools.assert_outputs_small(NAME)


def test_recordings_present_and_in_the_manifest():
    found = sessions(read())
    assert len(found) == 7
    manifest = {c["file"] for c in json.loads((DATA / "manifest.json").read_text())["captures"]}
    for name in found:
        for track in TRACKS:
            assert (DATA / "recorded" / f"{name}-{track}" / "session.json").is_file(), (name, track)
            capture = DATA / "captures" / f"{name}-{track}.pcap"
            assert capture.exists() and 0 < capture.stat().st_size < MAX_CAPTURE, capture
            assert f"captures/{name}-{track}.pcap" in manifest
    for track in TRACKS:  # the TLS keys of the TLS-signalled call, for exercise 4
        keyed = DATA / "captures" / f"04-tls-{track}-with-keys.pcapng"
        assert keyed.exists() and keyed.stat().st_size < MAX_CAPTURE
        assert f"captures/04-tls-{track}-with-keys.pcapng" in manifest


@pytest.mark.parametrize("track", TRACKS)
def test_recorded_captures_show_the_lessons(track):
    """What the notebook teaches is in the recordings of both tracks."""
    from labkit import analysis
    srtp = analysis.srtp_decrypt(DATA / "captures" / f"04-srtp-{track}.pcap").streams
    assert len(srtp) == 4 and srtp.key.nunique() == 4
    assert (srtp.decrypted == srtp.packets).all() and (srtp.entropy > 7.5).all() and (srtp.entropy_decrypted < 7).all()
    hidden = analysis.srtp_streams(DATA / "captures" / f"04-tls-{track}.pcap")
    assert len(hidden) == 4 and (hidden.decrypted == 0).all()
    dtls = analysis.srtp_streams(DATA / "captures" / f"04-dtls-{track}.pcap")
    assert len(dtls) >= 4 and (dtls.decrypted == 0).all() and dtls.why.str.startswith("DTLS").all()
    for name in ("04-report", "04-plain"):
        sip = analysis.sip_messages(DATA / "captures" / f"{name}-{track}.pcap")
        assert 488 in set(sip.status_code.dropna().astype(int)), name
    optimistic = analysis.sip_messages(DATA / "captures" / f"04-optimistic-{track}.pcap")
    codes = set(optimistic.status_code.dropna().astype(int))
    assert (488 not in codes) if track == "modern" else (488 in codes)


# -- the checks judge the answers against the recordings ------------------------------------------
def _right(track) -> dict:
    """The right answers, read from the recordings the way a student does (raw text, own decryption)."""
    from labkit import analysis
    session, tls = replayed("04-srtp", track), replayed("04-tls", track, {"phones": _tls_phones()})
    invite = session.message("INVITE", src="pbx", dst="alice", decrypt=None)
    answer = session.message(200, src="alice", dst="pbx", decrypt=None)
    key = tls.message("INVITE", src="pbx", dst="alice").split("inline:")[1].split()[0]
    opened = analysis.srtp_streams(tls.pcap, keys=[f"inline:{key}"])
    row = opened[(opened.src == tls.address("pbx")) & (opened.dst == tls.address("alice"))].iloc[0]
    return {"report_status": 488, "pbx_to_alice_key": invite.split("inline:")[1].split()[0],
            "alice_rtp_port": int(answer.split("m=audio ")[1].split()[0]), "tls_key": key,
            "tls_entropy": float(row.entropy_decrypted),
            "srtp_sip": "encryption = yes\n", "srtp_pjsip": "media_encryption = sdes\n"}


def _tls_phones():
    from labkit.grading.exercises import nb04
    return nb04.TLS_PHONES["phones"]


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, tmp_path):
    from labkit.grading import checks
    right = _right(track)
    results = checks.evaluate(NAME, right, track=track)
    assert [(r.id, r.message) for r in results if not r.passed and not r.not_run] == []
    assert [r.id for r in results if r.not_run] == ["srtp-lines"]
    # the same answers written differently: the key with its inline:, numbers as text
    restyled = {**right, "pbx_to_alice_key": "inline:" + right["pbx_to_alice_key"], "alice_rtp_port":
                str(right["alice_rtp_port"]), "tls_entropy": round(right["tls_entropy"], 2),
                "srtp_sip": "; mine\nencryption=yes\nforce_avp=yes\nicesupport=yes\n",
                "srtp_pjsip": "media_encryption = sdes\nice_support = yes\n"}
    assert [(r.id, r.message) for r in checks.evaluate(NAME, restyled, track=track)
            if not r.passed and not r.not_run] == []

    wrong = {"report_status": 200, "pbx_to_alice_key": right["tls_key"], "alice_rtp_port": 5060,
             "tls_key": right["pbx_to_alice_key"], "tls_entropy": 7.99,
             "srtp_sip": "encryption = yes\navpf = yes\n", "srtp_pjsip": "media_encryption = no\n"}
    failed = {r.id: r.message for r in checks.evaluate(NAME, wrong, track=track) if not r.passed}
    assert set(failed) == {c.id for c in checks.registered(NAME)}
    assert "you predicted 488" in failed["predict-report"]      # the noted prediction wins
    assert "entropy of ciphertext" in failed["tls-decrypted"]
    # a missing variable is a readable failure, not a crash
    missing = checks.evaluate(NAME, {}, track=track)
    assert not any(r.passed for r in missing)
    assert all("is not defined" in r.message for r in missing if not r.not_run), [r.message for r in missing]

    # swapped recordings: the UDP call offered as the TLS one, the TLS call as the main one
    swapped = nbtools.recordings_folder(tmp_path / "swapped", track, ["04-srtp", "04-report", "04-tls"],
                                        {"04-tls": "04-srtp", "04-srtp": "04-tls"})
    failed = {r.id for r in checks.evaluate(NAME, right, track=track, data=swapped) if not r.passed}
    assert {"wire-key", "wire-port", "tls-key", "tls-decrypted"} <= failed
    # a recording whose prediction came after the call
    late = nbtools.recordings_folder(tmp_path / "late", track, ["04-srtp", "04-tls"])
    entries = json.loads((DATA / "recorded" / f"04-report-{track}" / "session.json").read_text())
    prediction = [e for e in entries["entries"] if e["kind"] == "prediction"]
    entries["entries"] = [e for e in entries["entries"] if e["kind"] != "prediction"] + prediction
    (late / "recorded" / f"04-report-{track}").mkdir(parents=True)
    (late / "recorded" / f"04-report-{track}" / "session.json").write_text(json.dumps(entries))
    (late / "captures" / f"04-report-{track}.pcap").symlink_to(DATA / "captures" / f"04-report-{track}.pcap")
    failed = {r.id: r.message for r in checks.evaluate(NAME, right, track=track, data=late) if not r.passed}
    assert "no prediction was noted before the call" in failed["predict-report"]


def test_srtp_lines_are_checked_like_a_lab_file():
    from labkit.grading.exercises.nb04 import srtp_lines
    from labkit.grading.probes import Refused
    assert srtp_lines("encryption=yes\n", "legacy") == {"pbx": {"media": {
        "encryption": "sdes", "optimistic": False, "avpf": False, "force_avp": False, "ice": False}}}
    assert srtp_lines("media_encryption = dtls\nuse_avpf = yes\n", "modern")["pbx"]["media"]["avpf"] is True
    for text, track, why in (("encryption = maybe\n", "legacy", "yes or no"),
                             ("media_encryption = sdes\n", "legacy", "media_encryption"),
                             ("encryption = yes\n", "modern", "encryption"),
                             ("media_encryption = aes\n", "modern", "no, sdes or dtls"),
                             ("#exec /bin/sh\n", "legacy", ""),
                             ("", "modern", "empty")):
        with pytest.raises(Refused) as err:
            srtp_lines(text, track)
        assert why in err.value.message, (text, err.value.message)


# -- the student version: solutions removed, the notebook still goes to the end ------------------
def test_student_version_fails_checks_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)
