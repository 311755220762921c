"""Bad input gives a CaptureError that explains itself, or empty tables — never a
traceback wall, never a hang."""
from __future__ import annotations

import gzip
import shutil

import pytest
import synth

from labkit.analysis import calls, packet, rtp_packets, rtp_streams, sip_messages
from labkit.analysis import replay as replay_mod
from labkit.analysis.pcapfile import CaptureWarning
from labkit.analysis.tshark import fields_frame
from labkit.errors import CaptureError

READERS = [sip_messages, rtp_packets, rtp_streams, calls, lambda p: packet(p, 1)]


@pytest.mark.parametrize("reader", READERS)
def test_missing_file(tmp_path, reader):
    with pytest.raises(CaptureError, match="does not exist") as e:
        reader(tmp_path / "nope.pcap")
    assert "What to do" in e.value.explain()


@pytest.mark.parametrize("reader", READERS)
def test_empty_file(tmp_path, reader):
    p = tmp_path / "empty.pcap"
    p.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty"):
        reader(p)


@pytest.mark.parametrize("reader", READERS)
def test_text_file(tmp_path, reader):
    p = tmp_path / "notes.pcap"
    p.write_text("INVITE sip:bob@example.com SIP/2.0\nthis is a text file, not a capture\n")
    with pytest.raises(CaptureError, match="not a pcap or pcapng") as e:
        reader(p)
    assert e.value.hint


def test_gzip_and_directory(tmp_path, eth_pcap):
    gz = tmp_path / "call.pcap.gz"
    with open(eth_pcap, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with pytest.raises(CaptureError, match="gzip"):
        rtp_packets(gz)
    with pytest.raises(CaptureError, match="directory"):
        sip_messages(tmp_path)


def test_header_cut(tmp_path, eth_pcap):
    p = tmp_path / "head.pcap"
    p.write_bytes(open(eth_pcap, "rb").read()[:10])
    with pytest.raises(CaptureError, match="header"):
        rtp_packets(p)


@pytest.mark.parametrize("fixture", ["eth_pcap", "ng_pcap"])
def test_truncated_reads_complete_packets_and_warns(request, tmp_path, fixture, scenario):
    """Documented choice: a file cut mid-record is read up to its last complete packet,
    with a CaptureWarning (also kept in df.attrs["warnings"])."""
    src = request.getfixturevalue(fixture)
    data = open(src, "rb").read()
    p = tmp_path / ("cut" + src[-7:])
    p.write_bytes(data[: len(data) // 2 + 101])
    full = rtp_packets(src)
    with pytest.warns(CaptureWarning, match="middle"):
        part = rtp_packets(p)
    assert 0 < len(part) < len(full)
    assert part["frame"].tolist() == full["frame"].tolist()[: len(part)]
    assert any("middle" in w for w in part.attrs["warnings"])
    with pytest.warns(CaptureWarning):
        s = sip_messages(p)
    assert (s["method"] == "INVITE").any()


def test_capture_without_sip(tmp_path, scenario):
    _, a2b, b2a = scenario
    p = tmp_path / "rtp_only.pcap"
    synth.write_pcap(p, sorted(a2b.pkts + b2a.pkts, key=lambda x: x.time))
    s = sip_messages(p)
    assert len(s) == 0 and "call_id" in s.columns
    assert len(calls(s)) == 0
    assert len(rtp_packets(p, sip=s)) == len(a2b.pkts) + len(b2a.pkts)
    st = rtp_streams(p, sip=s)
    assert len(st) == 2 and st["call_id"].isna().all()


def test_tshark_timeout_is_enforced(eth_pcap):
    with pytest.raises(CaptureError, match="longer than"):
        fields_frame(eth_pcap, ["frame.number"], timeout=0.001)


def test_replay_main_friendly_error(tmp_path, capsys):
    p = tmp_path / "bad.pcap"
    p.write_text("hello")
    rc = replay_mod.main([str(p), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not a pcap" in err and "Traceback" not in err
    assert replay_mod.main([str(tmp_path / "missing.pcap")]) == 2


def test_packet_bad_frame_number(eth_pcap):
    with pytest.raises(CaptureError, match="no frame number"):
        packet(eth_pcap, 100000)
    with pytest.raises(CaptureError):
        packet(eth_pcap, 0)
