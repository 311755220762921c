"""Who each INVITE says is calling: From, P-Asserted-Identity, Remote-Party-ID, Privacy.

A caller's number travels in several places and each hop may rewrite them (RFC 3325): the
``From`` header (chosen by the caller, never trusted: RFC 3261 §20.20), the network-asserted
``P-Asserted-Identity`` (RFC 3325 §9.1) that a carrier checks against the numbers of the
account, the older ``Remote-Party-ID`` (a draft that never became an RFC, still sent by
chan_sip's ``sendrpid=yes``), and ``Privacy: id`` asking the network to hide the identity
from the called party (RFC 3323 §4.2, RFC 3325 §7).  One row per INVITE, as it left each hop::

    caller_ids("trunk.pcap")[["src", "dst", "from_user", "pai_user", "privacy"]]
"""
from __future__ import annotations

import re

import pandas as pd

from labkit.analysis.pcapfile import open_capture, warn_all
from labkit.analysis.tls import tls_keys
from labkit.analysis.tshark import AGG, fields_frame

FIELDS = {
    "frame.number": "frame", "frame.time_relative": "rel_time", "ip.src": "src", "ip.dst": "dst",
    "sip.Call-ID": "call_id", "sip.r-uri": "request_uri", "sip.from.display.info": "from_display",
    "sip.from.user": "from_user", "sip.pai.display.info": "pai_display", "sip.pai.user": "pai_user",
    "sip.Privacy": "privacy", "sip.msg_hdr": "headers",
}
COLUMNS = [*list(FIELDS.values())[:-1], "rpid_user"]
# tshark has no field for Remote-Party-ID: read it from the message's header block.
_RPID = re.compile(r"(?im)^Remote-Party-ID:[^<\r\n]*<sips?:(?P<user>[^@;>]*)@")


def caller_ids(pcap, timeout: float = 300.0, *, tls_keylog=None, tls_rsa_key=None, tls_ports=()) -> pd.DataFrame:
    """One row per INVITE in ``pcap``: where it went and who it says is calling.

    Empty strings where a header is absent (a PBX that sends no P-Asserted-Identity, no
    Privacy).  The TLS options are :func:`labkit.analysis.sip_messages`'s.
    """
    f, _fmt, _ = open_capture(pcap)
    f.close()
    keys = tls_keys(tls_keylog, tls_rsa_key, tls_ports)
    decode, extra = keys.tshark_args()
    raw, warnings = fields_frame(pcap, list(FIELDS), display_filter='sip.Method == "INVITE" && !icmp',
                                 decode_as=decode, extra=extra, timeout=timeout, stderr_warnings=keys.given)
    warn_all(warnings)
    raw.columns = list(FIELDS.values())
    table = raw.drop(columns="headers").apply(lambda column: column.str.split(AGG).str[0].fillna("").str.strip('"'))
    # tshark writes the header block's CRLFs as the four characters \r\n.
    headers = raw["headers"].str.replace("\\r\\n", "\n", regex=False)
    table["rpid_user"] = headers.str.extract(_RPID)["user"].fillna("")
    table["frame"] = pd.to_numeric(table["frame"], errors="coerce").astype("Int64")
    table["rel_time"] = pd.to_numeric(table["rel_time"], errors="coerce")
    table = table.reset_index(drop=True)
    table.attrs["warnings"] = warnings
    return table
