"""The ISP box in lab files: what is valid, what is refused (and how), the rules it makes."""
from __future__ import annotations

import ipaddress

import pytest

from labkit.errors import LabFileError
from labkit.net.natbox import render_ruleset
from labkit.spec import LABS_DIR, load_spec, parse_spec

HOME = (LABS_DIR / "home-pbx.yaml").read_text()


def with_nat(nat_yaml: str, text: str = HOME) -> str:
    return text.replace("    nat: {outside: internet}", f"    nat: {nat_yaml}")


def test_nat_labs_load():
    home, vps = load_spec("home-pbx"), load_spec("vps-pbx")
    assert home.host("box").nat.outside == "internet" and home.dns.records
    assert vps.pbx.host == "vps" and vps.host("box").forwarding


def test_forward_outside_the_lan_is_refused():
    text = with_nat("{outside: internet, forwards: [{proto: udp, ports: 5060, to: 203.0.113.50}]}")
    with pytest.raises(LabFileError) as info:
        parse_spec(text, "x.yaml")
    message = str(info.value)
    assert "hosts[0].nat.forwards[0].to" in message and "is not on the box's LAN" in message
    assert "192.168.0.0/24" in message


def test_overlapping_forwards_are_refused():
    text = with_nat("{outside: internet, forwards: [{proto: udp, ports: [10000, 20000], to: 192.168.0.10},"
                    " {proto: udp, ports: 15000, to: 192.168.0.11}]}")
    with pytest.raises(LabFileError, match=r"forwards\[1\]\.ports.*overlaps forwards\[0\]"):
        parse_spec(text, "x.yaml")


def test_same_port_different_protocols_do_not_overlap():
    text = with_nat("{outside: internet, forwards: [{proto: udp, ports: 5061, to: 192.168.0.10},"
                    " {proto: tcp, ports: 5061, to: 192.168.0.10}]}")
    assert len(parse_spec(text, "x.yaml").host("box").nat.forwards) == 2


def test_box_without_a_wan_is_refused():
    with pytest.raises(LabFileError, match="a NAT box needs a WAN"):
        parse_spec(with_nat("{outside: wan}"), "x.yaml")


def test_box_with_only_a_wan_is_refused():
    text = HOME.replace("      - {network: lan, address: 192.168.0.1}\n", "")
    with pytest.raises(LabFileError, match="needs a LAN too"):
        parse_spec(text, "x.yaml")


def test_box_must_forward():
    text = HOME.replace("    forwarding: true\n", "")
    with pytest.raises(LabFileError, match="set forwarding: true"):
        parse_spec(text, "x.yaml")


def test_bad_port_range_is_refused():
    with pytest.raises(LabFileError, match="first <= last"):
        parse_spec(with_nat("{outside: internet, forwards: [{proto: udp, ports: [20000, 10000], "
                            "to: 192.168.0.10}]}"), "x.yaml")


def test_dns_names_must_be_reserved():
    text = HOME.replace("records: {voip.home.example: 203.0.113.1}", "records: {voip.example.com: 203.0.113.1}")
    with pytest.raises(LabFileError, match="reserved name"):
        parse_spec(text, "x.yaml")


def test_ruleset_masquerades_forwards_and_alg():
    nat = load_spec("home-pbx").host("box").nat.model_copy(update={"sip_alg": True})
    from labkit.spec.model import PortForward
    nat = nat.model_copy(update={"forwards": [
        PortForward(proto="udp", ports=5060, to="192.168.0.10"),
        PortForward(proto="udp", ports=(10000, 20000), to="192.168.0.10")]})
    rules = render_ruleset(nat, "eth1", [ipaddress.IPv4Network("192.168.0.0/24")], "203.0.113.1")
    assert rules.startswith("flush ruleset")
    assert 'iifname "eth1" ip daddr 203.0.113.1 udp dport 5060 dnat to 192.168.0.10' in rules
    assert "udp dport 10000-20000 dnat to 192.168.0.10" in rules
    assert 'oifname "eth1" ip saddr { 192.168.0.0/24 } masquerade' in rules
    assert 'type "sip" protocol udp' in rules and 'ct helper set "sip"' in rules
    plain = render_ruleset(nat.model_copy(update={"sip_alg": False, "forwards": []}), "eth1",
                           [ipaddress.IPv4Network("192.168.0.0/24")], "203.0.113.1")
    assert "helper" not in plain and "dnat" not in plain and "masquerade" in plain
