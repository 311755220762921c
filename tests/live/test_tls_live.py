"""Live, both tracks: SIP over TLS — registered and calling, unreadable on the wire, decrypted
with the lab's key logs; each classic mistake breaks it in its own way and its fix mends it;
RSA key exchange is decrypted with the server's key, ECDHE is not (forward secrecy)."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest

from labkit import analysis
from labkit.errors import DaemonError, PortInUse
from labkit.lab.conversation import talk

pytestmark = pytest.mark.live

NAME = "pbx.office.example"
OPTIONS = ("OPTIONS sip:pbx.office.example SIP/2.0\r\n"
           "Via: SIP/2.0/TLS 192.168.0.11:5099;branch=z9hG4bK-{tag}\r\n"
           "From: <sip:probe@office.example>;tag={tag}\r\nTo: <sip:pbx.office.example>\r\n"
           "Call-ID: {tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def _sip(pcap, *options: str) -> list[tuple[str, str]]:
    """(method, status) of every SIP message tshark reads in ``pcap`` (with ``options``)."""
    out = subprocess.run(["tshark", "-r", str(pcap), *options, "-Y", "sip", "-T", "fields",
                          "-e", "sip.Method", "-e", "sip.Status-Code", "-E", "occurrence=f"],
                         capture_output=True, text=True, timeout=60).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line.strip()]


def _wait_registered(lab, extensions=("6000", "6001"), timeout=8.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        registered = lab.pbx.registered()
        if set(extensions) <= set(registered):
            return registered
        time.sleep(0.2)
    return lab.pbx.registered()


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_registration_and_call_over_tls_are_unreadable_then_decrypted(make_lab, track):
    lab = make_lab("tls-office", track=track, up=False)
    lab.up(capture=("lan",), capture_name="tls")
    assert "LISTEN" in lab.host("pbx").run(["ss", "-Hltn", "sport = :5061"]).stdout
    if track == "legacy":
        peer = lab.pbx.cli("sip show peer 6000")
        assert "Prim.Transp. : TLS" in peer, peer
    else:
        uris = [e.get("Uri", "") for e in lab.pbx.ami.action("PJSIPShowContacts")
                if e.get("Event") == "ContactList"]
        assert len(uris) == 2 and all(u.lower().endswith(";transport=tls") for u in uris), uris
    call = lab.phone("bob").call("6000").wait_established(10)
    time.sleep(2)
    stats = lab.pbx.channel_stats()
    call.hangup()
    assert len(stats) == 2 and all(s["rx_packets"] > 50 and s["tx_packets"] > 50 for s in stats), stats
    capture = lab.captures[0].stop()
    raw = capture.files["lan"]
    assert _sip(raw) == []  # port 5061 carries TLS records only
    decrypted = _sip(capture.with_tls_keys())
    # Each phone: REGISTER, 401, REGISTER with credentials, 200; then the call.
    assert decrypted.count(("REGISTER", "")) >= 4 and decrypted.count(("", "401")) >= 2, decrypted
    assert ("INVITE", "") in decrypted and ("BYE", "") in decrypted, decrypted
    keys = {p.name: p.stat().st_size for p in lab.keylog_dir.glob("*.keys")}
    assert {"asterisk.keys", "alice.keys", "bob.keys"} <= set(keys) and all(keys.values()), keys
    # The lab's own TLS client, as a phone sees the server.
    good = lab.tls_probe("alice", name=NAME)
    assert good.connected and good.verify_code == 0 and good.protocol in ("TLSv1.2", "TLSv1.3")
    old = lab.tls_probe("alice", name=NAME, version="1.0", cipher="DEFAULT@SECLEVEL=0")
    assert not old.connected and old.alert == 70 and old.alert_name == "protocol_version"
    wrong = lab.tls_probe("alice", name="mail.office.example")
    assert (wrong.verify_code, wrong.alert) == (62, 42)
    # SIPp registers over TLS too (401, then 200 with digest).
    sipp = lab.sipp("bob", "register", extension="6001", transport="tls", local_port=5071)
    assert sipp.ok and "SIP/2.0/TLS" in sipp.messages and "transport=tls" in sipp.messages, sipp.log


# Each mistake: the verify code and alert a client meets, and what each track's log says
# (PJSIP names the alert the phone sent; chan_sip only says the connection failed).
MISTAKES = [
    ({"variant": "expired"}, 10, 45, {"modern": "alert certificate expired", "legacy": "ssl connection"}),
    ({"variant": "wrong_name"}, 62, 42, {"modern": "alert bad certificate", "legacy": "ssl connection"}),
    ({"variant": "other_ca"}, 20, 48, {"modern": "alert unknown ca", "legacy": "ssl connection"}),
]


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_each_tls_mistake_breaks_registration_and_its_fix_mends_it(make_lab, track):
    lab = make_lab("tls-office", track=track)
    for certificate, code, alert, logged in MISTAKES:
        lab.reconfigure({"tls": {"certificate": certificate}})
        for phone in ("alice", "bob"):
            assert lab.phone(phone).register_again(timeout=3) is False, (certificate, phone)
        probe = lab.tls_probe("alice", name=NAME)
        assert (probe.verify_code, probe.alert) == (code, alert), (certificate, probe.summary())
        assert any(logged[track] in line.lower() for line in lab.pbx.tls_problems()), \
            (certificate, lab.pbx.tls_problems()[-3:])
        lab.reconfigure({"tls": {"certificate": {"variant": "good"}}})
        assert all(lab.phone(p).register_again() for p in ("alice", "bob")), certificate
        assert {"6000", "6001"} <= set(_wait_registered(lab))
    # A key Asterisk (the user asterisk) cannot read: the TLS port is not even open.
    lab.reconfigure({"tls": {"certificate": {"owner": "root", "key_mode": "0600"}}})
    assert not lab.pbx.tls_listens()
    unreadable = " ".join(lab.pbx.tls_problems()[-3:])
    assert ("not readable" in unreadable) if track == "modern" else ("loading private key" in unreadable)
    lab.reconfigure({"tls": {"certificate": {"owner": "asterisk", "key_mode": "0640"}}})
    assert lab.pbx.tls_listens() and lab.phone("bob").register_again()
    # A key that does not belong to the certificate.
    lab.reconfigure({"tls": {"certificate": {"variant": "key_mismatch"}}})
    assert lab.phone("bob").register_again(timeout=3) is False
    assert any("key values mismatch" in line or "private key" in line for line in lab.pbx.tls_problems())


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_rsa_key_exchange_is_decrypted_with_the_server_key_ecdhe_is_not(make_lab, track):
    """The walkthrough's tlscipher=ALL with an RSA certificate admits TLS 1.2 RSA key exchange:
    anyone who later obtains the server's key reads a recorded session.  ECDHE does not allow
    that (forward secrecy, RFC 9325 §4.1); the lab's default cipher list refuses RSA kx."""
    lab = make_lab("tls-office", track=track, up=False,
                   overrides={"pbx": {"tls": {"ciphers": "ALL", "certificate": {"key_type": "rsa"}}}})
    lab.up(capture=("pbx",), capture_name="rsa")
    rsa_kx = lab.tls_probe("alice", name=NAME, version="1.2", cipher="AES256-SHA256",
                           send=OPTIONS.format(tag="rsa-kx"))
    ecdhe = lab.tls_probe("alice", name=NAME, version="1.2", cipher="ECDHE-RSA-AES256-GCM-SHA384",
                          send=OPTIONS.format(tag="ecdhe"))
    assert (rsa_kx.cipher, ecdhe.cipher) == ("AES256-SHA256", "ECDHE-RSA-AES256-GCM-SHA384")
    pcap = lab.captures[0].stop().files["pbx"]
    key = lab.config_dir / "pbx" / "tls" / "pbx.key"
    out = subprocess.run(["tshark", "-r", str(pcap), "-o", f'uat:rsa_keys:"{key}",""',
                          "-Y", 'sip.Method == "OPTIONS"', "-T", "fields", "-e", "sip.Call-ID"],
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert out == ["rsa-kx"], out
    # The lab's default cipher list (ECDHE only) refuses RSA key exchange outright.
    lab.reconfigure({"tls": {"ciphers": None}})
    refused = lab.tls_probe("alice", name=NAME, version="1.2", cipher="AES256-SHA256")
    assert not refused.connected and refused.alert == 40, refused.summary()


def test_tls_port_in_use_and_unreadable_key_are_clear_errors(make_lab, lab_name):
    lab = make_lab("tls-office", up=False, overrides={"pbx": {"tls": {"certificate": {"owner": "root"}}}})
    with pytest.raises(DaemonError) as caught:
        lab.up()
    assert "does not accept TLS on port 5061" in caught.value.message
    assert "not readable" in caught.value.cause and "owner and mode" in caught.value.hint
    # Port 5061 taken in the PBX's namespace before the lab starts Asterisk.
    from labkit.services.base import ensure_port_free
    namespace = lab.namespace("pbx")
    namespace.create()
    try:
        squatter = namespace.socket(socket.AF_INET, socket.SOCK_STREAM)
        squatter.bind(("0.0.0.0", 5061))
        with pytest.raises(PortInUse) as caught:
            ensure_port_free(namespace, 5061, "tcp", "pbx/asterisk (SIP over TLS)")
        assert "TCP port 5061" in caught.value.message
        squatter.close()
    finally:
        namespace.delete()


STUDENT = {
    "modern": {"pjsip_conf": "[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0:5061\n"
                             "cert_file = /etc/asterisk/tls/pbx.crt\npriv_key_file = /etc/asterisk/tls/pbx.key\n"
                             "method = sslv23\n"},
    "legacy": {"sip_conf": "tlsenable = yes\ntlsbindaddr = 0.0.0.0:5061\n"
                           "tlscertfile = /etc/asterisk/tls/pbx.pem\ntransport = udp,tls\n"},
}


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_a_students_tls_stanza_runs_the_lab(make_lab, track):
    """What a student wrote replaces the kit's TLS lines; the lab measures whether it works."""
    lab = make_lab("tls-office", track=track, overrides={"pbx": {"tls": STUDENT[track]}})
    assert {"6000", "6001"} <= set(lab.pbx.registered())
    assert "as the student wrote it" in lab.pbx.config(lab.track.sip_config)


# The report's port table, used for real: the PBX at home, 5061/tcp forwarded by the box, Bob on
# the Internet dialling the box's name over TLS (the certificate carries that name).
HOME_OVER_TLS = {
    "hosts": [
        {"name": "box", "interfaces": [{"network": "lan", "address": "192.168.0.1"},
                                       {"network": "internet", "address": "203.0.113.1"}],
         "forwarding": True,
         "nat": {"outside": "internet", "forwards": [
             {"proto": "tcp", "ports": 5061, "to": "192.168.0.10"},
             {"proto": "udp", "ports": [10000, 20000], "to": "192.168.0.10"}]}},
        {"name": "pbx", "interfaces": [{"network": "lan", "address": "192.168.0.10"}], "gateway": "192.168.0.1"},
        {"name": "alice", "interfaces": [{"network": "lan", "address": "192.168.0.11"}], "gateway": "192.168.0.1"},
        {"name": "bob", "interfaces": [{"network": "internet", "address": "203.0.113.50"}]},
        {"name": "dns", "interfaces": [{"network": "internet", "address": "203.0.113.53"}]}],
    "pbx": {"transports": ["udp", "tls"],
            "tls": {"certificate": {"names": ["voip.home.example"]}},
            "nat": {"external_address": "voip.home.example", "local_nets": ["192.168.0.0/24"],
                    "symmetric": True}},
    "phones": [{"name": "alice", "host": "alice", "extension": "6000"},
               {"name": "bob", "host": "bob", "extension": "6001", "registrar": "voip.home.example",
                "transport": "tls"}],
}


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_tls_through_the_box_forward_of_5061(make_lab, track):
    lab = make_lab("home-pbx", track=track, up=False, overrides=HOME_OVER_TLS)
    lab.up(capture=("internet",), capture_name="home-tls")
    registered = _wait_registered(lab)
    assert {"6000", "6001"} <= set(registered), registered
    conversation = talk(lab, "bob", "6000", seconds=2)
    assert conversation.two_way, conversation.summary()
    pcap = lab.captures[0].stop().files["internet"]
    # On the Internet: TLS to the box's 5061 only, no readable SIP — until the keys are used.
    assert _sip(pcap) == []
    sessions = analysis.tls_sessions(pcap)
    assert len(sessions) >= 1 and set(sessions.server_port) == {5061}
    assert set(sessions.server) == {"203.0.113.1"}, sessions
    decrypted = [m for m, _ in _sip(lab.captures[0].with_tls_keys("internet")) if m]
    assert "REGISTER" in decrypted and "INVITE" in decrypted
