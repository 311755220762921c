"""Checks of ``notebooks/02a-nat-home.ipynb`` (Asterisk at home behind the ISP box).

The notebook's labs, one session per step (the notebook's variable in brackets):
``02-no-forward`` (home-pbx, no forward: ``session``), ``02-forward`` (forwards only:
``fix_a``), ``02-long-call`` (forwards only, a call nobody hangs up: ``long``; Asterisk ends it
64*T1 = 32 s after its first 200 OK, RFC 3261 §13.3.1.4), ``02-external`` (forwards + external
address: ``fix_b``) and ``02-ddns`` (the box moves, DDNS: ``ddns``).  Every truth is read from
their captures (the Internet side of the box), from the conversations they measured (what each
phone heard) or from what the lab answered (a REGISTER accepted or not), opened by the checking
code (``truth.session``); a check also fails when the lab does not show the behaviour the
exercise is about, whatever the answer.  Predictions (``moved_register``, ``drop_after`` …) are
noted in the session's log before the cell that shows the result.

Two fixes are the student's own text, judged by *configure* probes on a fresh ``home-pbx`` lab
built from it (read as data by :mod:`labkit.teaching.nat`): the box's forwards (``my_forwards``:
Bob registers through the box, the RTP range reaches the PBX) and Asterisk's NAT lines
(``nat_sip`` / ``nat_pjsip``, on top of the report's forwards: a call Bob → Alice is two-way and
no private address leaves the box in SIP or SDP).

The diagnosis (``02-diagnose-<n>``, the notebook's ``broken``): a home-pbx lab with one NAT
fault drawn from the student's id (:data:`labkit.teaching.nat.NAT_FAULTS`); ``fault`` is
judged against that draw, confirmed by the recording of that lab, and ``fix`` (the box's
forwards or Asterisk's NAT lines) by a probe on a fresh lab with the student's fault.
"""
from __future__ import annotations

from labkit.addresses import is_rfc1918
from labkit.errors import LabkitError
from labkit.grading import diagnosis, probes
from labkit.grading.answer_values import said_address, seconds, whole_number
from labkit.grading.checks import check, configure, recording
from labkit.grading.exercises.box_wire import heard, private_sdp_count, public_address, wan
from labkit.teaching.faults import student_id
from labkit.teaching.nat import (
    HOME_LAB,
    NAT_FAULTS,
    forward_overrides,
    nat_fault_overrides,
    nat_fix_overrides,
    nat_overrides,
    pick_nat_fault,
)

NB = "02a-nat-home"
HOME = ("lan", "internet")
NO_FORWARD = recording(NB, "02-no-forward", "home-pbx", capture=HOME).name
FIX_A = recording(NB, "02-forward", "home-pbx", capture=HOME).name
FIX_B = recording(NB, "02-external", "home-pbx", capture=HOME).name
LONG_CALL = recording(NB, "02-long-call", "home-pbx", capture=("internet",)).name
DDNS = recording(NB, "02-ddns", "home-pbx", capture=("internet",)).name
DIAGNOSIS = {fault: recording(NB, f"02-diagnose-{n}", HOME_LAB, capture=HOME, overrides=nat_fault_overrides(fault)).name
             for n, fault in enumerate(NAT_FAULTS, 1)}


# -- truths, from the captures and the conversations ----------------------------------------------
def held_call(session):
    """The Internet-side messages of Bob's last call (the one nobody hung up), in order."""
    sip = wan(session)
    invites = sip[(sip.method == "INVITE") & (sip.src == session.address("bob"))].sort_values("frame")
    if invites.empty:
        raise AssertionError("the recording holds no INVITE from Bob on the Internet side")
    return sip[sip.call_id == invites.call_id.iloc[-1]].sort_values("frame")

def ok_sent(session) -> int:
    """How many times the box sent Asterisk's 200 OK to that INVITE (first send included)."""
    call = held_call(session)
    oks = (call.status_code == 200) & (call.cseq_method == "INVITE") & (call.src == public_address(session))
    return int(oks.sum())

def drop_after(session) -> float | None:
    """Seconds from Asterisk's first 200 OK to its BYE (RFC 3261 §13.3.1.4: 64*T1 without ACK);
    None if Asterisk did not end the call."""
    call, box = held_call(session), public_address(session)
    oks = call[(call.status_code == 200) & (call.cseq_method == "INVITE") & (call.src == box)]
    byes = call[(call.method == "BYE") & (call.src == box)]
    if oks.empty or byes.empty:
        return None
    return float(byes.time.iloc[0] - oks.time.iloc[0])

def bob_registers(session):
    sip = wan(session)
    return sip[(sip.method == "REGISTER") & (sip.src == session.address("bob"))]

def answers_to_bob(session):
    sip = wan(session)
    return sip[~sip.is_request.astype(bool) & (sip.dst == session.address("bob"))]

