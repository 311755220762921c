"""The RTP table: every link type, both directions, SDP and heuristic discovery,
cross-checked against tshark's own RTP dissector."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import synth

from labkit.analysis import rtp_packets


def _expected_rows(stream):
    return [(seq, ts) for _, seq, ts in stream.arrivals]


def test_both_directions(rtp_df, scenario):
    _, a2b, b2a = scenario
    assert len(rtp_df) == len(a2b.arrivals) + len(b2a.arrivals)
    for s in (a2b, b2a):
        rows = rtp_df[(rtp_df["src"] == s.src) & (rtp_df["sport"] == s.sport) & (rtp_df["dst"] == s.dst)]
        assert list(zip(rows["seq"], rows["timestamp"])) == _expected_rows(s)
        assert np.allclose(rows["time"].to_numpy(), [t for t, _, _ in s.arrivals], atol=1e-6)
        assert set(rows["ssrc"]) == {s.ssrc}
        assert set(rows["payload_type"]) == {0} and set(rows["payload_len"]) == {160}
        assert rows["marker"].sum() == 1
        assert set(rows["found_by"]) == {"sdp"}
    assert rtp_df["frame"].is_monotonic_increasing


def test_heuristic_without_sip(eth_pcap, rtp_df):
    df = rtp_packets(eth_pcap)
    assert len(df) == len(rtp_df)
    assert set(df["found_by"]) == {"heuristic"}
    assert "payload" not in df


def test_payload_bytes(rtp_df, scenario):
    _, a2b, _ = scenario
    first = rtp_df[(rtp_df["ssrc"] == a2b.ssrc)].iloc[0]
    assert first["payload"] == a2b.pkts[0].payload[12:]


@pytest.mark.parametrize("fixture", ["sll_pcap", "sll2_pcap", "ng_pcap", "raw_pcap"])
def test_every_link_type_gives_the_same_table(request, fixture, eth_pcap):
    ref = rtp_packets(eth_pcap)
    df = rtp_packets(request.getfixturevalue(fixture))
    cols = ["frame", "src", "sport", "dst", "dport", "ssrc", "seq", "timestamp", "payload_type", "payload_len"]
    assert df[cols].astype(str).equals(ref[cols].astype(str))
    assert np.allclose(df["time"], ref["time"], atol=1e-6)


def test_sdp_finds_short_stream_heuristic_does_not(tmp_path):
    """3 packets are too few for the heuristic but announced in SDP they count."""
    s = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, n=3)
    path = tmp_path / "short.pcap"
    synth.write_pcap(path, sorted(synth.sip_dialog() + s.pkts, key=lambda p: p.time))
    from labkit.analysis import sip_messages
    assert len(rtp_packets(path)) == 0
    assert len(rtp_packets(path, sip=sip_messages(path))) == 3


def test_not_rtp_is_ignored(tmp_path):
    rng = np.random.default_rng(1)
    pkts = []
    for k in range(50):  # random bytes that look like RTP v2 but change SSRC every time
        b = bytearray(rng.integers(0, 256, 172, dtype=np.uint8).tobytes())
        b[0], b[1] = 0x80, 0
        pkts.append(synth.Pkt(1.0 + k * 0.02, "10.0.0.1", 7000, "10.0.0.2", 7002, bytes(b)))
    rtcp = bytes([0x81, 200]) + b"\0" * 26  # RTCP sender reports on a steady flow
    pkts += [synth.Pkt(2.0 + k, "10.0.0.1", 7001, "10.0.0.2", 7003, rtcp) for k in range(20)]
    pkts += [synth.Pkt(3.0 + k * 0.01, "10.0.0.1", 53, "10.0.0.2", 5353, bytes([0x80, 0, 0, k]) + b"\0" * 20)
             for k in range(20)]  # DNS port
    path = tmp_path / "noise.pcap"
    synth.write_pcap(path, sorted(pkts, key=lambda p: p.time))
    assert len(rtp_packets(path)) == 0


def test_ipv6(tmp_path):
    s = synth.rtp_stream("2001:db8::1", 5000, "2001:db8::2", 6000, n=30)
    path = tmp_path / "v6.pcap"
    synth.write_pcap(path, s.pkts)
    df = rtp_packets(path)
    assert len(df) == 30 and set(df["src"]) == {"2001:db8::1"} and set(df["dst"]) == {"2001:db8::2"}
    assert list(df["seq"]) == s.sent_seqs


def test_agrees_with_tshark(ng_pcap):
    """Same packets and sequence numbers as tshark's RTP dissector (heuristic enabled)."""
    out = subprocess.run(["tshark", "-n", "-r", ng_pcap, "--enable-heuristic", "rtp_udp", "-Y", "rtp",
                          "-T", "fields", "-e", "frame.number", "-e", "rtp.seq", "-e", "rtp.ssrc"],
                         capture_output=True, text=True, timeout=120, check=True)
    theirs = [tuple(line.split("\t")) for line in out.stdout.splitlines() if line]
    df = rtp_packets(ng_pcap)
    ours = [(str(f), str(s), f"0x{x:08x}") for f, s, x in zip(df["frame"], df["seq"], df["ssrc"])]
    assert len(ours) == len(theirs) > 300
    assert ours == theirs


@pytest.mark.parametrize("kw", [dict(linktype=0), dict(linktype=1, vlan=42), dict(linktype=1, big_endian=True),
                                dict(linktype=113, nanosecond=True)])
def test_more_file_variants(tmp_path, scenario, eth_pcap, kw):
    """BSD loopback, 802.1Q VLAN, big-endian pcap, nanosecond pcap: same table."""
    path = tmp_path / "variant.pcap"
    synth.write_pcap(path, scenario[0], **kw)
    ref, df = rtp_packets(eth_pcap), rtp_packets(path)
    assert df[["frame", "seq", "ssrc", "src", "dport"]].astype(str).equals(
        ref[["frame", "seq", "ssrc", "src", "dport"]].astype(str))
    assert np.allclose(df["time"], ref["time"], atol=1e-6)
    from labkit.analysis import sip_messages
    assert len(sip_messages(path)) == 11
