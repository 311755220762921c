"""Figures for the notebooks: SIP ladder diagrams and RTP timelines (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot: no GUI
backend is touched (safe headless, in CI, with Agg), nothing accumulates in pyplot's
figure list, and Jupyter shows the returned figure exactly once.
:func:`save` writes a figure as PNG and SVG.
"""
from __future__ import annotations

import os

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

METHOD_COLORS = {"INVITE": "#1f5fbf", "ACK": "#1f5fbf", "BYE": "#7a3db8", "CANCEL": "#7a3db8",
                 "REGISTER": "#2b7a3d", "OPTIONS": "#777777"}


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


def ladder(sip: pd.DataFrame, names: dict | None = None, ax=None, max_messages: int = 60,
           title: str | None = None):
    """A SIP sequence ("ladder") diagram of the messages in ``sip`` (time runs downward).

    names: {"192.168.0.11": "alice (192.168.0.11)", "10.0.0.1:5080": "pbx"}; unnamed
    endpoints are shown as ip:port.  At most ``max_messages`` arrows are drawn (a note
    says how many were left out).  The left column gives each message's time in seconds
    from the start of the capture.
    """
    sip = sip.sort_values("frame") if len(sip) else sip
    shown = sip.head(max_messages)
    actors: dict[str, str] = {}
    ends = []
    for r in shown.itertuples(index=False):
        a = _actor(r.src, r.sport, names)
        b = _actor(r.dst, r.dport, names)
        for k, lab in (a, b):
            actors.setdefault(k, lab)
        ends.append((a[0], b[0]))
    n_act, n_msg = max(len(actors), 1), len(shown)
    if ax is None:
        fig = Figure(figsize=(2.2 + 3.2 * n_act, 1.6 + 0.55 * max(n_msg, 1)))
        ax = fig.subplots()
    else:
        fig = ax.figure
    xs = {k: i for i, k in enumerate(actors)}
    top, bottom = 0.0, -(n_msg + 0.5)
    for k, i in xs.items():
        ax.plot([i, i], [top, bottom], color="#888888", lw=1.2, zorder=1)
        ax.text(i, top + 0.35, actors[k], ha="center", va="bottom", fontsize=10, fontweight="bold",
                bbox=dict(boxstyle="round,pad=0.3", fc="#eef2f8", ec="#667799"))
    for y, (row, (a, b)) in enumerate(zip(shown.to_dict("records"), ends), start=1):
        x0, x1 = xs[a], xs[b]
        color = METHOD_COLORS.get(row["method"] if row["is_request"] else row.get("cseq_method"), "#333333")
        if not row["is_request"]:
            code = row["status_code"]
            color = "#b22222" if pd.notna(code) and code >= 300 else ("#2b7a3d" if pd.notna(code) and code >= 200
                                                                      else "#666666")
        yy = -y
        if x0 == x1:  # message to itself: a small loop
            ax.annotate("", xy=(x0 + 0.02, yy - 0.25), xytext=(x0 + 0.02, yy),
                        arrowprops=dict(arrowstyle="-|>", color=color, connectionstyle="arc3,rad=-1.5"))
        else:
            ax.annotate("", xy=(x1, yy), xytext=(x0, yy),
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.4, shrinkA=0, shrinkB=0))
        label = _arrow_label(row)
        lines = label.split("\n")
        ax.text((x0 + x1) / 2, yy + 0.06, lines[0], ha="center", va="bottom", fontsize=9, color=color,
                fontweight="bold")
        if len(lines) > 1:
            ax.text((x0 + x1) / 2, yy - 0.08, lines[1], ha="center", va="top", fontsize=7.5,
                    color="#555555", style="italic")
        ax.text(-0.62, yy, f"{row['rel_time']:.3f}s", ha="right", va="center", fontsize=8,
                color="#444444", family="monospace")
    if len(sip) > n_msg:
        ax.text((n_act - 1) / 2, bottom - 0.1, f"… {len(sip) - n_msg} more messages not shown "
                f"(max_messages={max_messages})", ha="center", va="top", fontsize=9, color="#aa0000")
    ax.set_xlim(-1.25, n_act - 0.4)
    ax.set_ylim(bottom - 0.6, top + 1.0)
    ax.axis("off")
    ax.text(-0.62, top + 0.35, "time", ha="right", va="bottom", fontsize=9, fontweight="bold")
    if title:
        ax.set_title(title, fontsize=12)
    if n_msg == 0:
        ax.text(0, -0.5, "no SIP messages", ha="center")
    fig.tight_layout()
    return fig


def _stream_label(r) -> str:
    return f"{r['src']}:{r['sport']} → {r['dst']}:{r['dport']} (SSRC {int(r['ssrc']):#x})"


