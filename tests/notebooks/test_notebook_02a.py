"""Notebook 02a (the PBX at home behind the box): stored outputs, replay and live on both tracks, hygiene.

The same conventions as ``test_notebooks.py`` (notebooks 00 and 01):

* regression: re-executed in **replay** mode (modern track), the notebook reproduces the
  outputs committed with it (pytest-notebook; images and volatile strings ignored);
  regenerate them with ``.venv/bin/python scripts/record_notebooks.py 02a-nat-home --store-replay-outputs``;
* replay on the **legacy** track runs top to bottom, every check passes (hidden ones included);
* **live** (``-m live``, root): real labs on both tracks, every check passes;
* hygiene: short cells, no function definitions, objectives first, clean metadata, small
  outputs, recordings (and both sides of the box's captures) present for every session;
* the checks tell right answers from wrong ones, and the student version (solutions removed)
  fails its checks without breaking anything else.
"""
from __future__ import annotations

import json
import re

import pytest

from labkit import tracks

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

NAME = "02a-nat-home"
PATH = path_of(NAME)
TIMEOUT = 180                  # per cell: a live step restarts Asterisk, a talk lasts ~5 s


# -- small helpers -----------------------------------------------------------------------------
def read():
    return nbtools.read(NAME)


def execute(env: dict[str, str], *, report_checks: bool = False, nb=None, allow_errors=False):
    return nbtools.execute(NAME, env, report_checks=report_checks, timeout=TIMEOUT, nb=nb,
                           allow_errors=allow_errors)


def sessions(nb) -> list[tuple[str, tuple[str, ...]]]:
    """(recording name, captured places) of every Session.start of the notebook."""
    out = []
    for cell in code_cells(nb):
        for line in cell.source.splitlines():
            name = re.search(r'Session\.start\(\s*"([^"]+)"', line)
            if name:
                capture = re.search(r"capture=\(([^)]*)\)", line)
                places = tuple(re.findall(r'"([^"]+)"', capture.group(1) if capture else "")) or ("lan",)
                out.append((name.group(1), places))
            diagnosis = re.search(r'Session\.nat_diagnosis\(\s*"([^"]+)"', line)
            if diagnosis:  # one recording per fault: every student's lab replays
                from labkit.teaching.nat import NAT_FAULTS
                out += [(f"{diagnosis.group(1)}-{n}", ("lan", "internet")) for n in range(1, len(NAT_FAULTS) + 1)]
    return out


def student_ids() -> dict[str, str]:
    """A student id per NAT fault (the default student's first)."""
    from labkit.teaching.faults import ids_drawing_each
    from labkit.teaching.nat import NAT_FAULTS, pick_nat_fault
    return ids_drawing_each(pick_nat_fault, NAT_FAULTS)


def right_fix(fault: str) -> str:
    return FORWARDS if fault == "sip-forward-to-phone" else NAT_SIP


# -- (1) regression: stored outputs == a fresh replay run (modern track) --------------------------
def test_stored_outputs_match_replay(monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, PATH, TIMEOUT)


def test_stored_outputs_show_the_measurements():
    """What the prose claims is in the stored (modern) outputs."""
    text = outputs_text(read())
    assert "Track: **modern**" in text and "Mode: **replay**" in text
    assert "dnat to 192.168.0.10" in text                      # fix A's rules
    assert "external_media_address = 203.0.113.1" in text      # fix B
    assert "external_media_address = voip.home.example" in text
    assert "SIP/2.0 501 Not Implemented" in text                # the default student's diagnosis lab
    assert "✗" not in text


# -- (2) replay on the legacy track ----------------------------------------------------------------
def test_replay_legacy_runs():
    nb = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": "legacy"}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "externip = 203.0.113.1" in text and "localnet = 192.168.0.0/24" in text
    assert "externhost = voip.home.example" in text
    assert "external_media_address" not in text
    assert "✗" not in text, "a check cell failed"
    # The configure exercises' probes need a live lab: in replay they say so and count nothing.
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
    assert len(results) >= 10
    assert [r for r in results if not r[1]] == []
    assert {"diagnose-name", "diagnose-fixed", "fix-a-forwards", "fix-b-nat-lines"} <= {r[0] for r in results}


