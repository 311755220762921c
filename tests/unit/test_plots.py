"""The figures students see: SIP ladders (legend, colours by response class, re-INVITE,
retransmissions, ICMP, Call-ID tags) and the RTP timeline as small multiples.

Hand-made tables pin each rule down; the shipped captures check the rules on real calls.
Every figure is built without pyplot and closed (dropped) by the test.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from labkit import analysis
from labkit.analysis import plots  # noqa: E402

CAPTURES = Path(__file__).resolve().parents[2] / "data" / "captures"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

ALICE, PBX, BOB = "192.168.0.11", "192.168.0.10", "192.168.0.12"


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """The plots module builds Figures without pyplot: none may be left open; close any."""
    import matplotlib.pyplot as plt
    yield
    leaked = plt.get_fignums()
    plt.close("all")
    assert not leaked


def msg(frame, t, src, dst, what, *, call="call-1@lab", cseq=1, cseq_method=None, to_tag="", reason="",
        has_sdp=False):
    """One row of a SIP table (labkit.analysis.sip columns); ``what`` a method or a status code."""
    is_req = isinstance(what, str)
    return {"frame": frame, "time": 1_700_000_000.0 + t, "rel_time": t, "src": src, "sport": 5060, "dst": dst,
            "dport": 5060, "transport": "UDP", "is_request": is_req, "method": what if is_req else "",
            "status_code": pd.NA if is_req else what, "reason": reason, "call_id": call, "cseq_num": cseq,
            "cseq_method": cseq_method or (what if is_req else "INVITE"), "from_tag": "f1", "to_tag": to_tag,
            "has_auth": False, "asks_auth": False, "has_sdp": has_sdp, "sdp_c_addr": "", "sdp_m_port": pd.NA,
            "sdp_payload_types": "", "sdp_rtpmap": "", "sdp_crypto": "", "sdp_direction": ""}


def table(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["status_code"] = df["status_code"].astype("Int64")
    return df


def arrows(fig) -> dict:
    """gid ("sip-<frame>", "icmp-<n>") -> the arrow's annotation."""
    return {t.get_gid(): t for t in fig.axes[0].texts if isinstance(t, Annotation) and t.get_gid()}


def color(ann) -> str:
    return to_hex(ann.arrow_patch.get_edgecolor())


def label(fig, ann) -> str:
    """The bold label drawn just above an arrow."""
    y = ann.xy[1]
    for t in fig.axes[0].texts:
        above = abs(t.get_position()[1] - y - 0.06) < 1e-9
        if not isinstance(t, Annotation) and t.get_fontweight() == "bold" and above:
            return t.get_text()
    raise AssertionError(f"no label above the arrow at y={y}")


def legend_texts(fig) -> list[str]:
    leg = fig.axes[0].get_legend()
    assert leg is not None, "the ladder has no legend"
    return [t.get_text() for t in leg.get_texts()]


def rejected_call():
    """INVITE/407 challenge/ACK, INVITE with credentials/180/403, a 401 and a 404 on other calls,
    a 503 and a 200 — one of every response class."""
    return table([
        msg(1, 0.00, ALICE, PBX, "INVITE"),
        msg(2, 0.01, PBX, ALICE, 407, reason="Proxy Authentication Required", to_tag="t1"),
        msg(3, 0.02, ALICE, PBX, "ACK", to_tag="t1"),
        msg(4, 0.03, ALICE, PBX, "INVITE", cseq=2),
        msg(5, 0.04, PBX, ALICE, 180, cseq=2, reason="Ringing", to_tag="t2"),
        msg(6, 0.05, PBX, ALICE, 403, cseq=2, reason="Forbidden", to_tag="t2"),
        msg(7, 0.10, ALICE, PBX, "REGISTER", call="reg@lab", cseq_method="REGISTER"),
        msg(8, 0.11, PBX, ALICE, 401, call="reg@lab", cseq_method="REGISTER", reason="Unauthorized"),
        msg(9, 0.20, ALICE, PBX, "OPTIONS", call="opt@lab", cseq_method="OPTIONS"),
        msg(10, 0.21, PBX, ALICE, 404, call="opt@lab", cseq_method="OPTIONS", reason="Not Found"),
        msg(11, 0.30, ALICE, PBX, "OPTIONS", call="opt2@lab", cseq_method="OPTIONS"),
        msg(12, 0.31, PBX, ALICE, 503, call="opt2@lab", cseq_method="OPTIONS", reason="Service Unavailable"),
        msg(13, 0.40, ALICE, PBX, "OPTIONS", call="opt3@lab", cseq_method="OPTIONS"),
        msg(14, 0.41, PBX, ALICE, 200, call="opt3@lab", cseq_method="OPTIONS", reason="OK"),
    ])


