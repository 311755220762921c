"""fail2ban beside Asterisk: its jail from the lab file, and when a lab gets one (no root)."""
from __future__ import annotations

from labkit.services import fail2ban
from labkit.services.fail2ban import FAIL2BAN_LOCAL, render_jail
from labkit.spec import load_spec
from labkit.spec.model import Fail2ban


def test_the_jail_says_what_the_lab_file_says():
    text = render_jail(Fail2ban(maxretry=3, findtime=30, bantime=120), [5060, 5061])
    lines = text.splitlines()
    for line in ("[asterisk]", "enabled = true", "filter = asterisk", "logpath = /var/log/asterisk/security",
                 "port = 5060,5061", "maxretry = 3", "findtime = 30", "bantime = 120",
                 "banaction = nftables-allports", "backend = polling"):
        assert line in lines, line
    assert text.count("enabled = true") == 1          # no other jail


def test_the_server_keeps_its_files_in_the_sandbox():
    assert "socket = /run/fail2ban/fail2ban.sock" in FAIL2BAN_LOCAL
    assert "dbfile = :memory:" in FAIL2BAN_LOCAL and "logtarget = STDOUT" in FAIL2BAN_LOCAL


class _Lab:
    def __init__(self, spec):
        self.spec = spec


def test_only_a_lab_that_asks_for_it_gets_fail2ban():
    assert fail2ban.provide(_Lab(load_spec("exposed-pbx"))) == []
    assert load_spec("exposed-pbx", load_spec("exposed-pbx").variant("fail2ban")).pbx.fail2ban == Fail2ban(
        maxretry=5, findtime=60, bantime=60)
