"""Bugs found when the kit was tried as a new user would: each stays fixed."""
from __future__ import annotations

import synth

from labkit.addresses import is_rfc1918
from labkit.analysis import replay, rtp_streams, sip_messages


def _invite(src: str, sdp_addr: str, t: float, rtpmap_pcma: str = "PCMA") -> synth.Pkt:
    body = synth.sdp(sdp_addr, 4000, pts=(8,)).replace("PCMA/8000", f"{rtpmap_pcma}/8000")
    headers = ["Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK1", "From: <sip:bob@x.example>;tag=1",
               "To: <sip:alice@x.example>", f"Call-ID: c{t}@x", "CSeq: 1 INVITE",
               "Contact: <sip:bob@203.0.113.9>", "Max-Forwards: 70"]
    return synth.Pkt(t, src, 5060, "203.0.113.9", 5060,
                     synth.sip("INVITE sip:alice@x.example SIP/2.0", headers, body))


def test_rfc1918_is_the_private_range_not_pythons_is_private():
    # Python's is_private counts the documentation ranges the labs use as the Internet.
    assert is_rfc1918("192.168.0.10") and is_rfc1918("10.1.2.3") and is_rfc1918("172.31.255.1")
    assert not is_rfc1918("172.32.0.1")  # outside 172.16.0.0/12
    assert not is_rfc1918("198.51.100.1") and not is_rfc1918("203.0.113.1")
    assert not is_rfc1918("127.0.1.100") and not is_rfc1918("voip.home.example") and not is_rfc1918("")


def test_replay_warns_private_sdp_from_a_documentation_public_address(tmp_path):
    # The box's public address (RFC 5737) forwards an SDP announcing its LAN: the classic leak.
    path = tmp_path / "leak.pcap"
    synth.write_pcap(path, [_invite("198.51.100.1", "192.168.0.10", 1_700_000_000.0)])
    warnings = replay(path, tmp_path / "out").warnings
    assert any("private address 192.168.0.10" in w and "public 198.51.100.1" in w for w in warnings), warnings


def test_replay_does_not_call_loopback_public(tmp_path):
    path = tmp_path / "loopback.pcap"
    synth.write_pcap(path, [_invite("127.0.1.100", "192.168.0.10", 1_700_000_000.0)])
    warnings = replay(path, tmp_path / "out").warnings
    assert not any("public 127.0.1.100" in w for w in warnings), warnings


def test_codec_names_have_one_spelling_in_a_report(tmp_path):
    """An SDP writing ``pcma`` and a stream known by its static payload type give ``PCMA`` both."""
    t0 = 1_700_000_000.0
    lower = _invite("192.168.0.11", "192.168.0.11", t0, rtpmap_pcma="pcma")
    announced = synth.rtp_stream("192.168.0.11", 4000, "192.168.0.10", 12000, pt=8, n=20, start=t0 + 1)
    unannounced = synth.rtp_stream("192.168.0.12", 4002, "192.168.0.10", 12002, pt=8, n=20,
                                   start=t0 + 1, ssrc=7)
    path = tmp_path / "codecs.pcap"
    synth.write_pcap(path, sorted([lower, *announced.pkts, *unannounced.pkts], key=lambda p: p.time))
    streams = rtp_streams(path, sip=sip_messages(path))
    assert len(streams) == 2 and set(streams.codec) == {"PCMA"}, streams[["src", "codec"]]


def test_a_wav_still_being_written_is_not_read_as_silence(tmp_path):
    """baresip's recorder (libsndfile) writes the sizes in the WAV header when it closes the
    file; read before that, the file used to give zero samples, and a call that was heard
    looked silent (Lab.talk's flaky 'not heard' through the ISP box)."""
    import wave

    import numpy as np
    import pytest

    from labkit.analysis import read_wav
    from labkit.errors import CaptureError

    path = tmp_path / "dump-dec.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.arange(8000, dtype="<i2").tobytes())
    assert len(read_wav(path)[0]) == 8000
    data = bytearray(path.read_bytes())
    data[40:44] = bytes(4)          # the data chunk's size, as libsndfile leaves it while recording
    data[4:8] = (36).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="still being written"):
        read_wav(path)


def test_the_raw_text_of_a_plain_udp_frame_starts_with_its_start_line():
    """Session.message on a capture without TLS: the dump holds the Ethernet/IP/UDP headers
    on the start line's line, and the start line used to be searched at a line's start only
    (the whole frame, header bytes included, came out)."""
    from pathlib import Path

    from labkit.analysis import sip_messages
    from labkit.teaching.session import frame_text

    pcap = Path(__file__).resolve().parents[1] / "data" / "callerid" / "trunk-invites.pcap"
    first = int(sip_messages(pcap).frame.iloc[0])
    text = frame_text(pcap, first)
    assert text.startswith("INVITE sip:0639980001@sip.carrier.example SIP/2.0\n"), text[:80]
