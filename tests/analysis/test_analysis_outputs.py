"""Figures, replay output, and the one-packet pyshark look (also inside an event loop)."""
from __future__ import annotations

import asyncio
import os

import matplotlib

matplotlib.use("Agg")

import synth  # noqa: E402

from labkit.analysis import (  # noqa: E402
    packet,
    plots,  # noqa: E402
    replay,
)


def test_ladder(sip_df, tmp_path):
    names = {synth.ALICE: "alice (192.168.0.11)", f"{synth.PBX}:5060": "pbx"}
    fig = plots.ladder(sip_df, names=names)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "alice (192.168.0.11)" in texts and "pbx" in texts
    assert "INVITE" in texts and "401 Unauthorized" in texts and "180 Ringing" in texts
    assert "REGISTER (with credentials)" in texts
    assert any(t.startswith("SDP c=192.168.0.11 m=4000 PCMU") for t in texts)
    assert "10.000s" in texts  # the BYE's time in the left column
    paths = plots.save(fig, tmp_path / "ladder")
    assert [os.path.splitext(p)[1] for p in paths] == [".png", ".svg"]
    assert all(os.path.getsize(p) > 1000 for p in paths)


def test_ladder_truncates(sip_df):
    fig = plots.ladder(sip_df, max_messages=4)
    assert any("7 more messages" in t.get_text() for t in fig.axes[0].texts)


def test_timeline_and_call_media(rtp_df, streams_df, tmp_path):
    for kind in ("interarrival", "rate"):
        fig = plots.rtp_timeline(rtp_df, streams_df, kind=kind)
        assert len(fig.axes) == 2 * len(streams_df)  # small multiples: packets and jitter per stream
        assert plots.save(fig, tmp_path / f"timeline-{kind}")
    lost = [line for ax in fig.axes for line in ax.get_lines() if line.get_label().startswith("lost")]
    assert lost and len(lost[0].get_xdata()) == 3  # the three dropped packets are marked
    fig = plots.call_media(rtp_df, streams_df, synth.CALL_ID)
    assert len(fig.axes) == 4
    assert "MOS≈" in fig.axes[0].get_title()


def test_replay_writes_files(eth_pcap, tmp_path):
    out = tmp_path / "replay"
    rep = replay(eth_pcap, out, names={synth.ALICE: "alice"})
    for f in ("sip.csv", "calls.csv", "streams.csv", "report.md", "ladder-1.png", "ladder-1.svg",
              "rtp-timeline.png"):
        assert (out / f).exists(), f
    md = (out / "report.md").read_text()
    assert "answered (200)" in md and "PCMU" in md and "estimate" in md
    assert "lost 3" in md or "3 (1.5 %)" in md
    assert len(rep.calls) == 1 and len(rep.streams) == 2


def test_replay_main_and_register_only(tmp_path, capsys):
    p = tmp_path / "reg.pcap"
    synth.write_pcap(p, synth.sip_dialog()[:4])
    assert replay.main([str(p), "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "ladder.png").exists()
    assert "4 SIP messages, 0 calls" in capsys.readouterr().out


def test_replay_warns_rtp_without_sdp(tmp_path, scenario):
    _, a2b, _ = scenario
    p = tmp_path / "rtp.pcap"
    synth.write_pcap(p, a2b.pkts)
    rep = replay(p, tmp_path / "o")
    assert any("matches no SDP" in w for w in rep.warnings)


def test_packet_dict(eth_pcap):
    d = packet(eth_pcap, 5)
    assert d["frame"] == 5 and "sip" in d["layers"]
    assert d["layers"]["sip"]["method"] == "INVITE"


def test_packet_inside_running_event_loop(eth_pcap):
    async def inside():
        asyncio.get_running_loop()  # we really are inside a loop, like Jupyter
        return packet(eth_pcap, 1)
    d = asyncio.run(inside())
    assert d["frame"] == 1 and "REGISTER" in str(d["layers"]["sip"])
