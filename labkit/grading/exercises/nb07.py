"""Checks of ``notebooks/07-hardening.ipynb`` (a public PBX: attacked, then defended).

The notebook's labs (both ``exposed-pbx``, the capture on its "internet"): ``07-attack`` (the
scan, the enumeration, the student's firewall, the audit: ``session``) and ``07-crack`` (the
``weak-secret`` variant from the start: ``crack``).  Where each truth comes from, computed here:

* the scan (``scan_answer``): the PBX's answer to svmap's first OPTIONS, in the recorded
  capture of ``07-attack`` after the mark ``svmap``;
* the enumeration (``predict_unknown``): the PBX's first answer to a svwar REGISTER for an
  extension it does not have, in the same capture after the mark ``svwar-leaky`` — per track:
  chan_sip with ``alwaysauthreject=no`` and PJSIP differ;
* the password guessing (``crack_registers``): the REGISTER requests the attacker sent for
  ``6000`` after the mark ``svcrack``, in the recorded capture of ``07-crack``;
* the firewall (``my_firewall``) and the jail (``my_jail``): *configure* probes on a fresh
  ``exposed-pbx`` lab built from the text (read as data: :func:`labkit.teaching.hardening.firewall_overrides`,
  :func:`~labkit.teaching.hardening.jail_overrides`): svmap no longer finds the PBX, the firewall
  counted what it dropped, a call has two-way audio; svcrack is banned and the phones still call;
* the audit (``fixed_sip_conf``): ``labkit audit`` run here on the student's text — no high
  finding left, and still the same PBX (its accounts, TLS on);
* the whole chain (``predict_readable``): what an observer reads on each segment of the
  ``07-chain`` recording (a ``whole-chain`` lab, captured on its three networks), measured here
  with :func:`labkit.teaching.hardening.readable_by_segment`.
"""
from __future__ import annotations

from labkit.errors import LabkitError
from labkit.grading import probes
from labkit.grading.checks import check, configure, recording
from labkit.spec import load_spec
from labkit.teaching.hardening import (
    CHAIN_SEGMENTS,
    LAB,
    READABLE,
    audit_table,
    firewall_overrides,
    jail_overrides,
    readable_by_segment,
)

NB = "07-hardening"
MAIN = recording(NB, "07-attack", LAB, capture=("internet",)).name
CRACK = recording(NB, "07-crack", LAB, capture=("internet",),
                  overrides=load_spec(LAB).variant("weak-secret")).name
#: The carrier first: the trunk's exchange reads the session's first captured place.
CHAIN = recording(NB, "07-chain", "whole-chain", capture=("carrier", "lan", "internet")).name
KNOWN = "6000"  #: the extension svcrack attacks
#: The accounts of the report's sip.conf the fixed text must still have.
ACCOUNTS = ("trunk-carrier", "6000", "6001", "330", "520")
PROBE_TIMEOUT = 120
ATTACKER = "203.0.113.66"


# -- truths ------------------------------------------------------------------------------------
def _window(session, mark: str):
    from labkit.teaching.trunk import _window as window
    sip = session.table("sip")
    start, stop = window(session.marks(), mark)
    return sip[(sip.time >= start) & (sip.time < stop)].sort_values("frame")


def scan_answer(session) -> int:
    sip = _window(session, "svmap")
    pbx, attacker = session.address("vps"), session.address("attacker")
    options = sip[(sip.method == "OPTIONS") & (sip.src == attacker) & (sip.dst == pbx)]
    if options.empty:
        raise AssertionError("the recording holds no OPTIONS from the attacker to the PBX")
    answers = sip[(sip.call_id == options.call_id.iloc[0]) & (sip.src == pbx) & sip.status_code.notna()]
    if answers.empty:
        raise AssertionError("the PBX never answered svmap's OPTIONS in the recording")
    return int(answers.status_code.iloc[0])