# -- ladder: colours and legend ---------------------------------------------------------------

def test_ladder_colours_responses_by_class_with_401_407_as_challenge():
    fig = plots.ladder(rejected_call())
    a = arrows(fig)
    challenge, client_error = color(a["sip-8"]), color(a["sip-10"])
    assert challenge == color(a["sip-2"]) == plots.RESPONSE_COLORS["challenge"]  # 401 and 407 alike
    assert client_error == color(a["sip-6"]) == plots.RESPONSE_COLORS["4xx"]  # 404 and 403 alike
    assert color(a["sip-14"]) == plots.RESPONSE_COLORS["2xx"]
    assert color(a["sip-5"]) == plots.RESPONSE_COLORS["1xx"]
    assert color(a["sip-12"]) == plots.RESPONSE_COLORS["5xx"]
    assert len({challenge, client_error, color(a["sip-14"]), color(a["sip-5"]), color(a["sip-12"])}) == 5
    # every request in one colour, whatever its method
    assert {color(a[f"sip-{f}"]) for f in (1, 3, 4, 7, 9, 11, 13)} == {plots.REQUEST_COLOR}


def test_ladder_legend_explains_the_colours_drawn():
    fig = plots.ladder(rejected_call())
    texts = legend_texts(fig)
    for cls in ("request", "1xx", "2xx", "challenge", "4xx", "5xx"):
        assert plots.CLASS_LABELS[cls] in texts
    assert "401/407 challenge (normal)" in texts
    assert plots.CLASS_LABELS["3xx"] not in texts  # no 3xx drawn: not in the legend
    leg = fig.axes[0].get_legend()
    colours = {t.get_text(): to_hex(h.get_color()) for t, h in zip(leg.get_texts(), leg.legend_handles)}
    assert colours["4xx client error"] == plots.RESPONSE_COLORS["4xx"]
    assert colours["401/407 challenge (normal)"] == plots.RESPONSE_COLORS["challenge"]


@needs_tshark
def test_ladder_of_a_real_rejected_call_tells_challenge_from_refusal():
    from labkit.analysis import sip_messages
    sip = sip_messages(CAPTURES / "05-mistakes-modern.pcap")
    fig = plots.ladder(sip, max_messages=len(sip))
    a = arrows(fig)
    by_code = {}
    for r in sip.dropna(subset=["status_code"]).itertuples():
        by_code.setdefault(int(r.status_code), set()).add(color(a[f"sip-{r.frame}"]))
    assert by_code[401] == by_code[407] == {plots.RESPONSE_COLORS["challenge"]}
    assert by_code[403] == by_code[404] == {plots.RESPONSE_COLORS["4xx"]}
    assert by_code[200] == {plots.RESPONSE_COLORS["2xx"]}
    assert "401/407 challenge (normal)" in legend_texts(fig) and "4xx client error" in legend_texts(fig)


# -- re-INVITE ----------------------------------------------------------------------------------

