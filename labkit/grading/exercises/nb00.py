"""Checks of ``notebooks/00-orientation.ipynb``.

The notebook starts one session, ``00-orientation`` (the first-call lab, the LAN captured).
Every truth is read from that capture, opened by the checking code (``truth.session``):
never an object of the student's, never the text of their code.  The answers are the
values the student's cells leave in ``sip_port`` (a prediction, noted before the lab shows
the port), ``asterisk_rtp_ports``, ``rtp_range``… (JSON data); ``rtp_range`` is judged against
the lab file's ``pbx.rtp_ports``, which the kit renders into ``rtp.conf``.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from labkit import tracks
from labkit.errors import LabkitError
from labkit.grading import diagnosis, probes
from labkit.grading.answer_values import whole_number
from labkit.grading.checks import check, configure, recording
from labkit.teaching.faults import student_id
from labkit.teaching.orientation import (
    REGISTRATION_FAULTS,
    account_overrides,
    pick_registration_fault,
    registration_fault_overrides,
    registration_fix_overrides,
)

NB = "00-orientation"
SESSION = "00-orientation"
recording(NB, SESSION, lab="first-call")
#: The diagnosis labs, one recording per fault (``00-diagnose-<n>``, n from 1 as in REGISTRATION_FAULTS).
DIAGNOSIS = {fault: recording(NB, f"00-diagnose-{n}", lab="first-call",
                              overrides=registration_fault_overrides(fault)).name
             for n, fault in enumerate(REGISTRATION_FAULTS, 1)}


# -- truths, from the capture -----------------------------------------------------------------
def pbx_sip_port(session) -> int:
    """The UDP port the SIP requests sent to Asterisk went to."""
    sip = session.sip
    to_pbx = sip[(sip.dst == session.address("pbx")) & sip.is_request]
    return int(to_pbx.dport.mode().iloc[0])


def pbx_rtp_ports(session) -> set[int]:
    """The UDP ports Asterisk used for RTP (its side of every stream)."""
    s, pbx = session.streams, session.address("pbx")
    return {int(p) for p in s[s.src == pbx].sport} | {int(p) for p in s[s.dst == pbx].dport}


def register_counts(session) -> dict[str, int]:
    """Phone name → number of REGISTER requests it sent."""
    sip = session.sip
    reqs = sip[(sip.method == "REGISTER") & sip.is_request]
    return {p.name: int((reqs.src == session.address(p.host)).sum()) for p in session.spec.phones}


def first_register_answer(session) -> int:
    """The status code of Asterisk's first answer to a REGISTER."""
    sip = session.sip
    answers = sip[(sip.cseq_method == "REGISTER") & ~sip.is_request].sort_values("frame")
    return int(answers.status_code.iloc[0])


