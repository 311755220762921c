"""Stream statistics checked against figures computed here from what the builder did."""
from __future__ import annotations

import math

import numpy as np
import pytest
import synth

from labkit.analysis import quality, rtp_packets, rtp_streams


def _row(streams, s):
    r = streams[(streams["src"] == s.src) & (streams["sport"] == s.sport) & (streams["ssrc"] == s.ssrc)]
    assert len(r) == 1
    return r.iloc[0]


def test_two_streams_with_call_id(streams_df):
    assert len(streams_df) == 2
    assert set(streams_df["call_id"]) == {synth.CALL_ID}
    assert set(streams_df["codec"]) == {"PCMU"} and set(streams_df["clock_rate"]) == {8000}
    assert "192.168.0.11:4000 → 192.168.0.10:12000" in set(streams_df["direction"])


def test_loss_reorder_jitter_exact(streams_df, scenario):
    _, a2b, _ = scenario
    r = _row(streams_df, a2b)
    # independent expectations: 200 sent, the dropped set, one swap, no duplicates
    assert r["packets"] == 200 - len(a2b.dropped)
    assert r["expected"] == 200
    assert r["lost"] == len(a2b.dropped) == 3
    assert r["loss_pct"] == pytest.approx(100 * 3 / 200)
    assert r["out_of_order"] == 1
    assert r["duplicates"] == 0
    jmean, jmax = synth.expected_jitter_ms(a2b.arrivals)
    assert r["jitter_mean_ms"] == pytest.approx(jmean, abs=1e-4)
    assert r["jitter_max_ms"] == pytest.approx(jmax, abs=1e-4)
    assert jmean > 1.0  # the test is not vacuous
    times = [t for t, _, _ in a2b.arrivals]
    assert r["max_delta_ms"] == pytest.approx(max(np.diff(times)) * 1000, abs=1e-3)
    assert r["duration"] == pytest.approx(times[-1] - times[0], abs=1e-6)


def test_duplicates_and_wraparound(streams_df, scenario):
    _, _, b2a = scenario
    r = _row(streams_df, b2a)
    assert b2a.sent_seqs[0] == 65500 and b2a.sent_seqs[-1] < 200  # it did wrap
    assert r["packets"] == 202 and r["duplicates"] == 2
    assert r["expected"] == 200
    # RFC 3550 A.3: duplicates count as received, so "lost" is negative here
    assert r["lost"] == -2
    assert r["out_of_order"] == 0
    assert r["jitter_mean_ms"] == pytest.approx(synth.expected_jitter_ms(b2a.arrivals)[0], abs=1e-4)
    assert "Ppl=0.00%" in r["mos_inputs"]  # negative loss is not a bonus


def test_streams_from_path_equals_from_table(eth_pcap, sip_df, streams_df):
    st = rtp_streams(eth_pcap, sip=sip_df)
    cols = ["packets", "expected", "lost", "out_of_order", "duplicates", "call_id"]
    assert st[cols].equals(streams_df[cols])


def test_mos_decreases_with_loss(tmp_path):
    mos = []
    for k, drop in enumerate([[], list(range(10, 410, 100)), list(range(5, 500, 25)), list(range(3, 500, 7))]):
        s = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, n=500, drop=drop)
        path = tmp_path / f"loss{k}.pcap"
        synth.write_pcap(path, s.pkts)
        r = rtp_streams(path).iloc[0]
        assert r["lost"] == len(drop)
        mos.append(r["mos"])
        assert "estimate" in r["mos_inputs"]
    assert mos[0] == pytest.approx(4.41, abs=0.01)  # R = 93.2
    assert all(a > b for a, b in zip(mos, mos[1:])), mos


def test_emodel_formulas():
    q = quality.emodel("PCMU", 0.0, 0.0)
    assert q["r_factor"] == pytest.approx(93.2) and q["mos"] == pytest.approx(4.41, abs=0.005)
    # Ie_eff = 95 * 2 / (2 + 4.3) by hand; Id for Ta = 2 * 10 ms
    q = quality.emodel("PCMA", 2.0, 10.0)
    r = 93.2 - 0.024 * 20 - 95 * 2 / (2 + 4.3)
    assert q["r_factor"] == pytest.approx(r, abs=0.01)
    assert q["mos"] == pytest.approx(1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r), abs=0.01)
    assert quality.emodel("PCMU", 2.0, 0, plc=True)["r_factor"] > quality.emodel("PCMU", 2.0, 0)["r_factor"]
    assert math.isnan(quality.emodel("opus", 1.0, 1.0)["mos"])
    assert quality.r_to_mos(-5) == 1.0 and quality.r_to_mos(120) == 4.5
    assert quality.delay_impairment(200) == pytest.approx(0.024 * 200 + 0.11 * (200 - 177.3))


def test_explain_shows_inputs(streams_df):
    text = quality.explain(streams_df.iloc[1])
    assert "ESTIMATE" in text and "Ppl=" in text and "Bpl=4.3" in text and "G.107" in text


def test_dynamic_payload_type_from_sdp(tmp_path):
    s = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, n=20, pt=8)
    # re-label PCMA as dynamic PT 101 = telephone-event per the SDP (clock from rtpmap)
    for p in s.pkts:
        p.payload = p.payload[:1] + bytes([(p.payload[1] & 0x80) | 101]) + p.payload[2:]
    path = tmp_path / "dyn.pcap"
    synth.write_pcap(path, sorted(synth.sip_dialog() + s.pkts, key=lambda p: p.time))
    from labkit.analysis import sip_messages
    st = rtp_streams(path, sip=sip_messages(path))
    assert st.iloc[0]["codec"] == "telephone-event" and st.iloc[0]["clock_rate"] == 8000


def test_empty_tables_keep_columns(tmp_path):
    path = tmp_path / "sip_only.pcap"
    synth.write_pcap(path, synth.sip_dialog())
    assert len(rtp_packets(path)) == 0
    st = rtp_streams(path)
    assert len(st) == 0 and "mos" in st.columns


def test_reused_media_port_matched_by_time(tmp_path):
    """Two calls one after the other announce the same addr:port (as SIPp does)."""
    t1, t2 = 1_700_000_000.0, 1_700_000_100.0
    pkts = synth.sip_dialog(t0=t1, call_id="first@x") + synth.sip_dialog(t0=t2, call_id="second@x")
    s1 = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, ssrc=1, start=t1 + 1, n=50)
    s2 = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, ssrc=2, start=t2 + 1, n=50)
    path = tmp_path / "two_calls.pcap"
    synth.write_pcap(path, sorted(pkts + s1.pkts + s2.pkts, key=lambda p: p.time))
    from labkit.analysis import sip_messages
    st = rtp_streams(path, sip=sip_messages(path))
    assert dict(zip(st["ssrc"], st["call_id"])) == {1: "first@x", 2: "second@x"}


def test_replay_warns_media_from_unexpected_source(tmp_path):
    pkts = synth.sip_dialog()
    s = synth.rtp_stream("198.51.100.7", 31000, synth.ALICE, 4000, n=30)  # not the answered 192.168.0.10:12000
    path = tmp_path / "nat.pcap"
    synth.write_pcap(path, sorted(pkts + s.pkts, key=lambda p: p.time))
    from labkit.analysis import replay
    rep = replay(path, tmp_path / "out")
    assert any("comes from 198.51.100.7:31000" in w for w in rep.warnings)