def test_reinvite_rule_uses_the_to_tag_and_falls_back_on_an_answered_invite():
    rows = [msg(1, 0.0, ALICE, PBX, "INVITE"),
            msg(2, 0.1, PBX, ALICE, 401, to_tag="x"),  # the challenge's To tag is on the response
            msg(3, 0.2, ALICE, PBX, "INVITE", cseq=2),
            msg(4, 0.3, PBX, ALICE, 200, cseq=2, to_tag="t"),
            msg(5, 0.4, PBX, ALICE, "INVITE", cseq=7, to_tag="f1"),  # in-dialog, from the other side
            msg(6, 0.5, ALICE, PBX, "INVITE", cseq=3)]  # no To tag in the table, but the call is up
    flags = plots.message_flags(table(rows))
    assert flags["reinvite"].tolist() == [False, False, False, False, True, True]
    assert not flags["retransmission"].any()


@needs_tshark
def test_ladder_labels_the_real_reinvites_of_direct_media():
    from labkit.analysis import sip_messages
    sip = sip_messages(CAPTURES / "01-direct-media-modern.pcap")
    fig = plots.ladder(sip, max_messages=len(sip))
    a = arrows(fig)
    invites = sip[sip["method"] == "INVITE"]
    first = invites[invites["to_tag"] == ""]
    again = invites[invites["to_tag"] != ""]
    assert len(first) >= 2 and len(again) >= 2  # the phone's two INVITEs; Asterisk's re-INVITEs
    for r in first.itertuples():
        assert not label(fig, a[f"sip-{r.frame}"]).startswith("re-INVITE")
        assert label(fig, a[f"sip-{r.frame}"]).startswith("INVITE")
    for r in again.itertuples():
        assert label(fig, a[f"sip-{r.frame}"]) == "re-INVITE"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("re-INVITE") == len(again)


# -- retransmissions --------------------------------------------------------------------------

def test_retransmission_is_dashed_and_says_so():
    rows = [msg(1, 0.0, ALICE, PBX, "INVITE"),
            msg(2, 0.5, ALICE, PBX, "INVITE"),  # timer A fired: the same INVITE again
            msg(3, 0.6, PBX, ALICE, 200, to_tag="t", reason="OK"),
            msg(4, 1.1, PBX, ALICE, 200, to_tag="t", reason="OK"),  # 2xx resent until the ACK
            msg(5, 1.2, ALICE, PBX, "ACK", to_tag="t")]
    fig = plots.ladder(table(rows))
    a = arrows(fig)
    assert a["sip-1"].arrow_patch.get_linestyle() == "-"
    assert a["sip-2"].arrow_patch.get_linestyle() == "--"
    assert a["sip-4"].arrow_patch.get_linestyle() == "--"
    assert a["sip-3"].arrow_patch.get_linestyle() == a["sip-5"].arrow_patch.get_linestyle() == "-"
    assert label(fig, a["sip-2"]) == "INVITE (retransmission)"
    assert label(fig, a["sip-4"]) == "200 OK (retransmission)"
    assert label(fig, a["sip-1"]) == "INVITE"
    assert "retransmission (dashed)" in legend_texts(fig)


def test_same_cseq_in_the_other_direction_or_milliseconds_apart_is_no_retransmission():
    rows = [msg(1, 0.0, ALICE, PBX, "REGISTER", cseq_method="REGISTER"),
            msg(2, 0.007, ALICE, PBX, "REGISTER", cseq_method="REGISTER"),  # a scanner, not timer E
            msg(3, 0.02, PBX, ALICE, 200, cseq_method="REGISTER"),
            msg(4, 0.9, BOB, PBX, "REGISTER", cseq_method="REGISTER")]  # another sender
    flags = plots.message_flags(table(rows))
    assert not flags["retransmission"].any()
    assert "retransmission (dashed)" not in legend_texts(plots.ladder(table(rows)))


