"""Writes the SRTP fixtures of this directory (run it again to remake them; the result is identical).

    .venv/bin/python tests/data/srtp/make_fixtures.py

* ``sdes-call.pcap`` — tests/analysis/synth.py's call (REGISTER, INVITE/200/ACK, BYE) with SDES
  in both SDPs (``RTP/SAVP``, ``a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:…``) and G.711 SRTP both
  ways, PACKETS packets each: alice's key (in the INVITE) protects alice → pbx, the pbx's key (in
  the 200 OK) protects pbx → alice (RFC 4568).
* ``srtp-nosip.pcap`` — one SRTP stream and no signalling at all; its key is in
  ``srtp-nosip.key`` (``labkit replay srtp-nosip.pcap --srtp-key $(cat srtp-nosip.key)``).

The SRTP is made by synth.srtp_reference_protect, an RFC 3711 sender written with the
`cryptography` package alone (AES-CM, HMAC-SHA1, the key derivation checked against RFC 3711
appendix B.3), not by libsrtp: the fixtures test labkit's use of pylibsrtp against the RFC.
Keys are derived from fixed strings, so nothing here is secret or random.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "analysis"))
import synth  # noqa: E402

PACKETS = 100
A2B_SSRC, B2A_SSRC, NOSIP_SSRC = 0x5A11CE00, 0x0B0B0B0B, 0x00C0FFEE
KEY_ALICE = hashlib.sha256(b"labkit fixture: alice").digest()[:30]
KEY_PBX = hashlib.sha256(b"labkit fixture: pbx").digest()[:30]
KEY_NOSIP = hashlib.sha256(b"labkit fixture: no sip").digest()[:30]


def plain_a2b() -> synth.Stream:
    return synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, ssrc=A2B_SSRC, n=PACKETS)


def plain_b2a() -> synth.Stream:
    return synth.rtp_stream(synth.PBX, 12000, synth.ALICE, 4000, ssrc=B2A_SSRC, n=PACKETS, freq=600.0, seed=2)


def plain_nosip() -> synth.Stream:
    return synth.rtp_stream("10.0.0.1", 30000, "10.0.0.2", 31000, ssrc=NOSIP_SSRC, n=PACKETS, freq=500.0,
                            first_seq=65480)   # wraps: the rollover counter goes to 1 (RFC 3711 §3.3.1)


def encrypted(stream: synth.Stream, key: bytes) -> list[synth.Pkt]:
    out, roc, last = [], 0, None
    for p in stream.pkts:
        seq = int.from_bytes(p.payload[2:4], "big")
        if last is not None and seq < last:
            roc += 1
        last = seq
        out.append(synth.Pkt(p.time, p.src, p.sport, p.dst, p.dport,
                             synth.srtp_reference_protect(p.payload, key, roc)))
    return out


def main() -> None:
    sdes = lambda key: {"crypto": "AES_CM_128_HMAC_SHA1_80", "key": f"inline:{synth.b64(key)}", "proto": "RTP/SAVP"}
    call = synth.sip_dialog(offer_sdp=sdes(KEY_ALICE), answer_sdp=sdes(KEY_PBX))
    media = encrypted(plain_a2b(), KEY_ALICE) + encrypted(plain_b2a(), KEY_PBX)
    synth.write_pcap(HERE / "sdes-call.pcap", sorted(call + media, key=lambda p: p.time))
    synth.write_pcap(HERE / "srtp-nosip.pcap", encrypted(plain_nosip(), KEY_NOSIP))
    (HERE / "srtp-nosip.key").write_text(f"inline:{synth.b64(KEY_NOSIP)}\n")


if __name__ == "__main__":
    main()
