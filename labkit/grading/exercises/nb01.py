"""Checks of ``notebooks/01-first-call.ipynb``.

The notebook's sessions: ``01-first-call`` (the call with media anchored on Asterisk,
``session`` in the notebook) and ``01-direct-media`` (the direct-media variant, ``direct``,
started from the student's own direct-media lines: the ``direct-media-lines`` probe grades them
on a lab of its own);
every truth is read from their captures, opened by the checking code (``truth.session``).
Addresses are asked as ``"address:port"`` (the address alone is on screen from the first cell;
the port is only in the raw SDP or the streams, which the notebook prints after the checks).
"""
from __future__ import annotations

from labkit import tracks
from labkit.errors import LabkitError
from labkit.grading import diagnosis, probes
from labkit.grading.answer_values import whole_number
from labkit.grading.checks import check, configure, recording
from labkit.teaching.faults import student_id
from labkit.teaching.first_call import (
    CALL_FAULTS,
    call_fault_overrides,
    call_fix_overrides,
    direct_media_overrides,
    direct_media_setting,
    pick_call_fault,
)

NB = "01-first-call"
ANCHORED, DIRECT = "01-first-call", "01-direct-media"
recording(NB, ANCHORED, lab="first-call")
recording(NB, DIRECT, lab="first-call")  # direct media switched on by the student's lines
#: The diagnosis labs, one recording per fault (``01-diagnose-<n>``, n from 1 as in CALL_FAULTS).
DIAGNOSIS = {fault: recording(NB, f"01-diagnose-{n}", lab="first-call", overrides=call_fault_overrides(fault)).name
             for n, fault in enumerate(CALL_FAULTS, 1)}
MIN_PACKETS = 10  # a "real" stream: the direct-media call may start with a stray packet or two


def _streams(session):
    s = session.streams
    return s[s.packets >= MIN_PACKETS]


# -- truths, from the captures ----------------------------------------------------------------
def audio_source(session, phone: str = "alice") -> str:
    """``address:port`` that sent ``phone`` the most RTP packets."""
    s = session.streams
    rows = s[s.dst == session.address(phone)].sort_values("packets")
    return f"{rows.src.iloc[-1]}:{int(rows.sport.iloc[-1])}"


def audio_destination(session, phone: str = "bob") -> str:
    """``address:port`` ``phone`` sent the most RTP packets to."""
    s = session.streams
    rows = s[s.src == session.address(phone)].sort_values("packets")
    return f"{rows.dst.iloc[-1]}:{int(rows.dport.iloc[-1])}"


def rtp_legs(session) -> int:
    """Pairs of addresses exchanging RTP (both directions count once)."""
    s = _streams(session)
    return len({frozenset(pair) for pair in zip(s.src, s.dst)})


def reinvite_sdp_addr(session, phone: str = "bob") -> str:
    """``c=address:m=port`` of the SDP of the first re-INVITE Asterisk sent to ``phone``."""
    sip = session.sip
    invites = sip[(sip.method == "INVITE") & (sip.src == session.address("pbx"))
                  & (sip.dst == session.address(phone)) & sip.has_sdp].sort_values("frame")
    return f"{invites.sdp_c_addr.iloc[0]}:{int(invites.sdp_m_port.iloc[0])}"


def reinvites(session) -> int:
    """In-dialog INVITEs (re-INVITEs: their To header has a tag) sent by Asterisk."""
    sip = session.sip
    sent = sip[(sip.method == "INVITE") & (sip.src == session.address("pbx"))]
    return int((sent.to_tag.fillna("") != "").sum())


def _addr_port(value) -> str:
    """A student's ``"address:port"`` (spaces dropped)."""
    return str(value).replace(" ", "").strip()


def _judged(said: str, expected: str):
    """Right: no echo (a later exercise must not find the value on screen); wrong: why."""
    if said == expected:
        return True, ""
    if ":" not in said:
        return False, f"you said {said}: give the address and the port, as \"address:port\""
    return False, f"you said {said}"


