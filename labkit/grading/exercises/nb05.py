"""Checks of ``notebooks/05-trunk.ipynb`` (the SIP trunk to the carrier).

The notebook's labs (all ``trunk-office``, the capture on the "internet" between the office's
router and the carrier, the carrier running with the welcome letter's password):
``05-trunk`` (the trunk as shipped: ``session``), ``05-mistakes`` (started as the report's
first trunk, then each mistake switched on and fixed: ``mistakes``), ``05-mine`` (the
student's own trunk: ``mine``) and ``05-diagnose-<n>`` (a registration fault per student:
``broken``).  Where each truth comes from, computed here:

* predictions (``predict_proxy``, ``predict_password``, ``predict_wrong_domain``): the final
  response the carrier gave, in the recorded capture of ``05-mistakes``, after the switch to
  ``register-to-proxy``, ``wrong-password`` and ``wrong-domain-calls``;
* the wire (``cseq_after_407``, ``early_media_from``): the INVITE that carried credentials and
  the 183's SDP, in the recorded capture of ``05-trunk``;
* the trunk (``trunk_sip`` / ``trunk_pjsip``): read against the welcome letter
  (:func:`labkit.teaching.trunk.trunk_settings`: nothing contradicting, the letter's domain,
  proxy, line and password, calls to the domain) — the graded track's text visibly, the other
  generation's hidden — and a *configure* probe: the graded track's text read into a fresh
  ``trunk-office`` lab, which must register and carry a call to the PSTN both ways;
* the diagnosis: ``fault`` against the fault the student's id picks, confirmed by the
  recording of that lab; ``fix`` (lab-file lines of ``pbx.trunk``) by a probe on a fresh lab
  with the student's fault, which must register.
"""
from __future__ import annotations

import time

from labkit.errors import LabkitError
from labkit.grading import diagnosis, probes
from labkit.grading.checks import check, configure, recording
from labkit.spec import merge_overrides
from labkit.teaching.trunk import (
    DEFAULT_STUDENT,
    LETTER,
    PSTN_NUMBER,
    TRUNK_FAULTS,
    fault_overrides,
    fix_settings,
    letter_overrides,
    pick_trunk_fault,
    trunk_settings,
)

NB = "05-trunk"
LAB = "trunk-office"
PLACES = ("internet",)
MAIN = recording(NB, "05-trunk", LAB, capture=PLACES, overrides=letter_overrides()).name
MISTAKES = recording(NB, "05-mistakes", LAB, capture=PLACES,
                     overrides=letter_overrides("unresolvable-domain")).name
MINE = recording(NB, "05-mine", LAB, capture=PLACES, overrides=letter_overrides()).name
DIAGNOSIS = {fault: recording(NB, f"05-diagnose-{n}", LAB, capture=PLACES, overrides=fault_overrides(fault)).name
             for n, fault in enumerate(TRUNK_FAULTS, 1)}
#: The variable holding the student's trunk for each track's SIP configuration file.
TRUNK_VARIABLE = {"sip.conf": "trunk_sip", "pjsip.conf": "trunk_pjsip"}
REGISTER_WITHIN = 10.0
PROBE_TIMEOUT = 150


# -- truths ------------------------------------------------------------------------------------
def trunk_sip(session):
    """The capture's SIP between the PBX and the carrier."""
    sip = session.table("sip")
    ends = {session.address(session.spec.pbx.host), session.address(session.spec.carrier.host)}
    return sip[sip.src.isin(ends) & sip.dst.isin(ends)].sort_values("frame")


def after(session, label: str):
    marks = session.marks()
    if label not in marks:
        raise AssertionError(f"the recording has no step {label!r}: the notebook was not run as written")
    sip = trunk_sip(session)
    return sip[sip.time >= marks[label]]


def final_register_code(session, label: str) -> int:
    """The last final answer to a REGISTER in the step ``label`` (up to the next step)."""
    start = session.marks()[label]
    later = [t for t in session.marks().values() if t > start]
    sip = after(session, label)
    if later:
        sip = sip[sip.time < min(later)]
    codes = sip[(sip.cseq_method == "REGISTER") & sip.status_code.notna() & (sip.status_code >= 200)]
    if codes.empty:
        raise AssertionError(f"no answer to a REGISTER in the step {label!r} of the recording")
    return int(codes.status_code.iloc[-1])


