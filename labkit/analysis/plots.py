"""Figures for the notebooks: SIP ladder diagrams and RTP timelines (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot: no GUI
backend is touched (safe headless, in CI, with Agg), nothing accumulates in pyplot's
figure list, and Jupyter shows the returned figure exactly once.
:func:`save` writes a figure as PNG and SVG.

Ladders colour each response by class (401/407, the normal digest challenge, in amber apart
from the red of other 4xx), say "re-INVITE" and dash retransmissions (:func:`message_flags`),
and can show ICMP port-unreachable errors (:func:`labkit.analysis.icmp_unreachable`); a legend explains them.
RTP timelines are small multiples: a pair of panels (packets, jitter) per stream.
"""
from __future__ import annotations

import os

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

REQUEST_COLOR = "#1f4e9c"
# Response classes (RFC 3261 §21) and the colours the notebooks' prose uses for them.  A 401/407
# is the normal digest challenge (§22.2/§22.3): the client resends with credentials, so it is
# amber, not the red of a real refusal.
RESPONSE_COLORS = {"1xx": "#8c8c8c", "2xx": "#2b8a3e", "3xx": "#7a3db8", "challenge": "#e08a00",
                   "4xx": "#d62728", "5xx": "#7f0000"}
ICMP_COLOR = "#c2185b"
CLASS_LABELS = {"request": "request (re-INVITE = INVITE inside a dialog)", "1xx": "1xx provisional",
                "2xx": "2xx success", "3xx": "3xx redirection", "challenge": "401/407 challenge (normal)",
                "4xx": "4xx client error", "5xx": "5xx/6xx server/global error"}
# kept for callers of the old per-method palette: every request is drawn in REQUEST_COLOR now
METHOD_COLORS = dict.fromkeys(("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS"), REQUEST_COLOR)
# Copies of a message closer together than this are not taken for retransmissions: the SIP
# timers start at T1 = 500 ms (RFC 3261 §17.1.1.2 timer A, §17.1.2.2 timer E, §13.3.1.4 for
# 2xx), whereas a scanner such as svwar reuses Call-ID and CSeq within milliseconds.
RETRANSMIT_MIN_GAP_S = 0.25
# ICMP errors drawn after the last SIP message of a ladder (e.g. media still sent after a BYE)
ICMP_AFTER_S = 2.0


def message_class(row) -> str:
    """"request", "1xx", "2xx", "3xx", "challenge" (401/407), "4xx" or "5xx" (5xx and 6xx)."""
    if row.get("is_request"):
        return "request"
    code = row.get("status_code")
    if code is None or pd.isna(code):
        return "4xx"
    code = int(code)
    if code in (401, 407):
        return "challenge"
    if code >= 500:
        return "5xx"
    return f"{max(code // 100, 1)}xx"


def message_color(row) -> str:
    cls = message_class(row)
    return REQUEST_COLOR if cls == "request" else RESPONSE_COLORS[cls]