# -- checks ------------------------------------------------------------------------------------
@check(NB, "alice-source", points=1, answers=("alice_audio_from",),
       hint="in the raw INVITE Asterisk sent Alice, the c= line's address and the m=audio line's port, "
            "as 'address:port'")
def _alice_source(answer, truth):
    expected = audio_source(truth.session(ANCHORED), "alice")
    return _judged(_addr_port(answer["alice_audio_from"]), expected)


@check(NB, "rtp-streams", points=1, answers=("n_streams",),
       hint="one row of session.streams is one stream (one direction); len() counts rows")
def _rtp_streams(answer, truth):
    expected = len(truth.session(ANCHORED).streams)
    return whole_number(answer["n_streams"]) == expected, f"you said {answer['n_streams']!r}"


@check(NB, "rtp-legs", points=1, answers=("n_legs",),
       hint="a leg is a pair of addresses exchanging RTP: Bob↔? and ?↔Alice; two streams, one leg")
def _rtp_legs(answer, truth):
    expected = rtp_legs(truth.session(ANCHORED))
    return whole_number(answer["n_legs"]) == expected, f"you said {answer['n_legs']!r}"


@check(NB, "reinvite", points=1, answers=("reinvite_sdp_addr",),
       hint="direct.message('INVITE', src='pbx', dst='bob', decrypt=None): the c= line's address and the "
            "m=audio line's port, as 'address:port'")
def _reinvite(answer, truth):
    expected = reinvite_sdp_addr(truth.session(DIRECT), "bob")
    return _judged(_addr_port(answer["reinvite_sdp_addr"]), expected)


@check(NB, "direct-path", points=1, hidden=True, answers=("bob_rtp_to",),
       hint="in direct.streams, where did Bob's packets go? 'address:port'")
def _direct_path(answer, truth):
    expected = audio_destination(truth.session(DIRECT), "bob")
    return _addr_port(answer["bob_rtp_to"]) == expected, ""


@check(NB, "reinvite-count", points=1, hidden=True, answers=("n_reinvites",),
       hint="re-INVITEs are INVITEs inside an existing dialog: their To header carries a tag")
def _reinvite_count(answer, truth):
    return whole_number(answer["n_reinvites"]) == reinvites(truth.session(DIRECT)), ""


def channels_during_call(session) -> int:
    """Channels ``core show channels`` listed while the session's call was up (its recording)."""
    import re
    console = session.recorder.results("call-console")[0]["console"]
    output = next(c["output"] for c in console if c["command"] == "core show channels")
    return int(re.search(r"(\d+) active channels?", output).group(1))


# Hidden: a prediction, graded later (the console is shown right after).
@check(NB, "direct-channels", points=1, hidden=True, answers=("n_channels_direct",),
       hint="the media bypasses Asterisk; does the signalling? how many calls does a B2BUA hold for Bob → Alice?")
def _direct_channels(answer, truth):
    return whole_number(answer["n_channels_direct"]) == channels_during_call(truth.session(DIRECT)), ""


# -- the diagnosis: a fault of the first call per student --------------------------------------------
PROBE_TIMEOUT = 90


# Hidden: with its verdict on screen, three tries would find the name without a diagnosis.
@check(NB, "diagnose-name", points=1, hidden=True, answers=("fault",),
       hint="did Bob's REGISTER get an answer (a SIP status, or an ICMP error in the ladder)? if it did, "
            "what did Asterisk answer Bob's INVITE (status and reason)?")
def _diagnose_name(answer, truth):
    expected = diagnosis.students_fault(truth, pick_call_fault, DIAGNOSIS, call_fault_overrides)
    return diagnosis.judge_name(answer["fault"], expected, CALL_FAULTS)


def apply_call_fix(text: str, track, student: str | None = None) -> dict:
    """The student's fix (lab-file lines) over the fault of their own lab."""
    _, fault = pick_call_fault(student_id(student))
    return call_fix_overrides(text, fault)  # a CallFixError is the refusal (probes.validate)