def _plot_stream(ax_top, ax_jit, pkts: pd.DataFrame, jit: pd.Series, label: str, color, t0: float,
                 kind: str = "interarrival", bin_s: float = 0.1, lost_times=None):
    """Top axis: inter-arrival time of each packet (ms) or packets per bin; bottom: jitter."""
    t = pkts["time"].to_numpy() - t0
    if len(t) == 0:
        return
    if kind == "rate":
        # bins centred on the nominal packet instants so steady pacing gives a flat line
        edges = np.arange(t.min() - bin_s / 2, t.max() + bin_s, bin_s)
        counts, _ = np.histogram(t, edges)
        ax_top.step(edges[:-1], counts, where="post", color=color, lw=0.9, label=label)
        y_lost = 0.0
    else:
        ax_top.plot(t[1:], np.diff(t) * 1000.0, ".-", color=color, lw=0.6, ms=2.5, label=label)
        y_lost = 0.0
    if lost_times is not None and len(lost_times):
        ax_top.plot(lost_times, np.full(len(lost_times), y_lost), "x", color="#cc0000", ms=7, mew=1.8,
                    label=f"lost ({len(lost_times)})", zorder=5)
    ax_jit.plot(t, jit.to_numpy(), color=color, lw=1.0, label=label)


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


def rtp_timeline(rtp: pd.DataFrame, streams: pd.DataFrame | None = None, *, kind: str = "interarrival",
                 bin_ms: float = 100.0, title: str | None = None):
    """Each stream over time: the inter-arrival time of every packet (``kind="interarrival"``:
    20 ms for steady G.711, a spike at a gap, scatter with jitter) or packets per ``bin_ms``
    bin (``kind="rate"``); lost packets are marked with a red × where they should have
    arrived.  Below: the RFC 3550 jitter of each stream after each packet."""
    from labkit.analysis.streams import KEYS, per_packet_jitter
    fig = Figure(figsize=(10, 5.5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    if len(rtp) == 0:
        ax1.text(0.5, 0.5, "no RTP packets", transform=ax1.transAxes, ha="center")
        return fig
    t0 = rtp.attrs.get("first_time", float(rtp["time"].min()))
    if t0 != t0:
        t0 = float(rtp["time"].min())
    rtp = rtp.sort_values("frame")
    jit = per_packet_jitter(rtp, streams)
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, g) in enumerate(rtp.groupby(KEYS, sort=False, observed=True)):
        r = dict(zip(KEYS, key))
        _plot_stream(ax1, ax2, g, jit.loc[g.index], _stream_label(r), colors[i % len(colors)], t0,
                     kind, bin_ms / 1000.0, _lost_times(g, t0))
    ax1.set_ylabel(_top_label(kind, bin_ms / 1000.0))
    ax1.set_title(title or "RTP packets over time (× = lost packet)")
    ax1.legend(fontsize=8, loc="upper right")
    ax1.grid(alpha=0.3)
    _floor_jitter_axis(ax2)
    ax2.set_ylabel("jitter (ms, RFC 3550)")
    ax2.set_xlabel("time since start of capture (s)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def call_media(rtp: pd.DataFrame, streams: pd.DataFrame, call_id: str, *, kind: str = "interarrival",
               bin_ms: float = 100.0):
    """Both directions of one call side by side: packet rate (top) and jitter (bottom),
    with loss, jitter and the MOS estimate in each column's title."""
    from labkit.analysis.streams import per_packet_jitter
    sel = streams[streams["call_id"] == call_id] if len(streams) else streams
    n = max(len(sel), 1)
    fig = Figure(figsize=(6.5 * n, 6))
    axes = fig.subplots(2, n, squeeze=False, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    if len(sel) == 0:
        axes[0, 0].text(0.5, 0.5, f"no RTP stream matched to call {call_id}", ha="center",
                        transform=axes[0, 0].transAxes)
        return fig
    t0 = rtp.attrs.get("first_time", float(rtp["time"].min())) if len(rtp) else 0.0
    if t0 != t0:
        t0 = float(rtp["time"].min())
    rtp = rtp.sort_values("frame")
    jit = per_packet_jitter(rtp, streams)
    for col, r in enumerate(sel.to_dict("records")):
        m = ((rtp["src"].astype(str) == r["src"]) & (rtp["sport"] == r["sport"]) &
             (rtp["dst"].astype(str) == r["dst"]) & (rtp["dport"] == r["dport"]) & (rtp["ssrc"] == r["ssrc"]))
        g = rtp[m]
        _plot_stream(axes[0, col], axes[1, col], g, jit.loc[g.index], _stream_label(r), f"C{col}", t0,
                     kind, bin_ms / 1000.0, _lost_times(g, t0))
        axes[0, col].set_title(f"{r['direction']}\n{r['codec']}: lost {r['lost']} ({r['loss_pct']:.1f} %), "
                               f"jitter {r['jitter_mean_ms']:.1f} ms, MOS≈{r['mos']}", fontsize=10)
        axes[0, col].set_ylabel(_top_label(kind, bin_ms / 1000.0))
        axes[0, col].legend(fontsize=8, loc="upper right")
        _floor_jitter_axis(axes[1, col])
        axes[1, col].set_ylabel("jitter (ms)")
        axes[1, col].set_xlabel("time since start of capture (s)")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    fig.suptitle(f"Call {call_id}", fontsize=11)
    fig.tight_layout()
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
