"""The calls table: one row per INVITE dialog (grouped by Call-ID, RFC 3261 §12).

Columns: ``call_id``, ``caller``/``callee`` (From/To URIs of the first INVITE),
``caller_addr`` (ip:port the first INVITE came from), ``start`` (first INVITE, epoch s),
``start_rel`` (s from the first packet of the capture), ``answer`` (first 2xx to an INVITE),
``end`` (first BYE, or CANCEL, or the final failure response when never answered),
``final_status`` (the last final response to an INVITE: 200, 486 …; a 401/407 challenge
followed by an authenticated re-INVITE shows the later answer), ``state`` (answered /
failed / cancelled / ringing / trying), ``setup_time`` (answer − start, or first final
failure − start), ``duration`` (answer → end; NaN if never answered or never ended),
``ended_by`` (caller/callee for a BYE), ``auth_challenged`` (a 401/407 was seen),
``offer_media``/``answer_media`` ("addr:port" of the SDP in the INVITE or first SDP
request and in the first SDP response, e.g. 183 or 200), ``offer_pts``/``answer_pts``
(payload types offered/answered) and ``messages`` (SIP messages in the dialog).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.analysis.sip import load_sip

COLUMNS = ["call_id", "caller", "callee", "caller_addr", "start", "start_rel", "answer", "end",
           "final_status", "state", "setup_time", "duration", "ended_by", "auth_challenged",
           "offer_media", "answer_media", "offer_pts", "answer_pts", "messages"]


def _media(row) -> str | None:
    if row is None or pd.isna(row["sdp_m_port"]):
        return None
    addr = row["sdp_c_addr"] or row["src"]
    return f"{addr}:{int(row['sdp_m_port'])}"


def calls(pcap_or_sip, **kw) -> pd.DataFrame:
    """One row per INVITE dialog of a capture or SIP table (see module docstring).

    With a capture path, ``kw`` goes to :func:`~labkit.analysis.sip_messages` (e.g.
    ``tls_keylog=KEYS`` for SIP over TLS)."""
    sip = load_sip(pcap_or_sip, **kw)
    if sip.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    t_first = float(sip["time"].min() - sip["rel_time"].min()) if len(sip) else 0.0
    rows = []
    for call_id, g in sip.sort_values("frame").groupby("call_id", sort=False):
        inv = g[g["is_request"] & (g["method"] == "INVITE")]
        if inv.empty:
            continue
        first = inv.iloc[0]
        resp = g[~g["is_request"] & (g["cseq_method"] == "INVITE")]
        final = resp[resp["status_code"].fillna(0) >= 200]
        ok = final[(final["status_code"] >= 200) & (final["status_code"] < 300)]
        fail = final[final["status_code"] >= 300]
        bye = g[g["is_request"] & (g["method"] == "BYE")]
        cancel = g[g["is_request"] & (g["method"] == "CANCEL")]
        answer = float(ok["time"].iloc[0]) if len(ok) else np.nan
        final_status = int(final["status_code"].iloc[-1]) if len(final) else None
        if len(bye):
            end = float(bye["time"].iloc[0])
            caller_ip = f"{first['src']}:{first['sport']}"
            ended_by = "caller" if f"{bye['src'].iloc[0]}:{bye['sport'].iloc[0]}" == caller_ip else "callee"
        elif len(cancel):
            end, ended_by = float(cancel["time"].iloc[0]), "caller"
        elif not len(ok) and len(fail):
            end, ended_by = float(fail["time"].iloc[-1]), "callee"
        else:
            end, ended_by = np.nan, None
        if len(ok):
            state = "answered"
        elif len(cancel) or final_status == 487:
            state = "cancelled"
        elif len(fail):
            state = "failed"
        elif (resp["status_code"].fillna(0) >= 180).any():
            state = "ringing"  # capture ended before a final answer
        else:
            state = "trying"
        setup_end = answer if len(ok) else (float(fail["time"].iloc[-1]) if len(fail) else np.nan)
        offer = g[g["is_request"] & g["has_sdp"]]
        ans = g[~g["is_request"] & g["has_sdp"]]
        offer_row = offer.iloc[0] if len(offer) else None
        ans_row = ans.iloc[0] if len(ans) else None
        rows.append({
            "call_id": call_id, "caller": first["from_uri"], "callee": first["to_uri"],
            "caller_addr": f"{first['src']}:{first['sport']}", "start": float(first["time"]),
            "start_rel": float(first["time"]) - t_first, "answer": answer, "end": end,
            "final_status": pd.NA if final_status is None else final_status, "state": state,
            "setup_time": setup_end - float(first["time"]),
            "duration": end - answer if len(ok) else np.nan, "ended_by": ended_by,
            "auth_challenged": bool(g["asks_auth"].any()),
            "offer_media": _media(offer_row), "answer_media": _media(ans_row),
            "offer_pts": offer_row["sdp_payload_types"] if offer_row is not None else None,
            "answer_pts": ans_row["sdp_payload_types"] if ans_row is not None else None,
            "messages": len(g)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["final_status"] = out["final_status"].astype("Int64")
    return out
