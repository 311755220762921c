"""What an observer on each segment of a call can read — measured from that segment's capture.

The report's final chain (TLS + SRTP phone → box → Internet → Asterisk on a VPS → trunk →
PSTN) protects the phones' side only: TLS (RFC 5246 / RFC 8446) hides the SIP and with it
the SDES keys (RFC 4568 §8.3: the keys must travel in a protected channel), SRTP (RFC 3711)
turns the media into ciphertext.  Past the VPS the trunk is, as carriers commonly run it,
plain SIP over UDP (RFC 3261) with plain RTP: the observer there reads everything again.

    table = exposure({"lan": "lan.pcap", "internet": "inet.pcap", "carrier": "carrier.pcap"},
                     names={"203.0.113.10": "vps", ...})
    exposure_by_segment(table)

One row per segment and pair of addresses that exchanged SIP, TLS or RTP (who talks to whom),
built from the kit's own readers — :func:`~labkit.analysis.sip_messages` (SIP an observer reads
in clear), :func:`~labkit.analysis.tls_sessions` (TLS connections it sees but cannot open),
:func:`~labkit.analysis.srtp_decrypt` (each RTP stream: SRTP by its SDP or by its payload's
entropy, decrypted when the keys are readable) and :func:`~labkit.analysis.decode_stream`
(G.711 audio an observer can play).  Nothing is asserted from the lab file.

``tls_keylog``: an observer who also holds the TLS keys (a key log, per segment or for all):
the same table then shows what TLS alone was protecting.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from labkit.analysis.audio import decode_stream
from labkit.analysis.sip import sip_messages
from labkit.analysis.srtp import looks_encrypted, srtp_decrypt
from labkit.analysis.tls import tls_sessions
from labkit.errors import CaptureError

COLUMNS = ["segment", "a", "b", "signalling", "sip_messages", "sip_readable", "methods", "tls_sessions",
           "sdp_keys", "keys_readable", "media", "media_streams", "media_packets", "media_entropy",
           "audio_seconds", "media_readable"]
#: Per segment: what is readable by anyone on it.
SEGMENT_COLUMNS = ["segment", "pairs", "sip_readable", "keys_readable", "media", "media_readable",
                   "audio_seconds", "talkers"]
_CLOCK = 8000  # G.711 (RFC 3551 §4.5.14): 8000 samples a second


def _pair(x: str, y: str, names: Mapping[str, str]) -> tuple[str, str]:
    a, b = names.get(str(x), str(x)), names.get(str(y), str(y))
    return (a, b) if a <= b else (b, a)


def _keylog_for(tls_keylog, segment: str):
    if isinstance(tls_keylog, Mapping):
        return tls_keylog.get(segment)
    return tls_keylog


def _audio_seconds(plain_rtp: pd.DataFrame, stream) -> float:
    """Seconds of G.711 an observer can play from one stream (0 for other codecs)."""
    try:
        return len(decode_stream(plain_rtp, stream)) / _CLOCK
    except CaptureError:
        return 0.0


def segment_exposure(segment: str, pcap, names: Mapping[str, str] | None = None, *,
                     tls_keylog=None) -> pd.DataFrame:
    """The rows of :func:`exposure` for one segment's capture ``pcap``."""
    names = dict(names or {})
    pcap = os.fspath(pcap)
    sip = sip_messages(pcap, tls_keylog=tls_keylog)
    tls = tls_sessions(pcap, keylog=tls_keylog)
    media = srtp_decrypt(pcap, sip=sip, pcap=pcap, tls_hidden=tls_keylog is None and not tls.empty)
    rows: dict[tuple[str, str], dict] = {}

    def row(x, y) -> dict:
        key = _pair(x, y, names)
        return rows.setdefault(key, {
            "segment": segment, "a": key[0], "b": key[1], "transports": set(), "sip_messages": 0,
            "methods": set(), "tls_sessions": 0, "sdp_keys": 0, "media_kinds": set(), "media_streams": 0,
            "media_packets": 0, "payload_bytes": 0, "entropy_sum": 0.0, "audio_seconds": 0.0,
            "media_readable": False})

    for m in sip.itertuples():
        r = row(m.src, m.dst)
        r["sip_messages"] += 1
        r["transports"].add(f"SIP/{str(m.transport).upper()}")
        r["methods"].add(m.method if isinstance(m.method, str) and m.method else str(m.cseq_method))
        # a=crypto lines in clear: whoever reads this SDP can decrypt that side's SRTP (RFC 4568 §5.1)
        keys = str(m.sdp_crypto_keys) if isinstance(m.sdp_crypto_keys, str) else ""
        r["sdp_keys"] += len([k for k in keys.split(", ") if k])
    for s in tls.itertuples():
        r = row(s.client, s.server)
        r["tls_sessions"] += 1
        r["transports"].add(f"TLS/{int(s.server_port)}" + (" (decrypted)" if bool(s.decrypted) else ""))
    plain = media.plain_rtp
    for s in media.streams.itertuples():
        r = row(s.src, s.dst)
        n = int(s.packets)
        # Measured, not announced: a stream is SRTP when srtp_decrypt found it so (its SDP, a key that
        # authenticates it, or its payload as random as ciphertext) or when its payload alone looks
        # encrypted (AES-CM output is indistinguishable from random, RFC 3711 §4.1.1).
        rtp = media.rtp
        nbytes = int(rtp.loc[(rtp.src.astype(str) == str(s.src)) & (rtp.sport == s.sport)
                             & (rtp.dst.astype(str) == str(s.dst)) & (rtp.ssrc == s.ssrc), "payload_len"].sum())
        encrypted = bool(s.srtp) or looks_encrypted(float(s.entropy), nbytes)
        r["media_kinds"].add("SRTP" if encrypted else "RTP")
        r["media_streams"] += 1
        r["media_packets"] += n
        r["entropy_sum"] += float(s.entropy) * n if s.entropy == s.entropy else 0.0
        readable = (not encrypted) or int(s.decrypted) > 0
        if readable:
            seconds = _audio_seconds(plain, s._asdict())
            r["audio_seconds"] += seconds
            r["media_readable"] = r["media_readable"] or seconds > 0
    out = []
    for (a, b), r in sorted(rows.items()):
        kinds = r["media_kinds"]
        out.append({
            "segment": segment, "a": a, "b": b,
            "signalling": ", ".join(sorted(r["transports"])),
            "sip_messages": r["sip_messages"], "sip_readable": r["sip_messages"] > 0,
            "methods": ", ".join(sorted(m for m in r["methods"] if m and m != "nan")),
            "tls_sessions": r["tls_sessions"], "sdp_keys": r["sdp_keys"], "keys_readable": r["sdp_keys"] > 0,
            "media": "+".join(sorted(kinds)) if kinds else "",
            "media_streams": r["media_streams"], "media_packets": r["media_packets"],
            "media_entropy": round(r["entropy_sum"] / r["media_packets"], 3) if r["media_packets"] else float("nan"),
            "audio_seconds": round(r["audio_seconds"], 2), "media_readable": r["media_readable"]})
    return pd.DataFrame(out, columns=COLUMNS)


