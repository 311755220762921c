"""Notebook 02b (Asterisk on a VPS, the phones behind boxes): stored outputs, replay and live on both
tracks, hygiene.

The same conventions as ``test_notebooks.py`` (notebooks 00 and 01):

* regression: re-executed in **replay** mode (modern track), the notebook reproduces the
  outputs committed with it (pytest-notebook; images and volatile strings ignored);
  regenerate them with ``.venv/bin/python scripts/record_notebooks.py 02b-nat-vps --store-replay-outputs``;
* replay on the **legacy** track runs top to bottom, every check passes;
* **live** (``-m live``, root): real labs on both tracks, every check passes;
* hygiene: short cells, no function definitions, objectives first, clean metadata, small
  outputs, recordings (and every captured place) present for every session;
* the checks tell right answers from wrong ones, and the student version (solutions removed)
  fails its checks without breaking anything else.
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

NAME = "02b-nat-vps"
PATH = path_of(NAME)
TIMEOUT = 180                  # per cell: a live step restarts Asterisk, a talk lasts ~5 s


def read():
    return nbtools.read(NAME)


def execute(env: dict[str, str], *, report_checks: bool = False, nb=None):
    return nbtools.execute(NAME, env, report_checks=report_checks, timeout=TIMEOUT, nb=nb)


def sessions(nb) -> list[tuple[str, tuple[str, ...]]]:
    """(recording name, captured places) of every Session.start of the notebook."""
    out = []
    source = "\n".join(c.source for c in code_cells(nb))
    for call in re.finditer(r'Session\.start\(\s*"([^"]+)"(.*?)\)\n', source, re.S):
        capture = re.search(r"capture=\(([^)]*)\)", call.group(2))
        out.append((call.group(1), tuple(re.findall(r'"([^"]+)"', capture.group(1) if capture else "")) or ("lan",)))
    for name in re.findall(r'Session\.vps_diagnosis\(\s*"([^"]+)"', source):  # one recording per fault
        from labkit.teaching.vps_nat import VPS_FAULTS
        out += [(f"{name}-{n}", ("lan", "internet")) for n in range(1, len(VPS_FAULTS) + 1)]
    return out


def student_ids() -> dict[str, str]:
    """A student id per VPS fault (the default student's first)."""
    from labkit.teaching.faults import ids_drawing_each
    from labkit.teaching.vps_nat import VPS_FAULTS, pick_vps_fault
    return ids_drawing_each(pick_vps_fault, VPS_FAULTS)


FIREWALL_FIX = "firewall_allow:\n  - {proto: udp, ports: 5060}\n  - {proto: udp, ports: 10000-20000}\n"
RIGHT_FIX = {"no-symmetric-handling": "symmetric: yes", "alg-with-direct-media": "direct_media: no",
             "firewall-without-rtp": FIREWALL_FIX}


# -- (1) regression: stored outputs == a fresh replay run (modern track) --------------------------
def test_stored_outputs_match_replay(monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, PATH, TIMEOUT)


def test_stored_outputs_show_the_measurements():
    """What the prose claims is in the stored (modern) outputs."""
    text = outputs_text(read())
    assert "Track: **modern**" in text and "Mode: **replay**" in text
    assert "rtp_symmetric = yes" in text and "rewrite_contact = yes" in text  # fix 1, PJSIP's lines
    assert 'udp dport 5060 ct helper set "sip"' in text        # the ALG: UDP 5060 only
    assert "received=198.51.100.1" in text and "rport=" in text  # RFC 3581 in a raw response Via
    assert "direct_media = no" in text and "192.168.1.11" in text  # two homes: anchored, Alice's private address
    assert "sip_alg = yes" in text and "direct_media = no" in text  # the default student's diagnosis, fixed
    assert "✗" not in text


# -- (2) replay on the legacy track ----------------------------------------------------------------
def test_replay_legacy_runs():
    nb = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": "legacy"}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "nat = force_rport,comedia" in text
    assert "rtp_symmetric" not in text
    assert "✗" not in text, "a check cell failed"
    # The diagnosis fix's probe needs a live lab: in replay it says so and counts nothing.
    assert [r for r in check_results(nb) if not r[1] and "checked on a live lab" not in r[2]] == []


# -- (3) live, both tracks -------------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.parametrize("track", TRACKS)
def test_live_runs_and_checks_pass(track):
    nb = execute({"LABKIT_MODE": "live", "LABKIT_TRACK": track}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Mode: **live**" in text and f"Track: **{track}**" in text
    assert "✗" not in text, "a check cell failed"
    results = check_results(nb)
    assert len(results) >= 7
    assert [r for r in results if not r[1]] == []
    assert {"symmetric-rport", "alg-direct-media-lost", "two-homes-hearing", "diagnose-name",
            "diagnose-fixed"} <= {r[0] for r in results}
    assert_strict_rtp_switched_to_the_box(text)


def assert_strict_rtp_switched_to_the_box(text: str) -> None:
    """Behind the box with symmetric handling (§2): each phone's RTP instance learns at the private
    SDP address, switches to the box's public address, and locks on it about 5 s after learning
    started (STRICT_RTP_LEARN_TIMEOUT, res_rtp_asterisk.c)."""
    for instance in ("rtp#1", "rtp#2"):
        learning = re.search(rf"([\d:.]+) res_rtp_asterisk.c: {instance}: Strict RTP learning after remote address "
                             r"set to: 192\.168\.0\.1[12]:\d+", text)
        switched = re.search(rf"{instance}: Strict RTP switching source address to 198\.51\.100\.1:\d+", text)
        locked = re.search(rf"([\d:.]+) res_rtp_asterisk.c: {instance}: Strict RTP learning complete - Locking on "
                           r"source address 198\.51\.100\.1:\d+", text)
        assert learning and switched and locked, (instance, bool(learning), bool(switched), bool(locked))
        seconds = [sum(float(x) * f for x, f in zip(m.group(1).split(":"), (3600, 60, 1))) for m in (learning, locked)]
        assert 4.5 < seconds[1] - seconds[0] < 6, seconds


@pytest.mark.parametrize("track", TRACKS)
def test_the_recorded_symmetric_call_shows_strict_rtp_switching_to_the_box(track):
    from labkit.teaching.session import Session
    sym = Session.start("02-vps-symmetric", "vps-pbx", track=track, mode="replay", capture=("lan", "internet"))
    assert_strict_rtp_switched_to_the_box(str(sym.media_log("Strict RTP")))


# -- (4) hygiene -----------------------------------------------------------------------------------
def test_cells_short_and_without_functions():
    nbtools.assert_cells_short_and_plain(read())


def test_structure():
    nb = read()
    assert nb.cells[0].cell_type == "markdown" and "**Objectives.**" in nb.cells[0].source
    cells = code_cells(nb)
    first, last = cells[0].source, cells[-1].source
    assert "from labkit.teaching import Session" in first and "from labkit.grading import checks" in first
    assert re.search(r'vps = Session\.start\("02-vps", "vps-pbx"', first)
    assert "vps.banner()" in first
    assert "diag.close()" in last
    # every session started is closed
    started = re.findall(r"^(\w+) = Session\.(?:start|vps_diagnosis)\(", "\n".join(c.source for c in cells), re.M)
    closed = re.findall(r"^(\w+)\.close\(\)", "\n".join(c.source for c in cells), re.M)
    assert sorted(started) == sorted(closed)
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert len(exercises) >= 5
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    shown = set(re.findall(r'checks\.run\(\s*"02b-nat-vps",\s*"([^"]+)"', "\n".join(c.source for c in cells)))
    registered = checks.registered(NAME)
    assert shown == {c.id for c in registered}
    assert [c.id for c in registered if c.hidden] == ["diagnose-name"]
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for term in ("nat=force_rport,comedia", "switching source address", "RFC 3581", "hairpin"):
        assert term in prose, term


def test_code_is_track_neutral():
    """Track-specific names live in the markdown, not in the code cells that run the lab."""
    code = "\n".join(c.source for c in code_cells(read()) if "### BEGIN SOLUTION" not in c.source)
    for word in ("externip", "localnet", "sip.conf", "pjsip.conf", "comedia", "directmedia"):
        assert word not in code, word


def test_execution_counts_and_metadata_clean():
    nbtools.assert_execution_counts_clean(read())


def test_outputs_small():
    nbtools.assert_outputs_small(NAME)


def test_recordings_present():
    found = sessions(read())
    assert [name for name, _ in found] == RECORDINGS
    for name, places in found:
        for track in TRACKS:
            assert (DATA / "recorded" / f"{name}-{track}" / "session.json").is_file(), (name, track)
            for i, place in enumerate(places):
                suffix = "" if i == 0 else f"-{place}"
                capture = DATA / "captures" / f"{name}-{track}{suffix}.pcap"
                assert capture.exists() and 0 < capture.stat().st_size < MAX_CAPTURE, capture


# -- the checks judge the lab and the answers: right answers pass, wrong ones fail ----------------
def rport_of(track, user: str) -> int:
    """The rport= of the Via in Asterisk's 200 OK to a phone's REGISTER, read from the raw text."""
    from labkit.teaching.session import Session
    sym = Session.start("02-vps-symmetric", "vps-pbx", track=track, mode="replay", capture=("lan", "internet"))
    answers = [str(sym.message(200, src="vps", place="internet", index=i)) for i in range(4)]
    answer = next(a for a in answers if f"<sip:{user}@" in a.split("\nTo:")[1].split("\n")[0])
    return int(re.search(r";rport=(\d+)", answer).group(1))


RECORDINGS = ["02-vps", "02-vps-symmetric", "02-vps-alg", "02-vps-direct", "02-two-homes",
              "02-vps-diagnose-1", "02-vps-diagnose-2", "02-vps-diagnose-3"]


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, tmp_path):
    """The answers as the grader receives them (plain values), the truth from the recordings the
    checks open themselves (checks.evaluate: what labkit grade does)."""
    from labkit.errors import LabkitError
    from labkit.grading import checks, probes
    from labkit.teaching.session import Session
    from labkit.teaching.vps_nat import VPS_FAULTS, pick_vps_fault
    sym = Session.start("02-vps-symmetric", "vps-pbx", track=track, mode="replay", capture=("lan", "internet"))
    sym_wan = sym.table("sip", "internet")
    right = {"rports": {"alice": rport_of(track, "6000"), "bob": rport_of(track, "6001")},
             "private_left_box": int(sym_wan[sym_wan.src == "198.51.100.1"].sdp_c_addr.fillna("")
                                     .str.startswith("192.168.").sum()),
             "alg_sdp_addr": "198.51.100.1",
             "alg_media_dst": "198.51.100.1", "lan_direct_dst": "192.168.0.11",
             "bob_media_dst": "192.168.1.11", "hearing": [],
             "vps_fault": pick_vps_fault()[1], "vps_fix": RIGHT_FIX[pick_vps_fault()[1]]}
    wrong = {"rports": {"alice": 5060, "bob": 5060}, "private_left_box": 0, "alg_sdp_addr": "192.168.0.12",
             "alg_media_dst": "198.51.100.10", "lan_direct_dst": "198.51.100.1",
             "bob_media_dst": "198.51.100.1", "hearing": ["bob"],
             "vps_fault": next(f for f in VPS_FAULTS if f != pick_vps_fault()[1]),
             "vps_fix": "firewall_allow:\n  - {proto: udp, ports: 5060, to: 192.168.0.11}\n"}
    results = checks.evaluate(NAME, right, track=track)
    # The probe measures a live lab (the notebook's live test runs it); here it is not run.
    assert {r.id for r in results if r.not_run} == {"diagnose-fixed"}
    assert [r.id for r in results if not r.passed and not r.not_run] == []
    assert [r.id for r in checks.evaluate(NAME, wrong, track=track) if r.passed] == []
    # the fix's text is read as data before any lab: the right one passes, the wrong one is
    # refused with the reason
    probe = checks.find(NAME, "diagnose-fixed").probe
    assert probes.validate(probe, right["vps_fix"], track)
    with pytest.raises(LabkitError, match="not a key of a rule"):
        probes.validate(probe, wrong["vps_fix"], track)
    # a missing variable is a readable failure, not a crash
    missing = checks.evaluate(NAME, {"sym": sym}, track=track)
    assert not any(r.passed for r in missing)
    assert "is not defined" in next(r for r in missing if not r.not_run).message
    # the ALG lab (media anchored, two-way) handed in as the direct-media one: its streams went to
    # Asterisk, and its only conversation was heard
    swapped = nbtools.recordings_folder(tmp_path / "swapped", track, RECORDINGS, {"02-vps-direct": "02-vps-alg"})
    failed = {r.id for r in checks.evaluate(NAME, right, track=track, data=swapped) if not r.passed}
    assert "alg-direct-media-lost" in failed
    # the one-LAN direct-media lab handed in as the two homes' one (no second home, no re-INVITE
    # there, its second call heard): both two-homes checks fail
    swapped = nbtools.recordings_folder(tmp_path / "homes", track, RECORDINGS, {"02-two-homes": "02-vps-direct"})
    failed = {r.id for r in checks.evaluate(NAME, right, track=track, data=swapped) if not r.passed}
    assert {"two-homes-media-dst", "two-homes-hearing"} <= failed
    # the unfixed lab handed in as the symmetric one: nobody heard, the rports are refused
    unfixed = nbtools.recordings_folder(tmp_path / "unfixed", track, RECORDINGS, {"02-vps-symmetric": "02-vps"})
    failed = {r.id: r.message for r in checks.evaluate(NAME, right, track=track, data=unfixed) if not r.passed}
    assert "symmetric handling is not in place" in failed["symmetric-rport"]
    # the other answers for hearing: every list but the measured one fails
    for other in (["alice"], ["alice", "bob"], "nobody"):
        judged = checks.evaluate(NAME, {**right, "hearing": other}, track=track)
        assert not next(r for r in judged if r.id == "two-homes-hearing").passed, other


@pytest.mark.parametrize("track", TRACKS)
def test_every_diagnosis_lab_replays_and_its_solution_passes(track):
    """Each fault's recording (made with a student id that draws it) replays the diagnosis
    section, and the solution names that fault; the call before the fix was silent, the one
    after it two-way."""
    import nbformat

    from labkit.teaching.session import Session
    from labkit.teaching.vps_nat import VPS_FAULTS, vps_fault_overrides
    nb = read()
    cells = code_cells(nb)
    start = next(i for i, c in enumerate(cells) if "Session.vps_diagnosis(" in c.source)
    end = next(i for i, c in enumerate(cells) if c.source == "diag.close()")
    imports = "from labkit.teaching import Session\nfrom labkit.grading import checks"
    part = [imports, *(c.source for c in cells[start:end] if "checks.run(" not in c.source)]
    for fault, student in student_ids().items():
        small = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in part], metadata=nb.metadata)
        small.cells.append(nbformat.v4.new_code_cell(
            "import json as _json\n"
            "print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in checks.run_all('02b-nat-vps') "
            "if r.id.startswith('diagnose')]))"))
        out = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": track, "LABKIT_STUDENT": student}, nb=small)
        assert errors(out) == [], (fault, errors(out))
        results = {r[0]: r for r in check_results(out)}
        assert results["diagnose-name"][1] is True, (fault, results)
        number = list(VPS_FAULTS).index(fault) + 1
        lab = Session.start(f"02-vps-diagnose-{number}", "vps-pbx", track=track, mode="replay",
                            capture=("lan", "internet"), overrides=vps_fault_overrides(fault))
        lab.recorder.replay_all()
        talks = [talk["heard"] for talk in lab.recorder.results("talk")]
        assert len(talks) == 2, fault
        assert not any(p["heard_the_other"] for p in talks[0].values()), fault
        assert all(p["heard_the_other"] for p in talks[1].values()), fault