def final_invite_code(session, label: str) -> int:
    """The first final answer to an INVITE, other than the 407 challenge, after ``label``."""
    sip = after(session, label)
    codes = sip[(sip.cseq_method == "INVITE") & sip.status_code.notna() & (sip.status_code >= 200)
                & (sip.status_code != 407)]
    if codes.empty:
        raise AssertionError(f"no final answer to an INVITE after the step {label!r} of the recording")
    return int(codes.status_code.iloc[0])


def credentials_cseq(session) -> int:
    """The CSeq number of the first INVITE the PBX sent with Proxy-Authorization."""
    sip = trunk_sip(session)
    pbx = session.address(session.spec.pbx.host)
    invites = sip[(sip.method == "INVITE") & (sip.src == pbx) & sip.has_auth.astype(bool)]
    if invites.empty:
        raise AssertionError("the recording holds no INVITE with credentials")
    return int(invites.cseq_num.iloc[0])


def early_media_source(session) -> str:
    """address:port of the first 183 with SDP the carrier sent the PBX (where early media comes from)."""
    sip = trunk_sip(session)
    rows = sip[(sip.status_code == 183) & sip.has_sdp.astype(bool)
               & (sip.dst == session.address(session.spec.pbx.host))]
    if rows.empty:
        raise AssertionError("the recording holds no 183 with SDP towards the PBX")
    return f"{rows.sdp_c_addr.iloc[0]}:{int(rows.sdp_m_port.iloc[0])}"