def answer_sdp_to_bob(session) -> str:
    """The c= address of the first 200 OK (to an INVITE, with SDP) sent to Bob, Internet side."""
    sip = wan(session)
    rows = sip[(sip.status_code == 200) & (sip.cseq_method == "INVITE") & sip.has_sdp.astype(bool)
               & (sip.dst == session.address("bob"))].sort_values("frame")
    return str(rows.sdp_c_addr.iloc[0])

def last_register_ok_from(session) -> str:
    """Who sent the last 200 OK to a REGISTER on the Internet side (the registrar Bob reached)."""
    sip = wan(session)
    ok = sip[(sip.status_code == 200) & (sip.cseq_method == "REGISTER")].sort_values("frame")
    return str(ok.src.iloc[-1])

def ddns_address(session) -> str:
    return session.recorder.results("ddns-update")[0]

MOVED_REGISTER = ("accepted", "rejected", "unanswered")

def register_after_move(session) -> str | None:
    """What became of Bob's first REGISTER after the box moved: ``accepted`` (the recorded
    result), else ``rejected`` if a final response reached Bob between the move and the DDNS
    update on the Internet side, else ``unanswered``."""
    entries = session.recorder.entries
    moved = next((i for i, e in enumerate(entries) if e["kind"] == "move-box"), None)
    result = next((e["result"] for e in entries[moved or 0:] if e["kind"] == "register"), None)
    if moved is None or result is None:
        return None
    if result:
        return "accepted"
    sip, marks = wan(session), session.marks()
    answers = sip[(sip.time > marks["moved"]) & (sip.time < marks["ddns"]) & (sip.dst == session.address("bob"))
                  & (sip.status_code >= 200)]
    return "rejected" if len(answers) else "unanswered"


# -- configure probes: the student's forwards and NAT lines ---------------------------------------
PROBE_TIMEOUT = 90

def apply_forwards(text: str, track) -> dict:
    return forward_overrides(text)  # a NatTextError is the refusal (probes.validate)

def apply_nat(text: str, track) -> dict:
    return nat_overrides(text, track.sip_config)

def bob_registers_through_the_box(lab):
    """Bob (on the Internet) registers to the box's public address; the box's forwards in force
    lead SIP and the RTP range to the PBX."""
    pbx = str(lab.spec.address_of(lab.spec.pbx.host))
    if not lab.phone("bob").register_again():
        return False, "Bob's REGISTER to the box's public address got no answer: no forward of 5060/udp to the PBX"
    if "6001" not in lab.pbx.registered():
        return False, "Asterisk has no registration for Bob"
    forwards = lab.host("box").nat.forwards
    rtp = [f for f in forwards if f.proto == "udp" and str(f.to) == pbx and f.range[0] <= 10000 and f.range[1] >= 20000]
    if not rtp:
        return False, "Bob registered, but no forward leads the RTP range (udp 10000-20000) to the PBX: no audio in"
    return True, "Bob registered through the box; SIP and the RTP range lead to the PBX"

def two_way_without_private_sdp(lab):
    """A call Bob → Alice through the box: both hear the other, and nothing that left the box
    towards Bob announced a private address."""
    from labkit import analysis
    two_way, why, pcap = probes.two_way_call(lab, "bob", "6000", capture="internet")
    if not two_way:
        return False, why + (": SIP does not reach Asterisk through the box" if pcap is None else "")
    sip = analysis.sip_messages(pcap)
    leaked = sip[sip.sdp_c_addr.fillna("").map(is_rfc1918) | sip.contact.fillna("").str.contains("@192.168.")]
    if len(leaked):
        return False, f"{len(leaked)} SIP messages on the Internet side still name a private address"
    return True, "two-way, and no private address left the box"

def forwards_problems(text) -> list[str]:
    """What the forwards text says wrong, read as data (no lab): the report's three rows, each
    to the PBX's LAN address."""
    try:
        overrides = forward_overrides(text)
    except LabkitError as exc:
        return [exc.message]
    from labkit.spec import load_spec
    spec = load_spec(HOME_LAB, overrides)
    pbx = str(spec.address_of(spec.pbx.host))
    forwards = next(h for h in spec.hosts if h.nat is not None).nat.forwards
    problems = []
    rows = (("udp", 5060, 5060, "SIP (udp 5060)"), ("udp", 10000, 20000, "RTP (udp 10000-20000)"),
            ("tcp", 5061, 5061, "SIP over TLS (tcp 5061)"))
    for proto, low, high, what in rows:
        rules = [f for f in forwards if f.proto == proto and f.range[0] <= low and f.range[1] >= high]
        if not rules:
            problems.append(f"no forward for {what}")
        elif all(str(f.to) != pbx for f in rules):
            problems.append(f"{what} goes to {rules[0].to}, not to the PBX")
    return problems

