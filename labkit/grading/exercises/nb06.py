"""Checks of ``notebooks/06-dialplan-callerid.ipynb`` (routing calls and caller ID).

The notebook's labs (both ``dialplan-office``): ``06-routing`` (the report's dialplan, the
capture on the "internet" between the office's router and the carrier, and on the "office"
LAN: ``session``) and ``06-mine`` (the student's own contexts: ``mine``).  Where each truth
comes from, computed here:

* predictions (``predict_winners``, ``predict_nine_digits``, ``predict_112``): the extension the
  running Asterisk picked for each number of :data:`PREDICTED` (the recorded answers of
  ``dialplan show NUMBER@outgoing`` of ``06-routing``, read by
  :func:`labkit.services.asterisk.dialplan.parse`) and the final answer the PBX gave Bob's INVITE
  for the two numbers, in the recorded capture of the office LAN;
* the contexts (``my_contexts``): read as data (:func:`labkit.teaching.dialplan.dialplan_contexts`,
  then the lab model), and two *configure* probes on a fresh ``dialplan-office`` lab running
  them: what the office may dial (the pattern tester of the running Asterisk, and real calls),
  and which phone each DID rings, in each form a carrier sends it;
* the alias (``alias_dialplan``): a probe on a fresh lab — what Carol's phone displays for
  Alice's call and for Bob's;
* the refused call (``refused_reason``, ``refused_number``): the carrier's 403 to the PBX and
  the identity the refused INVITE asserted, in the recorded capture of the "internet".
"""
from __future__ import annotations

from labkit.errors import LabkitError
from labkit.grading import probes
from labkit.grading.checks import check, configure, recording
from labkit.spec import load_spec
from labkit.teaching.dialplan import ALIAS, LINE, PSTN_NUMBER, dialplan_contexts, user_of

NB = "06-dialplan-callerid"
LAB = "dialplan-office"
MAIN = recording(NB, "06-routing", LAB, capture=("internet", "office")).name
MINE = recording(NB, "06-mine", LAB, capture=("internet",)).name
#: The numbers of exercise 1, in the order of the question.
PREDICTED = ("520", "0639980001", "0912345678", "0899123456", "063998000", "36510639980001", "112")
NINE_DIGITS, EMERGENCY = "063998000", "112"
#: Exercise 2: what the office may dial (True) and may not (False) through [outgoing].
OUTGOING = {"330": True, "520": True, "0199001299": True, "0639980001": True, "0712345678": True,
            "0912345678": True, "112": True, "0899123456": False, "063998000": False, "06399800011": False,
            "3651": False}
#: Exercise 2: which phones each DID rings (the line: Bob; the alias: Alice; no DID: both).
RINGS = {"line": ("bob",), "alias": ("alice",), "s": ("alice", "bob")}
PROBE_TIMEOUT = 170


# -- truths ------------------------------------------------------------------------------------
def winners(session) -> dict[str, str]:
    """Number → the extension Asterisk picked in ``outgoing``, as the pattern tester first asked it."""
    from labkit.services.asterisk import dialplan
    out: dict[str, str] = {}
    for entry in session.recorder.entries:
        command = entry["args"].get("command", "") if entry["kind"] == "cli" else ""
        for number in PREDICTED:
            if number not in out and command == f"dialplan show {number}@outgoing":
                found = dialplan.parse(str(entry["result"]), number, "outgoing")
                out[number] = found.extension or "(none)"
    missing = [n for n in PREDICTED if n not in out]
    if missing:
        raise AssertionError(f"the recording never asked the pattern tester about {', '.join(missing)}: "
                             "the notebook was not run as written")
    return out


def answer_to(session, caller: str, number: str) -> int:
    """The final response the PBX sent to ``caller``'s first INVITE for ``number`` (office LAN)."""
    sip = session.table("sip", "office")
    phone, pbx = session.address(caller), session.address(session.spec.pbx.host)
    invites = sip[(sip.method == "INVITE") & (sip.src == phone) & (sip.dst == pbx)
                  & (sip.request_uri.map(user_of) == number)]
    if invites.empty:
        raise AssertionError(f"the recording holds no INVITE from {caller} for {number}")
    call_id = invites.call_id.iloc[0]
    codes = sip[(sip.call_id == call_id) & (sip.src == pbx) & (sip.cseq_method == "INVITE")
                & sip.status_code.notna() & (sip.status_code >= 300) & ~sip.status_code.isin([401, 407])]
    if codes.empty:
        raise AssertionError(f"no final refusal of {caller}'s call to {number} in the recording")
    return int(codes.status_code.iloc[0])


