"""The VPS's NAT diagnosis (notebook 02b, labkit.teaching.vps_nat) as data: each fault is a valid
lab file with one thing of the right setup wrong, the draw is stable and covers every fault, the
right fixes mend their fault in the lab file, and fix texts the exercise cannot read are refused
with the reason (no lab, no root).  That the faults break the call and the fixes mend it, on both
tracks, is tests/live/test_vps_nat_live.py."""
from __future__ import annotations

import pytest

from labkit.errors import LabStateError
from labkit.spec import load_spec
from labkit.teaching.faults import ids_drawing_each
from labkit.teaching.nat import NatTextError
from labkit.teaching.session import Session
from labkit.teaching.vps_nat import (
    VPS_FAULTS,
    VpsFixError,
    VpsNatSession,
    in_force,
    pick_vps_fault,
    read_vps_fix,
    vps_fault_overrides,
    vps_fix_overrides,
)

FIREWALL_FIX = "firewall_allow:\n  - {proto: udp, ports: 5060}\n  - {proto: udp, ports: 10000-20000}\n"
#: The fixes measured live to mend each fault (tests/live/test_vps_nat_live.py).
RIGHT_FIXES = {"no-symmetric-handling": ["symmetric: yes"],
               "alg-with-direct-media": ["sip_alg: no", "direct_media: no"],
               "firewall-without-rtp": [FIREWALL_FIX]}


def _settings(spec) -> tuple:
    """(symmetric, direct media, the box's ALG, what the VPS's firewall lets in)."""
    allow = tuple((r.proto, r.ports) for r in spec.host("vps").firewall.allow)
    return spec.pbx.nat.symmetric, spec.pbx.direct_media, spec.host("box").nat.sip_alg, allow


RIGHT_SETUP = (True, False, False, (("udp", "5060"), ("udp", "10000-20000")))


@pytest.mark.parametrize("fault", VPS_FAULTS)
def test_each_fault_is_the_right_setup_with_one_thing_wrong(fault):
    settings = _settings(load_spec("vps-pbx", vps_fault_overrides(fault)))
    wrong = [i for i, (have, right) in enumerate(zip(settings, RIGHT_SETUP)) if have != right]
    # one setting, or (the ALG fault) the ALG with the direct media it breaks
    assert wrong == {"no-symmetric-handling": [0], "alg-with-direct-media": [1, 2],
                     "firewall-without-rtp": [3]}[fault]


def test_the_draw_is_stable_per_student_and_reaches_every_fault():
    assert pick_vps_fault("ada") == pick_vps_fault("ada")
    number, fault = pick_vps_fault("ada")
    assert list(VPS_FAULTS)[number - 1] == fault
    drawing = ids_drawing_each(pick_vps_fault, VPS_FAULTS)
    assert set(drawing) == set(VPS_FAULTS)
    assert all(pick_vps_fault(student)[1] == fault for fault, student in drawing.items())


def test_the_draw_is_salted_by_the_exercise(monkeypatch):
    """Not the same fault number as the home-pbx diagnosis for every student."""
    from labkit.teaching.nat import pick_nat_fault
    ids = [f"student-{i}" for i in range(40)]
    assert [pick_vps_fault(s)[0] for s in ids] != [pick_nat_fault(s)[0] for s in ids]
    monkeypatch.setenv("LABKIT_STUDENT", "ada")
    assert pick_vps_fault() == pick_vps_fault("ada")


@pytest.mark.parametrize("fault", VPS_FAULTS)
def test_the_right_fixes_mend_their_fault_in_the_lab_file(fault):
    for fix in RIGHT_FIXES[fault]:
        settings = _settings(load_spec("vps-pbx", vps_fix_overrides(fix, fault)))
        if fault == "alg-with-direct-media":  # either half of the pair, the other left as it was
            assert settings[0] and settings[3] == RIGHT_SETUP[3] and not (settings[1] and settings[2])
        else:
            assert settings == RIGHT_SETUP, fix


