"""Synthetic captures for the analysis tests: real SIP text and G.711 RTP, with known faults.

Written independently of labkit.analysis (own G.711 encoders after the ITU-T G.711 /
Sun reference code, own pcap/pcapng writers) so that tests check the code against
figures this builder chose, not against itself.
"""
from __future__ import annotations

import random
import re
import socket
import struct
from dataclasses import dataclass, field

import numpy as np

# ----------------------------------------------------------------------------- G.711 encoders

def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """16-bit linear PCM -> G.711 mu-law bytes (classic BIAS=0x84, CLIP=32635 encoder)."""
    s = np.asarray(pcm, dtype=np.int32)
    sign = np.where(s < 0, 0x80, 0)
    s = np.minimum(np.abs(s), 32635) + 0x84
    exponent = np.frexp((s >> 7).astype(np.float64))[1] - 1
    exponent = np.clip(exponent, 0, 7)
    mantissa = (s >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """16-bit linear PCM -> G.711 A-law bytes (Sun g711.c linear2alaw)."""
    v = np.asarray(pcm, dtype=np.int32) >> 3
    mask = np.where(v >= 0, 0xD5, 0x55)
    v = np.where(v >= 0, v, -v - 1)
    seg = np.searchsorted(_SEG_AEND, v, side="left")
    aval = np.where(seg < 2, (v >> 1) & 0x0F, (v >> np.minimum(seg, 7)) & 0x0F) | (np.minimum(seg, 7) << 4)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def tone(seconds: float, freq: float = 440.0, rate: int = 8000, amp: float = 12000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) + 0.3 * amp * np.sin(2 * np.pi * 1270 * t)).astype(np.int16)


