"""Checks of ``notebooks/02b-nat-vps.ipynb`` (Asterisk on a VPS, the phones behind boxes).

The notebook's labs (its variable in brackets): ``02-vps`` (vps-pbx, no fix: ``vps``),
``02-vps-symmetric`` (symmetric handling: ``sym``), ``02-vps-alg`` (the box's SIP ALG:
``alg``), ``02-vps-direct`` (direct media: ALG on, then off with symmetric handling:
``direct``) and ``02-two-homes`` (two-homes: each phone behind its own box, Asterisk's NAT
settings on, direct media on then off: ``homes``).  Every truth is read from their captures
(the box's Internet side; the home side; both homes for ``02-two-homes``) or from the
conversations they measured, opened by the checking code (``truth.session``); a check also
fails when the lab does not show the behaviour the exercise is about, whatever the answer.
Predictions (``alg_sdp_addr``, ``alg_media_dst`` …) are noted in the session's log before the
cell that shows the result.

The diagnosis (``02-vps-diagnose-<n>``, the notebook's ``diag``): a vps-pbx lab set up as the
notebook ends (symmetric handling, media anchored, the ALG off, the VPS's firewall open to SIP
and RTP) with one fault drawn from the student's id (:data:`labkit.teaching.vps_nat.VPS_FAULTS`);
``vps_fault`` is judged against that draw, confirmed by the recording of that lab, and
``vps_fix`` (lab-file lines) by a probe on a fresh lab with the student's fault: a two-way call
whose media goes through Asterisk — the fix the two homes of section 5 need, not a phone-to-phone
path that works only because both phones share one LAN.
"""
from __future__ import annotations

from labkit import analysis
from labkit.grading import diagnosis, probes
from labkit.grading.answer_values import said_address, whole_number
from labkit.grading.checks import check, configure, recording
from labkit.grading.exercises.box_wire import heard, private_sdp_count, public_address, talks, wan
from labkit.teaching.faults import student_id
from labkit.teaching.two_nat import TWO_HOMES_LAB, arp_requests
from labkit.teaching.vps_nat import LAB as VPS_LAB
from labkit.teaching.vps_nat import VPS_FAULTS, pick_vps_fault, vps_fault_overrides, vps_fix_overrides

NB = "02b-nat-vps"
VPS = ("lan", "internet")
recording(NB, "02-vps", "vps-pbx", capture=VPS)
SYM = recording(NB, "02-vps-symmetric", "vps-pbx", capture=VPS).name
ALG = recording(NB, "02-vps-alg", "vps-pbx", capture=VPS).name
DIRECT = recording(NB, "02-vps-direct", "vps-pbx", capture=("lan",), overrides={"pbx": {"direct_media": True}}).name
TWO_HOMES = recording(NB, "02-two-homes", TWO_HOMES_LAB, capture=("home-a", "home-b", "internet"),
                      overrides={"pbx": {"direct_media": True}}).name
DIAGNOSIS = {fault: recording(NB, f"02-vps-diagnose-{n}", VPS_LAB, capture=VPS,
                              overrides=vps_fault_overrides(fault)).name
             for n, fault in enumerate(VPS_FAULTS, 1)}


# -- truths, from the captures and the conversations ----------------------------------------------
def register_answer_port(session, user: str) -> int:
    """The port Asterisk answered ``user``'s first REGISTER to, on the Internet side: the port the
    box chose for that phone, which Asterisk learnt from the packet's source and wrote back as
    ``rport=`` in the response's Via (RFC 3581 §4)."""
    sip = wan(session)
    pbx = session.address(session.spec.pbx.host)
    ok = sip[(sip.src == pbx) & (sip.dst == public_address(session)) & (sip.status_code == 200)
             & (sip.cseq_method == "REGISTER") & sip.to_uri.astype(str).str.contains(f"sip:{user}@", regex=False)]
    if ok.empty:
        raise AssertionError(f"the recording holds no 200 OK to {user}'s REGISTER on the Internet side")
    return int(ok.sort_values("frame").dport.iloc[0])

def alg_invite_sdp(session) -> str:
    """The c= address of the first INVITE that left the box after the ALG was switched on."""
    sip = wan(session)
    after = sip[(sip.time > session.marks()["alg"]) & (sip.method == "INVITE")
                & (sip.src == public_address(session)) & sip.has_sdp.astype(bool)].sort_values("frame")
    return str(after.sdp_c_addr.iloc[0])

def media_destinations(session, *, after: str, source: str) -> set[str]:
    """Where ``source`` sent RTP on the home side after the mark ``after``, the PBX left out."""
    streams = session.table("streams", "lan")
    chosen = streams[(streams.first_time >= session.marks()[after]) & (streams.src == source)
                     & (streams.dst != session.address(session.spec.pbx.host))]
    return set(chosen.dst.astype(str))