def enumeration_answer(session) -> int:
    """The PBX's first answer to a svwar REGISTER for an extension it does not have (svwar
    always starts with one: an extension that cannot exist, its sanity check)."""
    from labkit.teaching.hardening import _user
    sip = _window(session, "svwar-leaky")
    pbx, attacker = session.address("vps"), session.address("attacker")
    users = {e.extension for e in session.spec.pbx.endpoints}
    registers = sip[(sip.method == "REGISTER") & (sip.src == attacker) & (sip.dst == pbx)]
    for _, row in registers.iterrows():
        user = _user(row.to_uri)
        if not user or user in users:
            continue
        answer = sip[(sip.call_id == row.call_id) & (sip.cseq_num == row.cseq_num) & (sip.src == pbx)
                     & sip.status_code.notna()]
        if not answer.empty:
            return int(answer.status_code.iloc[0])
    raise AssertionError("the recording holds no answer to a svwar REGISTER for a missing extension")


def crack_registers(session) -> int:
    from labkit.teaching.hardening import _user
    sip = _window(session, "svcrack")
    pbx, attacker = session.address("vps"), session.address("attacker")
    registers = sip[(sip.method == "REGISTER") & (sip.src == attacker) & (sip.dst == pbx)
                    & (sip.to_uri.map(_user) == KNOWN)]
    if registers.empty:
        raise AssertionError("the recording holds no svcrack REGISTER for 6000")
    return len(registers)