def refused(session) -> tuple[str, str]:
    """(reason phrase of the carrier's 403 to the PBX, user part of that INVITE's asserted identity)."""
    from labkit import analysis
    sip = session.table("sip", "internet")
    pbx, carrier = session.address(session.spec.pbx.host), session.address(session.spec.carrier.host)
    rows = sip[(sip.status_code == 403) & (sip.src == carrier) & (sip.dst == pbx) & (sip.cseq_method == "INVITE")]
    if rows.empty:
        raise AssertionError("the recording holds no 403 to an INVITE from the carrier")
    call_id = rows.call_id.iloc[0]
    ids = analysis.caller_ids(session.pcap_at("internet"))
    sent = ids[(ids.call_id == call_id) & (ids.src == pbx)]
    if sent.empty:
        raise AssertionError("the refused INVITE is not in the recording")
    asserted = sent.pai_user.iloc[0] or sent.rpid_user.iloc[0]
    return str(rows.reason.iloc[0]).strip(), str(asserted)


def _code(value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected a response code, not {value!r}")
    return int(str(value).strip().split()[0])


# -- exercise 1: which numbers match ------------------------------------------------------------
@check(NB, "predict-winners", points=2, answers=("predict_winners",),
       hint="for each number in order, the extension that wins (the name as written after exten =>, "
            "e.g. _09XXXXXXXX) or none: mind the digits each pattern needs, and what '.' matches")
def _predict_winners(answer, truth):
    expected = winners(truth.session(MAIN))
    said = str(answer["predict_winners"]).split()
    if len(said) != len(PREDICTED):
        return False, f"{len(said)} words for {len(PREDICTED)} numbers"
    said = ["(none)" if w.strip("()").lower() == "none" else w for w in said]
    wrong = [n for n, w in zip(PREDICTED, said) if w != expected[n]]
    return not wrong, f"{len(PREDICTED) - len(wrong)} of {len(PREDICTED)} right" + (
        f"; wrong for {', '.join(wrong)}" if wrong else "")


@check(NB, "predict-refusals", points=1, answers=("predict_nine_digits", "predict_112"),
       hint="nothing matches either number; but could more digits still make one of them match?")
def _predict_refusals(answer, truth):
    session = truth.session(MAIN)
    nine, emergency = answer_to(session, "bob", NINE_DIGITS), answer_to(session, "bob", EMERGENCY)
    said = (_code(answer["predict_nine_digits"]), _code(answer["predict_112"]))
    return said == (nine, emergency), f"you predicted {said[0]} and {said[1]}"


# -- exercise 2: your contexts --------------------------------------------------------------------
def contexts_problems(text, tech: str) -> tuple[dict, list[str]]:
    """The contexts a text declares and what in it the lab would refuse (empty: runs)."""
    try:
        contexts = dialplan_contexts(text, ("outgoing", "incoming"), tech=tech)
    except LabkitError as exc:
        return {}, [exc.message]
    problems = [f"no [{name}] context" for name in ("outgoing", "incoming") if name not in contexts]
    if not problems:
        try:
            load_spec(LAB, {"pbx": {"dialplan": contexts}})
        except LabkitError as exc:
            problems.append(exc.message)
    return contexts, problems


@check(NB, "contexts-valid", points=1, answers=("my_contexts",),
       hint="[outgoing] and [incoming], exten => / same => lines, Dial with this track's technology")
def _contexts_valid(answer, truth):
    from labkit import tracks
    _, problems = contexts_problems(answer["my_contexts"], tracks.get(truth.track).channel_tech)
    return not problems, "; ".join(problems[:3]) or "your contexts load into the lab"


def apply_contexts(text: str, track) -> dict:
    contexts, problems = contexts_problems(text, track.channel_tech)
    if problems:
        raise probes.Refused("; ".join(problems[:3]))
    return {"pbx": {"dialplan": contexts}}


def _rang(lab, number: str, answerer: str) -> list[str]:
    before = {p: len(lab.phone(p).calls) for p in ("alice", "bob")}
    lab.talk("carol", number, answerer, seconds=0.5, answer_timeout=6)
    return sorted(p for p in before if len(lab.phone(p).calls) > before[p])


@configure(NB, "outgoing-routes", answer="my_contexts", lab=LAB, apply=apply_contexts, points=2,
           timeout=PROBE_TIMEOUT, wait_registered=True,
           hint="ten-digit 01-07 and 09 numbers and 112 out through trunk-out, 330/520 inside, nothing else")
def _outgoing_routes(lab):
    from labkit.services.asterisk import dialplan
    lab.pbx.wait_trunk(timeout=10)
    table = dialplan.match_table(lab.pbx, list(OUTGOING), "outgoing")
    matched = {n: e != "(none)" for n, e in zip(table.number, table.extension)}
    wrong = [n for n, want in OUTGOING.items() if matched[n] != want]
    if wrong:
        return False, "the running Asterisk " + "; ".join(
            f"{'matches' if matched[n] else 'does not match'} {n}" for n in wrong[:4])
    inside = lab.talk("bob", "330", "alice", seconds=0.5, answer_timeout=6)
    if not inside.established:
        return False, f"Bob's call to 330 did not reach Alice: {inside.error}"
    out = lab.talk("alice", PSTN_NUMBER, "carol", seconds=0.5, answer_timeout=6)
    if not out.established:
        return False, f"Alice's call to {PSTN_NUMBER} did not reach Carol: {out.error}"
    return True, "each number matches or not as asked; 330 and Carol's mobile answered"


@configure(NB, "incoming-routes", answer="my_contexts", lab=LAB, apply=apply_contexts, points=2,
           timeout=PROBE_TIMEOUT, wait_registered=True,
           hint="both forms of each DID (0033… and 0…), and s for a call with no number")
def _incoming_routes(lab):
    lab.pbx.wait_trunk(timeout=10)
    line, alias = "0" + LINE[4:], "0" + ALIAS[4:]
    for form in ("international", "national"):
        if form != "international":
            lab.reconfigure(carrier={"inbound_uri": form})
            lab.pbx.wait_trunk(timeout=10)
        for number, who in ((line, RINGS["line"]), (alias, RINGS["alias"])):
            rang = _rang(lab, number, who[0])
            if tuple(rang) != who:
                return False, (f"a call for {number} sent in {form} form rang {', '.join(rang) or 'nobody'}, "
                               f"not {', '.join(who)}")
    lab.reconfigure(carrier={"inbound_uri": "contact"}, pbx={"trunk": {"contact_user": "s"}})
    lab.pbx.wait_trunk(timeout=10)
    rang = _rang(lab, line, "alice")
    if tuple(rang) != RINGS["s"]:
        return False, f"a call that reaches s rang {', '.join(rang) or 'nobody'}, not alice and bob"
    return True, "each DID in each form, and s, rang the phones asked"


# -- exercise 3: the alias ------------------------------------------------------------------------
def apply_alias(text: str, track) -> dict:
    try:
        contexts = dialplan_contexts(text, ("trunk-out",), tech=track.channel_tech)
        overrides = {"pbx": {"dialplan": contexts}}
        load_spec(LAB, overrides)
    except LabkitError as exc:
        raise probes.Refused(exc.message) from None
    return overrides


def _displayed(lab, caller: str) -> str:
    carol = lab.phone("carol")
    before = len(carol.calls)
    talk = lab.talk(caller, PSTN_NUMBER, "carol", seconds=0.5, answer_timeout=6)
    if len(carol.calls) == before:
        return f"no call ({talk.error})"
    return user_of(carol.calls[-1].peer)


@configure(NB, "alias-presented", answer="alias_dialplan", lab=LAB, apply=apply_alias, points=2,
           timeout=PROBE_TIMEOUT, wait_registered=True,
           hint="[trunk-out]: tell Alice (330) from Bob by ${CALLERID(num)}, Set(CALLERID(num)=…) to the number "
                "each presents, then Dial(…/${EXTEN}@carrier)")
def _alias_presented(lab):
    lab.pbx.wait_trunk(timeout=10)
    alice, bob = _displayed(lab, "alice"), _displayed(lab, "bob")
    want_alice, want_bob = "0" + ALIAS[4:], "0" + LINE[4:]
    ok = (alice, bob) == (want_alice, want_bob)
    return ok, f"Carol's phone showed {alice} for Alice and {bob} for Bob"


# -- exercise 4: a refused call -------------------------------------------------------------------
@check(NB, "refused-call", points=2, answers=("refused_reason", "refused_number"),
       hint="session.raw(403, since='refused') for the carrier's words; session.raw('INVITE', since='refused') "
            "for the identity the PBX asserted")
def _refused(answer, truth):
    reason, number = refused(truth.session(MAIN))
    said_reason = " ".join(str(answer["refused_reason"]).split())
    said_number = str(answer["refused_number"]).strip().replace(" ", "")
    wrong = []
    if said_reason.lower() != reason.lower():
        wrong.append(f"the reason {said_reason!r} is not the carrier's")
    if said_number != number:
        wrong.append(f"{said_number} is not the number the PBX asserted")
    return not wrong, "; ".join(wrong) or "the carrier's reason and the refused identity"