def exposure(segments: Mapping[str, object], names: Mapping[str, str] | None = None, *,
             tls_keylog=None) -> pd.DataFrame:
    """What an observer on each segment reads: one row per segment and pair of talkers.

    ``segments``: segment name → capture of that segment (in the order to show).  ``names``:
    address → name, for the ``a``/``b`` columns (behind a NAT the box's public address stands
    for the phone).  ``tls_keylog``: a key log (or segment → key log) the observer holds.

    Columns: ``signalling`` (``SIP/UDP``, ``TLS/5061`` …), ``sip_messages`` (SIP messages read in
    clear), ``sip_readable``, ``methods``, ``tls_sessions``, ``sdp_keys`` (a=crypto keys read in
    clear SDP), ``keys_readable``, ``media`` (``RTP``/``SRTP``, measured), ``media_streams``,
    ``media_packets``, ``media_entropy`` (bits per payload byte; ~8 is ciphertext, G.711 speech
    6–7), ``audio_seconds`` (G.711 an observer can decode and play) and ``media_readable``.
    """
    frames = [segment_exposure(seg, pcap, names, tls_keylog=_keylog_for(tls_keylog, seg))
              for seg, pcap in segments.items()]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)


def exposure_by_segment(table: pd.DataFrame) -> pd.DataFrame:
    """One row per segment of an :func:`exposure` table: is anything readable there?"""
    rows = []
    for segment, g in table.groupby("segment", sort=False):
        kinds = sorted({k for m in g.media for k in m.split("+") if k})
        rows.append({"segment": segment, "pairs": len(g), "sip_readable": bool(g.sip_readable.any()),
                     "keys_readable": bool(g.keys_readable.any()), "media": "+".join(kinds),
                     "media_readable": bool(g.media_readable.any()),
                     "audio_seconds": round(float(g.audio_seconds.sum()), 2),
                     "talkers": "; ".join(f"{r.a} ↔ {r.b}" for r in g.itertuples())})
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)