def _code(value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected a response code, not {value!r}")
    return int(str(value).strip().split()[0])


# -- exercise 1: the scanner's answer ------------------------------------------------------------
@check(NB, "scan-answer", points=1, answers=("scan_answer",),
       hint="session.sip_text(CODE_OR_METHOD, since='svmap', src='vps', dst='attacker'): the status line")
def _scan_answer(answer, truth):
    expected = scan_answer(truth.session(MAIN))
    said = _code(answer["scan_answer"])
    return said == expected, ("the code of the PBX's answer" if said == expected
                              else "not the code on the status line of the PBX's answer")


# -- exercise 2: enumeration ---------------------------------------------------------------------
@check(NB, "predict-enumeration", points=2, answers=("predict_unknown",),
       hint="with alwaysauthreject=no chan_sip tells a missing user apart; does PJSIP have that setting?")
def _predict_enumeration(answer, truth):
    expected = enumeration_answer(truth.session(MAIN))
    said = _code(answer["predict_unknown"])
    return said == expected, ("what the PBX answered a missing extension" if said == expected
                              else "not what the PBX answered a missing extension")


# -- exercise 3: password guessing ---------------------------------------------------------------
@check(NB, "crack-registers", points=1, answers=("crack_registers",),
       hint="crack.messages(since='svcrack'): count the REGISTER requests (each guess is more than one)")
def _crack_registers(answer, truth):
    expected = crack_registers(truth.session(CRACK))
    try:
        said = int(answer["crack_registers"])
    except (TypeError, ValueError):
        return False, f"{answer['crack_registers']!r} is not a number"
    return said == expected, ("the REGISTER requests the attacker sent for 6000" if said == expected
                              else "not the number of REGISTER requests from the attacker after the mark")


# -- exercise 4: the firewall --------------------------------------------------------------------
def apply_firewall(text: str, track) -> dict:
    try:
        return firewall_overrides(text)
    except LabkitError as exc:
        raise probes.Refused(exc.message) from None


def firewall_problems(text) -> list[str]:
    """What the firewall text says wrong, read as data (no lab): SIP from the two phones only,
    the RTP range open, everything else dropped."""
    try:
        overrides = firewall_overrides(text)
    except LabkitError as exc:
        return [exc.message]
    rules = next(h for h in overrides["hosts"] if h["name"] == "vps")["firewall"]
    allow, problems = rules.get("allow", []), []
    if rules.get("policy", "drop") != "drop":
        problems.append("the policy lets everything else in: policy: drop")
    sip = [r for r in allow if r["proto"] == "udp" and _covers(r["ports"], 5060)]
    if not sip:
        problems.append("no rule lets SIP (udp 5060) in: the phones could not register")
    elif any(r.get("source") in (None, "0.0.0.0/0", "203.0.113.0/24", "attacker") for r in sip):
        problems.append("SIP is open to more than the phones: give each SIP rule a source")
    elif {"alice", "bob"} - {r.get("source") for r in sip} - {"203.0.113.21", "203.0.113.22"}:
        sources = {r.get("source") for r in sip}
        if not ({"alice", "203.0.113.21"} & sources and {"bob", "203.0.113.22"} & sources):
            problems.append("SIP must be let in from both phones' hosts (alice and bob)")
    if not any(r["proto"] == "udp" and _covers(r["ports"], 10000) and _covers(r["ports"], 20000)
               and r.get("source") is None for r in allow):
        problems.append("the RTP range (udp 10000-20000) is not open: no audio")
    return problems


def _covers(ports: str, port: int) -> bool:
    low, _, high = str(ports).partition("-")
    return int(low) <= port <= int(high or low)


@check(NB, "firewall-valid", points=1, answers=("my_firewall",),
       hint="allow: one rule per phone for udp 5060 (source: alice / bob), udp 10000-20000 from anywhere; policy: drop")
def _firewall_valid(answer, truth):
    problems = firewall_problems(answer["my_firewall"])
    return not problems, "; ".join(problems[:3]) or "your firewall reads as the lab file asks"


@configure(NB, "firewall-blocks", answer="my_firewall", lab=LAB, apply=apply_firewall, points=3,
           timeout=PROBE_TIMEOUT, wait_registered=True,
           hint="allow: SIP (udp 5060) from alice and from bob only, the RTP range from anywhere; policy drop")
def _firewall_blocks(lab):
    from labkit.lab.conversation import talk
    before = lab.firewall("vps").counters().get("everything else", {}).get("packets", 0)
    scan = lab.attack("attacker", "svmap", target="203.0.113.0/27", timeout=15)
    pbx = f"{lab.spec.address_of('vps')}:5060"
    if pbx in {row.get("sip_device") for row in scan.found}:
        return False, "svmap still finds the PBX"
    dropped = lab.firewall("vps").counters().get("everything else", {}).get("packets", 0) - before
    if dropped < 1:
        return False, "the firewall counted no dropped packet during the scan"
    conversation = talk(lab, "bob", "6000", seconds=2)
    if not conversation.two_way:
        return False, f"Bob's call to Alice is not two-way: {conversation.summary()}"
    return True, f"svmap found no PBX ({dropped} packets dropped); Bob and Alice talked both ways"


# -- exercise 5: the jail ------------------------------------------------------------------------
def apply_jail(text: str, track) -> dict:
    try:
        return jail_overrides(text)
    except LabkitError as exc:
        raise probes.Refused(exc.message) from None


def jail_problems(text) -> list[str]:
    try:
        jail = jail_overrides(text)["pbx"]["fail2ban"]
    except LabkitError as exc:
        return [exc.message]
    maxretry, findtime, bantime = (jail.get(k, d) for k, d in (("maxretry", 5), ("findtime", 60), ("bantime", 60)))
    problems = []
    if maxretry > 5:
        problems.append(f"maxretry = {maxretry}: 5 at most")
    if findtime < 60:
        problems.append(f"findtime = {findtime}: a minute (60) or more")
    if bantime < 3600:
        problems.append(f"bantime = {bantime}: an hour (3600) or more")
    return problems


@check(NB, "jail-valid", points=1, answers=("my_jail",),
       hint="[asterisk], enabled = true, maxretry = 5 (or fewer), findtime = 60 or more, bantime = 3600 or more")
def _jail_valid(answer, truth):
    problems = jail_problems(answer["my_jail"])
    return not problems, "; ".join(problems) or "your jail reads as asked"


@configure(NB, "jail-bans", answer="my_jail", lab=LAB, apply=apply_jail, points=2,
           timeout=PROBE_TIMEOUT, wait_registered=True,
           hint="[asterisk], enabled = true, maxretry of 5 at most, findtime a minute or more, bantime an hour")
def _jail_bans(lab):
    from labkit.lab.conversation import talk
    jail = lab.spec.pbx.fail2ban
    if jail.maxretry > 5 or jail.findtime < 60 or jail.bantime < 3600:
        return False, (f"maxretry {jail.maxretry}, findtime {jail.findtime}, bantime {jail.bantime}: "
                       "asked 5 at most, 60 or more, 3600 or more")
    guesses = [f"guess{i:04d}" for i in range(300)]
    lab.attack("attacker", "svcrack", extension="6000", passwords=guesses, timeout=2)
    try:
        seconds = lab.fail2ban.wait_banned(ATTACKER, timeout=5)
    except LabkitError:
        return False, "svcrack's 300 guesses were not banned"
    conversation = talk(lab, "bob", "6000", seconds=2)
    if not conversation.two_way:
        return False, f"during the ban, Bob's call to Alice is not two-way: {conversation.summary()}"
    return True, (f"the attacker was banned (within {seconds:.1f} s of the attack's end); "
                  "Bob and Alice talked both ways during the ban")


# -- exercise 6: the audit -----------------------------------------------------------------------
def audit_problems(text) -> list[str]:
    """What keeps the student's sip.conf from passing: high findings, or not the same PBX."""
    from labkit.audit.parse import parse
    if not isinstance(text, str) or not text.strip():
        return ["fixed_sip_conf should be the text of your sip.conf"]
    try:
        parsed = parse(text, "sip.conf", "sip")
        table = audit_table([("sip.conf", text)])
    except LabkitError as exc:
        return [exc.message]
    sections = {s.name: s for s in parsed.sections}
    problems = [f"[{name}] is gone: fix the account, do not delete it" for name in ACCOUNTS if name not in sections]
    for name in ACCOUNTS[1:]:
        if name in sections and not (sections[name].get("secret") or sections[name].get("md5secret")):
            problems.append(f"[{name}] has no secret (or md5secret) any more")
    general = sections.get("general")
    if general is None or (general.get("tlsenable") or "").lower() not in ("yes", "true", "on", "1"):
        problems.append("TLS is off: keep tlsenable = yes and fix its settings")
    high = table[table.severity == "high"]
    problems += [f"{row.rule} at {row.where}" for row in high.itertuples()]
    return problems


@check(NB, "audit-fixed", points=2, answers=("fixed_sip_conf",),
       hint="each high finding's fix line: a secret of its own per account, no tlscipher=ALL, no tlsclientmethod=tlsv1")
def _audit_fixed(answer, truth):
    problems = audit_problems(answer["fixed_sip_conf"])
    return not problems, "; ".join(problems[:4]) or "no high finding left, the same accounts, TLS on"


# -- exercise 7: the whole chain -----------------------------------------------------------------
def readable_said(value) -> dict[str, set[str]]:
    """The student's ``{segment: ["sip", "media"], …}``, each segment's items as a set."""
    if not isinstance(value, dict):
        raise TypeError("predict_readable should be a dict: {'lan': [...], 'internet': [...], 'carrier': [...]}")
    said = {}
    for segment in CHAIN_SEGMENTS:
        items = value.get(segment, ())
        items = [items] if isinstance(items, str) else list(items or ())
        unknown = [i for i in items if str(i).lower() not in READABLE]
        if unknown:
            raise TypeError(f"{unknown[0]!r} under {segment!r}: the items are 'sip' and 'media'")
        said[segment] = {str(i).lower() for i in items}
    return said


@check(NB, "predict-exposure", points=2, answers=("predict_readable",),
       hint="which legs did notebooks 03–04 protect (TLS hides the SIP and its a=crypto keys, SRTP the audio), "
            "and how does the trunk of notebook 05 carry its SIP and RTP?")
def _predict_exposure(answer, truth):
    measured = readable_by_segment(truth.session(CHAIN))
    said = readable_said(answer["predict_readable"])
    wrong = [s for s in CHAIN_SEGMENTS if said[s] != set(measured.get(s, []))]
    return not wrong, ("what an observer reads on every segment" if not wrong
                       else f"not what an observer reads on: {', '.join(wrong)}")