def _as_int_set(value) -> set[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    return {int(v) for v in value}


def _by_phone(session, value) -> dict[str, int]:
    """A student's {phone name, extension or address: count} (a dict; a Series arrives as one)
    as {phone name: count}."""
    if isinstance(value, pd.Series):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a dict or a Series, not {type(value).__name__}")
    names = {session.address(p.host): p.name for p in session.spec.phones}
    names.update({p.extension: p.name for p in session.spec.phones})
    out = {}
    for key, count in value.items():
        key = str(key)
        out[names.get(key, key.lower())] = int(count)
    return out


# -- checks ------------------------------------------------------------------------------------
@check(NB, "sip-port", points=1, answers=("sip_port",),
       hint="filter session.sip on the messages whose dst is session.address('pbx') and read their dport")
def _sip_port(answer, truth):
    expected = pbx_sip_port(truth.session(SESSION))
    said = answer["sip_port"]
    return whole_number(said) == expected, f"you said {said!r}"


@check(NB, "asterisk-rtp-ports", points=1, answers=("asterisk_rtp_ports",),
       hint="in session.streams, Asterisk's ports are the sport of the rows whose src is "
            "Asterisk's address (and the dport of the rows whose dst is)")
def _asterisk_rtp_ports(answer, truth):
    expected = pbx_rtp_ports(truth.session(SESSION))
    said = _as_int_set(answer["asterisk_rtp_ports"])
    if said == expected:
        return True, f"{sorted(said)}"
    missing, extra = expected - said, said - expected
    why = []
    if missing:
        why.append(f"{len(missing)} of Asterisk's ports missing")
    if extra:
        why.append(f"{sorted(extra)} {'is' if len(extra) == 1 else 'are'} not Asterisk's")
    return False, "; ".join(why)


@check(NB, "rtp-range", points=1, answers=("rtp_range",),
       hint="in the text of session.config('rtp.conf'), the numbers after rtpstart = and rtpend =, "
            "as a pair of ints (rtpstart, rtpend)")
def _rtp_range(answer, truth):
    low, high = truth.session(SESSION).spec.pbx.rtp_ports
    said = answer["rtp_range"]
    if isinstance(said, (str, bytes)) or not hasattr(said, "__iter__") or len(list(said)) != 2:
        return False, f"rtp_range should be a pair (rtpstart, rtpend), not {said!r}"
    said = tuple(whole_number(v) for v in said)
    if said == (int(low), int(high)):
        return True, ""
    return False, f"you said {said}"


@check(NB, "register-counts", points=1, answers=("register_counts",),
       hint="keep the REGISTER requests (is_request) and count them per src address "
            "(.groupby('src').size() or .value_counts())")
def _register_counts(answer, truth):
    session = truth.session(SESSION)
    expected = register_counts(session)
    said = _by_phone(session, answer["register_counts"])
    wrong = [name for name in expected if said.get(name) != expected[name]]
    if not wrong:
        return True, ", ".join(f"{k}: {v}" for k, v in expected.items())
    return False, f"wrong or missing count for {', '.join(wrong)}"


@check(NB, "challenge-status", points=1, hidden=True, answers=("challenge_status",),
       hint="the status code of Asterisk's first answer to a REGISTER")
def _challenge_status(answer, truth):
    return whole_number(answer["challenge_status"]) == first_register_answer(truth.session(SESSION)), ""


# -- the diagnosis: a registration fault per student -------------------------------------------
PROBE_TIMEOUT = 60


# Hidden: with its verdict on screen, three tries would find the name without a diagnosis.
@check(NB, "diagnose-name", points=1, hidden=True, answers=("fault",),
       hint="where did Bob's REGISTER go (dst), who answered it (the Server / User-Agent header) and with "
            "what status? when Asterisk refused it: which user does the REGISTER name (to_uri)?")
def _diagnose_name(answer, truth):
    expected = diagnosis.students_fault(truth, pick_registration_fault, DIAGNOSIS, registration_fault_overrides)
    return diagnosis.judge_name(answer["fault"], expected, REGISTRATION_FAULTS)


def apply_registration_fix(text: str, track, student: str | None = None) -> dict:
    """The student's fix (lab-file lines for Bob's phone) over the fault of their own lab."""
    _, fault = pick_registration_fault(student_id(student))
    return registration_fix_overrides(text, fault)  # a RegistrationFixError is the refusal


@configure(NB, "diagnose-fixed", answer="fix", lab="first-call", apply=apply_registration_fix, points=2,
           timeout=PROBE_TIMEOUT,
           hint="one lab-file line for Bob's phone: password, user or registrar — the one that undoes "
                "your fault (Asterisk's secret for 6001 is in broken.config)")
def _diagnose_fixed(lab):
    return probes.registered_at_its_phone(lab, "bob")


# -- configure: Carol's account, as the student wrote it ----------------------------------------------
def apply_account(text: str, track) -> dict:
    """The student's account lines (the track's file) as the lab with Carol's phone."""
    return account_overrides(text, track.sip_config)  # an AccountTextError is the refusal


@check(NB, "carol-account-read", points=1, answers=("carol_sip", "carol_pjsip"),
       hint="sip.conf: one peer [6002] (type, host, secret, context); pjsip.conf: an endpoint [6002] naming "
            "its auth and its aor, the auth (username, password), the aor [6002] (max_contacts)")
def _carol_account_read(answer, truth):
    """The track's text read as data (no lab): an account for 6002 the lab model takes."""
    config = tracks.get(truth.track).sip_config
    try:
        overrides = account_overrides(answer["carol_sip" if config == "sip.conf" else "carol_pjsip"], config)
    except LabkitError as exc:
        return False, exc.message
    account = overrides["pbx"]["endpoints"][-1]
    if account["extension"] != "6002":
        return False, f"read as an account for {account['extension']}: Carol's extension is 6002"
    return True, f"read as: extension 6002, context {account['context']}"


@configure(NB, "carol-account", answer={"sip.conf": "carol_sip", "pjsip.conf": "carol_pjsip"}, lab="first-call",
           apply=apply_account, points=2, timeout=PROBE_TIMEOUT,
           hint="sip.conf: one peer [6002] (type, host, secret, context); pjsip.conf: an endpoint [6002] naming "
                "its auth and its aor, the auth (username, password), the aor [6002] (max_contacts)")
def _carol_account(lab):
    return probes.registers_and_answers(lab, "carol", "6002", "bob")