def bob_calls_alice(lab):
    """Bob registers, and a call Bob → Alice (6000) through Asterisk is two-way."""
    registered, why = probes.registered_at_its_phone(lab, "bob")
    if not registered:
        return False, why
    two_way, why, _ = probes.two_way_call(lab, "bob", "6000", register=False)
    return two_way, "Bob registered, and the call Bob → Alice is two-way" if two_way else why


@configure(NB, "diagnose-fixed", answer="fix", lab="first-call", apply=apply_call_fix, points=2,
           timeout=PROBE_TIMEOUT,
           hint="one lab-file line: sip_port (the PBX), context (Bob's endpoint) or encryption (the PBX's "
                "media, a word in quotes) — the one that undoes your fault")
def _diagnose_fixed(lab):
    return bob_calls_alice(lab)


# -- configure: direct media, from the lines the student wrote ------------------------------------------
def apply_direct_media(text: str, track) -> dict:
    """The student's direct-media lines (the track's file) as the lab file's ``pbx.direct_media``."""
    return direct_media_overrides(text, track.sip_config)  # a DirectMediaTextError is the refusal


def media_went_direct(lab):
    """A call Bob → Alice: Asterisk re-INVITEd both phones, and the RTP flowed phone to phone
    (both directions, from the capture), and each heard the other."""
    from labkit import analysis
    two_way, why, pcap = probes.two_way_call(lab, "bob", "6000", capture="lan")
    if not two_way:
        return False, why
    pbx, bob, alice = (str(lab.spec.address_of(h)) for h in (lab.spec.pbx.host, "bob", "alice"))
    sip = analysis.sip_messages(pcap)
    sent = sip[(sip.method == "INVITE") & (sip.src == pbx) & (sip.to_tag.fillna("") != "")]
    reinvited = {dst for dst in sent.dst if dst in (bob, alice)}
    if reinvited != {bob, alice}:
        return False, ("Asterisk sent no re-INVITE: the media stayed anchored on it" if not reinvited
                       else f"Asterisk re-INVITEd only {', '.join(sorted(reinvited))}")
    streams = analysis.rtp_streams(pcap)
    streams = streams[streams.packets >= MIN_PACKETS]
    direct = {(s, d) for s, d in zip(streams.src, streams.dst) if {s, d} == {bob, alice}}
    if len(direct) < 2:
        through = int((streams.src == pbx).sum() + (streams.dst == pbx).sum())
        return False, (f"the re-INVITEs went out, but the RTP did not flow phone to phone "
                       f"({through} streams via Asterisk)")
    return True, "Asterisk re-INVITEd both phones and the RTP flowed Bob ↔ Alice"


@check(NB, "direct-media-lines-read", points=1, answers=("direct_sip", "direct_pjsip"),
       hint="sip.conf: directmedia in [general] (or in both peers [6000] and [6001]); pjsip.conf: "
            "direct_media in both endpoints [6000] and [6001]")
def _direct_media_lines_read(answer, truth):
    """The track's text read as data (no lab): both phones allow direct media."""
    config = tracks.get(truth.track).sip_config
    try:
        phones = direct_media_setting(answer["direct_sip" if config == "sip.conf" else "direct_pjsip"], config)
    except LabkitError as exc:
        return False, exc.message
    anchored = [phone for phone, allowed in phones.items() if not allowed]
    if anchored:
        return False, (f"read as: direct media no for {', '.join(anchored)}: the media of a call "
                       "with it stays on Asterisk")
    return True, f"read as: direct media yes for {' and '.join(phones)}"


@configure(NB, "direct-media-lines", answer={"sip.conf": "direct_sip", "pjsip.conf": "direct_pjsip"},
           lab="first-call", apply=apply_direct_media, points=2, timeout=PROBE_TIMEOUT, wait_registered=True,
           hint="sip.conf: directmedia in [general] (or in both peers [6000] and [6001]); pjsip.conf: "
                "direct_media in both endpoints [6000] and [6001]; the value that lets media bypass Asterisk")
def _direct_media_lines(lab):
    return media_went_direct(lab)
