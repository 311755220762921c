"""Notebook 00's registration diagnosis (labkit.teaching.orientation) as data: each fault is a
valid lab file, the draw covers every fault, the right fix mends its own fault only, fix texts
the exercise cannot read are refused with the reason; the lab model's per-phone user and
password, and what the phone's account line says with them (no lab, no root)."""
from __future__ import annotations

import pytest

from labkit.errors import LabFileError
from labkit.grading import checks, probes
from labkit.services.baresip import render_account
from labkit.spec import load_spec
from labkit.teaching.orientation import (
    ASTERISK_SECRET,
    REGISTRATION_FAULTS,
    RegistrationFixError,
    pick_registration_fault,
    read_fix,
    registration_fault_overrides,
    registration_fix_overrides,
)

RIGHT_FIX = {"wrong-password": f"password: {ASTERISK_SECRET}", "unknown-user": 'user: "6001"',
             "registrar-is-alice": "registrar: 192.168.0.10"}
BASE = load_spec("first-call")


def _bob(spec):
    return spec.phone("bob")


def _mended(spec) -> bool:
    """Bob's phone registers as 6001, to Asterisk, with Asterisk's secret for 6001."""
    bob = _bob(spec)
    return ((bob.user or bob.extension) == "6001" and bob.registrar in (None, "192.168.0.10")
            and (bob.password is None or bob.password == spec.endpoint("6001").secret))


@pytest.mark.parametrize("fault", REGISTRATION_FAULTS)
def test_each_fault_is_a_valid_lab_that_differs_from_the_working_one(fault):
    spec = load_spec("first-call", registration_fault_overrides(fault))
    assert not _mended(spec)
    assert spec.phone("alice") == BASE.phone("alice")                # Alice's phone untouched
    assert spec.endpoint("6000") == BASE.endpoint("6000")
    assert spec.endpoint("6001").secret == ASTERISK_SECRET           # the same account in every lab


def test_the_faults_differ_only_in_bobs_phone():
    specs = [load_spec("first-call", registration_fault_overrides(f)) for f in REGISTRATION_FAULTS]
    assert len({s.model_dump_json() for s in specs}) == len(REGISTRATION_FAULTS)
    assert len({s.pbx.model_dump_json() for s in specs}) == 1        # Asterisk's files tell nothing


def test_an_unknown_fault_is_refused():
    with pytest.raises(RegistrationFixError, match="not one of the faults"):
        registration_fault_overrides("asterisk-on-another-port")


def test_the_draw_covers_every_fault_and_is_stable(monkeypatch):
    assert {pick_registration_fault(f"student-{i}")[1] for i in range(60)} == set(REGISTRATION_FAULTS)
    assert pick_registration_fault("student") == pick_registration_fault("student")
    number, fault = pick_registration_fault("student-0")
    assert list(REGISTRATION_FAULTS)[number - 1] == fault
    monkeypatch.setenv("LABKIT_STUDENT", "student-4")
    assert pick_registration_fault() == pick_registration_fault("student-4")


@pytest.mark.parametrize("fault", REGISTRATION_FAULTS)
def test_the_right_fix_mends_its_fault_and_no_other(fault):
    assert _mended(load_spec("first-call", registration_fix_overrides(RIGHT_FIX[fault], fault)))
    for other in REGISTRATION_FAULTS:
        if other != fault:
            assert not _mended(load_spec("first-call", registration_fix_overrides(RIGHT_FIX[other], fault)))


def test_null_takes_a_key_back_to_its_default():
    assert _mended(load_spec("first-call", registration_fix_overrides("user: null", "unknown-user")))
    assert _mended(load_spec("first-call", registration_fix_overrides("password: ~", "wrong-password")))
    assert read_fix("user: 6001") == {"user": "6001"}                # YAML's number, as its digits


@pytest.mark.parametrize("text, reason", [
    ("", "should be text"),
    ("- user: 6001", "YAML mapping"),
    ("user: [6001", "not valid YAML"),
    ("secret: Qv7-sample-42", "not a key this exercise lets you change"),
    ("sip_port: 5060", "not a key this exercise lets you change"),
    ("user: true", "not a value for it"),
    ("user: bob", "user"),                                          # the model: digits only
    ("password: short", "at least 8 characters"),
    ("password: 'two words here'", "password"),
])
def test_wrong_fix_texts_are_refused_with_the_reason(text, reason):
    with pytest.raises(RegistrationFixError, match=reason):
        registration_fix_overrides(text, "unknown-user")


def test_the_graders_probe_applies_the_students_fix_over_their_own_fault():
    check = checks.find("00-orientation", "diagnose-fixed")
    for student in ("student", "student-0", "student-4"):
        _, fault = pick_registration_fault(student)
        assert _mended(load_spec("first-call", probes.validate(check.probe, RIGHT_FIX[fault], "modern", student)))
        wrong = next(t for f, t in RIGHT_FIX.items() if f != fault)
        assert not _mended(load_spec("first-call", probes.validate(check.probe, wrong, "legacy", student)))
    with pytest.raises(probes.Refused, match="not a key"):
        probes.validate(check.probe, "secret: Qv7-sample-42", "modern", "student")


# -- the lab model: a phone's own user and password ------------------------------------------------
def _phones(**bob):
    return {"phones": [{"name": "alice", "host": "alice", "extension": "6000"},
                       {"name": "bob", "host": "bob", "extension": "6001", **bob}]}


def test_a_phone_keeps_its_extensions_account_by_default():
    assert _bob(BASE).user is None and _bob(BASE).password is None


@pytest.mark.parametrize("bob, place", [
    ({"user": "bob"}, "phones[1].user"), ({"user": "6001;x"}, "phones[1].user"),
    ({"password": "short"}, "phones[1].password"), ({"password": "has space in"}, "phones[1].password"),
    ({"password": "semi;colon;x"}, "phones[1].password"),
])
def test_a_phones_user_and_password_are_validated(bob, place):
    with pytest.raises(LabFileError, match=place.replace("[", r"\[").replace("]", r"\]")):
        load_spec("first-call", _phones(**bob))


def test_the_account_line_registers_as_the_user_given():
    line = render_account(display="Bob", extension="6010", registrar="192.168.0.10", secret=ASTERISK_SECRET,
                          codecs=["PCMU"])
    assert line.startswith('"Bob" <sip:6010@192.168.0.10>;auth_user=6010;')
    assert f"auth_pass={ASTERISK_SECRET}" in line
