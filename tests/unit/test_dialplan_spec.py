"""The report's dialplan and caller ID in a lab file (issue 13): checks, renders, the carrier.

Fast, no root, no network.  Goldens in tests/golden/render/{modern,legacy}-dialplan/ and
carrier-inbound/ (regenerate with LABKIT_UPDATE_GOLDEN=1 and read the diff).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden import assert_golden  # noqa: E402

from labkit import tracks  # noqa: E402
from labkit.errors import LabFileError  # noqa: E402
from labkit.services import kamailio  # noqa: E402
from labkit.services.asterisk.config import render_pbx  # noqa: E402
from labkit.services.base import Credentials  # noqa: E402
from labkit.spec import load_spec  # noqa: E402
from labkit.spec.dialplan import dialplan_problems, pattern_problem  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "render"
TRACKS = ["modern", "legacy"]
SECRETS = {"330": "alice-secret-0", "520": "bob-secret-00", "carrier/0033199001234": "line-password-0",
           "pstn/0639980001": "carol-pw-00"}
CREDENTIALS = Credentials(secrets=SECRETS, ami_user="labkit", ami_secret="ami-secret-000")


def _spec(variant: str | None = None, **overrides):
    base = load_spec("dialplan-office")
    return load_spec("dialplan-office", {**(base.variant(variant) if variant else {}), **overrides})


def _render(track: str, tmp_path: Path, spec=None) -> dict[str, str]:
    files = render_pbx(spec or _spec(), track, CREDENTIALS, tmp_path / track)
    return {name: Path(path).read_text() for name, path in files.items()}


@pytest.mark.parametrize("pattern", ["_0[1-7]XXXXXXXX", "_09XXXXXXXX", "_X.", "_3651.", "_+33X.", "_NXX!",
                                     "_[2-9]XX", "_[a-c]X", "330", "s", "0033199001234"])
def test_valid_extensions(pattern):
    assert pattern_problem(pattern) is None


@pytest.mark.parametrize("pattern, words", [
    ("_0[1-7]XXXXXXXY", "'Y' is no pattern character"),
    ("_06-12", "'-' is no pattern character"),
    ("_0.X", "'.' or '!' can only end a pattern"),
    ("_[]X", "'[', ']' is no pattern character"),
    ("_", "matches nothing"),
])
def test_invalid_patterns_say_why(pattern, words):
    assert words in pattern_problem(pattern)


def test_the_shipped_lab_and_its_variants_have_no_dialplan_problem():
    base = load_spec("dialplan-office")
    for variant in [None, *base.variants]:
        assert dialplan_problems(_spec(variant)) == []


def _refused(**overrides) -> list[str]:
    """The problems listed when dialplan-office is loaded with ``overrides``."""
    with pytest.raises(LabFileError) as info:
        _spec(**overrides)
    return [line for line in str(info.value).splitlines() if line.startswith("  - ")]


def test_jumps_to_missing_contexts_are_found_in_goto_gosub_gotoif_and_include():
    problems = _refused(pbx={"dialplan": {"outgoing": [
        "exten => 1,1,Goto(nowhere,s,1)", "exten => 2,1,Gosub(sub-none,s,1)",
        "exten => 3,1,GotoIf($[1]?incoming,s,1:elsewhere,s,1)", "include => missing",
        "exten => 4,1,Goto(s,1)", "exten => 5,1,Goto(${CTX},s,1)"]}})
    assert [p.split("'")[1] for p in problems] == ["nowhere", "sub-none", "elsewhere", "missing"]
    assert all("which the dialplan does not declare" in p for p in problems)


def test_a_did_must_be_the_lines_in_any_form():
    owned = ["0033199001234", "0199001234", "+33199001235"]
    lines = [f"exten => {n},1,Hangup()" for n in owned] + ["exten => s,1,Hangup()", "exten => 330,1,Hangup()"]
    assert dialplan_problems(_spec(pbx={"dialplan": {"incoming": lines}})) == []
    problems = _refused(pbx={"dialplan": {"incoming": [*lines, "exten => 0353010001,1,Hangup()"]}})
    assert len(problems) == 1 and problems[0].startswith("  - pbx.dialplan.incoming[5]")
    assert "0353010001 is not a number of the trunk's account" in problems[0]


@pytest.mark.parametrize("track", TRACKS)
def test_dialplan_matches_goldens(track, tmp_path):
    files = _render(track, tmp_path)
    assert_golden(files["extensions.conf"], GOLDEN / f"{track}-dialplan" / "extensions.conf")
    assert_golden(files[tracks.get(track).sip_config], GOLDEN / f"{track}-dialplan" / tracks.get(track).sip_config)


@pytest.mark.parametrize("track", TRACKS)
def test_the_report_dialplan_is_rendered_with_the_tracks_technology(track, tmp_path):
    text = _render(track, tmp_path)["extensions.conf"]
    tech = tracks.get(track).channel_tech
    assert f"exten => 330,1,Dial({tech}/330,20,tr)" in text
    assert f"same => n(dial),Dial({tech}/${{EXTEN}}@carrier,30)" in text
    assert "exten => 0199001234,1,Goto(0033199001234,1)" in text and "exten => s,1,NoOp" in text
    assert "{{ tech }}/" not in text


@pytest.mark.parametrize("track", TRACKS)
def test_contact_user_identity_and_trust_render(track, tmp_path):
    sip = track == "legacy"
    config = tracks.get(track).sip_config
    default = _render(track, tmp_path / "a")[config]
    assert ("/0033199001234~600" in default) if sip else ("contact_user = 0033199001234" in default)
    assert ("sendrpid = pai" in default) if sip else ("send_pai = yes" in default)
    assert "trust_id_outbound" not in default
    no_contact = _render(track, tmp_path / "b", _spec("contact-s"))[config]
    assert ("@proxy.carrier.example~600" in no_contact) if sip else ("contact_user = s" in no_contact)
    trusted = _render(track, tmp_path / "c", _spec("withhold-trusted"))[config]
    assert "trust_id_outbound = yes" in trusted
    rpid = _render(track, tmp_path / "d", _spec(pbx={"trunk": {"identity": "rpid"}}))[config]
    assert ("sendrpid = yes" in rpid) if sip else ("send_rpid = yes" in rpid and "send_pai" not in rpid)
    none = _render(track, tmp_path / "e", _spec(pbx={"trunk": {"identity": "none"}}))[config]
    assert ("sendrpid = no" in none) if sip else ("send_pai" not in none and "send_rpid" not in none)


def _carrier(variant: str | None = None) -> str:
    return kamailio.render_carrier(_spec(variant), {"0033199001234": "line-password-0"})


def test_carrier_inbound_uri_forms():
    assert_golden(_carrier(), GOLDEN / "carrier-inbound" / "kamailio.cfg")
    forms = {"international": "$rU = $var(n);", "national": '$rU = "0" + $(var(n){s.substr,4,0});',
             "e164": '$rU = "+33" + $(var(n){s.substr,4,0});'}
    assert forms["international"] in _carrier()
    assert forms["national"] in _carrier("inbound-national") and forms["e164"] in _carrier("inbound-e164")
    contact = _carrier("inbound-contact")
    assert not any(line in contact for line in forms.values())


def test_carrier_keeps_one_contact_per_line():
    assert 'save("location", "0x04")' in _carrier()
