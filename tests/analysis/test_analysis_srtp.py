"""SRTP: SDES keys of the capture's SDP decrypt exactly the streams they protect; wrong keys,
modified and replayed packets are counted; DTLS-SRTP and missing keys are told apart; a bad key is
refused with a hint; ``labkit replay --srtp-key`` works with and without SIP.

The SRTP streams are synth.py's G.711 tone streams encrypted by pylibsrtp with keys chosen here
(and, in one test and the fixtures of tests/data/srtp, by an RFC 3711 sender written with
`cryptography` alone, checked against the RFC's own test vectors).
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synth

from labkit.analysis import correlate, decode_stream, read_wav, replay, rtp_packets, sip_messages
from labkit.analysis import srtp as srtpmod
from labkit.analysis.srtp import parse_crypto, parse_key, sdes_keys, srtp_decrypt, srtp_streams
from labkit.errors import CaptureError

SRTP_DATA = Path(__file__).resolve().parents[1] / "data" / "srtp"
sys.path.insert(0, str(SRTP_DATA))

S80, S32 = "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"
KA = hashlib.sha256(b"alice sends").digest()[:30]    # alice's a=crypto: protects alice -> pbx
KB = hashlib.sha256(b"pbx sends").digest()[:30]      # the pbx's a=crypto: protects pbx -> alice
KC = hashlib.sha256(b"pbx sends to bob").digest()[:30]
KD = hashlib.sha256(b"bob sends").digest()[:30]
KX = hashlib.sha256(b"nobody's key").digest()[:30]
BOB = "192.168.0.12"
N = 200  # packets per stream


def inline(key: bytes, extra: str = "") -> str:
    return f"inline:{synth.b64(key)}{extra}"


def savp(key: bytes, suite: str = S80, proto: str = "RTP/SAVP", **kw) -> dict:
    """Arguments of synth.sdp for an SDES offer or answer carrying ``key``."""
    return {"crypto": suite, "key": inline(key), "proto": proto, **kw}


def srtp_call(path, *, keys=(KA, KB), sdp=None, suite=S80, with_sip=True, mki=None, a2b_kw=None,
              b2a_kw=None, edit=None):
    """alice:4000 <-> pbx:12000, both ways SRTP.  ``keys``: what each side encrypts with;
    ``sdp``: (offer, answer) arguments of synth.sdp (default: the same keys announced);
    ``edit(ea, eb)``: change the SRTP packets before writing.  Returns (path, a2b, b2a, ea, eb)."""
    a2b = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, ssrc=0xA11CE, n=N, **(a2b_kw or {}))
    b2a = synth.rtp_stream(synth.PBX, 12000, synth.ALICE, 4000, ssrc=0xB0B, freq=600.0, seed=2, n=N,
                           **(b2a_kw or {}))
    ea, eb = synth.srtp_protect(a2b, keys[0], suite, mki), synth.srtp_protect(b2a, keys[1], suite, mki)
    if edit:
        edit(ea, eb)
    pkts = ea.pkts + eb.pkts
    if with_sip:
        offer, answer = sdp or (savp(keys[0], suite), savp(keys[1], suite))
        pkts += synth.sip_dialog(offer_sdp=offer, answer_sdp=answer)
    synth.write_pcap(path, sorted(pkts, key=lambda p: p.time))
    return str(path), a2b, b2a, ea, eb


def by_ssrc(streams: pd.DataFrame, ssrc: int) -> pd.Series:
    return streams[streams["ssrc"] == ssrc].iloc[0]


def payloads(rtp: pd.DataFrame, ssrc: int) -> list[bytes]:
    return rtp[rtp["ssrc"] == ssrc].sort_values("frame")["payload"].tolist()


def plain_payloads(stream: synth.Stream) -> list[bytes]:
    return [p.payload[12:] for p in stream.pkts]


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    d = tmp_path_factory.mktemp("srtp")
    path, a2b, b2a, ea, eb = srtp_call(d / "srtp-call.pcap")
    plain = d / "plain-call.pcap"
    synth.write_pcap(plain, sorted(a2b.pkts + b2a.pkts + synth.sip_dialog(), key=lambda p: p.time))
    return {"pcap": path, "plain": str(plain), "a2b": a2b, "b2a": b2a, "ea": ea, "eb": eb,
            "res": srtp_decrypt(path)}


# ----------------------------------------------------------------------------- keys

def test_parse_the_rfc4568_example():
    k, = parse_crypto("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4")
    assert (k.tag, k.suite, k.lifetime, k.mki, k.mki_len) == (1, S80, 2**20, 1, 4)
    assert k.key == b"YS___semctl () {\t220;}\n}\nunles" and k.inline.endswith("CnVubGVz")  # 16 + 14 bytes
    k, = parse_crypto("2 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1048576")
    assert (k.tag, k.suite, k.lifetime, k.mki_len) == (2, S32, 1048576, 0)


def test_parse_key_forms():
    b = synth.b64(KA)
    for text in (f"inline:{b}", b, f"{b}|2^31", f"a=crypto:3 {S80} inline:{b}"):
        k = parse_key(text)
        assert k.key == KA and k.ssrc is None
    assert parse_key(f"inline:{b}").suite is None                  # not said: both suites are tried
    assert parse_key(f"{S32} inline:{b}").suite == S32
    assert parse_key(f"0x000A11CE=inline:{b}").ssrc == 0xA11CE
    assert parse_key(f"2827=inline:{b}").ssrc == 0xB0B
    assert parse_key(f"inline:{b}|2^20|7:2").mki == 7


def _err(fn, *a) -> CaptureError:
    with pytest.raises(CaptureError) as e:
        fn(*a)
    assert e.value.hint, "every error says what to do"
    return e.value


@pytest.mark.parametrize("text, message, explained", [
    (f"inline:{synth.b64(KA)[:-3]}!!!", "is not valid base64 (it contains '!')", "40 characters"),
    ("inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGV", "is not valid base64", "inline:"),
    (f"inline:{synth.b64(KA[:24])}", "decodes to 24 bytes; AES_CM_128_HMAC_SHA1_80/32 needs 30", "master salt"),
    (f"{S80} inline:{synth.b64(KA + KA[:16])}", f"decodes to 46 bytes; {S80} needs 30", "16-byte master key"),
    (f"AEAD_AES_256_GCM inline:{synth.b64(KA)}", "AEAD_AES_256_GCM is not one the kit decrypts", "RFC 7714"),
    (f"a=crypto:1 F8_128_HMAC_SHA1_80 inline:{synth.b64(KA)}", "F8_128_HMAC_SHA1_80 is not one the kit decrypts",
     "f8"),
    (f"AES_CM_129_HMAC_SHA1_80 inline:{synth.b64(KA)}", "is not an SRTP crypto-suite", "AES_CM_128_HMAC_SHA1_80"),
    (f"a=crypto:1 {S80} key:{synth.b64(KA)}", "is not an inline: key", "RFC 4568"),
    (f"inline:{synth.b64(KA)}|2^x", "lifetime '2^x'", "2^31"),
    (f"inline:{synth.b64(KA)}|1:0", "MKI '1:0'", "MKI 1 carried in 4 bytes"),
    (f"0x1FFFFFFFF=inline:{synth.b64(KA)}", "larger than 32 bits", "ssrc_hex"),
])
def test_bad_keys_are_refused_with_a_hint(text, message, explained):
    e = _err(parse_key, text)
    assert message in e.message and explained in e.explain()
    assert "What to do:" in e.explain()


def test_bad_attribute_in_sdp_is_a_reason_not_an_error(tmp_path):
    """A capture is what it is: an SDP offering GCM is reported, never raised."""
    path, *_ = srtp_call(tmp_path / "gcm.pcap", sdp=(savp(KA, "AEAD_AES_256_GCM"), savp(KB)))
    keys = sdes_keys(sip_messages(path))
    assert list(keys["suite"]) == ["AEAD_AES_256_GCM", S80]
    assert "AEAD_AES_256_GCM is not one the kit decrypts" in keys["error"].iloc[0] and keys["error"].iloc[1] == ""
    s = srtp_streams(path)
    a2b, b2a = by_ssrc(s, 0xA11CE), by_ssrc(s, 0xB0B)
    assert a2b["decrypted"] == 0 and a2b["why"].startswith("the key in the SDP cannot be used: SDP of frame 5")
    assert b2a["decrypted"] == N


def test_keys_of_the_sdp(call):
    sip = sip_messages(call["pcap"])
    inv = sip[sip["method"] == "INVITE"].iloc[0]
    assert inv["sdp_crypto_keys"] == f"1 {S80} {inline(KA)}" and inv["sdp_m_proto"] == "RTP/SAVP"
    keys = sdes_keys(sip)
    assert list(keys["message"]) == ["INVITE", "200 OK"]
    assert list(zip(keys["addr"], keys["port"])) == [(synth.ALICE, 4000), (synth.PBX, 12000)]
    assert list(keys["inline"]) == [inline(KA), inline(KB)] and (keys["error"] == "").all()


# ----------------------------------------------------------------------------- decryption

def test_decrypted_exactly_both_ways(call):
    res = call["res"]
    s = res.streams
    assert len(s) == 2 and s["srtp"].all()
    for ssrc, plain, frame, key in ((0xA11CE, call["a2b"], 5, KA), (0xB0B, call["b2a"], 8, KB)):
        r = by_ssrc(s, ssrc)
        assert (r["packets"], r["decrypted"], r["auth_failures"], r["replay_failures"], r["other_failures"]) == \
            (N, N, 0, 0, 0)
        assert r["evidence"] == "SDP: RTP/SAVP with a=crypto" and r["suite"] == S80
        assert r["key_source"].startswith(f"SDP of frame {frame} (") and r["key"] == inline(key)[:19] + "…"
        assert r["why"].startswith(f"decrypted with the key from SDP of frame {frame}")
        assert payloads(res.plain_rtp, ssrc) == plain_payloads(plain)          # byte for byte
        assert r["entropy"] > 7.9 and r["entropy_decrypted"] < 7.0
    assert set(res.rtp["srtp_status"]) == {"decrypted"}
    assert (res.rtp["payload_len"] == 160).all()                                # the 10-byte tag is gone


def test_decrypted_audio_is_the_plain_audio(call):
    res = call["res"]
    rtp_plain = rtp_packets(call["plain"], with_payload=True)
    for ssrc, sent in ((0xA11CE, call["a2b"]), (0xB0B, call["b2a"])):
        row = by_ssrc(res.streams, ssrc)
        got = decode_stream(res.plain_rtp, stream=row)
        want = decode_stream(rtp_plain, stream=row)
        assert np.array_equal(got, want)
        assert correlate(got, want) == pytest.approx(1.0, abs=1e-12)
        assert correlate(got, sent.pcm) > 0.999                               # G.711 quantisation only


def test_srtp_payload_is_noise(call):
    """Without the key, the captured payload decodes to noise that matches nothing."""
    rtp = rtp_packets(call["pcap"], with_payload=True)
    row = by_ssrc(call["res"].streams, 0xA11CE)
    noise = decode_stream(rtp, stream=row)
    assert abs(correlate(noise, call["a2b"].pcm)) < 0.1
    assert srtpmod.entropy(b"".join(rtp["payload"])) > 7.9


def test_plain_call_is_not_srtp(eth_pcap):
    s = srtp_streams(eth_pcap)
    assert not s["srtp"].any() and (s["decrypted"] == 0).all()
    assert set(s["why"]) == {"plain RTP (RTP/AVP in the SDP)"}
    assert (s["entropy"] < 7.0).all()


def test_wrong_key_every_packet_fails_authentication(tmp_path):
    path, *_ = srtp_call(tmp_path / "wrong.pcap", keys=(KA, KB), sdp=(savp(KX), savp(KB)))
    res = srtp_decrypt(path)
    r = by_ssrc(res.streams, 0xA11CE)
    assert (r["decrypted"], r["auth_failures"], r["replay_failures"]) == (0, N, 0)
    assert r["why"] == f"wrong key: {N} authentication failures with the key from SDP of frame 5 (INVITE, a=crypto:1)"
    assert r["key"] == inline(KX)[:19] + "…"
    status = res.rtp.loc[res.rtp["ssrc"] == 0xA11CE, "srtp_status"]
    assert (status == "authentication failure").all()
    assert (res.plain_rtp["ssrc"] == 0xA11CE).sum() == 0
    assert by_ssrc(res.streams, 0xB0B)["decrypted"] == N


def test_each_key_protects_what_its_side_sends(tmp_path):
    """The answerer's key does not open the offerer's media: swapped keys fail both ways."""
    path, *_ = srtp_call(tmp_path / "swapped.pcap", keys=(KA, KB), sdp=(savp(KB), savp(KA)))
    s = srtp_streams(path)
    assert list(s["decrypted"]) == [0, 0] and list(s["auth_failures"]) == [N, N]


def _find(stream: synth.Stream, index: int) -> synth.Pkt:
    seq = stream.sent_seqs[index]
    return next(p for p in stream.pkts if int.from_bytes(p.payload[2:4], "big") == seq)


def test_modified_packets_are_rejected(tmp_path):
    def edit(ea, eb):
        p = _find(ea, 50)
        p.payload = p.payload[:40] + bytes([p.payload[40] ^ 0x01]) + p.payload[41:]     # one payload bit
        p = _find(ea, 120)
        p.payload = p.payload[:1] + bytes([p.payload[1] ^ 0x80]) + p.payload[2:]       # the marker bit
    path, a2b, *_ = srtp_call(tmp_path / "tampered.pcap", edit=edit)
    res = srtp_decrypt(path)
    r = by_ssrc(res.streams, 0xA11CE)
    assert (r["decrypted"], r["auth_failures"], r["replay_failures"]) == (N - 2, 2, 0)
    assert "198 of 200 packets, 2 authentication failures (packets modified or corrupted: rejected)" in r["why"]
    bad = res.rtp[(res.rtp["ssrc"] == 0xA11CE) & (res.rtp["srtp_status"] == "authentication failure")]
    assert sorted(bad["seq"]) == [a2b.sent_seqs[50], a2b.sent_seqs[120]]
    pcm = decode_stream(res.plain_rtp, stream=r)
    assert correlate(pcm, a2b.pcm) > 0.98                                     # two 20 ms holes


def test_replayed_packets_are_counted(tmp_path):
    path, a2b, *_ = srtp_call(tmp_path / "replayed.pcap", a2b_kw={"dup": [30, 31, 150]})
    res = srtp_decrypt(path)
    r = by_ssrc(res.streams, 0xA11CE)
    assert (r["packets"], r["decrypted"], r["auth_failures"], r["replay_failures"]) == (N + 3, N, 0, 3)
    assert "3 replayed packets rejected" in r["why"]
    seen, once = set(), []
    for p in a2b.pkts:  # what the receiver keeps: each sequence number the first time
        if p.payload[2:4] not in seen:
            seen.add(p.payload[2:4])
            once.append(p.payload[12:])
    assert payloads(res.plain_rtp, 0xA11CE) == once


def test_suite_32_and_mki(tmp_path):
    path, *_ = srtp_call(tmp_path / "s32.pcap", suite=S32)
    s = srtp_streams(path)
    assert list(s["decrypted"]) == [N, N] and set(s["suite"]) == {S32}
    assert (rtp_packets(path)["payload_len"] == 164).all()                   # 160 + a 4-byte tag
    # an MKI announced in the SDP (RFC 4568 |MKI:length) rides between payload and tag
    path, *_ = srtp_call(tmp_path / "mki.pcap", mki=(3, 2),
                         sdp=({"crypto": S80, "key": inline(KA, "|2^20|3:2"), "proto": "RTP/SAVP"},
                              {"crypto": S80, "key": inline(KB, "|2^20|3:2"), "proto": "RTP/SAVP"}))
    assert list(srtp_streams(path)["decrypted"]) == [N, N]


def test_the_answered_key_among_several_offered(tmp_path):
    offered = {"crypto": [(1, S80, inline(KX)), (2, S32, inline(KA))], "proto": "RTP/SAVP"}
    answered = {"crypto": [(2, S32, inline(KB))], "proto": "RTP/SAVP"}
    path, *_ = srtp_call(tmp_path / "two-offered.pcap", suite=S32, sdp=(offered, answered))
    s = srtp_streams(path)
    r = by_ssrc(s, 0xA11CE)
    assert r["decrypted"] == N and r["suite"] == S32 and "a=crypto:2" in r["key_source"]
    assert len(sdes_keys(sip_messages(path))) == 3


def test_four_keys_through_asterisk(tmp_path):
    """alice <-> Asterisk <-> bob: each leg its own offer/answer, each direction its own key."""
    a2p = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, ssrc=0x1, n=N)
    p2a = synth.rtp_stream(synth.PBX, 12000, synth.ALICE, 4000, ssrc=0x2, n=N, freq=600.0)
    p2b = synth.rtp_stream(synth.PBX, 12002, BOB, 6000, ssrc=0x3, n=N, freq=700.0)
    b2p = synth.rtp_stream(BOB, 6000, synth.PBX, 12002, ssrc=0x4, n=N, freq=800.0)
    keys = {0x1: KA, 0x2: KB, 0x3: KC, 0x4: KD}
    leg1 = synth.sip_dialog(offer_sdp=savp(KA), answer_sdp=savp(KB))
    leg2 = synth.sip_dialog(t0=1_700_000_000.3, call_id="leg2@pbx", caller=synth.PBX, callee=BOB,
                            offer_port=12002, answer_port=6000, offer_sdp=savp(KC), answer_sdp=savp(KD))
    media = [p for s in (a2p, p2a, p2b, b2p) for p in synth.srtp_protect(s, keys[s.ssrc]).pkts]
    path = tmp_path / "b2bua.pcap"
    synth.write_pcap(path, sorted(leg1 + leg2 + media, key=lambda p: p.time))
    res = srtp_decrypt(path)
    s = res.streams.set_index("ssrc")
    assert list(s.loc[[1, 2, 3, 4], "decrypted"]) == [N] * 4
    assert s.loc[[1, 2], "call_id"].tolist() == [synth.CALL_ID] * 2 and s.loc[[3, 4], "call_id"].tolist() == [
        "leg2@pbx"] * 2
    assert s["key_source"].nunique() == 4 and s["key"].tolist() == [inline(keys[k])[:19] + "…" for k in s.index]
    for ssrc, sent in ((1, a2p), (2, p2a), (3, p2b), (4, b2p)):
        assert payloads(res.plain_rtp, ssrc) == plain_payloads(sent)


def test_no_sip_no_key(tmp_path):
    path, *_ = srtp_call(tmp_path / "nosip.pcap", with_sip=False)
    res = srtp_decrypt(path)
    s = res.streams
    assert s["srtp"].all() and (s["decrypted"] == 0).all() and (s["key"] == "").all()
    assert s["evidence"].str.fullmatch(r"payload entropy 7\.9\d\d? bits/byte").all()
    assert set(s["why"]) == {"no key in any readable SDP — signalling over TLS? (give the key with --srtp-key)"}
    assert set(res.rtp["srtp_status"]) == {"encrypted"} and res.plain_rtp.empty


def test_no_sip_with_keys(tmp_path):
    path, a2b, b2a, *_ = srtp_call(tmp_path / "nosip.pcap", with_sip=False)
    s = srtp_streams(path, keys=[inline(KA), synth.b64(KB)])   # loose keys: tried on every stream
    assert list(s["decrypted"]) == [N, N] and set(s["suite"]) == {S80}
    assert set(s["evidence"]) == {"authenticated with the key"} and set(s["key_source"]) == {"--srtp-key"}
    # pinned keys, and the suite found by trying both when the key does not say
    path, *_ = srtp_call(tmp_path / "nosip32.pcap", with_sip=False, suite=S32)
    s = srtp_streams(path, keys=[f"0x000A11CE=inline:{synth.b64(KA)}", f"{0xB0B}=inline:{synth.b64(KB)}"])
    assert list(s["decrypted"]) == [N, N] and set(s["suite"]) == {S32}
    assert list(s["key_source"]) == ["--srtp-key 0x000A11CE=", "--srtp-key 2827="]
    # a key pinned to the other stream is not used for this one
    s = srtp_streams(path, keys=[f"0xB0B=inline:{synth.b64(KA)}"])
    assert list(s["decrypted"]) == [0, 0]
    assert by_ssrc(s, 0xB0B)["why"].startswith(f"wrong key: {N} authentication failures with --srtp-key 0xB0B=")


def test_dtls_srtp(tmp_path):
    dtls = {"proto": "UDP/TLS/RTP/SAVP", "extra": ("fingerprint:sha-256 AB:CD", "setup:actpass")}
    path, *_ = srtp_call(tmp_path / "dtls.pcap", sdp=(dtls, dtls))
    s = srtp_streams(path)
    assert set(s["why"]) == {"DTLS-SRTP: keys negotiated in DTLS, never in the SDP"}
    assert set(s["evidence"]) == {"SDP: UDP/TLS/RTP/SAVP"} and (s["decrypted"] == 0).all()
    # no SIP at all: the DTLS handshake on the media ports gives it away (RFC 7983 demultiplexing)
    hello = bytes([22, 0xFE, 0xFD]) + bytes(8) + (40).to_bytes(2, "big") + bytes([1]) + bytes(39)
    handshake = [synth.Pkt(1_700_000_000.5, synth.ALICE, 4000, synth.PBX, 12000, hello),
                 synth.Pkt(1_700_000_000.6, synth.PBX, 12000, synth.ALICE, 4000, hello)]
    a2b = synth.srtp_protect(synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, n=N), KA)
    path = tmp_path / "dtls-nosip.pcap"
    synth.write_pcap(path, handshake + a2b.pkts)
    r = srtp_streams(path).iloc[0]
    assert r["why"] == "DTLS-SRTP: keys negotiated in DTLS, never in the SDP"
    assert r["evidence"].endswith("; DTLS handshake on the same ports")


def test_independent_rfc3711_sender(tmp_path):
    """A stream encrypted without libsrtp (RFC 3711 written out with `cryptography`) decrypts exactly,
    across a sequence number wrap (the rollover counter, §3.3.1)."""
    mk, ms = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139"), bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
    assert synth.srtp_kdf(mk, ms, 0, 16).hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"  # RFC 3711 B.3
    assert synth.srtp_kdf(mk, ms, 2, 14).hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert synth.srtp_kdf(mk, ms, 1, 20).hex().upper() == "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"
    plain = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, n=N, first_seq=65500)
    pkts = [synth.Pkt(p.time, p.src, p.sport, p.dst, p.dport,
                      synth.srtp_reference_protect(p.payload, mk + ms, roc=int(i >= 36)))
            for i, p in enumerate(plain.pkts)]
    path = tmp_path / "reference.pcap"
    synth.write_pcap(path, pkts)
    res = srtp_decrypt(path, keys=[f"inline:{synth.b64(mk + ms)}"])
    assert res.streams["decrypted"].tolist() == [N]
    assert payloads(res.plain_rtp, plain.ssrc) == plain_payloads(plain)


def test_rows_without_whole_packets(call):
    e = _err(srtp_decrypt, rtp_packets(call["pcap"], with_payload=True))
    assert "with_packet=True" in e.hint


# ----------------------------------------------------------------------------- fixtures in tests/data/srtp

def test_committed_fixtures():
    """tests/data/srtp holds captures made by make_fixtures.py with the RFC 3711 reference sender."""
    import make_fixtures as mf
    res = srtp_decrypt(SRTP_DATA / "sdes-call.pcap")
    assert res.streams["decrypted"].tolist() == [mf.PACKETS, mf.PACKETS]
    for ssrc, stream in ((mf.A2B_SSRC, mf.plain_a2b()), (mf.B2A_SSRC, mf.plain_b2a())):
        assert payloads(res.plain_rtp, ssrc) == plain_payloads(stream)
    nosip = SRTP_DATA / "srtp-nosip.pcap"
    key = (SRTP_DATA / "srtp-nosip.key").read_text().strip()
    assert srtp_streams(nosip)["decrypted"].tolist() == [0]
    assert srtp_streams(nosip, keys=[key])["decrypted"].tolist() == [mf.PACKETS]


# ----------------------------------------------------------------------------- labkit replay

def test_replay_decrypts_with_the_keys_of_the_sdp(call, tmp_path, capsys):
    o = tmp_path / "o"
    assert replay.main([call["pcap"], "-o", str(o)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("11 SIP messages, 1 calls, 2 RTP streams")
    assert "SRTP: 2 of 2 RTP streams encrypted, 2 decrypted." in out
    assert ("stream 0 192.168.0.11:4000 → 192.168.0.10:12000 (SSRC 0x000A11CE): decrypted with the key from "
            "SDP of frame 5 (INVITE, a=crypto:1) -> stream-0-decrypted.wav") in out
    assert "read in clear text from the SDP (UDP): anyone who captures the signalling decrypts the media" in out
    for name, sent in (("stream-0-decrypted.wav", call["a2b"]), ("stream-1-decrypted.wav", call["b2a"])):
        pcm, rate = read_wav(o / name)
        assert rate == 8000 and correlate(pcm, sent.pcm) > 0.999
    st = pd.read_csv(o / "streams.csv")
    assert st["srtp"].all() and st["srtp_decrypted"].tolist() == [N, N]
    assert st["srtp_auth_failures"].tolist() == [0, 0] and st["wav"].tolist() == ["stream-0-decrypted.wav",
                                                                                 "stream-1-decrypted.wav"]
    assert (st["entropy"] > 7.9).all() and st["srtp_evidence"].eq("SDP: RTP/SAVP with a=crypto").all()
    md = (o / "report.md").read_text()
    assert "## SRTP" in md and md.count("| yes (SDP: RTP/SAVP with a=crypto) |") == 2
    assert "| stream-1-decrypted.wav |" in md


def test_replay_no_sip_with_srtp_key(tmp_path, capsys):
    path, a2b, b2a, *_ = srtp_call(tmp_path / "nosip.pcap", with_sip=False)
    o = tmp_path / "o"
    assert replay.main([path, "-o", str(o), "--srtp-key", inline(KA), "--srtp-key",
                        f"0x00000B0B=inline:{synth.b64(KB)}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 SIP messages, 0 calls, 2 RTP streams")
    assert "SRTP: 2 of 2 RTP streams encrypted, 2 decrypted." in out
    assert "(SSRC 0x000A11CE): decrypted with --srtp-key -> stream-0-decrypted.wav" in out
    assert "(SSRC 0x00000B0B): decrypted with --srtp-key 0x00000B0B= -> stream-1-decrypted.wav" in out
    assert correlate(read_wav(o / "stream-0-decrypted.wav")[0], a2b.pcm) > 0.999
    assert correlate(read_wav(o / "stream-1-decrypted.wav")[0], b2a.pcm) > 0.999


def test_replay_no_sip_no_key_says_how(tmp_path, capsys):
    path, *_ = srtp_call(tmp_path / "nosip.pcap", with_sip=False)
    assert replay.main([path, "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "SRTP: 2 of 2 RTP streams encrypted, 0 decrypted." in out
    assert out.count("no key in any readable SDP — signalling over TLS?") == 2
    assert f"labkit replay {path} --srtp-key inline:KEY" in out
    assert not list((tmp_path / "o").glob("*.wav"))


def test_replay_wrong_key(tmp_path, capsys):
    path, *_ = srtp_call(tmp_path / "nosip.pcap", with_sip=False)
    assert replay.main([path, "-o", str(tmp_path / "o"), "--srtp-key", inline(KX)]) == 0
    out = capsys.readouterr().out
    assert out.count(f"wrong key: {N} authentication failures with --srtp-key") == 2


@pytest.mark.parametrize("key, words", [
    ("inline:not*base64", "is not valid base64"),
    (f"inline:{synth.b64(KA[:20])}", "decodes to 20 bytes"),
    (f"AEAD_AES_256_GCM inline:{synth.b64(KA)}", "AEAD_AES_256_GCM is not one the kit decrypts"),
])
def test_replay_refuses_a_bad_key_before_writing(call, tmp_path, capsys, key, words):
    assert replay.main([call["pcap"], "-o", str(tmp_path / "o"), "--srtp-key", key]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit replay: --srtp-key: ") and words in err and "What to do:" in err
    assert not (tmp_path / "o").exists()


def test_replay_plain_capture_has_no_srtp_section(eth_pcap, tmp_path, capsys):
    rep = replay(eth_pcap, tmp_path / "o")
    assert rep.srtp_notes == [] and "## SRTP" not in (tmp_path / "o" / "report.md").read_text()
    st = pd.read_csv(tmp_path / "o" / "streams.csv")
    assert not st["srtp"].any() and (st["entropy"] < 7.0).all()
    assert not list((tmp_path / "o").glob("*.wav"))


def test_best_effort_srtp_in_an_avp_offer(tmp_path):
    """a=crypto inside RTP/AVP (baresip mediaenc=srtp, Asterisk media_encryption_optimistic): the key
    is tried; encrypted media is decrypted, plain media stays plain RTP."""
    avp = lambda k: {"crypto": S80, "key": inline(k), "proto": "RTP/AVP"}
    path, *_ = srtp_call(tmp_path / "optimistic.pcap", sdp=(avp(KA), avp(KB)))
    s = srtp_streams(path)
    assert list(s["decrypted"]) == [N, N] and s["srtp"].all()
    assert set(s["evidence"]) == {"a=crypto in an RTP/AVP SDP (best-effort SRTP), authenticated with its key"}
    a2b = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, ssrc=0xA11CE, n=N)
    path = tmp_path / "declined.pcap"
    synth.write_pcap(path, sorted(a2b.pkts + synth.sip_dialog(offer_sdp=avp(KA)), key=lambda p: p.time))
    r = srtp_streams(path).iloc[0]
    assert not r["srtp"] and r["decrypted"] == 0 and r["auth_failures"] == 0
    assert r["why"] == ("plain RTP (RTP/AVP in the SDP); the a=crypto key offered does not authenticate it: "
                        "SRTP offered, not used")


def test_package_exports():
    import labkit.analysis as analysis
    assert {"srtp_streams", "srtp_decrypt", "sdes_keys"} <= set(analysis.__all__)
    assert analysis.srtp_streams is srtp_streams