# -- (4) hygiene -----------------------------------------------------------------------------------
def test_cells_short_and_without_functions():
    nbtools.assert_cells_short_and_plain(read())


def test_structure():
    nb = read()
    assert nb.cells[0].cell_type == "markdown" and "**Objectives.**" in nb.cells[0].source
    cells = code_cells(nb)
    first, last = cells[0].source, cells[-1].source
    assert "from labkit.teaching import Session" in first and "from labkit.grading import checks" in first
    assert re.search(r'session = Session\.start\("02-[\w-]+", "home-pbx"', first)
    assert "session.banner()" in first
    assert "session.close()" in last
    # every session started is closed
    started = re.findall(r"^(\w+) = Session\.(?:start|nat_diagnosis)\(", "\n".join(c.source for c in cells), re.M)
    closed = re.findall(r"^(\w+)\.close\(\)", "\n".join(c.source for c in cells), re.M)
    assert sorted(started) == sorted(closed)
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert len(exercises) >= 5
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    registered = checks.registered(NAME)
    shown = set(re.findall(r'checks\.run\(\s*"02a-nat-home",\s*"([^"]+)"', "\n".join(c.source for c in cells)))
    assert shown == {c.id for c in registered}
    assert any(c.hidden for c in registered), "no hidden check"
    # the report's French terms, where they help
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for term in ("la box", "redirection de ports", "c'est le cœur du défi", "DDNS",
                 "adresse IP publique dynamique"):
        assert term in prose, term


def test_code_is_track_neutral():
    """Track-specific names live in the markdown mapping tables and in the solution of the NAT-lines
    exercise (which asks for both files), not in the code cells that run the lab."""
    code = "\n".join(c.source for c in code_cells(read()) if "### BEGIN SOLUTION" not in c.source)
    for word in ("externip", "localnet", "external_media_address", "sip.conf", "pjsip.conf", "comedia"):
        assert word not in code, word


def test_execution_counts_and_metadata_clean():
    nbtools.assert_execution_counts_clean(read())


def test_outputs_small():
    nbtools.assert_outputs_small(NAME)


def test_recordings_present():
    found = sessions(read())
    assert len(found) >= 6
    for name, places in found:
        for track in TRACKS:
            assert (DATA / "recorded" / f"{name}-{track}" / "session.json").is_file(), (name, track)
            for i, place in enumerate(places):
                suffix = "" if i == 0 else f"-{place}"
                capture = DATA / "captures" / f"{name}-{track}{suffix}.pcap"
                assert capture.exists() and 0 < capture.stat().st_size < MAX_CAPTURE, capture


# -- the checks judge the lab and the answers: right answers pass, wrong ones fail ----------------
PROBED = {"fix-a-forwards", "fix-b-nat-lines", "diagnose-fixed"}
FORWARDS = """
- {proto: udp, ports: 5060, to: 192.168.0.10}
- {proto: udp, ports: [10000, 20000], to: 192.168.0.10}
- {proto: tcp, ports: 5061, to: 192.168.0.10}
"""
NAT_SIP = "[general]\nexternip = 203.0.113.1\nlocalnet = 192.168.0.0/255.255.255.0\n"
NAT_PJSIP = ("[transport-udp]\nexternal_media_address = 203.0.113.1\nexternal_signaling_address = 203.0.113.1\n"
             "local_net = 192.168.0.0/24\n")
RECORDINGS = ["02-no-forward", "02-forward", "02-long-call", "02-external", "02-ddns",
              "02-diagnose-1", "02-diagnose-2", "02-diagnose-3"]