# -- checks ----------------------------------------------------------------------------------------
@check(NB, "fix-a-forwards-valid", points=1, answers=("my_forwards",),
       hint="the table's three rows: udp 5060, udp [10000, 20000], tcp 5061, each to: the PBX's LAN address")
def _fix_a_forwards_valid(answer, truth):
    problems = forwards_problems(answer["my_forwards"])
    return not problems, "; ".join(problems[:3]) or "the report's three forwards, to the PBX"

@configure(NB, "fix-a-forwards", answer="my_forwards", lab=HOME_LAB, apply=apply_forwards, points=2,
           timeout=PROBE_TIMEOUT,
           hint="one rule per row of the report's table: proto, the port or [first, last], "
                "and to: the PBX's LAN address")
def _fix_a_forwards(lab):
    return bob_registers_through_the_box(lab)

@check(NB, "no-forward-unanswered", points=1, answers=("unanswered_registers",),
       hint="keep the rows of wan whose method is REGISTER and whose src is session.address('bob'); count them")
def _no_forward_unanswered(answer, truth):
    session = truth.session(NO_FORWARD)
    sent, answered = len(bob_registers(session)), len(answers_to_bob(session))
    if answered:
        return False, f"this capture shows {answered} answers to Bob: his REGISTERs did reach Asterisk"
    said = whole_number(answer["unanswered_registers"])
    return sent > 0 and said == sent, f"you said {said}"

@check(NB, "fix-a-sdp-leak", points=1, answers=("leaked_sdp_addr",),
       hint="rows with status_code 200, cseq_method INVITE, has_sdp, dst Bob's address: read sdp_c_addr")
def _fix_a_sdp_leak(answer, truth):
    expected = answer_sdp_to_bob(truth.session(FIX_A))
    said = said_address(answer["leaked_sdp_addr"])
    return said == expected and is_rfc1918(expected), f"you said {said}"

@check(NB, "fix-a-one-way", points=1, answers=("deaf_phone",),
       hint="the one_way table has one row per listener; heard_the_other is False for the deaf one")
def _fix_a_one_way(answer, truth):
    expected = heard(truth.session(FIX_A), 0)
    deaf = [p for p, ok in expected.items() if not ok]
    if len(deaf) != 1:
        return False, "in your lab this call was not one-way: " + ", ".join(
            f"{p} {'heard' if ok else 'did not hear'}" for p, ok in expected.items())
    said = str(answer["deaf_phone"]).strip().lower()
    return said == deaf[0], f"you said {said}"

@configure(NB, "fix-b-nat-lines", answer={"sip.conf": "nat_sip", "pjsip.conf": "nat_pjsip"}, lab=HOME_LAB,
           apply=apply_nat, points=3, timeout=PROBE_TIMEOUT,
           hint="the address the Internet reaches the box at (its public address) as externip / "
                "external_*_address, and the home network as localnet / local_net")
def _fix_b_nat_lines(lab):
    return two_way_without_private_sdp(lab)

@check(NB, "fix-b-no-private-sdp", points=1, answers=("private_sdp_out",),
       hint="fix_b.table('sip', 'internet').sdp_c_addr: count the values starting with 192.168.")
def _fix_b_no_private_sdp(answer, truth):
    expected = private_sdp_count(wan(truth.session(FIX_B)))
    said = whole_number(answer["private_sdp_out"])
    if expected:
        return False, (f"{expected} SIP messages on the Internet side still announce a private address: "
                       f"Asterisk's external address is not set (you said {said})")
    return said == expected, f"you said {said}"

@check(NB, "long-call-drop", points=1, answers=("drop_after",),
       hint="no ACK ever reaches Asterisk; RFC 3261 §13.3.1.4: how long does a UAS keep retransmitting its 2xx?")
def _long_call_drop(answer, truth):
    expected = drop_after(truth.session(LONG_CALL))
    if expected is None or not 28 <= expected <= 36:
        return False, ("in your lab Asterisk did not end the call about 32 s after answering: "
                       "the lab was not set up as here")
    said = seconds(answer["drop_after"])
    return abs(said - expected) <= 1.5, f"you predicted {said:g} s"

@check(NB, "long-call-ok-sent", points=1, answers=("ok_sent",),
       hint="first send at 0, then intervals of T1 = 0.5 s doubling up to T2 = 4 s, until 64*T1 = 32 s")
def _long_call_ok_sent(answer, truth):
    expected = ok_sent(truth.session(LONG_CALL))
    said = whole_number(answer["ok_sent"])
    return said == expected, f"you predicted {said}"

@check(NB, "ddns-moved-register", points=1, answers=("moved_register",),
       hint="Bob's phone looks voip.home.example up for each REGISTER; what does the name answer right after the "
            "move, and does a machine still own that address?")
