"""Replay of the reference captures in data/: exact figures, cross-checked with tshark."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from labkit import analysis

DATA = Path(__file__).resolve().parents[2] / "data"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
REFERENCE = {c["track"]: DATA / c["file"] for c in MANIFEST["captures"] if c["scenario"] == "first-call"}
TRACKS = ["modern", "legacy"]
# What the first-call scenario must show, whatever the track (ports are drawn at random
# by the phones and Asterisk; the counts and the shape are not).
EXPECTED_METHODS = {"REGISTER": 4, "INVITE": 3, "ACK": 3, "BYE": 2}
EXPECTED_STATUSES = {200: 6, 401: 3, 180: 2, 100: 1}
EXPECTED_PACKETS = {"modern": [152, 152, 152, 152], "legacy": [152, 152, 152, 153]}


def test_manifest_describes_each_capture():
    assert set(REFERENCE) == set(TRACKS)
    listed = {entry["file"] for entry in MANIFEST["captures"]}
    on_disk = {p for pattern in ("*.pcap", "*.pcapng") for p in (DATA / "captures").glob(pattern)}
    assert listed == {str(p.relative_to(DATA)) for p in on_disk}
    for entry in MANIFEST["captures"]:
        path = DATA / entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
        assert entry["bytes"] == path.stat().st_size < 1 << 20
        assert entry["software"]["asterisk"].startswith("22." if entry["track"] == "modern" else "16.")
        assert entry["what_it_shows"] and entry["recorded_at"]


@pytest.mark.parametrize("track", TRACKS)
def test_sip_table_exact(track):
    sip = analysis.sip_messages(REFERENCE[track])
    assert len(sip) == 24
    requests = Counter(sip[sip.is_request].method)
    assert dict(requests) == EXPECTED_METHODS
    assert dict(Counter(sip[~sip.is_request].status_code.astype(int))) == EXPECTED_STATUSES
    registers = sip[sip.method == "REGISTER"]
    assert list(registers.has_auth) == [False, True, False, True] or \
        sorted(registers.has_auth) == [False, False, True, True]
    challenged = sip[sip.status_code == 401]
    assert challenged.asks_auth.all()
    # Independent count: tshark's own SIP dissector.
    frames = subprocess.run(["tshark", "-r", str(REFERENCE[track]), "-Y", "sip", "-T", "fields",
                             "-e", "frame.number"], capture_output=True, text=True, check=True)
    assert len(frames.stdout.split()) == 24


@pytest.mark.parametrize("track", TRACKS)
def test_calls_and_streams_exact(track):
    sip = analysis.sip_messages(REFERENCE[track])
    calls = analysis.calls(sip)
    assert len(calls) == 2 and (calls.final_status == 200).all()
    assert calls.duration.between(2.9, 3.2).all()
    streams = analysis.rtp_streams(REFERENCE[track], sip=sip)
    assert sorted(streams.packets) == EXPECTED_PACKETS[track]
    assert (streams.lost == 0).all() and (streams.out_of_order == 0).all()
    assert (streams.codec == "PCMU").all() and (streams.mos > 4.3).all()
    # Independent count: tshark with its RTP heuristic, packets per (src, sport, dst, dport)
    # (not RTP quoted inside an ICMP "port unreachable", which is not a delivered packet).
    out = subprocess.run(["tshark", "-r", str(REFERENCE[track]), "--enable-heuristic", "rtp_udp",
                          "-Y", "rtp && !icmp", "-T", "fields", "-e", "ip.src", "-e", "udp.srcport",
                          "-e", "ip.dst", "-e", "udp.dstport"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    by_tshark = Counter(tuple(line.split("\t")) for line in out)
    by_kit = {(r.src, str(r.sport), r.dst, str(r.dport)): r.packets for r in streams.itertuples()}
    assert by_kit == dict(by_tshark)


@pytest.mark.parametrize("track", TRACKS)
def test_audio_in_the_capture_is_the_same_both_legs(track):
    """What Bob sent to Asterisk is what Asterisk sent to Alice (media anchored, G.711 relayed)."""
    sip = analysis.sip_messages(REFERENCE[track])
    rtp = analysis.rtp_packets(REFERENCE[track], sip=sip, with_payload=True)
    streams = analysis.rtp_streams(rtp, sip=sip)
    bob_out = streams[streams.src == "192.168.0.12"].iloc[0]
    alice_in = streams[streams.dst == "192.168.0.11"].iloc[0]
    assert analysis.correlate(analysis.decode_stream(rtp, alice_in),
                              analysis.decode_stream(rtp, bob_out)) > 0.99


def test_replay_command_writes_its_report(tmp_path):
    result = subprocess.run([sys.executable, "-m", "labkit.cli", "replay", str(REFERENCE["modern"]),
                             "-o", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert {"sip.csv", "calls.csv", "streams.csv", "report.md"} <= names
    assert any(n.endswith(".png") for n in names) and any(n.endswith(".svg") for n in names)
    report = (tmp_path / "report.md").read_text()
    assert "24" in report and "PCMU" in report


def test_replay_command_bad_file(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a capture\n")
    result = subprocess.run([sys.executable, "-m", "labkit.cli", "replay", str(bad), "-o",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "capture" in result.stderr.lower()