def media_destinations_with_alg(session) -> set[str]:
    """Where the phones sent RTP, on the home side, before the mark 'no-alg' (the ALG was on);
    streams to the PBX itself (before a re-INVITE took effect) are left out."""
    streams = session.table("streams", "lan")
    phones = {session.address(p.host) for p in session.spec.phones}
    with_alg = streams[(streams.first_time < session.marks()["no-alg"]) & streams.src.isin(phones)
                       & (streams.dst != session.address(session.spec.pbx.host))]
    return set(with_alg.dst.astype(str))

def home_of(session, phone: str) -> str:
    """The network of ``phone``'s host (its home, in the two-homes lab)."""
    host = next(p.host for p in session.spec.phones if p.name == phone)
    return session.spec.host(host).interfaces[0].network

def reinvite_to(session, phone: str) -> str | None:
    """The ``c=`` address of the first re-INVITE of direct media that Asterisk sent ``phone``,
    as it arrived on the phone's home network: an INVITE from the PBX whose SDP does not name
    the PBX itself.  None if Asterisk sent none."""
    sip = session.table("sip", home_of(session, phone))
    pbx = session.address(session.spec.pbx.host)
    invites = sip[(sip.method == "INVITE") & (sip.src == pbx) & (sip.dst == session.address(phone))
                  & sip.has_sdp.astype(bool) & (sip.sdp_c_addr != pbx)].sort_values("frame")
    return None if invites.empty else str(invites.sdp_c_addr.iloc[0])

def looked_for_at_home(session, phone: str, address: str) -> bool:
    """Whether ``phone`` asked its own home network who has ``address`` (ARP) and nobody answered."""
    arp = arp_requests(session.pcap_at(home_of(session, phone)))
    asked = arp[(arp.asker == session.address(phone)) & (arp.asked == address)]
    return not asked.empty and not asked.answered.any()


# -- checks ----------------------------------------------------------------------------------------
@check(NB, "symmetric-rport", points=2, answers=("rports",),
       hint="sym.message(200, src='vps', place='internet', index=N): the answers whose To is sip:6000@… (Alice) "
            "and sip:6001@… (Bob); each Via's rport= parameter")
def _symmetric_rport(answer, truth):
    session = truth.session(SYM)
    deaf = [p for p, ok in heard(session).items() if not ok]
    if deaf:
        return False, f"in your lab {' and '.join(deaf)} did not hear the other: symmetric handling is not in place"
    said = answer["rports"]
    if not isinstance(said, dict) or set(said) != {"alice", "bob"}:
        return False, f"rports should be {{'alice': port, 'bob': port}}, not {said!r}"
    expected = {"alice": register_answer_port(session, "6000"), "bob": register_answer_port(session, "6001")}
    wrong = [name for name in expected if whole_number(said[name]) != expected[name]]
    return not wrong, f"you said {said}" + (f": {' and '.join(wrong)} wrong" if wrong else "")

@check(NB, "symmetric-still-private", points=1, answers=("private_left_box",),
       hint="keep the rows of sym's Internet-side SIP table sent from 198.51.100.1; count the private sdp_c_addr")
def _symmetric_still_private(answer, truth):
    session = truth.session(SYM)
    sip = wan(session)
    expected = private_sdp_count(sip[sip.src == public_address(session)])
    said = whole_number(answer["private_left_box"])
    return expected > 0 and said == expected, f"you said {said}"

@check(NB, "alg-rewrites", points=1, answers=("alg_sdp_addr",),
       hint="the ALG rewrites the private addresses inside the SIP messages it forwards: "
            "into which address of the box?")
def _alg_rewrites(answer, truth):
    session = truth.session(ALG)
    expected = alg_invite_sdp(session)
    if expected != public_address(session):
        return False, f"the INVITE left the box with c={expected}: the ALG did not rewrite it"
    said = said_address(answer["alg_sdp_addr"])
    return said == expected, f"you said {said}"

@check(NB, "alg-direct-media-lost", points=1, answers=("alg_media_dst",),
       hint="the re-INVITE gives each phone the other's address as Asterisk knows it — after the ALG's rewriting")
def _alg_direct_media_lost(answer, truth):
    session = truth.session(DIRECT)
    heard_with_alg = heard(session, 0)
    if any(heard_with_alg.values()):
        return False, ("in your lab a phone heard the other with the ALG on and direct media: "
                       "the lab was not set up as in the notebook")
    expected = media_destinations_with_alg(session)
    if expected != {public_address(session)}:
        return False, f"in your lab the phones sent RTP to {sorted(expected)}, not to the box's public address"
    said = said_address(answer["alg_media_dst"])
    return said in expected, f"you said {said}"

