"""Checks of ``notebooks/02-nat.ipynb``.

The notebook's labs, one per step: ``ns["session"]`` (home-pbx, no forward), ``ns["fix_a"]``
(forwards only), ``ns["fix_b"]`` (forwards + external address), ``ns["ddns"]`` (the box moves,
DDNS), ``ns["sym"]`` (vps-pbx, symmetric handling), ``ns["alg"]`` (vps-pbx, SIP ALG) and
``ns["direct"]`` (vps-pbx with direct media: ALG on, then off with symmetric handling).
Every truth is read from their captures (the Internet side of the box) or from the
conversations they measured (what each phone heard); a check also fails when the student's
lab does not show the fixed behaviour, whatever the answer.
"""
from __future__ import annotations

from labkit.addresses import is_rfc1918
from labkit.grading.checks import check

NB = "02-nat"


# -- truths, from the captures and the conversations ----------------------------------------------
def wan(session):
    """The SIP table of the Internet side of the box."""
    return session.table("sip", "internet")


def public_address(session) -> str:
    """The box's address on the Internet side, as the lab file gives it."""
    box = next(h for h in session.spec.hosts if h.nat is not None)
    return str(next(i.address for i in box.interfaces if i.network == box.nat.outside))


def talks(session) -> list[dict]:
    """What each measured conversation of a session gave: listener -> summary."""
    return [talk["heard"] for talk in session.recorder.results("talk")]


def heard(session, index: int = -1) -> dict[str, bool]:
    """Listener -> whether it heard the other, for one conversation (the last by default)."""
    done = talks(session)
    if not done:
        raise AssertionError("this lab has not measured a call yet: run the notebook's talk() cell")
    return {phone: bool(v["heard_the_other"]) for phone, v in done[index].items()}


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


def private_sdp_count(sip) -> int:
    return int(sip.sdp_c_addr.fillna("").map(is_rfc1918).sum())


def last_register_ok_from(session) -> str:
    """Who sent the last 200 OK to a REGISTER on the Internet side (the registrar Bob reached)."""
    sip = wan(session)
    ok = sip[(sip.status_code == 200) & (sip.cseq_method == "REGISTER")].sort_values("frame")
    return str(ok.src.iloc[-1])


def ddns_address(session) -> str:
    return session.recorder.results("ddns-update")[0]


def alg_invite_sdp(session) -> str:
    """The c= address of the first INVITE that left the box after the ALG was switched on."""
    sip = wan(session)
    after = sip[(sip.time > session.marks()["alg"]) & (sip.method == "INVITE")
                & (sip.src == public_address(session)) & sip.has_sdp.astype(bool)].sort_values("frame")
    return str(after.sdp_c_addr.iloc[0])


def media_destinations_with_alg(session) -> set[str]:
    """Where the phones sent RTP, on the home side, before the mark 'no-alg' (the ALG was on);
    streams to the PBX itself (before a re-INVITE took effect) are left out."""
    streams = session.table("streams", "lan")
    phones = {session.address(p.host) for p in session.spec.phones}
    with_alg = streams[(streams.first_time < session.marks()["no-alg"]) & streams.src.isin(phones)
                       & (streams.dst != session.address(session.spec.pbx.host))]
    return set(with_alg.dst.astype(str))


def _addr(value) -> str:
    return str(value).strip().split(":")[0]


def _bool(value) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"expected True or False, not {value!r}")
    return bool(value)


def _two_way(ns, session_name: str, variable: str, conversation: int = -1):
    truth = heard(ns[session_name], conversation)
    answer = _bool(ns[variable])
    deaf = [p for p, ok in truth.items() if not ok]
    if deaf:
        return False, (f"in your lab {' and '.join(deaf)} did not hear the other: the fix is not in "
                       f"place (you said {answer})")
    return answer is True, f"you said {answer}"


# -- checks ----------------------------------------------------------------------------------------
@check(NB, "no-forward-unanswered", points=1,
       hint="keep the rows of wan whose method is REGISTER and whose src is session.address('bob'); count them")
def _no_forward_unanswered(ns):
    session = ns["session"]
    sent, answered = len(bob_registers(session)), len(answers_to_bob(session))
    if answered:
        return False, f"this capture shows {answered} answers to Bob: his REGISTERs did reach Asterisk"
    answer = int(ns["unanswered_registers"])
    return sent > 0 and answer == sent, f"you said {answer}"


@check(NB, "fix-a-sdp-leak", points=1,
       hint="rows with status_code 200, cseq_method INVITE, has_sdp, dst Bob's address: read sdp_c_addr")
