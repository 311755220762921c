"""The service lifecycle's declarations: start order from needs, every port checked, providers."""
from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from labkit import services, tracks
from labkit.errors import DaemonError, PortInUse
from labkit.lab import Lab
from labkit.net.netns import Namespace
from labkit.services.base import Port, Service, ServiceContext, check_ports, start_order
from labkit.state import LabRecord


def _context(host: str, lab: str = "t", tmp: Path = Path("/nonexistent")) -> ServiceContext:
    return ServiceContext(lab=lab, host=host, namespace=Namespace(f"lk-{lab}-{host}"), rootfs=None,
                          config_dir=tmp, state_dir=tmp, log_dir=tmp, recordings_dir=tmp,
                          etc_dir=tmp, record=LabRecord(name=lab))


def _service(kind: str, needs=(), host="h", ports=()):
    cls = type(f"Fake{kind}", (Service,), {"kind": kind, "needs": tuple(needs),
                                           "ports": lambda self: list(ports)})
    return cls(_context(host))


def test_start_order_follows_needs_and_ignores_absent_kinds():
    dns, pbx = _service("dnsmasq"), _service("asterisk", needs=("dnsmasq", "kamailio"))
    alice, bob = _service("baresip", ("asterisk", "dnsmasq")), _service("baresip", ("asterisk",))
    waves = start_order([alice, pbx, bob, dns])
    assert waves == [[dns], [pbx], [alice, bob]]
    # Without a DNS server, Asterisk starts first; two phones of the same kind start together.
    assert start_order([alice, pbx, bob]) == [[pbx], [alice, bob]]


def test_a_circle_of_needs_is_reported():
    with pytest.raises(DaemonError) as caught:
        start_order([_service("a", ("b",)), _service("b", ("a",))])
    assert "circle" in caught.value.message


def test_two_services_on_one_port_of_a_host_are_refused_before_anything_binds():
    # The namespace does not exist: the collision must be found from the declarations alone.
    first = _service("asterisk", ports=[Port("udp", 5060, "SIP")])
    second = _service("kamailio", ports=[Port("udp", 5060, "SIP")])
    with pytest.raises(PortInUse) as caught:
        check_ports([first, second])
    assert "h/asterisk" in caught.value.message and "h/kamailio" in caught.value.message


def test_every_provider_declares_its_services_ports():
    lab = Lab.load("home-pbx", name="tports")
    made = [s for p in services.PROVIDERS for s in p.provide(_lab_context(lab))]
    ports = {(s.kind, p.transport, p.number) for s in made for p in s.ports()}
    assert {("asterisk", "udp", 5060), ("asterisk", "tcp", 5038), ("dnsmasq", "udp", 53),
            ("dnsmasq", "tcp", 53), ("baresip", "udp", 5060), ("baresip", "tcp", 4444)} <= ports


def _lab_context(lab: Lab):
    """The context a lab gives its service modules, with no image needed."""
    lab._draw_credentials()
    return dataclasses.replace(lab.context(), rootfs=lambda image: Path("/"))


@pytest.mark.live
def test_the_dns_servers_port_is_checked_before_the_lab_starts(lab_name):
    """Port 53 of the lab's DNS server is checked like every other (it was once forgotten)."""
    lab = Lab.load("home-pbx", name=lab_name)
    made = [s for p in services.PROVIDERS for s in p.provide(_lab_context(lab))]
    dns = next(s for s in made if s.kind == "dnsmasq")
    dns.namespace.create()
    try:
        squatter = dns.namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatter.bind(("0.0.0.0", 53))
        with pytest.raises(PortInUse) as caught:
            check_ports([dns])
        assert "UDP port 53" in caught.value.message and "dnsmasq" in caught.value.message
        squatter.close()
    finally:
        dns.namespace.delete()


def test_tracks_are_one_registry():
    assert tracks.get("legacy") is tracks.LEGACY and tracks.get(tracks.MODERN) is tracks.MODERN
    with pytest.raises(Exception) as caught:
        tracks.get("classic")
    assert "modern, legacy" in caught.value.hint
    assert "pjsip show endpoints" in tracks.MODERN.wrong_command_cause("sip show peers")
    assert tracks.LEGACY.wrong_command_cause("sip show peers") is None
    events = [{"Event": "PeerEntry", "ObjectName": "6000", "IPaddress": "192.168.0.11", "IPport": "5060"},
              {"Event": "PeerEntry", "ObjectName": "6001", "IPaddress": "-none-", "IPport": "0"}]
    assert tracks.LEGACY.parse_registrations(events) == {"6000": "192.168.0.11:5060"}
    events = [{"Event": "ContactList", "Endpoint": "6000", "Uri": "sip:6000@192.168.0.11:5060;ob"}]
    assert tracks.MODERN.parse_registrations(events) == {"6000": "192.168.0.11:5060"}
