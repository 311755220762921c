"""The RTP table: one row per RTP packet, read straight from the capture file.

How a UDP datagram is taken for RTP (RFC 3550 §5.1 header, §A.1 validity checks):

1. Its first byte says version 2 and the payload type (low 7 bits of byte 1) is an
   audio/video type: 0–34 static (RFC 3551) or 96–127 dynamic.  This already rules out
   RTCP (PT 200–204 appear as 72–76), STUN (first two bits 00), SIP and other text
   (ASCII starts with bits 01), and DTLS/ZRTP (first byte 20–63 or version 0/1).
2. The header fits: 12 bytes + 4 per CSRC + header extension, minus padding.
3. Then either its flow was announced in SDP (``sip=`` table given: the destination or
   source ``addr:port`` equals some ``c=``/``m=`` pair) — always accepted — or, for the
   heuristic, its stream (src, sport, dst, dport, SSRC) has at least ``min_packets``
   packets, at least half its sequence steps are +1, and neither port is a well-known
   non-RTP port (SIP, DNS, STUN, DHCP, NTP, SNMP, syslog, mDNS, SSDP, QUIC).

Columns: ``frame``, ``time`` (epoch s), ``rel_time`` (s since the first packet of the
file), ``src``, ``sport``, ``dst``, ``dport``, ``ssrc``, ``seq``, ``timestamp``,
``payload_type``, ``marker``, ``payload_len`` (bytes of media after header and padding),
``found_by`` ("sdp" or "heuristic"), ``payload`` (bytes) with ``with_payload=True``, and
``packet`` (the whole UDP payload: header, payload and, for SRTP, the authentication tag that
``payload`` cannot tell from media, RFC 3711 §3.1) with ``with_packet=True``.

SRTP (RFC 3711) leaves the RTP header in clear text, so SRTP streams are found here like any
other; only their ``payload`` is ciphertext followed by the tag (:mod:`labkit.analysis.srtp`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.analysis.pcapfile import AddressBook, ScanResult, UdpWindow, scan_udp, warn_all

NOT_RTP_PORTS = np.array([53, 67, 68, 123, 137, 138, 161, 162, 443, 514, 1900, 3478, 3479,
                          5060, 5061, 5349, 5353], dtype=np.int64)

COLUMNS = ["frame", "time", "rel_time", "src", "sport", "dst", "dport", "ssrc", "seq", "timestamp",
           "payload_type", "marker", "payload_len", "found_by"]


def _extractor(with_payload: bool, book: AddressBook, with_packet: bool = False):
    def extract(u: UdpWindow) -> dict:
        b, pay, plen = u.buf, u.pay, u.paylen
        last = len(b) - 1
        g = lambda i: b[np.minimum(i, last)]
        b0 = g(pay).astype(np.int64)
        b1 = g(pay + 1).astype(np.int64)
        pt = b1 & 0x7F
        cand = (plen >= 12) & ((b0 >> 6) == 2) & ((pt <= 34) | (pt >= 96))
        hdr = 12 + 4 * (b0 & 0x0F)
        ext = (b0 & 0x10) != 0
        ext_len = (g(pay + hdr + 2).astype(np.int64) << 8) | g(pay + hdr + 3)
        hdr = np.where(ext, hdr + 4 + 4 * ext_len, hdr)
        pad = np.where((b0 & 0x20) != 0, g(pay + plen - 1).astype(np.int64), 0)
        mlen = plen - hdr - pad
        cand &= mlen >= 0
        i = np.flatnonzero(cand)
        p = pay[i]
        be16 = lambda o: (g(p + o).astype(np.uint32) << 8) | g(p + o + 1)
        be32 = lambda o: (be16(o) << 16) | be16(o + 2)
        cols = {"frame": u.frame[i], "time": u.ts[i], "src": book.encode(u.src_hi[i], u.src_lo[i]),
                "dst": book.encode(u.dst_hi[i], u.dst_lo[i]), "sport": u.sport[i], "dport": u.dport[i],
                "ssrc": be32(8).astype(np.uint32), "seq": be16(2).astype(np.uint16),
                "timestamp": be32(4).astype(np.uint32), "payload_type": pt[i].astype(np.uint8),
                "marker": (b1[i] >> 7).astype(bool), "payload_len": mlen[i].astype(np.int32)}
        raw = b.tobytes() if len(i) and (with_payload or with_packet) else b""
        if with_payload:
            starts, ends = p + hdr[i], p + hdr[i] + mlen[i]
            cols["payload"] = [raw[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
        if with_packet:
            cols["packet"] = [raw[s:s + n] for s, n in zip(p.tolist(), plen[i].tolist())]
        return cols
    return extract


def _empty(with_payload: bool, with_packet: bool = False) -> pd.DataFrame:
    cols = COLUMNS + (["payload"] if with_payload else []) + (["packet"] if with_packet else [])
    return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})


def rtp_packets(pcap, sip: pd.DataFrame | None = None, *, with_payload: bool = False,
                min_packets: int = 8, tls_keylog=None, tls_rsa_key=None, tls_ports=(),
                with_packet: bool = False) -> pd.DataFrame:
    """One row per RTP packet of ``pcap`` (see the module docstring for how RTP is found).

    ``sip``: the table from :func:`~labkit.analysis.sip_messages`; its SDP addresses make
    short or unusual streams count as RTP too.  Without it only the heuristic is used —
    unless ``tls_keylog``/``tls_rsa_key``/``tls_ports`` are given: then the SIP table is
    made here with them, since with SIP over TLS the SDP that says where the media goes is
    readable only once decrypted (TLS hides the signalling, not plain RTP).
    ``with_payload=True`` adds the media bytes (needed for audio decoding); ``with_packet=True``
    the whole packet as sent (needed to decrypt SRTP, :func:`~labkit.analysis.srtp.srtp_decrypt`).
    Truncated files are read up to the last complete packet; the warning is in
    ``df.attrs["warnings"]``.
    """
    if sip is None and (tls_keylog is not None or tls_rsa_key is not None or tls_ports):
        from labkit.analysis.sip import sip_messages
        sip = sip_messages(pcap, tls_keylog=tls_keylog, tls_rsa_key=tls_rsa_key, tls_ports=tls_ports)
    result = ScanResult(str(pcap))
    book = AddressBook()
    cols, result = scan_udp(pcap, _extractor(with_payload, book, with_packet), result)
    warn_all(result.warnings)
    if not cols or len(cols["frame"]) == 0:
        out = _empty(with_payload, with_packet)
        out.attrs["warnings"] = result.warnings
        return out
    labels = book.labels()
    src_codes, dst_codes = cols.pop("src"), cols.pop("dst")
    sport = cols.pop("sport").astype(np.int32)
    dport = cols.pop("dport").astype(np.int32)

    # Flows announced in SDP (by address label and port).
    sdp_known = np.zeros(len(sport), dtype=bool)
    if sip is not None and len(sip):
        from labkit.analysis.sip import media_endpoints
        ep = media_endpoints(sip)
        announced = set(zip(ep["addr"].astype(str), ep["port"].astype(int)))
        for codes, ports in ((dst_codes, dport), (src_codes, sport)):
            keys = [(k, p) for k, lab in enumerate(labels) for (a, p) in announced if a == lab]
            if keys:
                kk = np.array([k * 65536 + p for k, p in keys], dtype=np.int64)
                sdp_known |= np.isin(codes.astype(np.int64) * 65536 + ports, kk)

    # Heuristic: per-stream packet count and sequence regularity (arrival order = file order).
    # one int64 per (src, sport, dst, dport) flow, then (flow, SSRC) factorised
    if len(labels) < 32768:  # src(15 bits) sport(16) dst(16) dport(16) packed, no collision
        flow = ((src_codes.astype(np.int64) << 48) | (sport.astype(np.int64) << 32)
                | (dst_codes.astype(np.int64) << 16) | dport.astype(np.int64))
        flow_id = pd.factorize(flow)[0].astype(np.int64)
    else:
        flow_id = pd.DataFrame({"s": src_codes, "sp": sport, "d": dst_codes, "dp": dport}).groupby(
            ["s", "sp", "d", "dp"], sort=False).ngroup().to_numpy().astype(np.int64)
    sid = pd.factorize((flow_id << 32) | cols["ssrc"].astype(np.int64))[0]
    order = np.lexsort((cols["frame"], sid))
    seq_sorted = cols["seq"][order].astype(np.int64)
    sid_sorted = sid[order]
    step1 = np.zeros(len(order), dtype=np.float64)
    step1[1:] = ((seq_sorted[1:] - seq_sorted[:-1]) % 65536 == 1) & (sid_sorted[1:] == sid_sorted[:-1])
    counts = np.bincount(sid, minlength=sid.max() + 1)
    steps = np.bincount(sid_sorted, weights=step1, minlength=sid.max() + 1)
    regular = steps >= 0.5 * np.maximum(counts - 1, 1)
    bad_port = np.isin(sport, NOT_RTP_PORTS) | np.isin(dport, NOT_RTP_PORTS)
    heuristic = (counts[sid] >= min_packets) & regular[sid] & ~bad_port
    keep = sdp_known | heuristic

    idx = slice(None) if keep.all() else np.flatnonzero(keep)
    t = cols["time"][idx]
    t0 = result.first_time
    df = pd.DataFrame({
        "frame": cols["frame"][idx], "time": t, "rel_time": t - t0,
        "src": pd.Categorical.from_codes(src_codes[idx], categories=labels),
        "sport": sport[idx],
        "dst": pd.Categorical.from_codes(dst_codes[idx], categories=labels),
        "dport": dport[idx],
        "ssrc": cols["ssrc"][idx].astype(np.int64), "seq": cols["seq"][idx].astype(np.int32),
        "timestamp": cols["timestamp"][idx].astype(np.int64),
        "payload_type": cols["payload_type"][idx].astype(np.int16),
        "marker": cols["marker"][idx], "payload_len": cols["payload_len"][idx],
        "found_by": pd.Categorical.from_codes(np.where(sdp_known[idx], 0, 1).astype(np.int8),
                                              categories=["sdp", "heuristic"]),
    }, copy=False)
    if with_payload:
        pl = cols["payload"]
        df["payload"] = pl if isinstance(idx, slice) else [pl[k] for k in idx.tolist()]
    if with_packet:
        pk = cols["packet"]
        df["packet"] = pk if isinstance(idx, slice) else [pk[k] for k in idx.tolist()]
    df.attrs["warnings"] = result.warnings
    df.attrs["frames"] = result.frames
    df.attrs["first_time"] = t0
    return df
