"""Notebook 00 (orientation): its checks judge answers, not code.

Stored outputs, replay on both tracks, live runs and hygiene of 00 and 01 are shared in
test_notebooks.py; what is particular to notebook 00's exercises is here.
"""
from __future__ import annotations

import pytest

from . import nbtools
from .nbtools import TRACKS, check_results, code_cells, errors, execute, outputs_text, read


# -- the checks judge answers, not code: right answers pass, wrong ones fail -------------------
@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, tmp_path):
    """The answers as the grader receives them (plain values, JSON round trip), the truth from
    the recordings the checks open themselves (checks.evaluate: what labkit grade does)."""
    from labkit.grading import checks
    from labkit.teaching.session import Session
    session = Session.start("00-orientation", track=track, mode="replay")  # the test's, for the answers
    right = {"sip_port": 5060,
             "asterisk_rtp_ports": set(session.streams[session.streams.src == "192.168.0.10"].sport),
             "rtp_range": [10000, 20000], "register_counts": {"alice": 2, "bob": 2}, "challenge_status": 401}
    wrong = {"sip_port": 5061, "asterisk_rtp_ports": {5060},
             "rtp_range": "yes", "register_counts": {"alice": 1, "bob": 1}, "challenge_status": 407}
    from labkit.teaching.orientation import pick_registration_fault
    fault = pick_registration_fault()[1]
    right |= {"fault": fault, "fix": right_registration_fix(fault), "carol_sip": CAROL["sip.conf"],
              "carol_pjsip": CAROL["pjsip.conf"]}
    wrong |= {"fault": next(f for f in FAULTS if f != fault), "fix": "secret: Qv7-sample-42",
              "carol_sip": "[6002]\nnat = yes\n", "carol_pjsip": "[6002]\ntype = endpoint\n"}
    results = checks.evaluate("00-orientation", right, track=track)
    assert {r.id for r in results if r.not_run} == {"diagnose-fixed", "carol-account"}  # live probes
    assert all(r.passed for r in results if not r.not_run)
    assert not any(r.passed for r in checks.evaluate("00-orientation", wrong, track=track))
    # a missing variable is a readable failure, not a crash
    missing = checks.evaluate("00-orientation", {"session": session}, track=track)
    assert not any(r.passed for r in missing) and "is not defined" in missing[0].message
    # the same right answers against another lab's capture (a swapped artifact): Asterisk's RTP
    # ports of the first call are not those of 00-orientation
    swapped = nbtools.recordings_folder(tmp_path / "swapped", track, ["00-orientation"],
                                        {"00-orientation": "01-first-call"})
    failed = {r.id for r in checks.evaluate("00-orientation", right, track=track, data=swapped) if not r.passed}
    assert "asterisk-rtp-ports" in failed


# -- the diagnosis of notebook 00: a registration fault per student --------------------------------
def registration_student_ids() -> dict[str, str]:
    """A student id per registration fault (the default student's first)."""
    from labkit.teaching.faults import ids_drawing_each
    from labkit.teaching.orientation import REGISTRATION_FAULTS, pick_registration_fault
    return ids_drawing_each(pick_registration_fault, REGISTRATION_FAULTS)


def right_registration_fix(fault: str) -> str:
    from labkit.teaching.orientation import ASTERISK_SECRET
    return {"wrong-password": f"password: {ASTERISK_SECRET}", "unknown-user": 'user: "6001"',
            "registrar-is-alice": "registrar: 192.168.0.10"}[fault]


FAULTS = ["wrong-password", "unknown-user", "registrar-is-alice"]


