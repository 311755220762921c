"""The SIP table: one row per SIP message of a capture, decoded by tshark.

tshark does the SIP parsing (UDP, TCP with reassembly, and decrypted TLS), on ports
5060/5061 and wherever its SIP heuristics recognise a message; add ``ports=[5080]`` to
force other ports.  A single tshark process is run per file and its ``-T fields``
output is streamed into pandas — no per-packet pyshark objects.

SIP over TLS (5061) is only readable with keys: ``tls_keylog=KEYS`` (an NSS key log),
``tls_rsa_key=KEY`` (TLS 1.2 RSA key exchange only), or secrets embedded in a pcapng by
``editcap --inject-secrets`` (used with no option); ``tls_ports=[5062]`` for SIP over TLS
on another port.  See :mod:`labkit.analysis.tls`; decrypted rows have transport ``TLS``.

Columns (RFC 3261 names): ``frame``, ``time`` (epoch s), ``rel_time`` (s since the first
packet of the file), ``src``, ``sport``, ``dst``, ``dport``, ``transport``
(UDP/TCP/TLS/WS), ``is_request``, ``method`` (requests), ``status_code`` and ``reason``
(responses), ``request_uri``, ``call_id``, ``cseq_num``, ``cseq_method``, ``from_uri``,
``from_tag``, ``to_uri``, ``to_tag``, ``via`` (top Via), ``via_received`` and
``via_rport`` (RFC 3581 parameters of the top Via: the address and port the next hop
saw — NAT evidence), ``contact``, ``user_agent`` (User-Agent or Server), ``has_auth``
(Authorization/Proxy-Authorization present), ``asks_auth`` (WWW-/Proxy-Authenticate
present, i.e. a 401/407 challenge), and from the SDP body (RFC 4566): ``has_sdp``,
``sdp_c_addr``, ``sdp_m_port``, ``sdp_m_proto`` (RTP/AVP, RTP/SAVP …),
``sdp_payload_types`` (space-separated), ``sdp_rtpmap`` ("PT name/rate" joined by ", "),
``sdp_crypto`` (SDES suites, RFC 4568), ``sdp_crypto_keys`` (each ``a=crypto`` value whole —
tag, suite and ``inline:`` key — joined by ", ": SDES sends the SRTP keys in clear text,
RFC 4568 §8.3, and :mod:`labkit.analysis.srtp` decrypts with them), ``sdp_direction``
(sendrecv/sendonly/recvonly/inactive; RFC 3264 says absent means sendrecv).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from labkit.analysis.pcapfile import open_capture, warn_all
from labkit.analysis.tls import tls_keys
from labkit.analysis.tshark import AGG, fields_frame

FIELDS = {
    "frame.number": "frame", "frame.time_epoch": "time", "frame.time_relative": "rel_time",
    "ip.src": "ip_src", "ipv6.src": "ip6_src", "ip.dst": "ip_dst", "ipv6.dst": "ip6_dst",
    "udp.srcport": "usport", "udp.dstport": "udport", "tcp.srcport": "tsport", "tcp.dstport": "tdport",
    "frame.protocols": "protocols", "sip.Request-Line": "request_line", "sip.Method": "method",
    "sip.Status-Code": "status_code", "sip.Status-Line": "status_line", "sip.r-uri": "request_uri",
    "sip.Call-ID": "call_id", "sip.CSeq.seq": "cseq_num", "sip.CSeq.method": "cseq_method",
    "sip.from.addr": "from_uri", "sip.from.tag": "from_tag", "sip.to.addr": "to_uri", "sip.to.tag": "to_tag",
    "sip.Via": "via", "sip.Contact": "contact", "sip.User-Agent": "user_agent", "sip.Server": "server",
    "sip.Authorization": "authz", "sip.Proxy-Authorization": "pauthz",
    "sip.WWW-Authenticate": "wwwauth", "sip.Proxy-Authenticate": "pauth",
    "sdp.connection_info": "sdp_c", "sdp.media": "sdp_m", "sdp.media_attr": "sdp_a",
}

COLUMNS = ["frame", "time", "rel_time", "src", "sport", "dst", "dport", "transport", "is_request",
           "method", "status_code", "reason", "request_uri", "call_id", "cseq_num", "cseq_method",
           "from_uri", "from_tag", "to_uri", "to_tag", "via", "via_received", "via_rport", "contact",
           "user_agent", "has_auth", "asks_auth", "has_sdp", "sdp_c_addr", "sdp_m_port", "sdp_m_proto",
           "sdp_payload_types", "sdp_rtpmap", "sdp_crypto", "sdp_crypto_keys", "sdp_direction"]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def _first(s: pd.Series) -> pd.Series:
    return s.str.split(AGG, n=1).str[0]


def _int(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s.replace("", None), errors="coerce").astype("Int64")


def _parse_sdp(c: str, m: str, a: str) -> tuple:
    """(c_addr, m_port, m_proto, payload_types, rtpmap, crypto suites, crypto values, direction)
    of the audio m-line."""
    if not (c or m):
        return ("", pd.NA, "", "", "", "", "", "")
    c_addr = ""
    for line in c.split(AGG):  # "IN IP4 192.168.0.10"
        parts = line.split()
        if len(parts) >= 3:
            c_addr = parts[2].split("/")[0]
            break
    port, proto, pts = pd.NA, "", ""
    mlines = [x.split() for x in m.split(AGG) if x.strip()]
    audio = [x for x in mlines if x and x[0] == "audio"] or mlines
    if audio and len(audio[0]) >= 3:
        ml = audio[0]
        port = int(ml[1].split("/")[0]) if ml[1].split("/")[0].isdigit() else pd.NA
        proto, pts = ml[2], " ".join(ml[3:])
    rtpmap, crypto, crypto_keys, direction = [], [], [], ""
    for attr in a.split(AGG):
        if attr.startswith("rtpmap:"):
            rtpmap.append(attr[7:].strip())
        elif attr.startswith("crypto:"):
            p = attr[7:].split()
            if len(p) >= 2:
                crypto.append(p[1])
                crypto_keys.append(" ".join(p))
        elif attr.strip() in DIRECTIONS and not direction:
            direction = attr.strip()
    return (c_addr, port, proto, pts, ", ".join(rtpmap), " ".join(crypto), ", ".join(crypto_keys),
            direction or "sendrecv")


_RECEIVED = re.compile(r";\s*received=([^;,\s]+)", re.I)
_RPORT = re.compile(r";\s*rport=(\d+)", re.I)


def empty_sip() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def sip_messages(pcap, ports=(), timeout: float = 300.0, *, tls_keylog=None, tls_rsa_key=None,
                 tls_ports=()) -> pd.DataFrame:
    """One row per SIP message in ``pcap`` (see the module docstring for the columns).

    ``ports``: extra UDP/TCP ports to decode as SIP besides 5060/5061 and tshark's
    heuristics.  SIP quoted inside ICMP errors (port unreachable) is not counted as a message.
    ``tls_keylog``/``tls_rsa_key``: key material to decrypt SIP over TLS (tshark ``-o
    tls.keylog_file:…`` / ``-o uat:rsa_keys:…``); ``tls_ports``: TCP ports other than 5061
    that carry SIP over TLS (see :mod:`labkit.analysis.tls`).
    A capture without SIP gives an empty table with the same columns; so does one whose SIP
    is all inside TLS that could not be decrypted (:func:`~labkit.analysis.tls_sessions` says why).
    Warnings (e.g. a truncated file) are in ``df.attrs["warnings"]``.
    Raises :class:`~labkit.errors.CaptureError` for a missing or unreadable file, key log or key.
    """
    f, _fmt, _ = open_capture(pcap)  # friendly errors before tshark says something obscure
    f.close()
    decode = [f"{proto}.port=={int(p)},sip" for p in ports for proto in ("udp", "tcp")]
    keys = tls_keys(tls_keylog, tls_rsa_key, tls_ports)
    tls_decode, tls_extra = keys.tshark_args()
    raw, warnings = fields_frame(pcap, list(FIELDS), display_filter="sip && !icmp && !icmpv6",
                                 decode_as=decode + tls_decode, extra=tls_extra, timeout=timeout,
                                 stderr_warnings=keys.given)
    raw.columns = list(FIELDS.values())
    # A frame tshark hands to SIP without a start line is not a message (a continuation, or
    # a port forced with -d that carries something else): it would be a row of blanks.
    raw = raw[(raw["request_line"] != "") | (raw["status_line"] != "")]
    warn_all(warnings)
    if raw.empty:
        out = empty_sip()
        out.attrs["warnings"] = warnings
        return out
    df = pd.DataFrame(index=raw.index)
    df["frame"] = _int(raw["frame"])
    df["time"] = pd.to_numeric(raw["time"], errors="coerce")
    df["rel_time"] = pd.to_numeric(raw["rel_time"], errors="coerce")
    src4, dst4 = _first(raw["ip_src"]), _first(raw["ip_dst"])
    df["src"] = src4.where(src4 != "", _first(raw["ip6_src"]))
    df["dst"] = dst4.where(dst4 != "", _first(raw["ip6_dst"]))
    us, ts_ = _first(raw["usport"]), _first(raw["tsport"])
    ud, td = _first(raw["udport"]), _first(raw["tdport"])
    df["sport"] = _int(us.where(us != "", ts_))
    df["dport"] = _int(ud.where(ud != "", td))
    protos = raw["protocols"]
    df["transport"] = np.select(
        [protos.str.contains(":tls", regex=False), protos.str.contains("websocket", regex=False),
         protos.str.contains(":tcp", regex=False), protos.str.contains(":udp", regex=False)],
        ["TLS", "WS", "TCP", "UDP"], default="")
    df["is_request"] = _first(raw["request_line"]) != ""
    df["method"] = _first(raw["method"])
    df["status_code"] = _int(_first(raw["status_code"]))
    df["reason"] = _first(raw["status_line"]).str.partition(" ")[2].str.partition(" ")[2]
    df["request_uri"] = _first(raw["request_uri"])
    for col in ("call_id", "cseq_method", "from_uri", "from_tag", "to_uri", "to_tag", "via", "contact"):
        df[col] = _first(raw[col])
    df["cseq_num"] = _int(_first(raw["cseq_num"]))
    top_via = df["via"].str.split(",", n=1).str[0]
    df["via"] = top_via
    df["via_received"] = top_via.str.extract(_RECEIVED, expand=False).fillna("")
    df["via_rport"] = _int(top_via.str.extract(_RPORT, expand=False).fillna(""))
    ua = _first(raw["user_agent"])
    df["user_agent"] = ua.where(ua != "", _first(raw["server"]))
    df["has_auth"] = (raw["authz"] != "") | (raw["pauthz"] != "")
    df["asks_auth"] = (raw["wwwauth"] != "") | (raw["pauth"] != "")
    sdp = [_parse_sdp(c, m, a) for c, m, a in zip(raw["sdp_c"], raw["sdp_m"], raw["sdp_a"])]
    df["has_sdp"] = (raw["sdp_c"] != "") | (raw["sdp_m"] != "")
    sdp_cols = ["sdp_c_addr", "sdp_m_port", "sdp_m_proto", "sdp_payload_types", "sdp_rtpmap",
                "sdp_crypto", "sdp_crypto_keys", "sdp_direction"]
    sdp_df = pd.DataFrame(sdp, columns=sdp_cols, index=raw.index)
    for col in sdp_cols:
        df[col] = sdp_df[col]
    df["sdp_m_port"] = df["sdp_m_port"].astype("Int64")
    df = df[COLUMNS].reset_index(drop=True)
    df.attrs["warnings"] = warnings
    return df


def load_sip(pcap_or_df, **kw) -> pd.DataFrame:
    """Accept either a SIP table or a capture path."""
    if isinstance(pcap_or_df, pd.DataFrame):
        return pcap_or_df
    return sip_messages(pcap_or_df, **kw)


def media_endpoints(sip: pd.DataFrame) -> pd.DataFrame:
    """Every media address announced in SDP, in capture order: addr, port, the Call-ID,
    the rtpmap, and the frame and time of the message that announced it."""
    cols = ["addr", "port", "call_id", "rtpmap", "frame", "time"]
    if sip is None or sip.empty or "has_sdp" not in sip:
        return pd.DataFrame(columns=cols)
    s = sip[sip["has_sdp"].astype(bool) & sip["sdp_m_port"].notna() & (sip["sdp_m_port"] != 0)]
    out = pd.DataFrame({"addr": s["sdp_c_addr"].where(s["sdp_c_addr"] != "", s["src"]).astype(str),
                        "port": s["sdp_m_port"].astype(int), "call_id": s["call_id"],
                        "rtpmap": s["sdp_rtpmap"], "frame": s["frame"], "time": s["time"]}, columns=cols)
    return out.sort_values("frame").reset_index(drop=True)


class MediaMap:
    """Finds which call announced an ``addr:port``.  When several calls announced the same
    one (SIPp and some phones reuse their media port for every call), the latest
    announcement made before the stream started wins."""

    def __init__(self, sip: pd.DataFrame | None):
        self.by_addr: dict[tuple[str, int], list[tuple[float, str, str]]] = {}
        if sip is not None and len(sip):
            for r in media_endpoints(sip).itertuples():
                self.by_addr.setdefault((r.addr, int(r.port)), []).append((float(r.time), r.call_id, r.rtpmap))

    def lookup(self, addr: str, port: int, t: float):
        """(call_id, rtpmap text) or None."""
        cands = self.by_addr.get((str(addr), int(port)))
        if not cands:
            return None
        before = [c for c in cands if c[0] <= t + 1.0]  # 1 s slack: early media, clock skew
        best = before[-1] if before else cands[0]
        return best[1], best[2]