def _ddns_moved_register(answer, truth):
    expected = register_after_move(truth.session(DDNS))
    if expected != "unanswered":
        return False, f"in your lab Bob's REGISTER right after the move was {expected}: the lab did not move the box"
    said = str(answer["moved_register"]).strip().lower()
    if said not in MOVED_REGISTER:
        return False, f"{said!r} is not one of: {', '.join(MOVED_REGISTER)}"
    return said == expected, f"you predicted {said}"

@check(NB, "ddns-register", points=1, answers=("ddns_register_to",),
       hint="the DDNS client changes what voip.home.example answers; Bob's phone asks again for each REGISTER")
def _ddns_register(answer, truth):
    session = truth.session(DDNS)
    expected = last_register_ok_from(session)
    if expected != ddns_address(session):
        return False, f"in your lab Bob's last accepted REGISTER went to {expected}, not to the updated address"
    said = said_address(answer["ddns_register_to"])
    return said == expected, f"you predicted {said}"

def unrestarted_answer(session) -> tuple[str, dict[str, bool]]:
    """(c= of Asterisk's first 200 OK with SDP to Bob, who heard the other) for the call placed
    after the mark 'unrestarted': the box moved, DDNS updated, Asterisk not restarted."""
    entries = session.recorder.entries
    marked = next((i for i, e in enumerate(entries) if e["kind"] == "mark" and e["args"].get("label") == "unrestarted"),
                  None)
    talk = next((e for e in entries[marked or 0:] if e["kind"] == "talk"), None) if marked is not None else None
    if talk is None:
        raise AssertionError("the recording holds no call after the 'unrestarted' mark: "
                             "run the notebook's cells in order")
    sip = wan(session)
    oks = sip[(sip.time > session.marks()["unrestarted"]) & (sip.status_code == 200) & sip.has_sdp.astype(bool)
              & (sip.dst == session.address("bob"))].sort_values("frame")
    if oks.empty:
        raise AssertionError("no 200 OK with SDP reached Bob after the 'unrestarted' mark")
    return str(oks.sdp_c_addr.iloc[0]), {p: bool(v["heard_the_other"]) for p, v in talk["result"]["heard"].items()}

DEAF = ("alice", "bob", "none")

@check(NB, "ddns-unrestarted", points=2, answers=("unrestarted_sdp_addr", "unrestarted_deaf"),
       hint="chan_sip looks externhost up again after externrefresh seconds; PJSIP resolves its external_* "
            "addresses when the transport starts (and through dnsmgr only if it is enabled)")
def _ddns_unrestarted(answer, truth):
    session = truth.session(DDNS)
    address, heard_other = unrestarted_answer(session)
    deaf = [p for p, ok in heard_other.items() if not ok]
    expected_deaf = deaf[0] if len(deaf) == 1 else "none" if not deaf else None
    if expected_deaf is None:
        return False, "in your lab neither phone heard the other after the move: not what either generation does"
    said_deaf = str(answer["unrestarted_deaf"]).strip().lower()
    if said_deaf not in DEAF:
        return False, f"unrestarted_deaf {said_deaf!r} is not one of: {', '.join(DEAF)}"
    said_addr = said_address(answer["unrestarted_sdp_addr"])
    wrong = [name for name, ok in (("the address", said_addr == address),
                                   ("the deaf phone", said_deaf == expected_deaf)) if not ok]
    return not wrong, "both right" if not wrong else f"{' and '.join(wrong)} wrong"

# -- the diagnosis: a NAT fault per student ---------------------------------------------------------
# Hidden: with its verdict on screen, three tries would find the name without a diagnosis.
@check(NB, "diagnose-name", points=1, hidden=True, answers=("fault",),
       hint="who answered Bob's REGISTER (status, and the Server or User-Agent of broken.message(…)), and the "
            "c= address Asterisk's answer announced to Bob: private, the box's, or another")
def _diagnose_name(answer, truth):
    expected = diagnosis.students_fault(truth, pick_nat_fault, DIAGNOSIS, nat_fault_overrides)
    return diagnosis.judge_name(answer["fault"], expected, NAT_FAULTS)

def apply_nat_fix(text: str, track, student: str | None = None) -> dict:
    """The student's fix (forwards or NAT lines) over the fault of their own lab."""
    _, fault = pick_nat_fault(student_id(student))
    return nat_fix_overrides(text, fault)  # a NatTextError is the refusal (probes.validate)

@configure(NB, "diagnose-fixed", answer="fix", lab=HOME_LAB, apply=apply_nat_fix, points=2,
           timeout=PROBE_TIMEOUT,
           hint="the box's forwards as in exercise 2 (all of them: they replace the box's), or Asterisk's NAT lines "
                "as in exercise 4 — whichever undoes your fault")
def _diagnose_fixed(lab):
    return two_way_without_private_sdp(lab)
