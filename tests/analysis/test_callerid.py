"""caller_ids: who each INVITE says is calling, read from a committed capture of the trunk."""
from __future__ import annotations

from pathlib import Path

import pytest

from labkit import analysis
from labkit.analysis import callerid
from labkit.errors import CaptureError

PCAP = Path(__file__).resolve().parents[1] / "data" / "callerid" / "trunk-invites.pcap"
PBX, CARRIER, PSTN, CAROL = "198.51.100.10", "203.0.113.10", "203.0.113.30", "203.0.113.31"


@pytest.fixture(scope="module")
def ids():
    return analysis.caller_ids(PCAP)


def test_one_row_per_invite_with_every_column(ids):
    assert list(ids.columns) == callerid.COLUMNS
    assert len(ids) == 16 and list(ids.frame) == list(range(1, 17))


def test_from_stays_the_line_and_the_identity_is_in_pai(ids):
    out = ids[ids.src == PBX]
    assert set(out.from_user) == {"0033199001234"}          # fromuser = the line
    assert list(out.pai_user) == ["0033199001234"] * 2 + ["0033199001235"] * 2 + ["anonymous"] * 4


def test_the_carrier_asserts_what_it_checked(ids):
    on = ids[(ids.src == CARRIER) & (ids.dst == PSTN)]
    # the line, the alias, and twice the line in place of chan_sip's anonymous identity
    assert list(on.pai_user) == ["0033199001234", "0033199001235", "0033199001234", "0033199001234"]
    assert list(on.from_user) == list(on.pai_user)
    assert (on.privacy == "").all()


def test_the_subscriber_sees_the_national_form(ids):
    assert list(ids[ids.dst == CAROL].from_user) == ["0199001234", "0199001235", "0199001234", "0199001234"]


def test_remote_party_id_is_read_from_the_header_block():
    block = 'Via: x\nRemote-Party-ID: "Bob" <sip:0033199001235@sip.carrier.example>;party=calling\nTo: y'
    assert callerid._RPID.search(block).group("user") == "0033199001235"
    assert callerid._RPID.search("From: <sip:1@x>\nTo: <sip:2@y>") is None


def test_a_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError):
        analysis.caller_ids(tmp_path / "nothing.pcap")