@needs_tshark
def test_real_2xx_retransmissions_are_dashed():
    from labkit.analysis import sip_messages
    sip = sip_messages(CAPTURES / "02-forward-modern-internet.pcap")
    fig = plots.ladder(sip)
    a = arrows(fig)
    ok = sip[(sip["status_code"] == 200) & (sip["cseq_method"] == "INVITE")]
    styles = [a[f"sip-{f}"].arrow_patch.get_linestyle() for f in ok["frame"]]
    assert len(styles) >= 2 and styles[0] == "-" and set(styles[1:]) == {"--"}
    assert label(fig, a[f"sip-{ok['frame'].iloc[1]}"]).endswith("(retransmission)")


# -- ICMP and Call-ID tags --------------------------------------------------------------------

def test_icmp_port_unreachable_drawn_between_the_messages_as_its_own_arrow():
    sip = table([msg(1, 0.0, ALICE, PBX, "INVITE"), msg(2, 0.1, PBX, ALICE, 200, to_tag="t", reason="OK"),
                 msg(3, 2.0, ALICE, PBX, "BYE", cseq=2, to_tag="t")])
    icmp = pd.DataFrame({"time": 1_700_000_000.0 + np.array([0.5, 0.52, 0.54, 9.0]),
                         "src": ["198.51.100.1"] * 3 + [PBX], "dst": [ALICE] * 3 + [ALICE],
                         "orig_dst": ["198.51.100.1"] * 3 + [PBX], "orig_dport": [40000] * 3 + [4000]})
    fig = plots.ladder(sip, names={"198.51.100.1": "ISP box"}, icmp=icmp)
    a = arrows(fig)
    icmps = [v for k, v in a.items() if k.startswith("icmp-")]
    assert len(icmps) == 1  # three errors in a row: one arrow ×3; the one 7 s after the BYE is left out
    ann = icmps[0]
    assert a["sip-2"].xy[1] > ann.xy[1] > a["sip-3"].xy[1]  # between the 200 and the BYE
    assert color(ann) == plots.ICMP_COLOR and ann.arrow_patch.get_linestyle() == ":"
    assert label(fig, ann) == "ICMP port unreachable ×3"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "ISP box" in texts and "UDP to 198.51.100.1:40000 refused" in texts
    assert "ICMP port unreachable" in legend_texts(fig)


@needs_tshark
def test_icmp_reader_on_a_direct_media_capture_through_nat():
    icmp = analysis.icmp_unreachable(CAPTURES / "02-vps-direct-modern.pcap")
    assert len(icmp) >= 10 and list(icmp.columns) == ["frame", "time", "rel_time", "src", "dst", "orig_dst",
                                                     "orig_dport"]
    assert icmp["orig_dport"].notna().all() and (icmp["src"] != icmp["dst"]).all()
    from labkit.analysis import sip_messages
    sip = sip_messages(CAPTURES / "02-vps-direct-modern.pcap")
    fig = plots.ladder(sip, icmp=icmp, max_messages=len(sip))
    assert any(k.startswith("icmp-") for k in arrows(fig))
    assert analysis.icmp_unreachable(CAPTURES / "05-mistakes-modern.pcap").empty


def test_call_id_tags_only_when_several_dialogs_are_drawn():
    one = plots.ladder(table([msg(1, 0.0, ALICE, PBX, "INVITE"), msg(2, 0.1, PBX, ALICE, 180, reason="Ringing")]))
    assert "[1]" not in [t.get_text() for t in one.axes[0].texts]
    fig = plots.ladder(rejected_call())
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("[1]") == 6 and texts.count("[2]") == 2 and "[5]" in texts
    assert any(t.startswith("Call-IDs: [1] call-1@lab") for t in texts)
    off = plots.ladder(rejected_call(), call_tags=False)
    assert "[1]" not in [t.get_text() for t in off.axes[0].texts]