@pytest.mark.live
@pytest.mark.parametrize("fault, phone_to_phone", [("firewall-without-rtp", "direct_media: yes"),
                                                   ("alg-with-direct-media", "sip_alg: no")])
def test_live_the_fix_must_keep_the_media_on_asterisk(fault, phone_to_phone):
    """On a fresh lab with the fault (tracks alternate): a fix that makes the call two-way phone to
    phone across the home LAN (which two homes would not have) is refused by the probe, with
    the packets counted; the right fix passes, media through Asterisk."""
    from labkit.grading import checks, probes
    from labkit.teaching.vps_nat import VPS_FAULTS
    student = student_ids()[fault]
    track = TRACKS[list(VPS_FAULTS).index(fault) % 2]
    check = checks.find(NAME, "diagnose-fixed")
    passed, detail = probes.measure(check, phone_to_phone, track, name=probes.lab_name(), student=student)
    assert not passed and "phone to phone" in detail, detail
    passed, detail = probes.measure(check, RIGHT_FIX[fault], track, name=probes.lab_name(), student=student)
    assert passed and "media through Asterisk" in detail, detail


# -- the student version: solutions removed, the notebook still goes to the end ------------------
def test_student_version_fails_checks_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)


@pytest.mark.parametrize("track", TRACKS)
def test_arp_requests_of_bobs_home(track):
    """The two homes' recording, read by labkit.teaching.two_nat.arp_requests: with direct media,
    Bob's phone asked its own network for Alice's private address, again and again, in vain; his box
    (192.168.1.254) answered the only other question."""
    from labkit.teaching.two_nat import arp_requests
    arp = arp_requests(DATA / "captures" / f"02-two-homes-{track}-home-b.pcap")
    asked = {row.asked: (row.requests, row.answered) for row in arp[arp.asker == "192.168.1.12"].itertuples()}
    assert asked["192.168.1.11"][0] >= 3 and asked["192.168.1.11"][1] is False
    assert asked["192.168.1.254"][1] is True
    assert list(arp.columns) == ["asker", "asked", "requests", "first_time", "answered"]