# ----------------------------------------------------------------------------- packet headers

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> tuple[bytes, int]:
    """IPv4 or IPv6 header + UDP header + payload; returns (bytes, ethertype)."""
    udp_len = 8 + len(payload)
    if ":" in src:
        udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
        ip = struct.pack("!IHBB", 6 << 28, udp_len, 17, 64) + socket.inet_pton(
            socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        return ip + udp, 0x86DD
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp, 0x0800


def link(linktype: int, l3: bytes, ethertype: int, vlan: int | None = None) -> bytes:
    if linktype == 1:
        tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
        return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + tag + struct.pack("!H", ethertype) + l3
    if linktype == 0:  # BSD loopback: address family in the writer's (here little-endian) order
        return struct.pack("<I", 2 if ethertype == 0x0800 else 30) + l3
    if linktype == 113:  # SLL: packet type, arphrd, addr len, addr(8), protocol
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", ethertype) + l3
    if linktype == 276:  # SLL2: protocol, reserved, ifindex, arphrd, pkttype, addrlen, addr(8)
        return struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\x01\0\0") + l3
    if linktype in (101, 228, 229):
        return l3
    raise ValueError(linktype)


# ----------------------------------------------------------------------------- events -> files

@dataclass
class Pkt:
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    iface: int = 0


def write_pcap(path, pkts: list[Pkt], linktype: int = 1, *, big_endian: bool = False,
               nanosecond: bool = False, vlan: int | None = None) -> None:
    e = ">" if big_endian else "<"
    with open(path, "wb") as f:
        f.write(struct.pack(e + "IHHiIII", 0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        for p in pkts:
            l3, et = ip_udp(p.src, p.sport, p.dst, p.dport, p.payload)
            frame = link(linktype, l3, et, vlan)
            us = round(p.time * 1e6)
            frac = (us % 1_000_000) * (1000 if nanosecond else 1)
            f.write(struct.pack(e + "IIII", us // 1_000_000, frac, len(frame), len(frame)))
            f.write(frame)


def write_pcapng(path, pkts: list[Pkt], linktypes: list[int]) -> None:
    """pcapng with one IDB per entry of ``linktypes``; a packet goes out on ``p.iface``."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)
    with open(path, "wb") as f:
        f.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for i, lt in enumerate(linktypes):
            opts = b""
            if i == 1:  # nanosecond resolution on the second interface
                opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
            f.write(block(1, struct.pack("<HHI", lt, 0, 262144) + opts))
        for p in pkts:
            lt = linktypes[p.iface]
            l3, et = ip_udp(p.src, p.sport, p.dst, p.dport, p.payload)
            frame = link(lt, l3, et)
            t = round(p.time * 1e6) * (1000 if p.iface == 1 else 1)  # exact, no float ns
            f.write(block(6, struct.pack("<IIIII", p.iface, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame))
                          + frame))


# ----------------------------------------------------------------------------- SIP

ALICE, PBX = "192.168.0.11", "192.168.0.10"
CALL_ID = "a84b4c76e66710@192.168.0.11"
REG_CALL_ID = "reg-843817637684230@192.168.0.11"


RFC4568_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # the example key of RFC 4568


def sdp(addr: str, port: int, pts=(0, 8, 101), direction="sendrecv", crypto: str | None = None,
        proto="RTP/AVP", key: str = f"inline:{RFC4568_KEY}|2^20|1:32", tag: int = 1,
        extra: tuple[str, ...] = ()) -> str:
    """An SDP body.  ``crypto``: a suite name, written as ``a=crypto:<tag> <crypto> <key>``
    (RFC 4568 §9.1; ``key`` is the key parameter), or a list of (tag, suite, key) for several
    a=crypto lines; ``extra``: more attribute lines (e.g. ``fingerprint:…``)."""
    lines = ["v=0", f"o=- 1 1 IN IP4 {addr}", "s=-", f"c=IN IP4 {addr}", "t=0 0",
             f"m=audio {port} {proto} {' '.join(map(str, pts))}"]
    names = {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000"}
    lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in pts if pt in names]
    if isinstance(crypto, str):
        lines.append(f"a=crypto:{tag} {crypto} {key}")
    elif crypto:
        lines += [f"a=crypto:{t} {c} {k}" for t, c, k in crypto]
    lines += [f"a={x}" for x in extra]
    lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def sip(first: str, headers: list[str], body: str = "") -> bytes:
    ct = ["Content-Type: application/sdp"] if body else []
    text = "\r\n".join([first] + headers + ct + [f"Content-Length: {len(body.encode())}", "", ""]) + body
    return text.encode()


def sip_dialog(t0: float = 1_700_000_000.0, answer_port: int = 12000, offer_port: int = 4000,
               call_id: str = CALL_ID, final: int = 200, offer_sdp: dict | None = None,
               answer_sdp: dict | None = None, caller: str = ALICE, callee: str = PBX) -> list[Pkt]:
    """REGISTER/401/REGISTER+auth/200, then INVITE/100/180/200/ACK and later BYE/200.

    The BYE goes out at t0 + 10 s (after the RTP made by :func:`rtp_stream`).
    With ``final`` != 200 the INVITE is answered with that failure instead.
    ``offer_sdp``/``answer_sdp``: more arguments for :func:`sdp` (e.g. crypto=, key=, proto=);
    ``caller``/``callee``: the addresses of the two sides (SDP and IP headers).
    """
    if (caller, callee) != (ALICE, PBX):
        out = sip_dialog(t0, answer_port, offer_port, call_id, final, offer_sdp, answer_sdp)
        swap = {ALICE: caller, PBX: callee}
        for p in out:
            p.src, p.dst = swap[p.src], swap[p.dst]
            p.payload = _fix_length(re.sub(rb"IN IP4 (192\.168\.0\.1[01])\b",
                                           lambda m: b"IN IP4 " + swap[m.group(1).decode()].encode(), p.payload))
        return out
    via_a = "Via: SIP/2.0/UDP 192.168.0.11:5060;branch=z9hG4bK{b};rport"
    via_r = "Via: SIP/2.0/UDP 192.168.0.11:5060;branch=z9hG4bK{b};received=203.0.113.5;rport=5062"
    ua = "User-Agent: baresip v3.10.1"
    P = lambda t, payload, up=True: Pkt(t, ALICE, 5060, PBX, 5060, payload) if up else \
        Pkt(t, PBX, 5060, ALICE, 5060, payload)
    reg = ["From: <sip:alice@pbx.lab>;tag=r1", "To: <sip:alice@pbx.lab>", f"Call-ID: {REG_CALL_ID}",
           "Contact: <sip:alice@192.168.0.11:5060>", "Max-Forwards: 70", ua, "Expires: 3600"]
    out = [
        P(t0 + 0.000, sip("REGISTER sip:pbx.lab SIP/2.0", [via_a.format(b="r1")] + reg + ["CSeq: 1 REGISTER"])),
        P(t0 + 0.010, sip("SIP/2.0 401 Unauthorized", [via_r.format(b="r1")] + reg[:3] + [
            "CSeq: 1 REGISTER", 'WWW-Authenticate: Digest realm="pbx.lab", nonce="abc123", algorithm=MD5',
            "Server: Asterisk PBX 20.5.0"]), up=False),
        P(t0 + 0.020, sip("REGISTER sip:pbx.lab SIP/2.0", [via_a.format(b="r2")] + reg + [
            "CSeq: 2 REGISTER", 'Authorization: Digest username="alice", realm="pbx.lab", nonce="abc123", '
            'uri="sip:pbx.lab", response="6629fae49393a05397450978507c4ef1", algorithm=MD5'])),
        P(t0 + 0.030, sip("SIP/2.0 200 OK", [via_r.format(b="r2")] + reg[:2] + ["To: <sip:alice@pbx.lab>;tag=as1",
                                                                              f"Call-ID: {REG_CALL_ID}",
                                                                              "CSeq: 2 REGISTER", "Expires: 3600"]),
          up=False),
    ]
    dlg = ["From: \"Alice\" <sip:alice@pbx.lab>;tag=1928301774", "To: <sip:bob@pbx.lab>", f"Call-ID: {call_id}"]
    dlg_t = [dlg[0], "To: <sip:bob@pbx.lab>;tag=314159", dlg[2]]
    inv_via = via_a.format(b="inv1")
    inv_via_r = via_r.format(b="inv1")
    out += [
        P(t0 + 0.100, sip("INVITE sip:bob@pbx.lab SIP/2.0", [inv_via] + dlg + [
            "CSeq: 1 INVITE", "Contact: <sip:alice@192.168.0.11:5060>", ua, "Max-Forwards: 70"],
            sdp(ALICE, offer_port, **(offer_sdp or {})))),
        P(t0 + 0.110, sip("SIP/2.0 100 Trying", [inv_via_r] + dlg + ["CSeq: 1 INVITE"]), up=False),
    ]
    if final != 200:
        out.append(P(t0 + 0.500, sip(f"SIP/2.0 {final} Busy Here", [inv_via_r] + dlg_t + ["CSeq: 1 INVITE"]),
                     up=False))
        out.append(P(t0 + 0.510, sip("ACK sip:bob@pbx.lab SIP/2.0", [inv_via] + dlg_t + ["CSeq: 1 ACK"])))
        return out
    out += [
        P(t0 + 0.200, sip("SIP/2.0 180 Ringing", [inv_via_r] + dlg_t + ["CSeq: 1 INVITE"]), up=False),
        P(t0 + 0.900, sip("SIP/2.0 200 OK", [inv_via_r] + dlg_t + [
            "CSeq: 1 INVITE", "Contact: <sip:bob@192.168.0.10:5060>", "Server: Asterisk PBX 20.5.0"],
            sdp(PBX, answer_port, **{"pts": (0, 101), **(answer_sdp or {})})), up=False),
        P(t0 + 0.910, sip("ACK sip:bob@192.168.0.10:5060 SIP/2.0", [via_a.format(b="ack1")] + dlg_t + [
            "CSeq: 1 ACK", "Max-Forwards: 70"])),
        P(t0 + 10.000, sip("BYE sip:bob@192.168.0.10:5060 SIP/2.0", [via_a.format(b="bye1")] + dlg_t + [
            "CSeq: 2 BYE", "Max-Forwards: 70"])),
        P(t0 + 10.010, sip("SIP/2.0 200 OK", [via_r.format(b="bye1")] + dlg_t + ["CSeq: 2 BYE"]), up=False),
    ]
    return out


def _fix_length(msg: bytes) -> bytes:
    """Content-Length again after the body was edited."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    if not sep:
        return msg
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
    return head + sep + body


# ----------------------------------------------------------------------------- RTP

@dataclass
class Stream:
    """What the builder sent and what a receiver saw, in arrival order."""
    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    pt: int
    pcm: np.ndarray                      # the source audio (before G.711)
    sent_seqs: list[int]
    dropped: set[int]
    arrivals: list[tuple[float, int, int]] = field(default_factory=list)  # (time, seq, ts)
    pkts: list[Pkt] = field(default_factory=list)


def rtp_stream(src, sport, dst, dport, *, ssrc=0x11223344, pt=0, n=200, start=1_700_000_001.0,
               first_seq=1000, first_ts=160000, drop=(), swap=(), dup=(), jitter_ms=0.0,
               seed=1, freq=440.0, iface=0, payload_bytes=160) -> Stream:
    """One G.711 stream of ``n`` packets of 20 ms.

    drop: packet indices (0..n-1) not delivered; swap: indices i whose packet is delivered
    after packet i+1; dup: indices delivered twice; jitter_ms: each arrival is delayed by a
    uniform random 0..jitter_ms (seeded), arrival times then sorted so the file stays in
    time order.  Sequence numbers and timestamps wrap as 16/32-bit values.
    """
    rng = random.Random(seed)
    pcm = tone(n * payload_bytes / 8000, freq)
    enc = ulaw_encode(pcm) if pt == 0 else alaw_encode(pcm)
    order = [i for i in range(n) if i not in set(drop)]
    for i in swap:
        a, b = order.index(i), order.index(i + 1)
        order[a], order[b] = order[b], order[a]
    delivered = []
    for i in order:
        delivered.append(i)
        if i in set(dup):
            delivered.append(i)
    times = sorted(round(start + k * 0.020 + rng.uniform(0, jitter_ms / 1000.0), 6) if jitter_ms
                   else round(start + k * 0.020, 6) for k in range(len(delivered)))
    s = Stream(src, sport, dst, dport, ssrc, pt, pcm, [(first_seq + i) & 0xFFFF for i in range(n)],
               {(first_seq + i) & 0xFFFF for i in drop})
    for t, i in zip(times, delivered):
        seq = (first_seq + i) & 0xFFFF
        ts = (first_ts + i * payload_bytes) & 0xFFFFFFFF
        marker = 0x80 if i == 0 else 0
        hdr = struct.pack("!BBHII", 0x80, marker | pt, seq, ts, ssrc)
        body = enc[i * payload_bytes:(i + 1) * payload_bytes].tobytes()
        s.pkts.append(Pkt(t, src, sport, dst, dport, hdr + body, iface))
        s.arrivals.append((t, seq, ts))
    return s


def call_capture(**stream_kw) -> tuple[list[Pkt], Stream, Stream]:
    """The full scenario: SIP dialog plus RTP both ways (alice:4000 <-> pbx:12000)."""
    a2b_kw = {k[4:]: v for k, v in stream_kw.items() if k.startswith("a2b_")}
    b2a_kw = {k[4:]: v for k, v in stream_kw.items() if k.startswith("b2a_")}
    a2b = rtp_stream(ALICE, 4000, PBX, 12000, ssrc=0xA11CE, **a2b_kw)
    b2a = rtp_stream(PBX, 12000, ALICE, 4000, ssrc=0xB0B, freq=600.0, seed=2, **b2a_kw)
    pkts = sorted(sip_dialog() + a2b.pkts + b2a.pkts, key=lambda p: p.time)
    return pkts, a2b, b2a


def expected_jitter_ms(arrivals: list[tuple[float, int, int]], clock: int = 8000) -> tuple[float, float]:
    """RFC 3550 section 6.4.1 jitter, written as a plain loop: (mean, max) in ms."""
    j, js = 0.0, []
    for k in range(1, len(arrivals)):
        (r0, _, s0), (r1, _, s1) = arrivals[k - 1], arrivals[k]
        dts = ((s1 - s0 + 2**31) % 2**32) - 2**31
        d = (r1 - r0) * clock - dts
        j += (abs(d) - j) / 16
        js.append(j)
    return (float(np.mean(js)) / clock * 1000, float(max(js)) / clock * 1000) if js else (0.0, 0.0)


# ----------------------------------------------------------------------------- SRTP

SRTP_SUITES = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}


def srtp_protect(stream: Stream, key: bytes, suite: str = "AES_CM_128_HMAC_SHA1_80",
                 mki: tuple[int, int] | None = None) -> Stream:
    """The same stream sent as SRTP (RFC 3711) with ``key`` (30 bytes: master key + salt),
    encrypted by pylibsrtp (libsrtp) as a sender does, in sending order: duplicates in the
    arrivals are the same SRTP packet twice (a replay).  ``mki=(value, length)`` inserts an
    MKI before the tag (RFC 3711 §3.1).  Returns a new Stream (same arrivals, new payloads)."""
    import copy

    from pylibsrtp import Policy, Session
    profile = (Policy.SRTP_PROFILE_AES128_CM_SHA1_80 if suite.endswith("_80")
               else Policy.SRTP_PROFILE_AES128_CM_SHA1_32)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    tag = SRTP_SUITES[suite]
    done: dict[bytes, bytes] = {}
    by_seq = sorted({p.payload[2:4]: p.payload for p in stream.pkts}.values(),
                    key=lambda b: stream.sent_seqs.index(struct.unpack("!H", b[2:4])[0]))
    for plain in by_seq:  # the sender's order, once each
        enc = tx.protect(plain)
        if mki:
            enc = enc[:-tag] + mki[0].to_bytes(mki[1], "big") + enc[-tag:]
        done[plain] = enc
    out = copy.copy(stream)
    out.pkts = [Pkt(p.time, p.src, p.sport, p.dst, p.dport, done[p.payload], p.iface) for p in stream.pkts]
    return out


def b64(key: bytes) -> str:
    import base64
    return base64.b64encode(key).decode()


# An SRTP sender written from RFC 3711 alone (AES-CM §4.1.1, HMAC-SHA1 §4.2.1, key derivation
# §4.3.1) with the `cryptography` package, so that one test does not depend on libsrtp at all.

def srtp_kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with key_derivation_rate 0: AES-CM keystream from x = label·2^48 XOR salt."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    iv = (x << 16).to_bytes(16, "big")
    enc = Cipher(algorithms.AES(master_key), modes.CTR(iv)).encryptor()
    return enc.update(b"\0" * length) + enc.finalize()


def srtp_reference_protect(packet: bytes, key: bytes, roc: int = 0, tag_len: int = 10) -> bytes:
    """One RTP packet (12-byte header, no CSRC/extension) -> SRTP, AES_CM_128_HMAC_SHA1_80/32."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    mk, ms = key[:16], key[16:30]
    k_e, k_a, k_s = srtp_kdf(mk, ms, 0, 16), srtp_kdf(mk, ms, 1, 20), srtp_kdf(mk, ms, 2, 14)
    seq, ssrc = struct.unpack("!H", packet[2:4])[0], struct.unpack("!I", packet[8:12])[0]
    index = (roc << 16) | seq
    iv = (int.from_bytes(k_s, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    enc = Cipher(algorithms.AES(k_e), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    body = packet[:12] + enc.update(packet[12:]) + enc.finalize()
    tag = hmac.new(k_a, body + struct.pack("!I", roc), hashlib.sha1).digest()[:tag_len]
    return body + tag