@check(NB, "lan-direct-media", points=1, answers=("lan_direct_dst",),
       hint="without the ALG, Asterisk knows each phone's own address (Contact, c=) — symmetric handling "
            "fixes only its replies")
def _lan_direct_media(answer, truth):
    session = truth.session(DIRECT)
    if not all(heard(session, -1).values()):
        return False, "in your lab the call with the ALG off was not two-way: the lab was not set up as in the notebook"
    bob = session.address("bob")
    expected = media_destinations(session, after="no-alg", source=bob)
    if len(expected) != 1:
        return False, f"in your lab Bob's phone sent RTP to {sorted(expected)} with the ALG off"
    said = said_address(answer["lan_direct_dst"])
    return said in expected, f"you predicted {said}"

@check(NB, "two-homes-media-dst", points=1, answers=("bob_media_dst",),
       hint="the re-INVITE gives Bob the address Alice's phone wrote in its SDP — and Asterisk passes it on as it is")
def _two_homes_media_dst(answer, truth):
    session = truth.session(TWO_HOMES)
    expected = reinvite_to(session, "bob")
    if expected is None:
        return False, "in your lab Asterisk did not re-INVITE Bob: direct media was not on"
    if not looked_for_at_home(session, "bob", expected):
        return False, f"in your lab Bob's phone did not look for {expected} on its own network in vain"
    said = said_address(answer["bob_media_dst"])
    return said == expected, f"you predicted {said}"

@check(NB, "two-homes-hearing", points=1, answers=("hearing",),
       hint="where do Bob's packets go, and can anything at that address in Bob's home reach Alice? And Alice's?")
def _two_homes_hearing(answer, truth):
    session = truth.session(TWO_HOMES)
    if reinvite_to(session, "bob") is None:
        return False, "in your lab Asterisk did not re-INVITE Bob: direct media was not on"
    if len(talks(session)) < 2 or not all(heard(session, -1).values()):
        return False, "in your lab the call with media anchored on Asterisk was not two-way: run the section's cells"
    said = answer["hearing"]
    if not isinstance(said, (list, tuple, set)) or not all(isinstance(p, str) for p in said):
        raise TypeError(f'expected a list of phones ("alice", "bob"), not {said!r}')
    expected = {phone for phone, yes in heard(session, 0).items() if yes}
    return {p.strip().lower() for p in said} == expected, f"you predicted {sorted(said)}"


# -- the diagnosis: a VPS fault per student ---------------------------------------------------------
PROBE_TIMEOUT = 120
#: RTP packets each way through Asterisk in the probe's 2-s call (50 a second per stream when
#: anchored); a few cross the VPS before direct media's re-INVITEs take effect.
ANCHORED_PACKETS = 40


# Hidden: with its verdict on screen, three tries would find the name without a diagnosis.
@check(NB, "diagnose-name", points=1, hidden=True, answers=("vps_fault",),
       hint="does Asterisk's INVITE for Alice reach the box, and is its 200 OK acknowledged? where do the phones "
            "send their RTP at home after the answer? does any RTP leave the VPS?")
def _diagnose_name(answer, truth):
    expected = diagnosis.students_fault(truth, pick_vps_fault, DIAGNOSIS, vps_fault_overrides)
    return diagnosis.judge_name(answer["vps_fault"], expected, VPS_FAULTS)


def apply_vps_fix(text: str, track, student: str | None = None) -> dict:
    """The student's fix (lab-file lines) over the fault of their own lab."""
    _, fault = pick_vps_fault(student_id(student))
    return vps_fix_overrides(text, fault)  # a VpsFixError is the refusal (probes.validate)


def anchored_two_way(lab):
    """Bob calls Alice: both hear the other, and the media went through Asterisk both ways (the
    Internet side of the box carried RTP to and from the VPS for the whole call)."""
    two_way, why, pcap = probes.two_way_call(lab, "bob", "6000", capture="internet")
    if not two_way:
        return False, why
    streams = analysis.rtp_streams(pcap)
    pbx = str(lab.spec.address_of(lab.spec.pbx.host))
    into, out = int(streams[streams.dst == pbx].packets.sum()), int(streams[streams.src == pbx].packets.sum())
    if min(into, out) < ANCHORED_PACKETS:
        return False, (f"two-way, but phone to phone: {into} RTP packets reached Asterisk and {out} left it — "
                       "between two homes (section 5) this call would be silent; keep the media on Asterisk")
    return True, f"two-way, media through Asterisk ({into} RTP packets in, {out} out)"


@configure(NB, "diagnose-fixed", answer="vps_fix", lab=VPS_LAB, apply=apply_vps_fix, points=2,
           timeout=PROBE_TIMEOUT,
           hint="one key a line among symmetric, direct_media, sip_alg, firewall_allow — the one your fault got "
                "wrong, with media kept on Asterisk")
def _diagnose_fixed(lab):
    return anchored_two_way(lab)