@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, tmp_path):
    """The answers as the grader receives them (plain values), the truth from the recordings the
    checks open themselves (checks.evaluate: what labkit grade does)."""
    from labkit.grading import checks
    from labkit.teaching.nat import NAT_FAULTS, pick_nat_fault
    from labkit.teaching.session import Session

    def replayed(name, lab, places):  # the test's own sessions, to compute the right answers
        return Session.start(name, lab, track=track, mode="replay", capture=places)

    home = ("lan", "internet")
    session = replayed("02-no-forward", "home-pbx", home)
    bob = session.address("bob")
    wan = session.table("sip", "internet")
    right = {"unanswered_registers": int(((wan.method == "REGISTER") & (wan.src == bob)).sum()),
             "leaked_sdp_addr": "192.168.0.10", "deaf_phone": "alice",
             "my_forwards": FORWARDS, "nat_sip": NAT_SIP, "nat_pjsip": NAT_PJSIP, "private_sdp_out": 0,
             "moved_register": "unanswered", "drop_after": 32, "ok_sent": 11, "ddns_register_to": "203.0.113.2",
             "unrestarted_sdp_addr": "203.0.113.2" if track == "legacy" else "203.0.113.1",
             "unrestarted_deaf": "none" if track == "legacy" else "alice",
             "fault": pick_nat_fault()[1], "fix": right_fix(pick_nat_fault()[1])}
    wrong = {"unanswered_registers": 0, "leaked_sdp_addr": "203.0.113.1", "deaf_phone": "bob",
             "my_forwards": "- {proto: udp, ports: 5060, to: 203.0.113.1}",
             "nat_sip": "[general]\nexternip = 192.168.0.10\nlocalnet = 192.168.0.1/24\n",
             "nat_pjsip": "[transport-udp]\nexternal_media_address = 203.0.113.1\n#include evil.conf\n",
             "private_sdp_out": 2, "moved_register": "rejected", "drop_after": 45, "ok_sent": 4,
             "ddns_register_to": "203.0.113.1",
             # the other generation's behaviour: right for one track is wrong for the other
             "unrestarted_sdp_addr": "203.0.113.1" if track == "legacy" else "203.0.113.2",
             "unrestarted_deaf": "alice" if track == "legacy" else "none",
             "fault": next(f for f in NAT_FAULTS if f != pick_nat_fault()[1]),
             "fix": "- {proto: udp, ports: 5060, to: 203.0.113.1}"}
    results = checks.evaluate(NAME, right, track=track)
    # Probes measure a live lab (the notebook's live test runs them); here they are not run.
    assert {r.id for r in results if r.not_run} <= PROBED
    assert [r.id for r in results if not r.passed and not r.not_run] == []
    assert [r.id for r in checks.evaluate(NAME, wrong, track=track) if r.passed] == []
    # The probes' texts are read as data before any lab: the right ones pass, the wrong ones are
    # refused with the reason.
    from labkit.errors import LabkitError
    from labkit.grading import probes
    config = tracks.get(track).sip_config
    for id, variable, why in (("fix-a-forwards", "my_forwards", "not on the box's LAN"),
                              ("diagnose-fixed", "fix", "not on the box's LAN"),
                              ("fix-b-nat-lines", "nat_sip" if config == "sip.conf" else "nat_pjsip",
                               "not a network" if config == "sip.conf" else "directives")):
        probe = checks.find(NAME, id).probe
        assert probes.validate(probe, right[variable], track)
        with pytest.raises(LabkitError, match=re.escape(why)):
            probes.validate(probe, wrong[variable], track)
    # a missing variable is a readable failure, not a crash
    missing = checks.evaluate(NAME, {"session": session}, track=track)
    assert not any(r.passed for r in missing)
    assert "is not defined" in next(r for r in missing if not r.not_run).message
    # a lab that was not fixed fails the fix's check, whatever the answer: the one-way call of
    # fix A handed in as fix B's recording
    unfixed = nbtools.recordings_folder(tmp_path / "unfixed", track, RECORDINGS, {"02-external": "02-forward"})
    failed = {r.id: r.message for r in checks.evaluate(NAME, right, track=track, data=unfixed)
              if not r.passed and not r.not_run}
    assert set(failed) == {"fix-b-no-private-sdp"}
    assert "still announce a private address" in failed["fix-b-no-private-sdp"]
    # a short call handed in as the call nobody hung up: Asterisk never ended it
    short = nbtools.recordings_folder(tmp_path / "short", track, RECORDINGS, {"02-long-call": "02-forward"})
    failed = {r.id: r.message for r in checks.evaluate(NAME, right, track=track, data=short)
              if not r.passed and not r.not_run}
    assert set(failed) >= {"long-call-drop"} and "did not end the call" in failed["long-call-drop"]
    # the DDNS lab of a restarted Asterisk handed in (fix B's, no move, no unrestarted call): fails
    swapped = nbtools.recordings_folder(tmp_path / "ddns", track, RECORDINGS, {"02-ddns": "02-external"})
    failed = {r.id for r in checks.evaluate(NAME, right, track=track, data=swapped) if not r.passed}
    assert "ddns-unrestarted" in failed
    # a session object in the student's namespace is never read: fix A's handed in as fix_b
    # changes nothing (the truth is the recording the check opens)
    assert checks.run(NAME, "fix-b-no-private-sdp", {**right, "fix_b": session}).passed