def _s(v) -> str:
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def message_flags(sip: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``sip`` (same index): ``reinvite`` and ``retransmission`` flags.

    re-INVITE (RFC 3261 §14): an INVITE sent inside a dialog that already exists.  Such a
    request carries the remote tag in its To header (§12.2.1.1), whereas the INVITE that
    creates the dialog has none (§8.1.1.2) — the 401 that challenges it does get a To tag,
    but that is on the response, not the request.  When the To tag is not in the table
    the fallback is: the Call-ID had a 2xx to an INVITE earlier in the table and this
    INVITE has another CSeq (the same CSeq would be the initial INVITE sent again).

    Retransmission: the same message again — same Call-ID, CSeq number and method, same
    request method or status code (and To tag), same direction (addresses and ports) —
    at least :data:`RETRANSMIT_MIN_GAP_S` after the previous copy.  Over UDP a client
    resends a request until it gets a response (timer A for INVITE, §17.1.1.2; timer E
    for others, §17.1.2.2); a UAS resends its 2xx until the ACK arrives (§13.3.1.4).
    """
    if not len(sip):
        return pd.DataFrame({"reinvite": pd.Series(dtype=bool), "retransmission": pd.Series(dtype=bool)})
    ordered = sip.sort_values("frame", kind="stable") if "frame" in sip else sip
    reinvite, retrans = [], []
    last_seen: dict[tuple, float] = {}
    answered: dict[str, set] = {}  # Call-ID -> CSeq numbers of INVITEs answered with a 2xx
    for r in ordered.to_dict("records"):
        call, cseq = _s(r.get("call_id")), _s(r.get("cseq_num"))
        is_req = bool(r.get("is_request"))
        what = _s(r.get("method")) if is_req else _s(r.get("status_code"))
        key = (call, cseq, _s(r.get("cseq_method")), is_req, what, "" if is_req else _s(r.get("to_tag")),
               _s(r.get("src")), _s(r.get("sport")), _s(r.get("dst")), _s(r.get("dport")))
        t = float(r["time"]) if pd.notna(r.get("time", np.nan)) else float(r.get("rel_time") or 0.0)
        prev = last_seen.get(key)
        retrans.append(prev is not None and t - prev >= RETRANSMIT_MIN_GAP_S)
        last_seen[key] = t
        reinvite.append(is_req and what == "INVITE" and (
            bool(_s(r.get("to_tag"))) or (call in answered and cseq not in answered[call])))
        if not is_req and _s(r.get("cseq_method")) == "INVITE" and what[:1] == "2":
            answered.setdefault(call, set()).add(cseq)
    flags = pd.DataFrame({"reinvite": reinvite, "retransmission": retrans}, index=ordered.index)
    return flags.loc[sip.index] if sip.index.is_unique else flags


def _actor(ip, port, names: dict | None) -> tuple[str, str]:
    """(key, label) for an endpoint; names may map "ip:port" or "ip" to a label."""
    key = f"{ip}:{port}"
    names = names or {}
    if key in names:
        return key, names[key]
    if str(ip) in names:
        return str(ip), names[str(ip)]
    return key, key


def _arrow_label(row) -> str:
    if row["is_request"]:
        text = str(row["method"]) + (" (with credentials)" if row.get("has_auth") else "")
    else:
        text = f"{row['status_code']} {row['reason']}".strip()
    if row.get("has_sdp"):
        pts = str(row.get("sdp_payload_types") or "").split()
        codec = ""
        if pts:
            from labkit.analysis.streams import STATIC_PT, parse_rtpmap
            rtpmap = parse_rtpmap(row.get("sdp_rtpmap") or "")
            p = int(pts[0]) if pts[0].isdigit() else None
            codec = (rtpmap.get(p) or STATIC_PT.get(p) or (pts[0], 0))[0] if p is not None else pts[0]
        hint = f"SDP c={row.get('sdp_c_addr') or '?'} m={row.get('sdp_m_port')} {codec}".rstrip()
        if row.get("sdp_direction") and row.get("sdp_direction") != "sendrecv":
            hint += f" {row['sdp_direction']}"
        if row.get("sdp_crypto"):
            hint += " SRTP"
        text += "\n" + hint
    return text


def _icmp_events(icmp: pd.DataFrame, sip_times: list[float], offset: float, truncated: bool) -> list:
    """ICMP errors grouped per gap between two SIP messages and per (src, dst) pair:
    [(position = number of SIP messages before it, row dict with count/ports/rel_time)].
    Only errors from the first message drawn to :data:`ICMP_AFTER_S` after the last one (to
    the last one if the ladder is cut short) are kept: the others concern messages not drawn."""
    if icmp is None or not len(icmp) or not sip_times:
        return []
    icmp = icmp.sort_values("time")
    until = sip_times[-1] + (0.0 if truncated else ICMP_AFTER_S)
    runs: dict[tuple, dict] = {}
    for r in icmp.to_dict("records"):
        t = float(r["time"])
        if t < sip_times[0]:
            continue
        if t > until:
            break
        pos = int(np.searchsorted(sip_times, t, side="right"))
        key = (pos, str(r["src"]), str(r["dst"]))
        rel = float(r["rel_time"]) if pd.notna(r.get("rel_time", np.nan)) else t - offset
        ev = runs.setdefault(key, {"src": str(r["src"]), "dst": str(r["dst"]), "rel_time": rel, "count": 0,
                                   "refused": []})
        ev["count"] += 1
        port = r.get("orig_dport")
        target = f"{r.get('orig_dst') or r['src']}:{port}" if port is not None and pd.notna(port) else ""
        if target and target not in ev["refused"]:
            ev["refused"].append(target)
    return [(k[0], ev) for k, ev in runs.items()]


def _legend_handles(classes: set, retrans: bool, icmp: bool) -> list:
    from matplotlib.lines import Line2D
    handles = []
    for cls, label in CLASS_LABELS.items():
        if cls in classes:
            color = REQUEST_COLOR if cls == "request" else RESPONSE_COLORS[cls]
            handles.append(Line2D([], [], color=color, lw=2.2, label=label))
    if retrans:
        handles.append(Line2D([], [], color="#444444", lw=1.6, ls="--", label="retransmission (dashed)"))
    if icmp:
        handles.append(Line2D([], [], color=ICMP_COLOR, lw=1.6, ls=":", marker="x", ms=7, mew=2,
                              label="ICMP port unreachable"))
    return handles


def ladder(sip: pd.DataFrame, names: dict | None = None, ax=None, max_messages: int = 60,
           title: str | None = None, *, icmp: pd.DataFrame | None = None, call_tags: bool | None = None,
           legend: bool = True):
    """A SIP sequence ("ladder") diagram of the messages in ``sip`` (time runs downward).

    names: {"192.168.0.11": "alice (192.168.0.11)", "10.0.0.1:5080": "pbx"}; unnamed
    endpoints are shown as ip:port.  At most ``max_messages`` arrows are drawn (a note
    says how many were left out).  The left column gives each message's time in seconds
    from the start of the capture.

    Colours (the legend lists those drawn): requests blue; responses by class — 1xx grey,
    2xx green, 3xx purple, 401/407 amber (the digest challenge: normal, the client resends
    with credentials), other 4xx red, 5xx/6xx dark red.  An INVITE inside an existing dialog
    is labelled "re-INVITE"; a retransmission is dashed and says so (:func:`message_flags`).
    ``icmp``: ICMP port-unreachable errors (:func:`labkit.analysis.icmp_unreachable`, or any table with
    ``time``, ``src``, ``dst``) drawn as dotted arrows between the messages they came after.
    ``call_tags``: a ``[n]`` column naming each message's Call-ID (the list is under the
    diagram); by default shown when more than one Call-ID is drawn.
    Each arrow's annotation has gid ``sip-<frame>`` (``icmp-<n>`` for ICMP).
    """
    sip = sip.sort_values("frame", kind="stable").reset_index(drop=True) if len(sip) else sip
    flags = message_flags(sip)
    shown = sip.head(max_messages)
    truncated = len(sip) > len(shown)
    offset = float((sip["time"] - sip["rel_time"]).iloc[0]) if len(sip) and "time" in sip else 0.0
    sip_times = shown["time"].astype(float).tolist() if len(shown) and "time" in shown else []
    icmp_ev = _icmp_events(icmp, sip_times, offset, truncated)

    actors: dict[str, str] = {}
    actor_ip: dict[str, str] = {}  # actor key -> its address, to put ICMP errors on the right lifeline
    events = []  # (kind, row, a, b, index in sip)
    by_pos: dict[int, list] = {}
    for pos, ev in icmp_ev:
        by_pos.setdefault(pos, []).append(ev)
    records = shown.to_dict("records")
    for pos in range(len(records) + 1):
        for ev in by_pos.get(pos, []):
            events.append(("icmp", ev, None, None, None))
        if pos < len(records):
            r = records[pos]
            a, b = _actor(r["src"], r["sport"], names), _actor(r["dst"], r["dport"], names)
            for (k, lab), ip in ((a, r["src"]), (b, r["dst"])):
                actors.setdefault(k, lab)
                actor_ip.setdefault(k, str(ip))
            events.append(("sip", r, a[0], b[0], shown.index[pos]))
    for i, (kind, ev, *_) in enumerate(events):  # ICMP ends: the actor with that address, or a new one
        if kind != "icmp":
            continue
        ends = []
        for ip in (ev["src"], ev["dst"]):
            match = next((k for k in actors if actor_ip.get(k, k) == ip), None)
            if match is None:
                match, lab = ip, (names or {}).get(ip, ip)
                actors.setdefault(match, lab)
            ends.append(match)
        events[i] = ("icmp", ev, ends[0], ends[1], None)

    call_ids = list(dict.fromkeys(str(c) for c in shown["call_id"])) if len(shown) and "call_id" in shown else []
    tags = {c: f"[{i}]" for i, c in enumerate(call_ids, 1)}
    show_tags = len(call_ids) > 1 if call_tags is None else bool(call_tags and call_ids)
    n_act, n_ev = max(len(actors), 1), len(events)
    n_msg = len(shown)
    classes = {message_class(r) for r in records}
    any_retx = bool(flags.loc[shown.index, "retransmission"].any()) if n_msg else False
    handles = _legend_handles(classes, any_retx, bool(icmp_ev)) if legend and n_ev else []
    left = -1.25 - (0.35 if show_tags else 0.0)
    if ax is None:
        fig = Figure(figsize=(2.2 + 3.2 * n_act + (0.9 if show_tags else 0), 1.6 + 0.55 * max(n_ev, 1)
                              + (0.9 if handles else 0.0)))
        ax = fig.subplots()
    else:
        fig = ax.figure
    xs = {k: i for i, k in enumerate(actors)}
    top, bottom = 0.0, -(n_ev + 0.5)
    for k, i in xs.items():
        ax.plot([i, i], [top, bottom], color="#888888", lw=1.2, zorder=1)
        ax.text(i, top + 0.35, actors[k], ha="center", va="bottom", fontsize=10, fontweight="bold",
                bbox=dict(boxstyle="round,pad=0.3", fc="#eef2f8", ec="#667799"))
    time_x = -0.62 - (0.35 if show_tags else 0.0)
    for y, (kind, row, a, b, idx) in enumerate(events, start=1):
        x0, x1 = xs[a], xs[b]
        yy = -y
        if kind == "icmp":
            color, ls, gid = ICMP_COLOR, ":", f"icmp-{y}"
            times = f" ×{row['count']}" if row["count"] > 1 else ""
            lines = [f"ICMP port unreachable{times}"]
            if row["refused"]:
                lines.append("UDP to " + ", ".join(row["refused"][:2]) + (" …" if len(row["refused"]) > 2 else "")
                             + " refused")
            rel = row["rel_time"]
        else:
            fl = flags.loc[idx]
            color = message_color(row)
            ls = "--" if fl["retransmission"] else "-"
            gid = f"sip-{row['frame']}"
            lines = _arrow_label(row).split("\n")
            if fl["reinvite"]:
                lines[0] = "re-INVITE" + lines[0][len("INVITE"):]
            if fl["retransmission"]:
                lines[0] += " (retransmission)"
            rel = row["rel_time"]
        if x0 == x1:  # message to itself: a small loop
            ann = ax.annotate("", xy=(x0 + 0.02, yy - 0.25), xytext=(x0 + 0.02, yy),
                              arrowprops=dict(arrowstyle="-|>", color=color, linestyle=ls,
                                              connectionstyle="arc3,rad=-1.5"))
        else:
            ann = ax.annotate("", xy=(x1, yy), xytext=(x0, yy),
                              arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6, linestyle=ls,
                                              shrinkA=0, shrinkB=0))
        ann.set_gid(gid)
        if kind == "icmp":
            ax.plot([x0], [yy], marker="x", color=ICMP_COLOR, ms=8, mew=2, zorder=4)
        ax.text((x0 + x1) / 2, yy + 0.06, lines[0], ha="center", va="bottom", fontsize=9, color=color,
                fontweight="bold")
        if len(lines) > 1:
            ax.text((x0 + x1) / 2, yy - 0.08, lines[1], ha="center", va="top", fontsize=7.5,
                    color="#555555", style="italic")
        ax.text(time_x, yy, f"{rel:.3f}s", ha="right", va="center", fontsize=8,
                color="#444444", family="monospace")
        if show_tags and kind == "sip":
            ax.text(-0.6, yy, tags[str(row["call_id"])], ha="center", va="center", fontsize=8,
                    color="#444444", family="monospace")
    notes_y = bottom - 0.1
    if truncated:
        ax.text((n_act - 1) / 2, notes_y, f"… {len(sip) - n_msg} more messages not shown "
                f"(max_messages={max_messages})", ha="center", va="top", fontsize=9, color="#aa0000")
        notes_y -= 0.45
    if show_tags:
        items = [f"{t} {c if len(c) <= 14 else c[:12] + '…'}" for c, t in tags.items()]
        per_line = max(2, 2 * n_act)
        text = "Call-IDs: " + "\n".join("   ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
        ax.text(left + 0.05, notes_y, text, ha="left", va="top", fontsize=8, color="#444444", family="monospace")
        notes_y -= 0.45 * (1 + (len(items) - 1) // per_line)
    ax.set_xlim(left, n_act - 0.4)
    ax.set_ylim(min(bottom - 0.6, notes_y - 0.2), top + 1.0)
    ax.axis("off")
    ax.text(time_x, top + 0.35, "time", ha="right", va="bottom", fontsize=9, fontweight="bold")
    if show_tags:
        ax.text(-0.6, top + 0.35, "call", ha="center", va="bottom", fontsize=9, fontweight="bold")
    if handles:
        ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(handles), 4),
                  fontsize=8.5, frameon=False, handlelength=2.6)
    if title:
        ax.set_title(title, fontsize=12, pad=12 + (14 * ((len(handles) + 3) // 4) + 6 if handles else 0))
    if n_ev == 0:
        ax.text(0, -0.5, "no SIP messages", ha="center")
    fig.tight_layout()
    return fig


def _stream_label(r) -> str:
    return f"{r['src']}:{r['sport']} → {r['dst']}:{r['dport']} (SSRC {int(r['ssrc']):#x})"


def _plot_stream(ax_top, ax_jit, pkts: pd.DataFrame, jit: pd.Series, label: str, color, t0: float,
                 kind: str = "interarrival", bin_s: float = 0.1, lost_times=None):
    """Top axis: inter-arrival time of each packet (ms) or packets per bin; bottom: jitter."""
    t = pkts["time"].to_numpy() - t0
    if len(t) < 2:
        ax_top.text(0.5, 0.5, f"{len(t)} packet: nothing to draw", transform=ax_top.transAxes, ha="center",
                    va="center", fontsize=9, color="#777777")
    if len(t) == 0:
        return
    # The data lines are drawn without antialiasing: a few hundred jagged points per stream
    # antialiased make a PNG twice as large (a notebook stores every figure it shows).
    if kind == "rate":
        # bins centred on the nominal packet instants so steady pacing gives a flat line
        edges = np.arange(t.min() - bin_s / 2, t.max() + bin_s, bin_s)
        counts, _ = np.histogram(t, edges)
        ax_top.step(edges[:-1], counts, where="post", color=color, lw=0.9, label=label, antialiased=False)
        y_lost = 0.0
    else:
        ax_top.plot(t[1:], np.diff(t) * 1000.0, ".-", color=color, lw=0.6, ms=2.5, label=label, antialiased=False)
        y_lost = 0.0
    if lost_times is not None and len(lost_times):
        ax_top.plot(lost_times, np.full(len(lost_times), y_lost), "x", color="#cc0000", ms=7, mew=1.8,
                    label=f"lost ({len(lost_times)})", zorder=5)
    ax_jit.plot(t, jit.to_numpy(), color=color, lw=1.0, label=label, antialiased=False)


def _floor_jitter_axis(ax) -> None:
    """Start at 0 and show at least 1 ms, so float noise of a perfect stream stays flat."""
    ax.relim()
    ax.autoscale_view()
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.0))


def _top_label(kind: str, bin_s: float) -> str:
    return f"packets per {bin_s * 1000:g} ms" if kind == "rate" else "inter-arrival time (ms)"


def _lost_times(pkts: pd.DataFrame, t0: float) -> np.ndarray:
    """Times at which missing sequence numbers should have arrived (interpolated)."""
    from labkit.analysis.streams import unwrap_seq
    if len(pkts) < 2:
        return np.array([])
    ext = unwrap_seq(pkts["seq"].to_numpy())
    t = pkts["time"].to_numpy() - t0
    order = np.argsort(ext, kind="stable")
    e, tt = ext[order], t[order]
    missing = np.setdiff1d(np.arange(e.min(), e.max() + 1), e)
    return np.interp(missing, e, tt) if len(missing) else np.array([])


def _t0(rtp: pd.DataFrame) -> float:
    t0 = rtp.attrs.get("first_time", float(rtp["time"].min())) if len(rtp) else 0.0
    return float(rtp["time"].min()) if t0 != t0 else t0


def _stream_stats(streams: pd.DataFrame | None, key: dict) -> str:
    """", PCMU: 153 packets, lost 0 (0.0 %), jitter 0.9 ms" from the streams table, if it has the stream."""
    if streams is None or not len(streams) or not set(KEY_COLUMNS) <= set(streams.columns):
        return ""
    m = np.ones(len(streams), dtype=bool)
    for k in KEY_COLUMNS:
        m &= (streams[k].astype(str) == str(key[k])).to_numpy()
    if not m.any():
        return ""
    r = streams[m].iloc[0]
    parts = []
    if "packets" in r:
        parts.append(f"{int(r['packets'])} packets")
    if "lost" in r and "loss_pct" in r:
        parts.append(f"lost {int(r['lost'])} ({float(r['loss_pct']):.1f} %)")
    if "jitter_mean_ms" in r:
        parts.append(f"jitter {float(r['jitter_mean_ms']):.1f} ms")
    codec = f"{r['codec']}: " if "codec" in r and isinstance(r["codec"], str) and r["codec"] else ""
    return f"\n{codec}{', '.join(parts)}" if parts else ""


KEY_COLUMNS = ["src", "sport", "dst", "dport", "ssrc"]


def _timeline_legend(fig, kind: str, bin_s: float, any_lost: bool) -> None:
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color="#555555", marker=".", lw=0.6, ms=5,
                      label=f"top panel: {_top_label(kind, bin_s)}"),
               Line2D([], [], color="#555555", lw=1.0, label="bottom panel: RFC 3550 jitter (ms)")]
    if any_lost:
        handles.append(Line2D([], [], color="#cc0000", marker="x", ls="", ms=7, mew=1.8,
                              label="× lost packet (where it should have arrived)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8.5, frameon=False)


def rtp_timeline(rtp: pd.DataFrame, streams: pd.DataFrame | None = None, *, kind: str = "interarrival",
                 bin_ms: float = 100.0, title: str | None = None):
    """Small multiples, one pair of panels per stream (src → dst, SSRC), sharing the time axis.

    Top panel of each pair: the inter-arrival time of every packet (``kind="interarrival"``:
    20 ms for steady G.711, a spike at a gap, scatter with jitter) or packets per ``bin_ms``
    bin (``kind="rate"``); lost packets are marked with a red × where they should have
    arrived.  Bottom panel: the RFC 3550 jitter of the stream after each packet.  With
    ``streams`` (the table of :func:`~labkit.analysis.rtp_streams`) each title also gives
    the codec, packets, loss and mean jitter.  ``fig.axes`` is [top 1, jitter 1, top 2, …].
    """
    from labkit.analysis.streams import KEYS, per_packet_jitter
    bin_s = bin_ms / 1000.0
    groups = []
    if len(rtp):
        rtp = rtp.sort_values("frame")
        groups = list(rtp.groupby(KEYS, sort=False, observed=True))
    n = max(len(groups), 1)
    fig = Figure(figsize=(10, 1.3 + 2.9 * n), layout="constrained")
    axes = fig.subplots(2 * n, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.7] * n})
    if not groups:
        axes[0].text(0.5, 0.5, "no RTP packets", transform=axes[0].transAxes, ha="center")
        return fig
    t0 = _t0(rtp)
    jit = per_packet_jitter(rtp, streams)
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    any_lost = False
    for i, (key, g) in enumerate(groups):
        r = dict(zip(KEYS, key))
        top, low = axes[2 * i], axes[2 * i + 1]
        lost = _lost_times(g, t0)
        any_lost |= bool(len(lost))
        _plot_stream(top, low, g, jit.loc[g.index], _stream_label(r), colors[i % len(colors)], t0,
                     kind, bin_s, lost)
        top.set_title(_stream_label(r) + _stream_stats(streams, r), fontsize=9.5, loc="left")
        top.set_ylabel("inter-arrival (ms)" if kind != "rate" else f"pkts / {bin_ms:g} ms", fontsize=9)
        _floor_jitter_axis(low)
        low.set_ylabel("jitter (ms)", fontsize=9)
        for ax in (top, low):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("time since start of capture (s)")
    fig.suptitle(title or "RTP packets over time, one row per stream", fontsize=12)
    _timeline_legend(fig, kind, bin_s, any_lost)
    return fig


def call_media(rtp: pd.DataFrame, streams: pd.DataFrame, call_id: str, *, kind: str = "interarrival",
               bin_ms: float = 100.0):
    """Both directions of one call side by side: packet rate (top) and jitter (bottom),
    with loss, jitter and the MOS estimate in each column's title."""
    from labkit.analysis.streams import per_packet_jitter
    sel = streams[streams["call_id"] == call_id] if len(streams) else streams
    n = max(len(sel), 1)
    fig = Figure(figsize=(6.5 * n, 6.4), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    if len(sel) == 0:
        axes[0, 0].text(0.5, 0.5, f"no RTP stream matched to call {call_id}", ha="center",
                        transform=axes[0, 0].transAxes)
        return fig
    t0 = _t0(rtp)
    rtp = rtp.sort_values("frame")
    jit = per_packet_jitter(rtp, streams)
    any_lost = False
    for col, r in enumerate(sel.to_dict("records")):
        m = ((rtp["src"].astype(str) == r["src"]) & (rtp["sport"] == r["sport"]) &
             (rtp["dst"].astype(str) == r["dst"]) & (rtp["dport"] == r["dport"]) & (rtp["ssrc"] == r["ssrc"]))
        g = rtp[m]
        lost = _lost_times(g, t0)
        any_lost |= bool(len(lost))
        _plot_stream(axes[0, col], axes[1, col], g, jit.loc[g.index], _stream_label(r), f"C{col}", t0,
                     kind, bin_ms / 1000.0, lost)
        axes[0, col].set_title(f"{r['direction']}\n{r['codec']}: lost {r['lost']} ({r['loss_pct']:.1f} %), "
                               f"jitter {r['jitter_mean_ms']:.1f} ms, MOS≈{r['mos']}", fontsize=10)
        axes[0, col].set_ylabel(_top_label(kind, bin_ms / 1000.0))
        _floor_jitter_axis(axes[1, col])
        axes[1, col].set_ylabel("jitter (ms)")
        axes[1, col].set_xlabel("time since start of capture (s)")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    fig.suptitle(f"Call {call_id}", fontsize=11)
    _timeline_legend(fig, kind, bin_ms / 1000.0, any_lost)
    return fig


def save(fig, path_without_ext, dpi: int = 110) -> list[str]:
    """Write ``fig`` as PATH.png and PATH.svg; returns both paths."""
    base = os.fspath(path_without_ext)
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        p = f"{base}.{ext}"
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        out.append(p)
    return out