def _code(value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected a response code, not {value!r}")
    text = str(value).strip()
    return int(text.split()[0]) if text else int(value)


# -- exercise 1: predictions --------------------------------------------------------------------
def _predicted(answer, variable: str, expected: int):
    said = _code(answer[variable])
    return said == expected, f"you predicted {said}"


@check(NB, "predict-register-to-proxy", points=1, answers=("predict_proxy",),
       hint="a registrar answers for its own domain only: is proxy.carrier.example the domain of the line?")
def _predict_proxy(answer, truth):
    return _predicted(answer, "predict_proxy", final_register_code(truth.session(MISTAKES), "register-to-proxy"))


@check(NB, "predict-wrong-password", points=1, answers=("predict_password",),
       hint="the first answer is always the challenge; what does a registrar say when the digest is wrong?")
def _predict_password(answer, truth):
    return _predicted(answer, "predict_password", final_register_code(truth.session(MISTAKES), "wrong-password"))


@check(NB, "predict-wrong-domain", points=1, answers=("predict_wrong_domain",),
       hint="the carrier authenticates the INVITE first (407), then looks at the Request-URI's host")
def _predict_wrong_domain(answer, truth):
    return _predicted(answer, "predict_wrong_domain",
                      final_invite_code(truth.session(MISTAKES), "wrong-domain-calls"))


# -- exercise 2: read the wire --------------------------------------------------------------------
@check(NB, "wire-cseq-after-407", points=1, answers=("cseq_after_407",),
       hint="session.raw('INVITE', since='call', index=1): the CSeq line of the INVITE with Proxy-Authorization")
def _wire_cseq(answer, truth):
    expected = credentials_cseq(truth.session(MAIN))
    said = answer["cseq_after_407"]
    if isinstance(said, bool):
        raise TypeError(f"expected a number, not {said!r}")
    said = int(str(said).split()[0])
    return said == expected, f"you said {said}"


@check(NB, "wire-early-media", points=1, answers=("early_media_from",),
       hint="session.raw(183, since='call'): the c= line's address and the m= line's port, as 'address:port'")
def _wire_early_media(answer, truth):
    expected = early_media_source(truth.session(MAIN))
    said = str(answer["early_media_from"]).strip()
    return said == expected, f"you said {said}"


# -- exercise 3: the trunk from the welcome letter ----------------------------------------------
def letter_problems(text, config: str) -> list[str]:
    """What in a trunk text contradicts the letter (empty: the letter's trunk)."""
    if not isinstance(text, str) or not text.strip():
        return ["it should be the lines you wrote, as text"]
    try:
        reading = trunk_settings(text, config)
    except LabkitError as exc:
        return [exc.message]
    wrong = list(reading.problems)
    settings = reading.settings
    for key, label in (("domain", "the SIP domain"), ("account", "the line"), ("password", "the password")):
        want = LETTER["line"] if key == "account" else LETTER[key]
        if settings.get(key) != want:
            wrong.append(f"{label}: {settings.get(key)!r} is not the letter's")
    if settings.get("proxy") != LETTER["proxy"]:
        wrong.append(f"the outbound proxy: {settings.get('proxy') or 'none'} (the letter gives {LETTER['proxy']})")
    if settings.get("host") not in (None, LETTER["domain"]):
        wrong.append(f"calls are addressed to {settings['host']}, not to the SIP domain")
    return wrong


def _letter_check(answer, config: str):
    variable = TRUNK_VARIABLE[config]
    wrong = letter_problems(answer[variable], config)
    if wrong:
        return False, f"your {variable}: " + "; ".join(wrong[:4])
    return True, f"your {variable} says what the letter says"


@check(NB, "trunk-letter", points=1, answers=tuple(TRUNK_VARIABLE.values()),
       hint="domain sip.carrier.example (REGISTER's Request-URI, From, calls), proxy proxy.carrier.example "
            "(where everything is sent), login = the line, the letter's password")
def _trunk_letter(answer, truth):
    from labkit import tracks
    return _letter_check(answer, tracks.get(truth.track).sip_config)


@check(NB, "trunk-other-generation", points=1, hidden=True, answers=tuple(TRUNK_VARIABLE.values()),
       hint="the other generation's trunk, from the same letter")
def _trunk_other(answer, truth):
    from labkit import tracks
    mine = tracks.get(truth.track).sip_config
    return _letter_check(answer, next(c for c in TRUNK_VARIABLE if c != mine))


def apply_trunk(text: str, track) -> dict:
    """The student's trunk read into ``pbx.trunk``, over the letter's carrier account."""
    try:
        reading = trunk_settings(text, track.sip_config)
    except LabkitError as exc:
        raise probes.Refused(exc.message) from None
    if reading.problems:
        raise probes.Refused("your trunk cannot run as written: " + "; ".join(reading.problems[:4]))
    return merge_overrides(letter_overrides(), reading.overrides())


@configure(NB, "trunk-registers-and-calls", answer=TRUNK_VARIABLE, lab=LAB, apply=apply_trunk, points=2,
           timeout=PROBE_TIMEOUT, wait_registered=True,
           hint="register to the domain through the proxy with the line's login and password; calls to "
                "NUMBER@domain through the same proxy")
def _trunk_registers(lab):
    state = lab.pbx.wait_trunk(timeout=REGISTER_WITHIN)
    if state != "Registered":
        return False, f"with your trunk the registration is {state or 'absent'} after {REGISTER_WITHIN:g} s"
    talk = lab.talk("alice", PSTN_NUMBER, "carol", seconds=2)
    if not talk.established:
        return False, f"registered, but a call to {PSTN_NUMBER} failed: {talk.error}"
    if not talk.two_way:
        return False, f"registered and the call was answered, but not heard both ways: {talk.summary()}"
    return True, f"Registered; a call to {PSTN_NUMBER} heard both ways"


# -- exercise 4: diagnose and fix ----------------------------------------------------------------
def students_fault(truth) -> str:
    return diagnosis.students_fault(truth, pick_trunk_fault, DIAGNOSIS, fault_overrides)


@check(NB, "diagnose-name", points=1, answers=("fault",),
       hint="what reached the carrier (broken.exchange()), the Request-URI and the Authorization header of the "
            "REGISTER (broken.raw('REGISTER', index=…)), and Asterisk's log tell the faults apart")
def _diagnose_name(answer, truth):
    return diagnosis.judge_name(answer["fault"], students_fault(truth), TRUNK_FAULTS)


def apply_fix(text: str, track, student: str | None = None) -> dict:
    """The student's fix (``pbx.trunk`` lines) over the fault of their own lab."""
    try:
        fix = fix_settings(text)
    except LabkitError as exc:
        raise probes.Refused(exc.message) from None
    _, fault = pick_trunk_fault(student or DEFAULT_STUDENT)
    return merge_overrides(fault_overrides(fault), {"pbx": {"trunk": fix}})


@configure(NB, "diagnose-fixed", answer="fix", lab=LAB, apply=apply_fix, points=2, timeout=PROBE_TIMEOUT,
           wait_registered=True,
           hint="the lab file's pbx.trunk keys that undo the fault (account, password, domain, proxy), as lines "
                "'key: value' — values from the welcome letter")
def _diagnose_fixed(lab):
    deadline = time.monotonic() + REGISTER_WITHIN
    state = lab.pbx.wait_trunk(timeout=REGISTER_WITHIN)
    while state != "Registered" and time.monotonic() < deadline:
        state = lab.pbx.wait_trunk(timeout=1)
    if state != "Registered":
        return False, f"with your fix on your lab, the trunk is {state or 'not registered'}"
    return True, "with your fix, your lab's trunk registered"
