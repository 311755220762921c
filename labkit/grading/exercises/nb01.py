"""Checks of ``notebooks/01-first-call.ipynb``.

``ns["session"]`` is the call with media anchored on Asterisk, ``ns["direct"]`` the call of
the direct-media variant; every truth is read from their captures.
"""
from __future__ import annotations

from labkit.grading.checks import check

NB = "01-first-call"
MIN_PACKETS = 10  # a "real" stream: the direct-media call may start with a stray packet or two


def _streams(session):
    s = session.streams
    return s[s.packets >= MIN_PACKETS]


# -- truths, from the captures ----------------------------------------------------------------
def audio_source(session, phone: str = "alice") -> str:
    """The address that sent ``phone`` the most RTP packets."""
    s = session.streams
    rows = s[s.dst == session.address(phone)].sort_values("packets")
    return str(rows.src.iloc[-1])


def audio_destination(session, phone: str = "bob") -> str:
    """The address ``phone`` sent the most RTP packets to."""
    s = session.streams
    rows = s[s.src == session.address(phone)].sort_values("packets")
    return str(rows.dst.iloc[-1])


def rtp_legs(session) -> int:
    """Pairs of addresses exchanging RTP (both directions count once)."""
    s = _streams(session)
    return len({frozenset(pair) for pair in zip(s.src, s.dst)})


def reinvite_sdp_addr(session, phone: str = "bob") -> str:
    """The SDP c= address of the first re-INVITE Asterisk sent to ``phone``."""
    sip = session.sip
    invites = sip[(sip.method == "INVITE") & (sip.src == session.address("pbx"))
                  & (sip.dst == session.address(phone)) & sip.has_sdp].sort_values("frame")
    return str(invites.sdp_c_addr.iloc[0])


def reinvites(session) -> int:
    """In-dialog INVITEs (re-INVITEs: their To header has a tag) sent by Asterisk."""
    sip = session.sip
    sent = sip[(sip.method == "INVITE") & (sip.src == session.address("pbx"))]
    return int((sent.to_tag.fillna("") != "").sum())


def _addr(value) -> str:
    return str(value).strip().split(":")[0]


# -- checks ------------------------------------------------------------------------------------
@check(NB, "alice-source", points=1,
       hint="in session.streams, keep the row whose dst is session.address('alice') and read its src")
def _alice_source(ns):
    truth = audio_source(ns["session"], "alice")
    answer = _addr(ns["alice_audio_from"])
    return answer == truth, f"you said {answer}"


@check(NB, "rtp-streams", points=1,
       hint="one row of session.streams is one stream (one direction); len() counts rows")
def _rtp_streams(ns):
    truth = len(ns["session"].streams)
    return int(ns["n_streams"]) == truth, f"you said {ns['n_streams']!r}"


@check(NB, "rtp-legs", points=1,
       hint="a leg is a pair of addresses exchanging RTP: Bob↔? and ?↔Alice; two streams, one leg")
def _rtp_legs(ns):
    truth = rtp_legs(ns["session"])
    return int(ns["n_legs"]) == truth, f"you said {ns['n_legs']!r}"


@check(NB, "reinvite", points=1,
       hint="in direct.sip keep the INVITEs sent by Asterisk to Bob that carry SDP; the "
            "re-INVITE is the first one (Bob sent the call's first INVITE himself)")
def _reinvite(ns):
    truth = reinvite_sdp_addr(ns["direct"], "bob")
    answer = _addr(ns["reinvite_sdp_addr"])
    return answer == truth, f"you said {answer}"


@check(NB, "direct-path", points=1, hidden=True,
       hint="in direct.streams, where did Bob's packets go?")
def _direct_path(ns):
    truth = audio_destination(ns["direct"], "bob")
    return _addr(ns["bob_rtp_to"]) == truth, ""


@check(NB, "reinvite-count", points=1, hidden=True,
       hint="re-INVITEs are INVITEs inside an existing dialog: their To header carries a tag")
def _reinvite_count(ns):
    return int(ns["n_reinvites"]) == reinvites(ns["direct"]), ""
