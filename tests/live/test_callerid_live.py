"""Live, both tracks: the report's dialplan and caller ID through the trunk (dialplan-office).

One lab per track, shared by the tests of this module (each test starts from the lab file
as shipped, ``lab.switch(None)``, and switches to the variants it needs):

* the pattern tester's table (asked of Asterisk, ``dialplan show``) equals the route Asterisk
  really runs when each number is dialled (its "Executing" log lines), the report's
  one-X-short trap included;
* a call from the PSTN for each DID, in each form a carrier may send it, rings the expected
  extension (or none: 404);
* each caller ID case gives what the PSTN phone displays: the line, the alias, a foreign
  number replaced or refused (403 Caller ID not allowed), a withheld number hidden only when
  the trunk sends the real identity with Privacy: id (trust_id_outbound).
"""
from __future__ import annotations

import re
import time

import pytest

from labkit import analysis
from labkit.errors import PhoneError
from labkit.lab import Lab, leftovers
from labkit.services.asterisk import dialplan

pytestmark = pytest.mark.live
PBX, CARRIER = "198.51.100.10", "203.0.113.10"
CAROL = "0639980001"
LINE_DID, ALIAS_DID = "0199001234", "0199001235"
# "Executing [0199009999@outgoing:1] NoOp("PJSIP/520-00000003", "route national") in new stack"
_EXECUTING = re.compile(r'Executing \[(?P<number>[^@\]]+)@(?P<context>[^:\]]+):1\] '
                        r'(?P<app>\w+)\("[^"]*", "(?P<args>.*)"\) in new stack')


@pytest.fixture(scope="module", params=["modern", "legacy"])
def lab(request):
    instance = Lab.load("dialplan-office", track=request.param, name=f"dp-{request.param}")
    instance.up(capture=("internet",), capture_name="callerid")
    yield instance
    instance.down()
    assert leftovers(instance.name) == []


@pytest.fixture
def fresh(lab):
    """The shared lab as its file says, the trunk registered."""
    lab.switch(None)
    assert lab.pbx.wait_trunk(timeout=10) == "Registered"
    return lab


def _switch(lab, variant):
    lab.switch(variant)
    assert lab.pbx.wait_trunk(timeout=10) == "Registered"


def _log_mark(lab) -> int:
    return len((lab.pbx.log_dir / "messages").read_text(errors="replace"))


def _log_since(lab, mark: int) -> str:
    return (lab.pbx.log_dir / "messages").read_text(errors="replace")[mark:]


def _closed_with(call) -> str:
    return next((str(e.get("param")) for e in call.events if e.get("type") == "CALL_CLOSED"), "")


def _dialled(lab, caller: str, number: str) -> str:
    """Dial ``number`` from ``caller``, hang up; the route Asterisk ran first, as the tester
    writes it (``NoOp(route national)``), or '(none)' when no extension matched: refused
    with 404 (logged), or with 484 Address Incomplete when more digits could still match a
    pattern (RFC 3261 §21.4.22; Asterisk logs nothing then)."""
    mark = _log_mark(lab)
    call = lab.phone(caller).call(number)
    try:
        call.wait_established(3)
    except PhoneError:
        pass  # most of these numbers are refused further on: routing is what is measured
    finally:
        try:
            lab.phone(caller).command("hangup")
        except PhoneError:
            pass  # already over
    rejected = f"to extension '{number}' rejected because extension not found in context 'outgoing'"
    deadline = time.monotonic() + 5
    while True:  # the log is written a moment after the phone hears the answer
        log = _log_since(lab, mark)
        for m in _EXECUTING.finditer(log):
            if m.group("number") == number:
                return f"{m.group('app')}({m.group('args')})"
        if rejected in log or _closed_with(call).startswith("484"):
            return "(none)"
        assert time.monotonic() < deadline, f"no route and no rejection of {number} in the log:\n{log}"
        time.sleep(0.2)


def _rang(lab, caller: str, target: str) -> list[str]:
    """Which office phones received ``caller``'s call to ``target``."""
    before = {p: len(lab.phone(p).calls) for p in ("alice", "bob")}
    lab.talk(caller, target, "alice", seconds=0.5, answer_timeout=6)
    return [p for p in before if len(lab.phone(p).calls) > before[p]]


def _carol_sees(lab, caller: str, target: str = CAROL) -> str:
    """The caller's number as Carol's phone shows it (user part of the incoming From)."""
    before = len(lab.phone("carol").calls)
    conversation = lab.talk(caller, target, "carol", seconds=0.5, answer_timeout=6)
    calls = lab.phone("carol").calls
    if len(calls) == before:
        return f"refused: {conversation.error}"
    return calls[-1].peer.split(":", 1)[1].split("@", 1)[0]


NUMBERS = ["330", "0199009999", "0912345678", "019900999", "36510199009999", "12"]