@pytest.mark.parametrize("track", TRACKS)
def test_every_diagnosis_lab_replays_and_its_solution_passes(track):
    """Each fault's recording (made with a student id that draws it) replays the diagnosis
    section, and the solution names that fault; another fault's lab in its place fails the name."""
    import nbformat

    from labkit.teaching.nat import NAT_FAULTS, nat_fault_overrides
    from labkit.teaching.session import Session
    nb = read()
    cells = code_cells(nb)
    start = next(i for i, c in enumerate(cells) if "Session.nat_diagnosis(" in c.source)
    imports = "from labkit.teaching import Session\nfrom labkit.grading import checks"
    part = [imports, *(c.source for c in cells[start:start + 9])]
    for fault, student in student_ids().items():
        small = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in part], metadata=nb.metadata)
        small.cells.append(nbformat.v4.new_code_cell(
            "import json as _json\n"
            "print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in checks.run_all('02a-nat-home') "
            "if r.id.startswith('diagnose')]))"))
        out = execute({"LABKIT_MODE": "replay", "LABKIT_TRACK": track, "LABKIT_STUDENT": student}, nb=small)
        assert errors(out) == [], (fault, errors(out))
        results = {r[0]: r for r in check_results(out)}
        assert results["diagnose-name"][1] is True, (fault, results)
        # as recorded live: the call before the fix was not two-way, the one after it was
        number = list(NAT_FAULTS).index(fault) + 1
        lab = Session.start(f"02-diagnose-{number}", "home-pbx", track=track, mode="replay",
                            capture=("lan", "internet"), overrides=nat_fault_overrides(fault))
        lab.recorder.replay_all()
        talks = [talk["heard"] for talk in lab.recorder.results("talk")]
        assert len(talks) == 2, fault
        assert not all(p["heard_the_other"] for p in talks[0].values()), fault
        assert all(p["heard_the_other"] for p in talks[1].values()), fault


@pytest.mark.live
@pytest.mark.parametrize("fault", ["sip-forward-to-phone", "private-address-announced", "wrong-public-address"])
def test_live_each_fault_breaks_the_call_and_only_its_own_fix_mends_it(fault):
    """On a fresh lab with the fault (tracks alternate): the other kind of fix leaves it broken,
    the right one makes Bob register, the call two-way and nothing private leave the box."""
    from labkit.grading import checks, probes
    from labkit.teaching.nat import NAT_FAULTS
    student = student_ids()[fault]
    track = TRACKS[list(NAT_FAULTS).index(fault) % 2]
    check = checks.find(NAME, "diagnose-fixed")
    other = NAT_SIP if fault == "sip-forward-to-phone" else FORWARDS
    passed, detail = probes.measure(check, other, track, name=probes.lab_name(), student=student)
    assert not passed, detail
    passed, detail = probes.measure(check, right_fix(fault), track, name=probes.lab_name(), student=student)
    assert passed, detail


# -- the student version: solutions removed, the notebook still goes to the end ------------------
def test_student_version_fails_checks_gracefully():
    assert_student_version_degrades_gracefully(NAME, timeout=TIMEOUT)
