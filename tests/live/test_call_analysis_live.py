"""Live, both tracks: a softphone call through Asterisk, captured and analysed."""
from __future__ import annotations

import time

import pytest

from labkit import analysis

pytestmark = pytest.mark.live


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_captured_call_is_understood(make_lab, lab_name, track):
    lab = make_lab(track=track, up=False)
    lab.up(capture=("lan",), capture_name="call")
    call = lab.phone("bob").call("6000").wait_established(10)
    time.sleep(3.0)
    call.hangup()
    pcap = lab.captures[0].stop().files["lan"]

    sip = analysis.sip_messages(pcap)
    # Each phone: REGISTER without credentials → 401 challenge → REGISTER with them → 200.
    for phone in ("192.168.0.11", "192.168.0.12"):
        from_phone = sip[(sip.src == phone) & (sip.cseq_method == "REGISTER") & sip.is_request]
        to_phone = sip[(sip.dst == phone) & (sip.cseq_method == "REGISTER") & ~sip.is_request]
        assert list(from_phone.has_auth) == [False, True], from_phone
        assert list(to_phone.status_code) == [401, 200], to_phone
        assert to_phone.asks_auth.iloc[0]

    calls = analysis.calls(sip)
    answered = calls[calls.final_status == 200]
    # Bob → Asterisk and Asterisk → Alice: two dialogs, both answered and ended by a BYE.
    assert len(answered) == 2, calls
    bob_leg = sip[sip.call_id == answered[answered.caller.str.contains("6001")].call_id.iloc[0]]
    sequence = [m if isinstance(m, str) and m else str(c)
                for m, c in zip(bob_leg.method, bob_leg.status_code)]
    assert sequence[:3] == ["INVITE", "401", "ACK"], sequence
    assert "BYE" in sequence and sequence.count("200") >= 2, sequence

    streams = analysis.rtp_streams(pcap, sip=sip)
    assert len(streams) == 4, streams  # two legs, both directions
    assert (streams.lost == 0).all() and (streams.packets > 100).all(), streams
    assert set(streams.src) | set(streams.dst) == {"192.168.0.10", "192.168.0.11", "192.168.0.12"}

    # The received audio is the sentence the other phone sent.
    alice, bob = lab.phone("alice"), lab.phone("bob")
    alice_heard, _ = analysis.read_wav(alice.recordings()[-1])
    bob_heard, _ = analysis.read_wav(bob.recordings()[-1])
    bob_said, _ = analysis.read_wav(bob.audio_file)
    alice_said, _ = analysis.read_wav(alice.audio_file)
    assert analysis.correlate(alice_heard, bob_said) >= 0.9
    assert analysis.correlate(bob_heard, alice_said) >= 0.9

    # The same sentence, decoded from the captured G.711 payloads of Bob's stream.
    rtp = analysis.rtp_packets(pcap, sip=sip, with_payload=True)
    bob_stream = streams[streams.src == "192.168.0.12"].iloc[0]
    assert analysis.correlate(analysis.decode_stream(rtp, bob_stream), bob_said) >= 0.9
