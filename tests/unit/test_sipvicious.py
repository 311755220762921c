"""SIPVicious runs from a lab host: bounded by the kit, their tables read (no root, no network)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import tracks  # noqa: E402
from labkit.errors import LabStateError  # noqa: E402
from labkit.net.netns import Namespace  # noqa: E402
from labkit.services.asterisk.config import render_pbx  # noqa: E402
from labkit.services.base import Credentials, ServiceContext  # noqa: E402
from labkit.services.sipvicious import MAX_SECONDS, MAX_TARGETS, SipviciousRun, parse_table  # noqa: E402
from labkit.spec import load_spec  # noqa: E402
from labkit.state import LabRecord  # noqa: E402

NETS = ["203.0.113.0/24"]


def _context(tmp: Path) -> ServiceContext:
    return ServiceContext(lab="t", host="attacker", namespace=Namespace("lk-t-attacker"), rootfs=tmp,
                          config_dir=tmp / "config", state_dir=tmp / "run", log_dir=tmp / "logs",
                          recordings_dir=tmp / "rec", etc_dir=tmp / "etc", record=LabRecord(name="t"))


def _run(tmp_path, **kw) -> SipviciousRun:
    args = {"tool": "svwar", "target": "203.0.113.10", "networks": NETS, "extensions": "5990-6010", **kw}
    return SipviciousRun(_context(tmp_path), **args)


def test_svwar_command_line(tmp_path):
    run = _run(tmp_path, timeout=20)
    assert run.program() == ["svwar", "-P", "5065", "--maximumtime", "20", "-m", "REGISTER", "-e", "5990-6010",
                             "-p", "5060", "203.0.113.10"]


def test_debian_0_3_4_names_are_used_when_present(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/sipvicious_svwar").touch()
    assert _run(tmp_path).program()[0] == "sipvicious_svwar"


@pytest.mark.parametrize("kw, words", [
    ({"target": "192.0.2.10"}, "not in the lab's networks"),
    ({"target": "8.8.8.8"}, "not in the lab's networks"),
    ({"target": "not-an-address"}, "not an address"),
    ({"extensions": f"1-{MAX_TARGETS + 1}"}, f"more than {MAX_TARGETS} extensions"),
    ({"extensions": "60xx"}, "not a range"),
    ({"tool": "svcrack", "extension": "6000", "passwords": []}, "1 to"),
    ({"tool": "svcrack", "extension": "6000", "passwords": ["x"] * (MAX_TARGETS + 1)}, "1 to"),
    ({"tool": "svmap", "target": "203.0.112.0/23"}, "not in the lab's networks"),
    ({"tool": "svcrash"}, "No SIPVicious tool"),
])
def test_attacks_stay_bounded(tmp_path, kw, words):
    with pytest.raises(LabStateError, match=words):
        _run(tmp_path, **kw)


def test_the_deadline_is_capped(tmp_path):
    assert _run(tmp_path, timeout=3600).timeout == MAX_SECONDS


def test_parse_table():
    output = """WARNING:root:something
+-----------+----------------+
| Extension | Authentication |
+===========+================+
| 6000      | reqauth        |
+-----------+----------------+
| 6001      | noauth         |
+-----------+----------------+
"""
    assert parse_table(output) == [{"extension": "6000", "authentication": "reqauth"},
                                   {"extension": "6001", "authentication": "noauth"}]
    assert parse_table("ERROR: found nothing") == []


SECRETS = {"6000": "alice-secret-0", "6001": "bob-secret-000"}


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_security_settings_render(track, tmp_path):
    config = tracks.get(track).sip_config
    credentials = Credentials(secrets=SECRETS, ami_user="labkit", ami_secret="ami-secret-000")

    def render(variant=None):
        spec = load_spec("exposed-pbx", load_spec("exposed-pbx").variant(variant) if variant else None)
        out = tmp_path / (variant or "shipped")
        return Path(render_pbx(spec, track, credentials, out)[config]).read_text()

    shipped, guests, leaky = render(), render("guests"), render("leaky-auth")
    if track == "legacy":
        assert "allowguest = no" in shipped and "alwaysauthreject = yes" in shipped
        assert "allowguest = yes" in guests and "context = unauthenticated" in guests
        assert "alwaysauthreject = no" in leaky
    else:
        assert "[anonymous]" not in shipped and "[anonymous]" not in leaky  # PJSIP has no leak to switch on
        assert "[anonymous]\ntype = endpoint\ncontext = unauthenticated" in guests


def test_a_guest_context_must_exist(tmp_path):
    from labkit.errors import LabFileError
    with pytest.raises(LabFileError, match="guests are allowed and land in context 'nowhere'"):
        load_spec("exposed-pbx", {"pbx": {"security": {"allow_guest": True, "guest_context": "nowhere"}}})
