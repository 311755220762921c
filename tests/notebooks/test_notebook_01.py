"""Notebook 01 (the first call): its checks judge answers, not code; the diagnosis lab.

Stored outputs, replay on both tracks, live runs and hygiene of 00 and 01 are shared in
test_notebooks.py; what is particular to notebook 01's exercises is here.
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
    anchored = Session.start("01-first-call", track=track, mode="replay")
    direct = Session.start("01-direct-media", track=track, mode="replay", overrides={"pbx": {"direct_media": True}})
    to_alice = anchored.streams[anchored.streams.dst == "192.168.0.11"].sort_values("packets").iloc[-1]
    from_bob = direct.streams[direct.streams.src == "192.168.0.12"].sort_values("packets").iloc[-1]
    right = {"alice_audio_from": f"{to_alice.src}:{to_alice.sport}", "n_streams": len(anchored.streams),
             "n_legs": 2, "reinvite_sdp_addr": f"{from_bob.dst}:{from_bob.dport}",
             "bob_rtp_to": f"{from_bob.dst}:{from_bob.dport}", "n_reinvites": 3, "n_channels_direct": 2,
             "direct_sip": RIGHT_DIRECT["legacy"], "direct_pjsip": RIGHT_DIRECT["modern"]}
    wrong = {"alice_audio_from": "192.168.0.10", "n_streams": 2, "n_legs": 1,   # the address alone: not enough
             "reinvite_sdp_addr": "192.168.0.11", "bob_rtp_to": f"192.168.0.10:{to_alice.sport}",
             "n_reinvites": 0, "n_channels_direct": 0,
             "direct_sip": "[general]\nallow = ulaw\n", "direct_pjsip": "[general]\ndirect_media = yes\n"}
    from labkit.teaching.first_call import CALL_FAULTS, pick_call_fault
    fault = pick_call_fault()[1]
    right |= {"fault": fault, "fix": RIGHT_CALL_FIX[fault]}
    wrong |= {"fault": next(f for f in CALL_FAULTS if f != fault), "fix": "secret: Qv7-sample-42"}
    results = checks.evaluate("01-first-call", right, track=track)
    # The probe measures a live lab (the live tests run it); here it is not run.
    assert {r.id for r in results if r.not_run} == {"diagnose-fixed", "direct-media-lines"}
    assert [r.id for r in results if not r.passed and not r.not_run] == []
    assert [r.id for r in checks.evaluate("01-first-call", wrong, track=track) if r.passed] == []
    # The fix's text is read as data before any lab: the right one passes, a wrong one is refused.
    from labkit.errors import LabkitError
    from labkit.grading import probes
    probe = checks.find("01-first-call", "diagnose-fixed").probe
    assert probes.validate(probe, right["fix"], track)
    with pytest.raises(LabkitError, match="not a key this exercise lets you change"):
        probes.validate(probe, wrong["fix"], track)
    # the direct-media answers against the anchored call (a swapped artifact) fail
    swapped = nbtools.recordings_folder(tmp_path / "swapped01", track, ["01-first-call", "01-direct-media"],
                                        {"01-direct-media": "01-first-call"})
    failed = {r.id for r in checks.evaluate("01-first-call", right, track=track, data=swapped) if not r.passed}
    assert {"direct-path", "reinvite"} <= failed


# -- the diagnosis of notebook 01: a fault of the first call per student ---------------------------
RIGHT_CALL_FIX = {"asterisk-on-another-port": "sip_port: 5060", "bob-in-lobby-context": "context: work",
                  "asterisk-insists-on-srtp": 'encryption: "no"'}


def call_student_ids() -> dict[str, str]:
    """A student id per first-call fault (the default student's first)."""
    from labkit.teaching.faults import ids_drawing_each
    from labkit.teaching.first_call import CALL_FAULTS, pick_call_fault
    return ids_drawing_each(pick_call_fault, CALL_FAULTS)


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("fault", ["asterisk-on-another-port", "bob-in-lobby-context", "asterisk-insists-on-srtp"])
def test_each_call_diagnosis_lab_replays_and_its_solution_passes(fault, track):
    """The fault's recording (made with a student id that draws it) replays the diagnosis
    section of notebook 01; the solution names that fault; after the fix, Bob's call is two-way."""
    import nbformat
    nb = read("01-first-call")
    cells = code_cells(nb)
    start = next(i for i, c in enumerate(cells) if "Session.call_diagnosis(" in c.source)
    end = next(i for i, c in enumerate(cells) if "broken.close()" in c.source)
    imports = "from labkit.teaching import Session\nfrom labkit.grading import checks"
    part = [imports, *(c.source for c in cells[start:end + 1])]
    small = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in part], metadata=nb.metadata)
    small.cells.append(nbformat.v4.new_code_cell(
        "import json as _json\n"
        "print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in checks.run_all('01-first-call') "
        "if r.id.startswith('diagnose')]))"))
    out = execute("01-first-call", {"LABKIT_MODE": "replay", "LABKIT_TRACK": track,
                                    "LABKIT_STUDENT": call_student_ids()[fault]}, nb=small)
    assert errors(out) == [], (fault, errors(out))
    results = {r[0]: r for r in check_results(out)}
    assert results["diagnose-name"][1] is True, (fault, results)
    text = outputs_text(out)
    assert "heard_the_other" in text
    after = next(c for c in code_cells(out) if 'broken.register("alice"), broken.register("bob")' in c.source)
    heard = outputs_text(nbformat.v4.new_notebook(cells=[after]))
    assert "(True,\n True," in heard and heard.count("True") == 4, heard  # registered, both heard