@pytest.mark.parametrize("track", TRACKS)
def test_diagnosis_checks_tell_right_from_wrong(track):
    """The name's check against the student's own recording; the fix is read as data before any
    lab (the probe itself runs live)."""
    from labkit.errors import LabkitError
    from labkit.grading import checks, probes
    from labkit.teaching.orientation import pick_registration_fault
    fault = pick_registration_fault()[1]
    right = {"fault": fault, "fix": right_registration_fix(fault)}
    wrong = {"fault": next(f for f in FAULTS if f != fault), "fix": "secret: Qv7-sample-42"}
    ids = {"diagnose-name", "diagnose-fixed"}
    results = {r.id: r for r in checks.evaluate("00-orientation", right, track=track) if r.id in ids}
    assert results["diagnose-name"].passed and results["diagnose-fixed"].not_run
    assert not any(r.passed for r in checks.evaluate("00-orientation", wrong, track=track) if r.id in ids)
    probe = checks.find("00-orientation", "diagnose-fixed").probe
    assert probes.validate(probe, right["fix"], track)
    with pytest.raises(LabkitError, match="not a key this exercise lets you change"):
        probes.validate(probe, wrong["fix"], track)


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("fault", FAULTS)
def test_each_registration_diagnosis_lab_replays_and_its_solution_passes(fault, track):
    """The fault's recording (made with a student id that draws it) replays the diagnosis
    section of notebook 00; Bob does not register; the solution names that fault; after the
    fix Bob registers."""
    import nbformat
    nb = read("00-orientation")
    cells = code_cells(nb)
    start = next(i for i, c in enumerate(cells) if "Session.registration_diagnosis(" in c.source)
    end = next(i for i, c in enumerate(cells) if 'checks.run("00-orientation", "diagnose-fixed")' in c.source)
    imports = ("from labkit.teaching import Session\nfrom labkit.grading import checks\n"
               "from labkit.analysis import plots")
    part = [imports, *(c.source for c in cells[start:end + 1]), "broken.close()"]
    small = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in part], metadata=nb.metadata)
    small.cells.append(nbformat.v4.new_code_cell(
        "import json as _json\n"
        "print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in checks.run_all('00-orientation') "
        "if r.id.startswith('diagnose')]))"))
    out = execute("00-orientation", {"LABKIT_MODE": "replay", "LABKIT_TRACK": track,
                                     "LABKIT_STUDENT": registration_student_ids()[fault]}, nb=small)
    assert errors(out) == [], (fault, errors(out))
    results = {r[0]: r for r in check_results(out)}
    assert results["diagnose-name"][1] is True, (fault, results)
    texts = {c.source: outputs_text(nbformat.v4.new_notebook(cells=[c])) for c in code_cells(out)}
    assert "(True, False)" in texts['broken.register("alice"), broken.register("bob")']
    assert "True" in texts['broken.register("bob")']


@pytest.mark.live
@pytest.mark.parametrize("fault", FAULTS)
def test_live_each_registration_fault_keeps_bob_out_and_only_its_own_fix_mends_it(fault):
    """On a fresh first-call lab with the fault (tracks alternate): another fault's fix leaves
    Bob unregistered, the right one makes his REGISTER accepted."""
    from labkit.grading import checks, probes
    student = registration_student_ids()[fault]
    track = TRACKS[FAULTS.index(fault) % 2]
    check = checks.find("00-orientation", "diagnose-fixed")
    other = right_registration_fix(next(f for f in FAULTS if f != fault))
    passed, detail = probes.measure(check, other, track, name=probes.lab_name(), student=student)
    assert not passed, detail
    passed, detail = probes.measure(check, right_registration_fix(fault), track, name=probes.lab_name(),
                                    student=student)
    assert passed, detail


# -- configure: Carol's account from the student's lines ------------------------------------------------
CAROL = {"sip.conf": "[6002]\ntype = friend\nhost = dynamic\nsecret = Carol-lab-2026.pw\ncontext = work\n",
         "pjsip.conf": "[6002]\ntype = endpoint\ncontext = work\nauth = 6002-auth\naors = 6002\n\n"
                       "[6002-auth]\ntype = auth\nauth_type = userpass\nusername = 6002\n"
                       "password = Carol-lab-2026.pw\n\n"
                       "[6002]\ntype = aor\nmax_contacts = 1\n"}


@pytest.mark.parametrize("track", TRACKS)
def test_carol_account_is_read_as_data_before_any_lab(track):
    from labkit import tracks
    from labkit.errors import LabkitError
    from labkit.grading import checks, probes
    probe = checks.find("00-orientation", "carol-account").probe
    config = tracks.get(track).sip_config
    assert probes.validate(probe, CAROL[config], track)["phones"][-1] == {"name": "carol", "host": "carol",
                                                                          "extension": "6002"}
    with pytest.raises(LabkitError, match="not one of the options"):
        probes.validate(probe, CAROL[config] + "\nexten = 6002,1,Hangup()\n", track)


@pytest.mark.live
@pytest.mark.parametrize(("track", "right"), [("legacy", True), ("modern", False), ("modern", True)])
def test_live_carol_account_graded_by_its_probe(track, right):
    """On a fresh lab from the student's lines: the right account registers and Bob's call to
    6002 is two-way; a valid account under another extension (6020) registers, but 6002 is
    nobody's, and the probe says so."""
    from labkit import tracks
    from labkit.grading import checks, probes
    config = tracks.get(track).sip_config
    text = CAROL[config] if right else CAROL[config].replace("6002", "6020")
    passed, detail = probes.measure(checks.find("00-orientation", "carol-account"), text, track,
                                    name=probes.lab_name())
    assert passed is right, detail
    if not right:
        assert "registered as 6020" in detail, detail