def test_ladder_keeps_its_old_call_forms_and_adds_its_legend_to_a_given_axes():
    fig = plots.ladder(rejected_call(), names={ALICE: "alice"}, max_messages=3, title="t")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "alice" in texts and any("11 more messages" in t for t in texts)
    assert fig.axes[0].get_title() == "t"
    from matplotlib.figure import Figure
    host = Figure()
    ax = host.subplots()
    assert plots.ladder(rejected_call(), ax=ax) is host
    assert ax.get_legend() is not None and "2xx success" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "no SIP messages" in [t.get_text() for t in plots.ladder(table([msg(1, 0, ALICE, PBX, "X")]).iloc[:0])
                                 .axes[0].texts]


# -- RTP timeline -----------------------------------------------------------------------------

def rtp_table(streams: int = 3, n: int = 50, drop=(10, 11)) -> pd.DataFrame:
    rows = []
    frame = 0
    for s in range(streams):
        for i in range(n):
            if s == 0 and i in drop:
                continue
            frame += 1
            rows.append({"frame": frame, "time": 100.0 + s * 0.3 + i * 0.02 + (0.004 if i % 7 == 0 else 0.0),
                         "src": f"10.0.0.{s + 1}", "sport": 4000 + s, "dst": "10.0.0.99", "dport": 6000 + s,
                         "ssrc": 0x1000 + s, "seq": i, "timestamp": 160 * i, "payload_type": 0})
    df = pd.DataFrame(rows).sort_values("time").reset_index(drop=True)
    df["frame"] = np.arange(1, len(df) + 1)
    df.attrs["first_time"] = 100.0
    return df


@pytest.mark.parametrize("kind", ["interarrival", "rate"])
def test_timeline_is_one_pair_of_panels_per_stream_sharing_the_time_axis(kind):
    fig = plots.rtp_timeline(rtp_table(3), None, kind=kind, title="three streams")
    axes = fig.axes
    assert len(axes) == 2 * 3
    tops = axes[0::2]
    titles = [ax.get_title(loc="left") for ax in tops]
    assert titles[0].startswith("10.0.0.1:4000 → 10.0.0.99:6000 (SSRC 0x1000)")
    assert [t.split(" → ")[0] for t in titles] == ["10.0.0.1:4000", "10.0.0.2:4001", "10.0.0.3:4002"]
    assert all(ax.get_shared_x_axes().joined(axes[0], ax) for ax in axes)
    assert [ax.get_ylabel() for ax in axes[1::2]] == ["jitter (ms)"] * 3
    lost = [line for line in tops[0].get_lines() if line.get_label().startswith("lost")]
    assert lost and len(lost[0].get_xdata()) == 2  # the two dropped packets, in stream 1's own panel
    assert not any(line.get_label().startswith("lost") for ax in tops[1:] for line in ax.get_lines())
    # the legend is the figure's, outside every panel: no axes carries one over its data
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
    assert any("lost packet" in t.get_text() for t in fig.legends[0].get_texts())
    assert fig.get_suptitle() == "three streams"


def test_timeline_titles_carry_the_stream_statistics():
    from labkit.analysis import rtp_streams
    rtp = rtp_table(2)
    fig = plots.rtp_timeline(rtp, rtp_streams(rtp))
    title = fig.axes[0].get_title(loc="left")
    assert "PCMU" in title and "lost 2" in title
    assert len(fig.axes) == 4


def test_timeline_without_packets_and_call_media_still_draw():
    empty = rtp_table(1).iloc[:0]
    fig = plots.rtp_timeline(empty)
    assert any(t.get_text() == "no RTP packets" for t in fig.axes[0].texts)
    from labkit.analysis import rtp_streams
    rtp = rtp_table(2)
    streams = rtp_streams(rtp).assign(call_id="c1")
    fig = plots.call_media(rtp, streams, "c1", kind="rate", bin_ms=200.0)
    assert len(fig.axes) == 4 and "MOS≈" in fig.axes[0].get_title()
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
