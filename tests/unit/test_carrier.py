"""Unit tests of the carrier (issue 12): its lab-file sections, Kamailio's configuration, the
PSTN exchange's, the lab DNS's records, and reading a trunk's state on both tracks.

Fast, no root, no network.  Goldens in tests/golden/render/carrier/ and pstn/ (regenerate
with LABKIT_UPDATE_GOLDEN=1, then read the diff).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from golden import assert_golden

from labkit import services, tracks
from labkit.errors import DaemonError, LabFileError
from labkit.lab import Lab
from labkit.net.netns import Namespace
from labkit.services import kamailio
from labkit.services.base import Credentials, ServiceContext, start_order
from labkit.services.dnsmasq import DnsServer, dns_settings
from labkit.services.pstn import PstnExchange
from labkit.spec import apply_overrides, draw_secrets, load_spec, merge_overrides, parse_spec
from labkit.spec.model import FICTIONAL_BLOCKS
from labkit.state import LabRecord

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "render"
LABS = ROOT / "configs" / "labs"
LINE = "0033199001234"
CARRIER_ADDRESS = "203.0.113.10"
PASSWORDS = {LINE: "line-password-0"}


@pytest.fixture(scope="module")
def office():
    return load_spec("trunk-office")


def _office_text(**replace: str) -> str:
    text = (LABS / "trunk-office.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def _problems(text: str) -> str:
    with pytest.raises(LabFileError) as caught:
        parse_spec(text, source="lab.yaml")
    return caught.value.message


# ---------------------------------------------------------------------------------------
# Kamailio's configuration
# ---------------------------------------------------------------------------------------

def test_carrier_config_matches_golden(office):
    assert_golden(kamailio.render_carrier(office, PASSWORDS), GOLDEN / "carrier" / "kamailio.cfg")


def test_carrier_config_says_what_the_lab_file_says(office):
    text = kamailio.render_carrier(office, PASSWORDS)
    assert '#!substdef "!DOMAIN!sip.carrier.example!g"' in text
    assert "listen=udp:203.0.113.10:5060" in text and "disable_tcp=yes" in text
    assert '#!substdef "!PSTN_IP!203.0.113.30!g"' in text
    assert 'alias="proxy.carrier.example"' in text  # OPTIONS to the proxy's name is for us
    # The account and its alias: a password per line, an owner per number.
    assert f'$sht(pw=>{LINE}) = "line-password-0";' in text
    assert f'$sht(owner=>{LINE}) = "{LINE}";' in text
    assert f'$sht(owner=>0033199001235) = "{LINE}";' in text
    # Registrations written through to db_text (they survive a restart), a control socket.
    assert 'modparam("usrloc", "db_url", "text:///srv/state/db")' in text
    assert 'modparam("usrloc", "db_mode", 1)' in text
    assert 'modparam("ctl", "binrpc", "unix:/srv/state/kamailio_ctl")' in text
    assert "#!define CLI_REJECT" not in text
    # The report's reason phrases, word for word.
    for phrase in ('"404", "Domain not bound"', '"403", "Wrong login or password"', '"400", "Wrong domain"'):
        assert phrase in text


def test_carrier_policies_render(office):
    reject = load_spec("trunk-office", overrides={"carrier": {"caller_id": "reject",
                                                              "keep_registrations": False}})
    text = kamailio.render_carrier(reject, PASSWORDS)
    assert "#!define CLI_REJECT" in text
    assert 'modparam("usrloc", "db_mode", 0)' in text and "db_text" not in text


def test_a_carrier_password_is_escaped_for_kamailio(office):
    text = kamailio.render_carrier(office, {LINE: 'a"b$c\\d'})
    assert f'$sht(pw=>{LINE}) = "a\\"b$c\\\\d";' in text


def test_config_error_names_the_line_and_shows_it(tmp_path):
    config = tmp_path / "kamailio.cfg"
    config.write_text("#!KAMAILIO\ndebug=2\nthis is not kamailio;\n")
    output = (" 0(12) : <core> [core/cfg.y:3567]: yyerror_at(): parse error in config file "
              "/srv/conf/kamailio.cfg, line 3, column 1-4: syntax error\n"
              "ERROR: bad config file (1 errors)\n")
    error = kamailio.config_error(output, config)
    assert isinstance(error, DaemonError)
    assert "at line 3: 'this is not kamailio;'" in error.message
    assert "syntax error" in error.cause and "carrier.cfg.j2" in error.hint


def test_options_probe_is_a_well_formed_request():
    text = kamailio.options_request("203.0.113.10", "203.0.113.10", 40000, "t1").decode()
    head = text.split("\r\n")
    assert head[0] == "OPTIONS sip:203.0.113.10 SIP/2.0" and text.endswith("\r\n\r\n")
    for header in ("Via: SIP/2.0/UDP 203.0.113.10:40000;branch=z9hG4bK", "Max-Forwards: 70",
                   "CSeq: 1 OPTIONS", "Content-Length: 0"):
        assert any(line.startswith(header) for line in head), header


# ---------------------------------------------------------------------------------------
# The PSTN exchange and the lab DNS
# ---------------------------------------------------------------------------------------

def _context(tmp: Path, host: str) -> ServiceContext:
    return ServiceContext(lab="t", host=host, namespace=Namespace(f"lk-t-{host}"), rootfs=Path("/"),
                          config_dir=tmp / "config" / host, state_dir=tmp / "run" / host,
                          log_dir=tmp / "logs" / host, recordings_dir=tmp / "rec" / host,
                          etc_dir=tmp / "etc", record=LabRecord(name="t"))


def test_pstn_exchange_config_matches_goldens(office, tmp_path):
    secrets = {**draw_secrets(office), "pstn/0639980001": "carol-pw-00"}
    exchange = PstnExchange(_context(tmp_path, "pstn"), spec=office,
                            credentials=Credentials(secrets=secrets, ami_user="labkit", ami_secret="ami-0"))
    exchange.render()
    for name in ("pjsip.conf", "extensions.conf"):
        assert_golden((exchange.config_dir / name).read_text(), GOLDEN / "pstn" / name)
    assert exchange.announcement_file.stat().st_size > 8000  # a spoken announcement, 8 kHz WAV
    assert [(p.transport, p.number) for p in exchange.ports()] == [("udp", 5060), ("tcp", 5038)]
    assert exchange.track is tracks.MODERN  # whatever the lab's track


def test_pstn_exchange_answers_183_then_180_with_early_media(office, tmp_path):
    secrets = {**draw_secrets(office)}
    exchange = PstnExchange(_context(tmp_path, "pstn"), spec=office,
                            credentials=Credentials(secrets=secrets, ami_user="labkit", ami_secret="x"))
    exchange.render()
    plan = (exchange.config_dir / "extensions.conf").read_text()
    steps = [line.split(",", 1)[1] for line in plan.splitlines() if line.startswith(" same => n,")]
    # First the caller's number in national form (0033199001234 is shown as 0199001234) …
    assert steps[:2] == ['GotoIf($["${CALLERID(num):0:4}" != "0033"]?shown)',
                         "Set(CALLERID(num)=0${CALLERID(num):4})"]
    # … then 183 with the announcement, 180, and the phone.
    assert steps[2:6] == ["Progress()", "Playback(/etc/asterisk/announcement,noanswer)", "Ringing()",
                          "Dial(PJSIP/0639980001,20)"]
    assert "allow_sending_180_after_183 = yes" in (exchange.config_dir / "pjsip.conf").read_text()
    quiet = load_spec("trunk-office", overrides={"pstn": {"early_media": False}})
    exchange.spec = quiet
    exchange.render()
    assert "Progress()" not in (exchange.config_dir / "extensions.conf").read_text()


def test_dns_records_become_dnsmasq_options(office, tmp_path):
    server = DnsServer(_context(tmp_path, "dns"), address="203.0.113.53", **dns_settings(office))
    argv = server.program()
    assert "--local=/example/test/invalid/" in argv
    assert "--cname=proxy.carrier.example,sbc1.carrier.example" in argv
    assert "--srv-host=_sip._udp.sip.carrier.example,sbc1.carrier.example,5060,10,10" in argv
    assert "--naptr-record=sip.carrier.example,10,10,s,SIP+D2U,,_sip._udp.sip.carrier.example" in argv
    broken = load_spec("trunk-office", overrides=office.variant("unresolvable-domain"))
    settings = dns_settings(broken)
    assert "sip.carrier.example" not in settings["records"] and not settings["srv"] and not settings["naptr"]
    assert settings["cnames"] == {"proxy.carrier.example": "sbc1.carrier.example"}


# ---------------------------------------------------------------------------------------
# The lab file: sections, cross-references, variants
# ---------------------------------------------------------------------------------------

def test_trunk_office_loads_with_every_section(office):
    assert office.pbx.trunk.account == LINE and office.pbx.trunk.registers is True
    assert office.carrier_address().exploded == "203.0.113.10"
    assert office.carrier_account(LINE).aliases == ["0033199001235"]
    assert [p.number for p in office.pstn.phones] == ["0639980001"]
    assert set(office.variants) == {"unresolvable-domain", "hosts-fix", "register-to-proxy",
                                    "wrong-password", "wrong-domain-calls", "forgetful-carrier"}


@pytest.mark.parametrize("variant", sorted(load_spec("trunk-office").variants))
def test_every_variant_is_a_valid_lab(office, variant):
    spec = load_spec("trunk-office", overrides=office.variant(variant))
    assert spec.pbx.trunk is not None and spec != office


def test_variants_say_what_they_change(office):
    unresolvable = load_spec("trunk-office", overrides=office.variant("unresolvable-domain"))
    assert unresolvable.pbx.trunk.proxy is None
    assert "sip.carrier.example" not in unresolvable.dns.records and unresolvable.dns.srv == []
    hosts_fix = load_spec("trunk-office", overrides=office.variant("hosts-fix"))
    assert str(hosts_fix.etc_hosts["pbx"]["sip.carrier.example"]) == "203.0.113.10"
    assert load_spec("trunk-office", overrides=office.variant("register-to-proxy")).pbx.trunk.domain \
        == "proxy.carrier.example"
    with pytest.raises(LabFileError) as caught:
        office.variant("no-such-mistake")
    assert "wrong-password" in caught.value.hint


def test_a_broken_variant_is_reported_at_its_line():
    text = _office_text(**{"pbx: {trunk: {password: not-the-password}}":
                           'pbx: {trunk: {account: "0033199009999"}}'})
    message = _problems(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "0033199009999" in t)
    assert f"variants.wrong-password.overrides.pbx.trunk.account (line {line})" in message
    assert "no account '0033199009999'" in message


def test_none_in_overrides_removes_a_key_and_merging_keeps_it():
    data = {"dns": {"records": {"a.example": "1.2.3.4", "b.example": "1.2.3.5"}}, "x": 1}
    assert apply_overrides(data, {"dns": {"records": {"a.example": None}}}) == \
        {"dns": {"records": {"b.example": "1.2.3.5"}}, "x": 1}
    merged = merge_overrides({"pbx": {"trunk": {"proxy": None}}}, {"pbx": {"trunk": {"password": "p"}}})
    assert merged == {"pbx": {"trunk": {"proxy": None, "password": "p"}}}


def test_secrets_are_drawn_for_the_carrier_and_the_pstn(office):
    drawn = draw_secrets(office)
    assert set(drawn) == {"6000", "6001", f"carrier/{LINE}", "pstn/0639980001"}
    assert len(drawn[f"carrier/{LINE}"]) >= 16 and draw_secrets(office)[f"carrier/{LINE}"] != drawn[f"carrier/{LINE}"]
    fixed = load_spec("trunk-office", overrides={"carrier": {"accounts": [
        {"line": LINE, "password": "given-password-1"}]}})
    assert draw_secrets(fixed)[f"carrier/{LINE}"] == "given-password-1"


@pytest.mark.parametrize("number", ["0033972000000", "0033123456789", "0033199011234"])
def test_only_fictional_numbers_are_accepted(number):
    message = _problems(_office_text(**{'- line: "0033199001234"': f'- line: "{number}"'}))
    assert "carrier.accounts[0].line" in message and number in message


def test_the_fictional_blocks_are_arceps():
    assert FICTIONAL_BLOCKS == ("199 00", "261 91", "353 01", "465 71", "536 49", "639 98")
    for block in FICTIONAL_BLOCKS:
        load_spec("trunk-office", overrides={"pstn": {"phones": [
            {"name": "carol", "host": "carol", "number": "0" + block.replace(" ", "") + "0001"}]}})


@pytest.mark.parametrize("replace, place, words", [
    # The report's CNAME in front of the proxy needs the canonical name's address.
    ({"    sbc1.carrier.example: 203.0.113.10\n": ""}, "dns.cnames", "needs an A record"),
    ({"target: sbc1.carrier.example": "target: proxy.carrier.example"}, "dns.srv[0].target",
     "not an alias (RFC 2782)"),
    ({"replacement: _sip._udp.sip.carrier.example}": "replacement: _sip._tcp.sip.carrier.example}"},
     "dns.naptr[0].replacement", "has no SRV record"),
    ({"number: \"0639980001\"": "number: \"0199001235\""}, "pstn.phones[0].number",
     "a number of the carrier's lines"),
    ({"  pstn: pstn\n": "  pstn: telco\n"}, "carrier.pstn", "another host than the carrier's"),
    ({'aliases: ["0033199001235"]': 'aliases: ["0033199001234"]'}, "carrier.accounts[0].aliases[0]",
     "a number belongs to one line"),
    ({"  - {name: telco,": "  - {name: carrier,", "  host: telco\n": "  host: carrier\n"},
     "hosts[4].name", "keyword of `ip link set`"),
    ({"    context: from-carrier\n  dialplan:": "    context: from-pstn\n  dialplan:"},
     "pbx.trunk.context", "no dialplan context 'from-pstn'"),
    ({"proxy: {name: proxy.carrier.example}": "proxy: {name: proxy.carrier.example, address: 198.51.100.10}"},
     "carrier.proxy.address", "not an address of host 'telco'"),
])
def test_carrier_cross_references(replace, place, words):
    message = _problems(_office_text(**replace))
    assert place in message and words in message, message


def test_etc_hosts_names_a_lab_host():
    message = _problems(_office_text(**{"variants:\n": "etc_hosts: {nas: {sip.carrier.example: 203.0.113.10}}\n"
                                                       "variants:\n"}))
    assert "etc_hosts.nas" in message and "unknown host 'nas'" in message


def test_the_domain_may_not_point_at_another_host():
    message = _problems(_office_text(**{"    sip.carrier.example: 203.0.113.10\n":
                                        "    sip.carrier.example: 203.0.113.30\n"}))
    assert "dns.records" in message and "host 'pstn'" in message


# ---------------------------------------------------------------------------------------
# The services a trunk lab runs, and reading a trunk's state
# ---------------------------------------------------------------------------------------

def test_a_trunk_lab_runs_a_carrier_an_exchange_and_its_phones():
    lab = Lab.load("trunk-office", name="tcarrier")
    lab._draw_credentials()
    context = dataclasses.replace(lab.context(), rootfs=lambda image: Path("/"))
    made = [s for p in services.PROVIDERS for s in p.provide(context)]
    kinds = [(s.name, s.kind) for s in made]
    assert ("telco/kamailio", "kamailio") in kinds and ("pstn/asterisk", "asterisk") in kinds
    assert ("carol/baresip", "baresip") in kinds
    waves = [[s.name for s in wave] for wave in start_order(made)]
    # The DNS and the carrier, then both Asterisks (the trunk registers at boot), then phones.
    assert set(waves[0]) == {"dns/dnsmasq", "telco/kamailio"}
    assert set(waves[1]) == {"pbx/asterisk", "pstn/asterisk"}
    assert set(waves[2]) == {"alice/baresip", "bob/baresip", "carol/baresip"}
    carol = next(s for s in made if s.name == "carol/baresip")
    assert carol.registrar == "203.0.113.30" and carol.extension == "0639980001"
    assert lab.images_needed() == {tracks.TOOLS_IMAGE}


PJSIP_REGISTRATIONS = """
 <Registration/ServerURI..............................>  <Auth....................>  <Status.......>
