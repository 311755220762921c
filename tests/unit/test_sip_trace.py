"""Asterisk's SIP trace read from its log (notebook 01): ``pjsip set logger on`` (res_pjsip_logger)
and ``sip set debug on`` (chan_sip) print each message whole under a line saying who sent it to whom.

The two logs are excerpts of the lab's own Asterisk log (a call Bob → Alice, first-call lab)."""
from __future__ import annotations

from pathlib import Path

import pytest

from labkit.teaching.first_call import SIP_TRACE_ON, _names, sip_trace

DATA = Path(__file__).resolve().parents[1] / "data" / "sip_trace"


def trace(track: str) -> list[dict]:
    return sip_trace((DATA / f"{track}-messages.log").read_text())


def test_pjsips_logger_gives_each_message_with_its_direction_and_peer():
    blocks = trace("modern")
    first = blocks[0]
    assert first["head"] == "<--- Received SIP request (824 bytes) from UDP:192.168.0.12:5060 --->"
    assert first["message"].startswith("INVITE sip:6000@192.168.0.10 SIP/2.0\n")
    # the whole message, SDP included, and nothing of the next log entry
    assert first["message"].rstrip().endswith("a=ptime:20") and "[20" not in first["message"]
    sent = [b for b in blocks if _names(b["message"], "INVITE") and "Transmitting" in b["head"]]
    assert len(sent) == 1 and "to UDP:192.168.0.11:5060" in sent[0]["head"]
    assert [b["message"].split("\n")[0] for b in blocks if _names(b["message"], "401")] == ["SIP/2.0 401 Unauthorized"]


def test_chan_sips_debug_gives_each_message_including_the_transaction_opening_request():
    blocks = trace("legacy")
    invites = [b for b in blocks if _names(b["message"], "INVITE")]
    assert [b["head"] for b in invites] == ["<--- SIP read from UDP:192.168.0.12:5060 --->",
                                            "<--- Reliably Transmitting (no NAT) to 192.168.0.11:5060 --->"]
    # chan_sip closes its blocks with a line of dashes: not part of the message
    assert invites[0]["message"].rstrip().endswith("a=ptime:20")
    assert invites[1]["message"].rstrip().endswith("a=sendrecv") and "---" not in invites[1]["message"]
    assert "m=audio 11508 RTP/AVP 0 8 101" in invites[1]["message"]


@pytest.mark.parametrize("text", ["", "no log line at all\n",
                                  "[2026-12-03 17:49:32.963] VERBOSE[30] chan_sip.c: Sending to 192.168.0.12:5060\n"])
def test_a_log_without_a_trace_has_no_message(text):
    assert sip_trace(text) == []


def test_names_tells_requests_from_responses():
    assert _names("INVITE sip:6000@192.168.0.10 SIP/2.0\nVia: x", "INVITE")
    assert _names("SIP/2.0 401 Unauthorized\nVia: x", "401")
    assert not _names("SIP/2.0 200 OK\nCSeq: 1 INVITE", "INVITE")
    assert set(SIP_TRACE_ON) == {"sip.conf", "pjsip.conf"}
