"""Live, both tracks: SRTP media — keyed in the SDP (SDES) or by DTLS — heard by both phones,
noise in the capture; the keys readable over UDP signalling and hidden by TLS; a mismatch
refused with 488; PJSIP's optimistic encryption falling back to RTP."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from labkit import analysis
from labkit.lab.conversation import talk

pytestmark = pytest.mark.live


def _phones(media_encryption: str, transport: str = "udp") -> list[dict]:
    return [{"name": name, "host": name, "extension": ext, "registrar": "pbx.office.example",
             "media_encryption": media_encryption, "transport": transport}
            for name, ext in (("alice", "6000"), ("bob", "6001"))]


def _sdp_media(pcap) -> list[tuple[str, str]]:
    """(m= line, a= attributes) of every SDP tshark can read in ``pcap``."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "sdp", "-T", "fields", "-e", "sdp.media",
                          "-e", "sdp.media_attr"], capture_output=True, text=True, timeout=60).stdout
    return [tuple((line.split("\t") + [""])[:2]) for line in out.splitlines() if line.strip()]


def _entropy(payloads) -> float:
    """Shannon entropy of the payload bytes, bits per byte (8 = indistinguishable from random)."""
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    counts = np.bincount(data, minlength=256) / len(data)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts)).sum())


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_sdes_srtp_call_is_heard_and_the_capture_is_noise(make_lab, track):
    lab = make_lab("srtp-office", track=track, up=False)
    lab.up(capture=("lan",), capture_name="srtp")
    conversation = talk(lab, "bob", "6000", seconds=3)
    assert conversation.two_way, conversation.summary()
    suites = [e.get("param") for e in lab.phone("bob").last_call().events if e.get("type") == "CALL_MENC"]
    assert suites == ["0,audio,AES_CM_128_HMAC_SHA1_80"], suites
    pcap = lab.captures[0].stop().files["lan"]
    media = _sdp_media(pcap)
    assert media and all("RTP/SAVP" in m for m, _ in media), media
    assert all("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in a for _, a in media), media
    rtp = analysis.rtp_packets(pcap, with_payload=True)
    assert len(rtp) > 400
    assert _entropy(rtp.payload) >= 7.5
    # Anyone on the LAN reads the keys in the SDP: four legs' streams, each decrypted with
    # the key its sender announced, back to the sentence the other phone said.
    result = analysis.srtp_decrypt(pcap)
    streams = result.streams
    assert len(streams) == 4 and (streams.decrypted == streams.packets).all(), streams[["src", "dst", "why"]]
    assert (streams.auth_failures == 0).all() and streams.key.nunique() == 4
    said = {name: analysis.read_wav(lab.phone(name).audio_file)[0] for name in ("alice", "bob")}
    for sender, receiver in (("bob", "alice"), ("alice", "bob")):
        row = streams[(streams.src == lab.spec.address_of(sender).exploded)
                      & (streams.dst == lab.spec.address_of(lab.spec.pbx.host).exploded)].iloc[0]
        audio = analysis.decode_stream(result.plain_rtp, row)
        assert analysis.correlate(audio, said[sender]) >= 0.9, (sender, receiver)


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_tls_signalling_hides_the_srtp_keys(make_lab, track):
    lab = make_lab("srtp-office", track=track, up=False, overrides={"phones": _phones("srtp-mand", "tls")})
    lab.up(capture=("lan",), capture_name="srtp-tls")
    assert talk(lab, "bob", "6000", seconds=2).two_way
    capture = lab.captures[0].stop()
    assert _sdp_media(capture.files["lan"]) == []  # nobody on the LAN reads the keys...
    streams = analysis.srtp_streams(capture.files["lan"])
    assert len(streams) == 4 and (streams.decrypted == 0).all()
    assert all("no key" in why for why in streams.why), streams.why
    keyed = capture.with_tls_keys()  # ...without the TLS keys
    decrypted = _sdp_media(keyed)
    assert decrypted and all("inline:" in a for _, a in decrypted)
    assert (analysis.srtp_streams(keyed).decrypted > 50).all()


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_dtls_srtp_puts_no_key_in_the_sdp(make_lab, track):
    lab = make_lab("srtp-office", track=track, up=False,
                   overrides={"pbx": {"media": {"encryption": "dtls", "avpf": True}},
                              "phones": _phones("dtls_srtp")})
    lab.up(capture=("lan",), capture_name="dtls")
    conversation = talk(lab, "bob", "6000", seconds=3)
    # Media starts once each leg's DTLS handshake is done (the first second or so); a phone
    # may play what arrived before its keys as noise, so the match is judged loosely here —
    # the keys and the handshakes are what this test is about.
    summary = conversation.summary()
    assert conversation.established and all(s["seconds_received"] >= 1.5 for s in summary.values()), summary
    assert all(c >= 0.5 for c in conversation.correlation.values()), summary
    pcap = lab.captures[0].stop().files["lan"]
    media = _sdp_media(pcap)
    assert media and all("UDP/TLS/RTP/SAVPF" in m for m, _ in media), media
    assert not any("inline:" in a for _, a in media)
    assert any("fingerprint:SHA-256" in a for _, a in media)
    hellos = subprocess.run(["tshark", "-r", str(pcap), "-Y", "dtls.handshake.type == 1", "-T", "fields",
                             "-e", "ip.src"], capture_output=True, text=True, timeout=60).stdout.split()
    assert len(set(hellos)) >= 2, hellos  # a DTLS handshake on each leg (phone ↔ Asterisk)


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_srtp_on_one_side_only_is_refused_with_488(make_lab, track):
    lab = make_lab("srtp-office", track=track, up=False, overrides={"phones": _phones("none")})
    lab.up()
    conversation = talk(lab, "bob", "6000", seconds=1)
    assert not conversation.established and "488" in conversation.error, conversation.error
    if track == "legacy":
        assert "Matched device setup to use SRTP, but request was not" in lab.pbx.log(80)



@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_avpf_required_by_the_pbx_refuses_a_phone_without_it(make_lab, track):
    """The report's avpf=yes: Asterisk then speaks RTP/SAVPF (RFC 5124) and baresip only
    RTP/SAVP; the call fails with 488 on both tracks, but not at the same place."""
    lab = make_lab("srtp-office", track=track, up=False,
                   overrides={"pbx": {"media": {"avpf": True}}, "phones": _phones("srtp-mand")})
    lab.up(capture=("lan",), capture_name="avpf")
    conversation = talk(lab, "bob", "6000", seconds=1)
    assert not conversation.established and "488" in conversation.error, conversation.error
    pcap = lab.captures[0].stop().files["lan"]
    sip = analysis.sip_messages(pcap)
    refusals = sip[sip.status_code == 488]
    pbx, alice, bob = (lab.spec.address_of(h).exploded for h in ("pbx", "alice", "bob"))
    if track == "modern":
        # PJSIP refuses Bob's offer itself: the INVITE never reaches Alice.
        assert set(zip(refusals.src, refusals.dst)) == {(pbx, bob)}, refusals
    else:
        # chan_sip takes Bob's SAVP offer ("disabling" AVPF for that leg), then offers
        # RTP/SAVPF to Alice, whose baresip refuses it: the 488 comes from Alice.
        assert "Received SAVP profle in audio offer but AVPF is enabled" in lab.pbx.log(80)
        assert (alice, pbx) in set(zip(refusals.src, refusals.dst)), refusals
        assert any("RTP/SAVPF" in m for m, _ in _sdp_media(pcap))

def test_optimistic_encryption_falls_back_to_plain_rtp(make_lab):
    lab = make_lab("srtp-office", track="modern", up=False,
                   overrides={"pbx": {"media": {"optimistic": True}}, "phones": _phones("none")})
    lab.up(capture=("lan",), capture_name="optimistic")
    assert talk(lab, "bob", "6000", seconds=2).two_way
    media = _sdp_media(lab.captures[0].stop().files["lan"])
    assert media and all("RTP/AVP" in m and "SAVP" not in m for m, _ in media), media