==========================================================================================

 carrier-reg/sip:sip.carrier.example                     carrier-auth                Rejected          (exp. 16s)

Objects found: 1
"""
SIP_REGISTRY = """Host                                    dnsmgr Username       Refresh State                Reg.Time
sip.carrier.example:5060                N      003319900123       600 Request Sent
proxy.carrier.example:5060              N      003319900123       585 Registered           Wed, 02 Dec 2026 21:17:02
2 SIP registrations.
"""
PJSIP_CONTACTS = """
  Contact:  <Aor/ContactUri..........................> <Hash....> <Status> <RTT(ms)..>
==========================================================================================

  Contact:  carrier/sip:sip.carrier.example              7f1bd2e6ba Avail         1.317
  Contact:  6000/sip:6000@198.51.100.11:5060             0d0b7b3fe5 NonQual         nan
"""
SIP_PEERS = """Name/username             Host                       Dyn Forcerport Comedia    ACL Port     Status
6000/6000                 198.51.100.11                            D  No         No             5060     Unmonitored
carrier/0033199001234     203.0.113.10                                No         No             5060     OK (1 ms)
2 sip peers [Monitored: 1 online, 0 offline Unmonitored: 1 online, 0 offline]
"""


def test_trunk_state_is_read_on_both_tracks():
    assert tracks.MODERN.parse_registry(PJSIP_REGISTRATIONS) == {"carrier-reg": "Rejected"}
    assert tracks.LEGACY.parse_registry(SIP_REGISTRY) == {"sip.carrier.example:5060": "Request Sent",
                                                          "proxy.carrier.example:5060": "Registered"}
    assert tracks.MODERN.parse_trunk_status(PJSIP_CONTACTS)["carrier"] == "Avail"
    assert tracks.LEGACY.parse_trunk_status(SIP_PEERS)["carrier"] == "OK (1 ms)"
    assert tracks.LEGACY.commands.registry == "sip show registry"
    assert tracks.MODERN.commands.registry == "pjsip show registrations"
    assert re.match(r"\w", tracks.MODERN.reachable[0]) and tracks.LEGACY.reachable == ("OK",)


def test_a_trunk_peer_is_not_a_registered_phone():
    """chan_sip lists the trunk's peer with its carrier's address: it did not register to us."""
    events = [{"Event": "PeerEntry", "ObjectName": "6000", "IPaddress": "198.51.100.11", "IPport": "5060",
               "Dynamic": "yes"},
              {"Event": "PeerEntry", "ObjectName": "carrier", "IPaddress": CARRIER_ADDRESS, "IPport": "5060",
               "Dynamic": "no"}]
    assert tracks.LEGACY.parse_registrations(events) == {"6000": "198.51.100.11:5060"}