@pytest.mark.live
@pytest.mark.parametrize("fault", ["asterisk-on-another-port", "bob-in-lobby-context", "asterisk-insists-on-srtp"])
def test_live_each_call_diagnosis_fault_breaks_the_call_and_only_its_own_fix_mends_it(fault):
    """On a fresh first-call lab with the fault (tracks alternate): another fault's fix leaves
    the call broken, the right one makes Bob register and his call to Alice two-way."""
    from labkit.grading import checks, probes
    from labkit.teaching.first_call import CALL_FAULTS
    student = call_student_ids()[fault]
    track = TRACKS[list(CALL_FAULTS).index(fault) % 2]
    check = checks.find("01-first-call", "diagnose-fixed")
    other = next(text for name, text in RIGHT_CALL_FIX.items() if name != fault)
    passed, detail = probes.measure(check, other, track, name=probes.lab_name(), student=student)
    assert not passed, detail
    passed, detail = probes.measure(check, RIGHT_CALL_FIX[fault], track, name=probes.lab_name(), student=student)
    assert passed, detail


# -- configure: direct media from the student's lines ------------------------------------------------
RIGHT_DIRECT = {"legacy": "[general]\ndirectmedia = yes\n",
                "modern": "[6000]\ndirect_media = yes\n[6001]\ndirect_media = yes\n"}
#: Valid lines that leave the media on Asterisk: the kit's own default (the report's fix), and
#: direct media allowed for one phone only.
WRONG_DIRECT = {"legacy": "[6000]\ndirectmedia = yes\n",
                "modern": "[6000]\ndirect_media = no\n[6001]\ndirect_media = no\n"}


@pytest.mark.live
@pytest.mark.parametrize(("track", "right"), [("legacy", True), ("modern", False)])
def test_live_direct_media_lines_graded_by_their_probe(track, right):
    """On a fresh first-call lab from the student's lines (tracks alternate): the right lines
    make Asterisk re-INVITE both phones and the RTP flow phone to phone; lines that leave a
    phone anchored keep the media on Asterisk, and the probe says so."""
    from labkit.grading import checks, probes
    check = checks.find("01-first-call", "direct-media-lines")
    text = (RIGHT_DIRECT if right else WRONG_DIRECT)[track]
    passed, detail = probes.measure(check, text, track, name=probes.lab_name())
    assert passed is right, detail
    if not right:
        assert "no re-INVITE" in detail, detail


@pytest.mark.parametrize("track", TRACKS)
def test_direct_media_lines_replay_only_what_was_recorded(track):
    """In replay, the right lines apply the recorded change (the option as rendered); lines that
    leave the media anchored are not shown the recorded direct-media lab: they are told why."""
    from labkit.teaching.first_call import DirectMediaTextError
    from labkit.teaching.session import Session
    direct = Session.start("01-direct-media", track=track, mode="replay")
    config = "sip_conf" if track == "legacy" else "pjsip_conf"
    with pytest.raises(DirectMediaTextError, match="replay can only show what was recorded"):
        direct.configure_direct_media(**{config: WRONG_DIRECT[track]})
    shown = str(direct.configure_direct_media(**{config: RIGHT_DIRECT[track]}))
    assert shown.replace(" ", "") == ("directmedia=yes" if track == "legacy" else "direct_media=yes")