@pytest.mark.parametrize("fault", VPS_FAULTS)
def test_another_faults_fix_leaves_the_fault(fault):
    fault_settings = _settings(load_spec("vps-pbx", vps_fault_overrides(fault)))
    for other, fixes in RIGHT_FIXES.items():
        if other != fault:
            for fix in fixes:
                assert _settings(load_spec("vps-pbx", vps_fix_overrides(fix, fault))) != RIGHT_SETUP
    assert fault_settings != RIGHT_SETUP


def test_a_fix_reads_every_key_into_its_place():
    keys = read_vps_fix("symmetric: yes\ndirect_media: no\nsip_alg: off\n" + FIREWALL_FIX)
    assert keys == {"symmetric": True, "direct_media": False, "sip_alg": False,
                    "firewall_allow": [{"proto": "udp", "ports": "5060"},
                                       {"proto": "udp", "ports": "10000-20000"}]}
    spec = load_spec("vps-pbx", vps_fix_overrides("sip_alg: yes\ndirect_media: yes", "no-symmetric-handling"))
    assert _settings(spec)[:3] == (False, True, True)
    assert "sip_alg = yes" in in_force(spec) and "udp 10000-20000" in in_force(spec)


@pytest.mark.parametrize(("text", "named"), [
    ("nat: force_rport,comedia", "'nat': not a key"),                  # sip.conf's option, not a lab-file key
    ("symmetric: force_rport", "symmetric: 'force_rport' is not yes or no"),
    ('direct_media: "no"', "direct_media: 'no' is not yes or no"),       # a quoted word is not a boolean
    ("sip_alg: 1", "sip_alg: 1 is not yes or no"),
    ("symmetric yes", "a YAML mapping"),                               # no colon: one word, not key: value
    ("symmetric: [yes", "not valid YAML"),
    ("", "should be text"),
    ("   \n", "should be text"),
    ("firewall_allow: 10000-20000", "firewall_allow: a list of rules"),
    ("firewall_allow:\n  - {proto: udp, port: 10000}", "port is not a key of a rule"),
    ("firewall_allow:\n  - {proto: icmp, ports: '10000-20000'}", "firewall_allow rule 1 proto: input should be"),
    ("firewall_allow:\n  - {proto: udp, ports: 10000 to 20000}", "rule 1 ports"),
])
def test_texts_the_exercise_cannot_read_are_refused_with_the_reason(text, named):
    with pytest.raises(VpsFixError) as caught:
        vps_fix_overrides(text, "firewall-without-rtp")
    assert named in caught.value.message


def test_the_error_is_the_nat_exercises_kind_and_an_unknown_fault_is_refused():
    assert issubclass(VpsFixError, NatTextError) and issubclass(VpsFixError, LabStateError)
    with pytest.raises(VpsFixError, match="not one of the faults"):
        vps_fault_overrides("no-such-fault")
    with pytest.raises(VpsFixError):
        read_vps_fix(None)  # type: ignore[arg-type]


def test_the_session_has_the_diagnosis():
    assert issubclass(Session, VpsNatSession)
    assert callable(Session.vps_diagnosis) and callable(Session.fix_vps)


def test_in_replay_the_recorded_fix_is_shown_and_another_one_is_refused_with_the_reason(tmp_path):
    import json

    from labkit.teaching.recorder import Recorder
    fault = "no-symmetric-handling"
    shown = in_force(load_spec("vps-pbx", vps_fix_overrides("symmetric: yes", fault)))
    path = tmp_path / "session.json"
    path.write_text(json.dumps({"entries": [{"kind": "fix-vps", "args": {"fix": {"symmetric": True}},
                                             "result": shown}]}))
    session = Session("vf-unit", "vps-pbx", "modern", "replay", vps_fault_overrides(fault))
    session.recorder = Recorder(path, replay=True)
    assert str(session.fix_vps("symmetric: yes")) == shown
    with pytest.raises(VpsFixError, match="another fix"):
        session.fix_vps("sip_alg: yes")
    with pytest.raises(VpsFixError, match="not a key"):  # the text is read before the recording
        session.fix_vps("nat: yes")
