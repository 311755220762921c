"""The first call's diagnosis (notebook 01, labkit.teaching.first_call) as data: each fault is a
valid lab file, the draw covers every fault, the right fix mends its own fault only, and fix
texts the exercise cannot read are refused with the reason (no lab, no root)."""
from __future__ import annotations

import pytest

from labkit.grading import checks, probes
from labkit.spec import load_spec
from labkit.teaching.first_call import (
    CALL_FAULTS,
    CallFixError,
    call_fault_overrides,
    call_fix_overrides,
    pick_call_fault,
    read_fix,
)

RIGHT_FIX = {"asterisk-on-another-port": "sip_port: 5060", "bob-in-lobby-context": "context: work",
             "asterisk-insists-on-srtp": 'encryption: "no"'}
BASE = load_spec("first-call")


def _bob(spec):
    return spec.endpoint("6001")


def _mended(spec) -> bool:
    """The lab file says what the working lab of the notebook says, where a fault could hide."""
    return (spec.pbx.sip_port == BASE.pbx.sip_port and _bob(spec).context == _bob(BASE).context
            and spec.pbx.media.encryption == BASE.pbx.media.encryption and spec.phones == BASE.phones)


@pytest.mark.parametrize("fault", CALL_FAULTS)
def test_each_fault_is_a_valid_lab_that_differs_from_the_working_one(fault):
    spec = load_spec("first-call", call_fault_overrides(fault))
    assert not _mended(spec)
    assert spec.pbx.endpoints[0] == BASE.pbx.endpoints[0]           # Alice's endpoint untouched
    assert spec.phones == BASE.phones                               # the phones as in the notebook


def test_the_faults_differ_from_each_other():
    specs = [load_spec("first-call", call_fault_overrides(f)) for f in CALL_FAULTS]
    assert len({s.model_dump_json() for s in specs}) == len(CALL_FAULTS)


def test_an_unknown_fault_is_refused():
    with pytest.raises(CallFixError, match="not one of the faults"):
        call_fault_overrides("wrong-secret")


def test_the_draw_covers_every_fault_and_is_stable():
    drawn = {pick_call_fault(f"student-{i}")[1] for i in range(60)}
    assert drawn == set(CALL_FAULTS)
    assert pick_call_fault("student") == pick_call_fault("student")
    number, fault = pick_call_fault("student-0")
    assert list(CALL_FAULTS)[number - 1] == fault


def test_the_env_variable_picks_the_student(monkeypatch):
    monkeypatch.setenv("LABKIT_STUDENT", "student-4")
    assert pick_call_fault() == pick_call_fault("student-4")


@pytest.mark.parametrize("fault", CALL_FAULTS)
def test_the_right_fix_mends_its_fault_and_no_other(fault):
    assert _mended(load_spec("first-call", call_fix_overrides(RIGHT_FIX[fault], fault)))
    for other in CALL_FAULTS:
        if other != fault:
            assert not _mended(load_spec("first-call", call_fix_overrides(RIGHT_FIX[other], fault))), other


def test_a_fix_may_say_several_keys():
    text = 'sip_port: 5060\ncontext: work\nencryption: "no"\n'
    for fault in CALL_FAULTS:
        assert _mended(load_spec("first-call", call_fix_overrides(text, fault)))


@pytest.mark.parametrize("text, reason", [
    ("", "should be text"),
    ("   \n", "should be text"),
    ("- context: work", "YAML mapping"),
    ("context work", "YAML mapping"),
    ("context: [work", "not valid YAML"),
    ("secret: Qv7-sample-42", "not a key this exercise lets you change"),
    ("codecs: [alaw]", "not a key this exercise lets you change"),
    ("context: home", "no dialplan context 'home'"),
    ("sip_port: 70000", "less than or equal to 65535"),
    ("sip_port: five", "sip_port"),
    ("encryption: no", 'in quotes'),
    ("encryption: srtp", "'no', 'sdes' or 'dtls'"),
])
def test_wrong_fix_texts_are_refused_with_the_reason(text, reason):
    with pytest.raises(CallFixError, match=reason):
        call_fix_overrides(text, "bob-in-lobby-context")


def test_read_fix_keeps_only_the_keys_written():
    assert read_fix("context: work") == {"context": "work"}
    assert read_fix("sip_port: 5060\n") == {"sip_port": 5060}
    with pytest.raises(CallFixError):
        read_fix(None)  # type: ignore[arg-type]


def test_the_graders_probe_applies_the_students_fix_over_their_own_fault():
    check = checks.find("01-first-call", "diagnose-fixed")
    for student in ("student", "student-0", "student-4"):
        _, fault = pick_call_fault(student)
        overrides = probes.validate(check.probe, RIGHT_FIX[fault], "modern", student)
        assert _mended(load_spec("first-call", overrides))
        wrong = next(t for f, t in RIGHT_FIX.items() if f != fault)
        assert not _mended(load_spec("first-call", probes.validate(check.probe, wrong, "legacy", student)))
    with pytest.raises(probes.Refused, match="not a key"):
        probes.validate(check.probe, "secret: Qv7-sample-42", "modern", "student")