def _fix_a_sdp_leak(ns):
    truth = answer_sdp_to_bob(ns["fix_a"])
    answer = _addr(ns["leaked_sdp_addr"])
    return answer == truth and is_rfc1918(truth), f"you said {answer}"


@check(NB, "fix-a-one-way", points=1,
       hint="the one_way table has one row per listener; heard_the_other is False for the deaf one")
def _fix_a_one_way(ns):
    truth = heard(ns["fix_a"], 0)
    deaf = [p for p, ok in truth.items() if not ok]
    if len(deaf) != 1:
        return False, "in your lab this call was not one-way: " + ", ".join(
            f"{p} {'heard' if ok else 'did not hear'}" for p, ok in truth.items())
    answer = str(ns["deaf_phone"]).strip().lower()
    return answer == deaf[0], f"you said {answer}"


@check(NB, "fix-b-two-way", points=1,
       hint="after_b.heard_the_other holds one True/False per listener: are they all True?")
def _fix_b_two_way(ns):
    return _two_way(ns, "fix_b", "both_heard")


@check(NB, "fix-b-no-private-sdp", points=1,
       hint="fix_b.table('sip', 'internet').sdp_c_addr: count the values starting with 192.168.")
def _fix_b_no_private_sdp(ns):
    truth = private_sdp_count(wan(ns["fix_b"]))
    answer = int(ns["private_sdp_out"])
    if truth:
        return False, (f"{truth} SIP messages on the Internet side still announce a private address: "
                       f"Asterisk's external address is not set (you said {answer})")
    return answer == truth, f"you said {answer}"


@check(NB, "ddns-register", points=1,
       hint="the last row of reg with status_code 200: its src is where Bob's REGISTER went")
def _ddns_register(ns):
    session = ns["ddns"]
    truth = last_register_ok_from(session)
    if truth != ddns_address(session):
        return False, f"Bob's last registration was answered by {truth}, not by the box's new address"
    answer = _addr(ns["registered_to"])
    return answer == truth, f"you said {answer}"


@check(NB, "ddns-two-way", points=1,
       hint="after_ddns.heard_the_other: are both True?")
def _ddns_two_way(ns):
    return _two_way(ns, "ddns", "ddns_both_heard")


@check(NB, "symmetric-two-way", points=1,
       hint="after_sym.heard_the_other: are both True?")
def _symmetric_two_way(ns):
    return _two_way(ns, "sym", "sym_both_heard")


@check(NB, "symmetric-still-private", points=1,
       hint="keep the rows of sym's Internet-side SIP table sent from 198.51.100.1; count the private sdp_c_addr")
def _symmetric_still_private(ns):
    session = ns["sym"]
    sip = wan(session)
    truth = private_sdp_count(sip[sip.src == public_address(session)])
    answer = int(ns["private_left_box"])
    return truth > 0 and answer == truth, f"you said {answer}"


@check(NB, "alg-rewrites", points=1,
       hint="INVITEs of alg's Internet side, sent from 198.51.100.1 after the mark 'alg': read sdp_c_addr")
def _alg_rewrites(ns):
    session = ns["alg"]
    truth = alg_invite_sdp(session)
    if truth != public_address(session):
        return False, f"the INVITE left the box with c={truth}: the ALG did not rewrite it"
    answer = _addr(ns["alg_sdp_addr"])
    return answer == truth, f"you said {answer}"


@check(NB, "alg-two-way", points=1, hidden=True,
       hint="after_alg.heard_the_other: are both True?")
def _alg_two_way(ns):
    return _two_way(ns, "alg", "alg_both_heard", conversation=0)


@check(NB, "alg-direct-media-lost", points=1,
       hint="the rows of streams where alg_on is True: read dst")
def _alg_direct_media_lost(ns):
    session = ns["direct"]
    heard_with_alg = heard(session, 0)
    if any(heard_with_alg.values()):
        return False, ("in your lab a phone heard the other with the ALG on and direct media: "
                       "the lab was not set up as in the notebook")
    truth = media_destinations_with_alg(session)
    if truth != {public_address(session)}:
        return False, f"in your lab the phones sent RTP to {sorted(truth)}, not to the box's public address"
    answer = _addr(ns["alg_media_dst"])
    return answer in truth, f"you said {answer}"


@check(NB, "lan-direct-two-way", points=1,
       hint="lan_direct.heard_the_other: are both True?")
def _lan_direct_two_way(ns):
    return _two_way(ns, "direct", "lan_direct_both_heard")
