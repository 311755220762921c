"""The streams table: one row per RTP stream with RFC 3550 statistics and an E-model estimate.

A stream is the packets sharing (src, sport, dst, dport, SSRC), taken in arrival order
(capture order).  Figures, per RFC 3550:

* extended sequence numbers (§A.1): 16-bit ``seq`` unwrapped in arrival order, each step
  read as the signed difference modulo 2^16, so wrap-around 65535 → 0 counts as +1;
* ``expected`` = highest extended seq − base + 1 and ``lost`` = expected − received
  (§A.3); received counts duplicates, so like RTCP's "cumulative number of packets lost"
  ``lost`` can go negative when duplicates outnumber losses.  ``base`` is the lowest
  extended seq seen (RFC's base_seq is the first one received: they differ only if the
  very first packets were reordered);
* ``out_of_order``: packets arriving after one with a higher sequence number
  (duplicates not included); ``duplicates``: packets whose sequence number was already
  received;
* jitter (§6.4.1, §A.8): D = (Rᵢ − Rᵢ₋₁) − (Sᵢ − Sᵢ₋₁) with arrival R converted to
  timestamp units, J += (|D| − J)/16, over the packets of the stream's main payload type
  in arrival order; ``jitter_mean_ms`` is the mean of J over those packets, ``jitter_max_ms``
  its largest value;
* ``max_delta_ms``: the longest gap between two arrivals.

Clock rate: RFC 3551 for static payload types, the SDP ``a=rtpmap`` for dynamic ones
(from the call the stream belongs to), 8000 Hz when unknown.  ``r_factor``/``mos`` are an
ITU-T G.107 *estimate*, see :mod:`labkit.analysis.quality` and ``mos_inputs``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

import labkit.analysis.quality as quality

# RFC 3551 §6 static payload types: name, clock rate
STATIC_PT = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 5: ("DVI4", 8000),
             6: ("DVI4", 16000), 7: ("LPC", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
             10: ("L16", 44100), 11: ("L16", 44100), 12: ("QCELP", 8000), 13: ("CN", 8000),
             14: ("MPA", 90000), 15: ("G728", 8000), 16: ("DVI4", 11025), 17: ("DVI4", 22050),
             18: ("G729", 8000), 25: ("CelB", 90000), 26: ("JPEG", 90000), 28: ("nv", 90000),
             31: ("H261", 90000), 32: ("MPV", 90000), 33: ("MP2T", 90000), 34: ("H263", 90000)}

COLUMNS = ["stream", "src", "sport", "dst", "dport", "ssrc", "ssrc_hex", "direction", "call_id",
           "payload_type", "codec", "clock_rate", "packets", "expected", "lost", "loss_pct",
           "out_of_order", "duplicates", "max_delta_ms", "jitter_mean_ms", "jitter_max_ms",
           "first_time", "last_time", "start_rel", "duration", "r_factor", "mos", "mos_inputs"]

KEYS = ["src", "sport", "dst", "dport", "ssrc"]

# Encoding names are case-insensitive (RFC 4566 §6 a=rtpmap, RFC 4855 §3): "pcma" in one
# SDP and "PCMA" in another are the same codec, so a report shows each under one spelling,
# the one IANA registers.
_CANONICAL = {name.lower(): name for name, _ in STATIC_PT.values()}
_CANONICAL.update({n.lower(): n for n in ("telephone-event", "opus", "speex", "iLBC", "AMR",
                                           "AMR-WB", "G726-32", "H264", "VP8")})


def canonical_codec(name: str) -> str:
    """The registered spelling of an encoding name (``pcma`` → ``PCMA``)."""
    return _CANONICAL.get(name.lower(), name)


def parse_rtpmap(text: str) -> dict[int, tuple[str, int]]:
    """"101 telephone-event/8000, 0 PCMU/8000" -> {101: ("telephone-event", 8000), …}."""
    out = {}
    for item in (text or "").split(","):
        parts = item.strip().split(None, 1)
        if len(parts) == 2 and parts[0].isdigit():
            enc = parts[1].split("/")
            rate = int(enc[1]) if len(enc) > 1 and enc[1].isdigit() else 8000
            out[int(parts[0])] = (canonical_codec(enc[0]), rate)
    return out


def unwrap_seq(seq: np.ndarray) -> np.ndarray:
    """RFC 3550 §A.1 extended sequence numbers, in arrival order (signed 16-bit steps)."""
    seq = seq.astype(np.int64)
    if len(seq) == 0:
        return seq
    d = ((np.diff(seq) + 32768) % 65536) - 32768
    return seq[0] + np.concatenate(([0], np.cumsum(d)))


def jitter_series(arrival: np.ndarray, ts: np.ndarray, clock: int) -> np.ndarray:
    """RFC 3550 §A.8 interarrival jitter after each packet, in timestamp units.

    J(i) = J(i-1) + (|D(i-1,i)| - J(i-1))/16, i.e. a first-order IIR filter run here with
    scipy.signal.lfilter.  Element 0 is 0 (no difference yet).
    """
    if len(arrival) < 2:
        return np.zeros(len(arrival))
    dts = ((np.diff(ts.astype(np.int64)) + 2**31) % 2**32) - 2**31  # 32-bit wrap, §A.8
    d = np.diff(arrival) * clock - dts
    j = lfilter([1 / 16], [1, -15 / 16], np.abs(d))
    return np.concatenate(([0.0], j))


def load_rtp(pcap_or_df, sip=None) -> pd.DataFrame:
    if isinstance(pcap_or_df, pd.DataFrame):
        return pcap_or_df
    from labkit.analysis.rtp import rtp_packets
    return rtp_packets(pcap_or_df, sip=sip)


def _codes(col: pd.Series) -> np.ndarray:
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy().astype(np.int64)
    return pd.factorize(col.astype(str))[0].astype(np.int64)


def stream_ids(rtp: pd.DataFrame) -> np.ndarray:
    """A stream number per packet, numbered in order of first appearance."""
    src, dst = _codes(rtp["src"]), _codes(rtp["dst"])
    if max(src.max(initial=0), dst.max(initial=0)) < 32768:
        flow = ((src << 48) | (rtp["sport"].to_numpy().astype(np.int64) << 32) | (dst << 16)
                | rtp["dport"].to_numpy().astype(np.int64))
        flow_id = pd.factorize(flow)[0].astype(np.int64)
        return pd.factorize((flow_id << 32) | rtp["ssrc"].to_numpy().astype(np.int64))[0]
    return rtp.groupby(KEYS, sort=False, observed=True).ngroup().to_numpy()


def rtp_streams(pcap_or_rtp, sip: pd.DataFrame | None = None, *, plc: bool = False,
                delay_ms: float = 0.0, tls_keylog=None, tls_rsa_key=None, tls_ports=()) -> pd.DataFrame:
    """One row per RTP stream (see the module docstring for every figure).

    ``pcap_or_rtp``: a capture path or the table from :func:`rtp_packets`.  ``sip``: the
    SIP table, used to find each stream's Call-ID and dynamic payload type names.
    ``tls_keylog``/``tls_rsa_key``/``tls_ports``: with a capture path and no ``sip``, the
    SIP table is made with them (SIP over TLS, :mod:`labkit.analysis.tls`).
    ``plc``/``delay_ms`` feed the E-model estimate (:mod:`labkit.analysis.quality`).
    """
    if sip is None and not isinstance(pcap_or_rtp, pd.DataFrame) and (
            tls_keylog is not None or tls_rsa_key is not None or tls_ports):
        from labkit.analysis.sip import sip_messages
        sip = sip_messages(pcap_or_rtp, tls_keylog=tls_keylog, tls_rsa_key=tls_rsa_key, tls_ports=tls_ports)
    rtp = load_rtp(pcap_or_rtp, sip)
    if rtp is None or len(rtp) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    from labkit.analysis.sip import MediaMap
    media = MediaMap(sip)
    rtp = rtp.sort_values("frame", kind="stable") if not rtp["frame"].is_monotonic_increasing else rtp
    sid = stream_ids(rtp)
    t_all = rtp["time"].to_numpy(np.float64)
    seq_all = rtp["seq"].to_numpy(np.int64)
    ts_all = rtp["timestamp"].to_numpy(np.int64)
    pt_all = rtp["payload_type"].to_numpy(np.int64)
    t0 = rtp.attrs.get("first_time", float(np.nanmin(t_all)))
    order = np.argsort(sid, kind="stable")
    bounds = np.flatnonzero(np.diff(sid[order])) + 1
    rows = []
    first_idx = {}
    for grp in np.split(order, bounds):
        k = int(sid[grp[0]])
        first_idx[k] = grp[0]
        src, sport = str(rtp["src"].iat[grp[0]]), int(rtp["sport"].iat[grp[0]])
        dst, dport = str(rtp["dst"].iat[grp[0]]), int(rtp["dport"].iat[grp[0]])
        ssrc = int(rtp["ssrc"].iat[grp[0]])
        t_start = float(t_all[grp[0]])
        call = media.lookup(dst, dport, t_start) or media.lookup(src, sport, t_start) or (None, "")
        call_id, rtpmap = call[0], parse_rtpmap(call[1])
        pts, pt_counts = np.unique(pt_all[grp], return_counts=True)
        pt = int(pts[np.argmax(pt_counts)])
        codec, clock = rtpmap.get(pt) or STATIC_PT.get(pt) or (f"PT{pt}", 8000)
        t, seq = t_all[grp], seq_all[grp]
        ext = unwrap_seq(seq)
        n = len(grp)
        expected = int(ext.max() - ext.min() + 1)
        lost = expected - n
        uniq, first_pos = np.unique(ext, return_index=True)
        dups = n - len(uniq)
        is_first = np.zeros(n, dtype=bool)
        is_first[first_pos] = True
        late = np.zeros(n, dtype=bool)
        late[1:] = ext[1:] < np.maximum.accumulate(ext)[:-1]
        ooo = int((late & is_first).sum())
        main = pt_all[grp] == pt
        j = jitter_series(t[main], ts_all[grp][main], clock)[1:] / clock * 1000.0
        loss_pct = 100.0 * lost / expected if expected > 0 else 0.0
        jmean = float(j.mean()) if len(j) else 0.0
        q = quality.emodel(codec, loss_pct, jmean, plc=plc, delay_ms=delay_ms)
        rows.append({
            "stream": k, "src": src, "sport": sport, "dst": dst, "dport": dport, "ssrc": ssrc,
            "ssrc_hex": f"0x{ssrc:08X}", "direction": f"{src}:{sport} → {dst}:{dport}",
            "call_id": call_id, "payload_type": pt, "codec": codec, "clock_rate": clock,
            "packets": n, "expected": expected, "lost": lost, "loss_pct": round(loss_pct, 3),
            "out_of_order": ooo, "duplicates": dups,
            "max_delta_ms": float(np.diff(t).max() * 1000.0) if n > 1 else 0.0,
            "jitter_mean_ms": jmean, "jitter_max_ms": float(j.max()) if len(j) else 0.0,
            "first_time": float(t.min()), "last_time": float(t.max()),
            "start_rel": float(t.min() - t0), "duration": float(t.max() - t.min()), **q})
    out = pd.DataFrame(rows, columns=COLUMNS).sort_values("stream").reset_index(drop=True)
    return out


def per_packet_jitter(rtp: pd.DataFrame, streams: pd.DataFrame | None = None) -> pd.Series:
    """RFC 3550 jitter (ms) after each packet of ``rtp``, stream by stream (for plots)."""
    out = np.full(len(rtp), np.nan)
    if len(rtp) == 0:
        return pd.Series(out, index=rtp.index)
    sid = stream_ids(rtp)
    t = rtp["time"].to_numpy(np.float64)
    ts = rtp["timestamp"].to_numpy(np.int64)
    pt = rtp["payload_type"].to_numpy(np.int64)
    clocks = {}
    if streams is not None and len(streams):
        clocks = {(r.src, r.sport, r.dst, r.dport, r.ssrc): int(r.clock_rate) for r in streams.itertuples()}
    order = np.lexsort((rtp["frame"].to_numpy(), sid))
    bounds = np.flatnonzero(np.diff(sid[order])) + 1
    for grp in np.split(order, bounds):
        i0 = grp[0]
        key = (str(rtp["src"].iat[i0]), int(rtp["sport"].iat[i0]), str(rtp["dst"].iat[i0]),
               int(rtp["dport"].iat[i0]), int(rtp["ssrc"].iat[i0]))
        p = int(pt[i0])
        clock = clocks.get(key) or STATIC_PT.get(p, ("", 8000))[1]
        out[grp] = jitter_series(t[grp], ts[grp], clock) / clock * 1000.0
    return pd.Series(out, index=rtp.index, name="jitter_ms")
