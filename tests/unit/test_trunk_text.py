"""Unit: a trunk written as sip.conf / pjsip.conf text, read into the lab file (notebook 05)."""
from __future__ import annotations

import pytest

from labkit.spec import load_spec, merge_overrides, stanza
from labkit.teaching import trunk
from labkit.teaching.trunk import LETTER, TrunkTextError, letter_overrides, parse_register, trunk_settings

PASSWORD = LETTER["password"]
SIP = f"""
[general]
register => 0033199001234@sip.carrier.example:{PASSWORD}:0033199001234@proxy.carrier.example/0033199001234~600

[carrier]
type = peer
host = sip.carrier.example
outboundproxy = proxy.carrier.example
fromdomain = sip.carrier.example
fromuser = 0033199001234
defaultuser = 0033199001234
secret = {PASSWORD}
insecure = invite,port
qualify = yes
context = from-carrier
disallow = all
allow = alaw
allow = ulaw
"""
PJSIP = rf"""
[carrier-auth]
type = auth
auth_type = userpass
username = 0033199001234
password = {PASSWORD}

[carrier-reg]
type = registration
outbound_auth = carrier-auth
server_uri = sip:sip.carrier.example
client_uri = sip:0033199001234@sip.carrier.example
contact_user = 0033199001234
outbound_proxy = sip:proxy.carrier.example\;lr   ; the proxy

[carrier]
type = aor
contact = sip:sip.carrier.example
qualify_frequency = 60

[carrier]
type = endpoint
context = from-carrier
allow = alaw,ulaw
outbound_auth = carrier-auth
aors = carrier
outbound_proxy = sip:proxy.carrier.example\;lr
from_domain = sip.carrier.example
from_user = 0033199001234

[carrier-identify]
type = identify
endpoint = carrier
match = 203.0.113.10
"""
LETTER_TRUNK = {"account": "0033199001234", "password": PASSWORD, "domain": "sip.carrier.example",
                "proxy": "proxy.carrier.example", "host": None}


@pytest.mark.parametrize("config,text", [("sip.conf", SIP), ("pjsip.conf", PJSIP)])
def test_the_letters_trunk_reads_as_the_letter_and_loads(config, text):
    reading = trunk_settings(text, config)
    assert reading.problems == []
    assert {k: reading.settings.get(k) for k in LETTER_TRUNK} == LETTER_TRUNK
    assert reading.settings["codecs"] == ["alaw", "ulaw"] and reading.settings["qualify"] is True
    spec = load_spec("trunk-office", merge_overrides(letter_overrides(), reading.overrides()))
    assert spec.pbx.trunk.domain == "sip.carrier.example" and spec.pbx.trunk.proxy == "proxy.carrier.example"


def test_register_line_full_syntax():
    assert parse_register("carrier?udp://0033199001234@sip.carrier.example:pw-1:login@proxy.example:5060"
                          "/0033199001234~300") == {
        "user": "0033199001234", "domain": "sip.carrier.example", "secret": "pw-1", "authuser": "login",
        "host": "proxy.example", "port": "5060", "contact": "0033199001234", "expiry": "300", "transport": "udp"}
    # the report's short form: no domain, the host is both
    short = parse_register("0033199001234:pw@sip.carrier.example/0033199001234")
    assert short["domain"] is None and short["host"] == "sip.carrier.example" and short["secret"] == "pw"


def test_mistakes_are_read_as_the_lab_runs_them():
    to_proxy = trunk_settings(SIP.replace("0033199001234@sip.carrier.example:", "0033199001234@proxy.carrier.example:"),
                              "sip.conf")
    assert to_proxy.settings["domain"] == "proxy.carrier.example"
    wrong = trunk_settings(PJSIP.replace(f"password = {PASSWORD}", "password = nope-nope"), "pjsip.conf")
    assert wrong.problems == [] and wrong.settings["password"] == "nope-nope"   # measured: 403
    calls = trunk_settings(SIP.replace("host = sip.carrier.example", "host = proxy.carrier.example"), "sip.conf")
    assert calls.settings["host"] == "proxy.carrier.example"                    # measured: 400


def test_what_the_lab_cannot_run_is_refused_with_the_reason():
    no_lr = trunk_settings(PJSIP.replace(r"\;lr", ""), "pjsip.conf").problems
    assert any("strict routing" in p for p in no_lr)
    login = trunk_settings(PJSIP.replace("username = 0033199001234", "username = someone"), "pjsip.conf").problems
    assert any("login is the line" in p for p in login)
    two = trunk_settings(SIP.replace(f"secret = {PASSWORD}", "secret = other-one"), "sip.conf").problems
    assert any("one account, one password" in p for p in two)
    with pytest.raises(TrunkTextError, match="No \\[carrier\\] section"):
        trunk_settings(SIP.replace("[carrier]", "[trunk-ovh]"), "sip.conf")
    with pytest.raises(TrunkTextError, match="not valid here"):
        trunk_settings("[general]\n#include /etc/passwd\n", "sip.conf")
    with pytest.raises(TrunkTextError, match="not valid here"):
        trunk_settings(PJSIP + "\n[x]\ntype = endpoint\nset_var = EVIL=1\n", "pjsip.conf")


def test_stanza_escaped_semicolons_only_where_asked():
    parsed, problems = stanza.parse("[a]\noutbound_proxy = sip:p.example\\;lr ; comment\n", stanza.PJSIP_TRUNK)
    assert problems == [] and parsed.options("a") == {"outbound_proxy": "sip:p.example\\;lr"}
    parsed, _ = stanza.parse("tlsenable = yes ; comment\n", stanza.CHAN_SIP_TLS)   # unchanged for TLS
    assert parsed.options() == {"tlsenable": "yes"}
    _, problems = stanza.parse("tlsbindaddr = 0.0.0.0:5061\\;x\n", stanza.CHAN_SIP_TLS)
    assert problems  # a backslash is still refused there


def test_fix_settings_and_faults():
    assert trunk.fix_settings("password: abc-123\n") == {"password": "abc-123"}
    with pytest.raises(TrunkTextError, match="not a key"):
        trunk.fix_settings("context: evil\n")
    with pytest.raises(TrunkTextError, match="quote numbers"):
        trunk.fix_settings("account: 33199001234\n")
    seen = {trunk.pick_trunk_fault(f"s{i}")[1] for i in range(60)}
    assert seen == set(trunk.TRUNK_FAULTS)
    for fault in trunk.TRUNK_FAULTS:
        load_spec("trunk-office", trunk.fault_overrides(fault))


def test_trunk_log_lines_keep_the_trunks_warnings():
    log = ("[2026-01-01 10:00:00.000] WARNING[12] chan_sip.c: getaddrinfo(\"sip.carrier.example\", \"(null)\", ...): "
           "Name or service not known\n[2026-01-01 10:00:00.001] VERBOSE[2] pbx_app.c: Registered application 'Dial'\n"
           "[2026-01-01 10:00:01.000] WARNING[28] res_pjsip_outbound_registration.c: Fatal response '403' received\n")
    assert trunk.trunk_log_lines(log) == [
        'WARNING chan_sip.c: getaddrinfo("sip.carrier.example", "(null)", ...): Name or service not known',
        "WARNING res_pjsip_outbound_registration.c: Fatal response '403' received"]
