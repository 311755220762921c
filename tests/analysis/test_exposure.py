"""exposure: what an observer on each segment of the whole chain reads, measured from captures
recorded live (tests/data/exposure: one call, Alice with TLS + SRTP behind the box's NAT, to
Carol's PSTN number through the VPS and the trunk)."""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest

from labkit import analysis
from labkit.errors import CaptureError

DATA = Path(__file__).resolve().parents[1] / "data" / "exposure"
SEGMENTS = {s: DATA / f"chain-{s}.pcap" for s in ("lan", "internet", "carrier")}
# The function labkit.analysis.exposure shadows its module's name (as replay does).
exposure_module = importlib.import_module("labkit.analysis.exposure")
KEYS = DATA / "chain.keys"
NAMES = {"192.168.0.11": "alice", "203.0.113.1": "box", "203.0.113.10": "vps", "203.0.113.50": "bob",
         "198.51.100.10": "telco", "198.51.100.30": "pstn", "198.51.100.31": "carol"}


@pytest.fixture(scope="module")
def table():
    return analysis.exposure(SEGMENTS, NAMES)


def _row(table, segment, a, b):
    rows = table[(table.segment == segment) & (table.a == a) & (table.b == b)]
    assert len(rows) == 1, table[["segment", "a", "b"]]
    return rows.iloc[0]


def test_fixtures_stay_small():
    assert all(p.stat().st_size < 200 * 1024 for p in DATA.iterdir())


def test_one_row_per_segment_and_pair_of_talkers(table):
    assert list(table.columns) == exposure_module.COLUMNS
    assert list(table.segment.unique()) == ["lan", "internet", "carrier"]  # the order given
    pairs = {(r.segment, r.a, r.b) for r in table.itertuples()}
    assert pairs == {("lan", "alice", "vps"),
                     ("internet", "bob", "vps"), ("internet", "box", "vps"),
                     ("internet", "pstn", "vps"), ("internet", "telco", "vps"),
                     ("carrier", "carol", "pstn"), ("carrier", "pstn", "telco"),
                     ("carrier", "pstn", "vps"), ("carrier", "telco", "vps")}


def test_the_phones_side_shows_tls_and_srtp_only(table):
    for segment, a in (("lan", "alice"), ("internet", "box")):
        row = _row(table, segment, a, "vps")
        assert row.signalling == "TLS/5061" and row.tls_sessions == 1
        assert (row.sip_messages, row.sip_readable, row.sdp_keys, row.keys_readable) == (0, False, 0, False)
        assert row.media == "SRTP" and row.media_streams == 2 and row.media_entropy > 7.9
        assert not row.media_readable and row.audio_seconds == 0
    bob = _row(table, "internet", "bob", "vps")  # registered over TLS, not in this call
    assert bob.signalling == "TLS/5061" and not bob.sip_readable and bob.media == ""


def test_the_trunk_is_read_in_clear(table):
    for segment in ("internet", "carrier"):  # the VPS's uplink, then the carrier's network
        sip = _row(table, segment, "telco", "vps")
        assert sip.signalling == "SIP/UDP" and sip.sip_readable and sip.sip_messages == 18
        assert set(sip.methods.split(", ")) == {"REGISTER", "INVITE", "ACK", "BYE"}
        media = _row(table, segment, "pstn", "vps")  # media goes VPS ↔ PSTN, not through Kamailio
        assert media.media == "RTP" and media.media_readable and media.audio_seconds >= 2
        assert 5 < media.media_entropy < 7  # G.711 speech, not ciphertext
    carol = _row(table, "carrier", "carol", "pstn")
    assert carol.sip_readable and carol.media == "RTP" and carol.media_readable


def test_by_segment(table):
    seg = analysis.exposure_by_segment(table).set_index("segment")
    assert list(seg.index) == ["lan", "internet", "carrier"]
    assert seg.loc["lan", ["sip_readable", "keys_readable", "media", "media_readable"]].tolist() == \
        [False, False, "SRTP", False]
    assert seg.loc["carrier", ["sip_readable", "keys_readable", "media", "media_readable"]].tolist() == \
        [True, False, "RTP", True]
    assert seg.loc["internet", "media"] == "RTP+SRTP" and seg.loc["internet", "pairs"] == 4
    assert seg.loc["lan", "talkers"] == "alice ↔ vps"


def test_with_the_tls_keys_the_sip_and_the_sdes_keys_are_read_and_the_srtp_opens():
    """TLS was all that hid the keys: SDES puts them in the SDP (RFC 4568 §8.3)."""
    keyed = analysis.exposure({"lan": SEGMENTS["lan"]}, NAMES, tls_keylog=KEYS)
    row = _row(keyed, "lan", "alice", "vps")
    assert row.sip_readable and "INVITE" in row.methods and "(decrypted)" in row.signalling
    assert row.keys_readable and row.sdp_keys >= 2
    assert row.media == "SRTP" and row.media_readable and row.audio_seconds >= 2
    # A key log per segment: the segments without one stay closed.
    mixed = analysis.exposure({"lan": SEGMENTS["lan"], "internet": SEGMENTS["internet"]}, NAMES,
                              tls_keylog={"lan": KEYS})
    assert _row(mixed, "lan", "alice", "vps").sip_readable
    assert not _row(mixed, "internet", "box", "vps").sip_readable


def test_without_names_addresses_are_shown_and_empty_or_bad_captures(tmp_path):
    table = analysis.exposure({"lan": SEGMENTS["lan"]})
    assert {(r.a, r.b) for r in table.itertuples()} == {("192.168.0.11", "203.0.113.10")}
    empty = tmp_path / "empty.pcap"
    shutil.copy(SEGMENTS["lan"], empty)
    empty.write_bytes(empty.read_bytes()[:24])  # the pcap header, no packet
    assert analysis.exposure({"nothing": empty}).empty
    assert list(analysis.exposure({"nothing": empty}).columns) == exposure_module.COLUMNS
    with pytest.raises(CaptureError):
        analysis.exposure({"missing": tmp_path / "missing.pcap"})
