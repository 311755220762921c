"""ICMP "port unreachable" errors in a capture: a UDP datagram sent to a port nobody listens on.

A phone that sends to an address and port it should not (a private Contact, a closed forward)
often gets one back (RFC 792 type 3 code 3; RFC 4443 type 1 code 4): the ladder draws them
between the SIP messages (:func:`labkit.analysis.plots.ladder`, ``icmp=``).
"""
from __future__ import annotations

import pandas as pd

from labkit.analysis.tshark import AGG, fields_frame


def icmp_unreachable(pcap, timeout: float = 300.0) -> pd.DataFrame:
    """The ICMP/ICMPv6 "port unreachable" errors of a capture, for ``ladder(icmp=…)``.

    Columns: ``frame``, ``time``, ``rel_time``, ``src`` (who sent the error), ``dst`` (who
    gets it) and, from the datagram quoted inside the error, ``orig_dst`` and ``orig_dport``:
    where the refused UDP datagram was going.  Read with tshark like the SIP table.
    """
    fields = ["frame.number", "frame.time_epoch", "frame.time_relative", "ip.src", "ip.dst", "ipv6.src",
              "ipv6.dst", "udp.dstport"]
    raw, _ = fields_frame(pcap, fields, timeout=timeout, display_filter=(
        "(icmp.type == 3 && icmp.code == 3) || (icmpv6.type == 1 && icmpv6.code == 4)"))
    cols = ["frame", "time", "rel_time", "src", "dst", "orig_dst", "orig_dport"]
    if raw.empty:
        return pd.DataFrame(columns=cols)

    def part(col: str, k: int) -> pd.Series:  # k = 0: the ICMP packet's own header, 1: the quoted one
        return raw[col].map(lambda v: (v.split(AGG) + ["", ""])[k])

    v6 = raw["ip.src"] == ""
    out = pd.DataFrame({
        "frame": pd.to_numeric(raw["frame.number"]), "time": pd.to_numeric(raw["frame.time_epoch"]),
        "rel_time": pd.to_numeric(raw["frame.time_relative"]),
        "src": part("ip.src", 0).where(~v6, part("ipv6.src", 0)),
        "dst": part("ip.dst", 0).where(~v6, part("ipv6.dst", 0)),
        "orig_dst": part("ip.dst", 1).where(~v6, part("ipv6.dst", 1)),
        "orig_dport": pd.to_numeric(part("udp.dstport", 0), errors="coerce").astype("Int64")}, columns=cols)
    return out.reset_index(drop=True)