def test_the_pattern_tester_says_what_a_real_call_runs(fresh):
    lab = fresh
    table = dialplan.match_table(lab.pbx, NUMBERS, "outgoing")
    predicted = dict(zip(table.number, table.first_step.where(table.extension != "(none)", "(none)")))
    assert predicted == {"330": f"Dial({lab.track.channel_tech}/330,20,tr)",
                         "0199009999": "NoOp(route national)", "0912345678": "NoOp(route non-geographic)",
                         "019900999": "(none)", "36510199009999": "NoOp(route withheld)", "12": "(none)"}, table
    assert {n: _dialled(lab, "bob", n) for n in NUMBERS} == predicted
    # Nine digits could still become a national number: "incomplete", not "not found".
    assert _closed_with(lab.phone("bob").calls[-3]).startswith("484"), lab.phone("bob").calls[-3].events
    assert _closed_with(lab.phone("bob").calls[-1]).startswith("404")

    # The report's trap: one X short, a ten-digit number falls through and nine digits go out.
    _switch(lab, "one-x-short")
    short = dialplan.match_table(lab.pbx, ["0199009999", "019900999"], "outgoing")
    assert dict(zip(short.number, short.extension)) == {"0199009999": "(none)", "019900999": "_0[1-7]XXXXXXX"}
    assert _dialled(lab, "bob", "0199009999") == "(none)"
    assert _dialled(lab, "bob", "019900999") == "NoOp(route national)"


# variant -> (who rings for the line's DID, for the alias's DID, Request-URI user of the line's call)
INBOUND = {
    None: (["alice"], ["bob"], "0033199001234"),
    "inbound-national": (["alice"], ["bob"], "0199001234"),
    "inbound-contact": (["alice"], ["alice"], "0033199001234"),   # the Contact: no DID at all
    "contact-s": (["alice"], ["alice"], "s"),
    "inbound-e164": ([], [], "+33199001234"),                     # a form the dialplan lacks: 404
}


@pytest.mark.parametrize("variant", list(INBOUND))
def test_each_did_form_rings_the_expected_extension(fresh, variant):
    lab = fresh
    if variant:
        _switch(lab, variant)
    line_rings, alias_rings, user = INBOUND[variant]
    with lab.capture("internet", name=f"in-{variant or 'shipped'}") as capture:
        assert _rang(lab, "carol", LINE_DID) == line_rings
    assert _rang(lab, "carol", ALIAS_DID) == alias_rings
    sip = analysis.sip_messages(capture.files["internet"])
    invite = sip[(sip.method == "INVITE") & (sip.src == CARRIER) & (sip.dst == PBX)].iloc[0]
    assert invite.request_uri.split(":", 1)[1].split("@")[0] == user
    if variant == "contact-s":
        assert "DID none, the s fallback" in lab.pbx.log(200)


def test_caller_id_is_the_line_or_its_alias_and_foreign_numbers_are_replaced(fresh):
    lab = fresh
    with lab.capture("internet", name="presented") as capture:
        assert _carol_sees(lab, "alice") == LINE_DID
        assert _carol_sees(lab, "bob") == ALIAS_DID
    # From stays the line (fromuser / from_user); the number presented is in P-Asserted-Identity.
    ids = analysis.caller_ids(capture.files["internet"])
    out = ids[ids.src == PBX]
    assert set(out.from_user) == {"0033199001234"}
    assert set(out.pai_user) == {"0033199001234", "0033199001235"}
    assert set(ids[ids.src == CARRIER].from_user) == {"0033199001234", "0033199001235"}  # From as checked

    _switch(lab, "foreign-caller-id")
    assert _carol_sees(lab, "bob") == LINE_DID                    # replaced by the line

    _switch(lab, "carrier-refuses")
    with lab.capture("internet", name="refused") as capture:
        seen = _carol_sees(lab, "bob")
    assert seen.startswith("refused") and "403" in seen
    sip = analysis.sip_messages(capture.files["internet"])
    assert "Caller ID not allowed" in set(sip[sip.src == CARRIER].reason)
    assert _carol_sees(lab, "alice") == LINE_DID                  # the line itself still goes out


def test_a_withheld_number_is_hidden_only_with_the_real_identity_and_privacy(fresh):
    lab = fresh
    # 3651 + number: CALLERID(pres)=prohib.  Without trust_id_outbound the carrier gets no
    # checkable identity (PJSIP: none; chan_sip: an anonymous one) and presents the line.
    assert _carol_sees(lab, "alice", "3651" + CAROL) == LINE_DID
    _switch(lab, "withhold-trusted")
    with lab.capture("internet", name="withheld") as capture:
        assert _carol_sees(lab, "alice", "3651" + CAROL) == "anonymous"
    ids = analysis.caller_ids(capture.files["internet"])
    out, on = ids[ids.src == PBX], ids[ids.src == CARRIER]
    assert (out.pai_user == "0033199001234").all() and (out.privacy == "id").all(), out
    assert (on.from_user == "anonymous").all(), on      # RFC 3323 §4.1.1.3, by the carrier
