"""Live, both tracks: the report's final chain in one lab (configs/labs/whole-chain.yaml).

Alice's softphone (TLS + SRTP/SDES) behind the ISP box's NAT, Bob's on the open Internet, Asterisk
on a VPS, the trunk to a real Kamailio carrier and the PSTN exchange behind it.  One lab per track
for the module, its captures on the three segments (the home LAN, the Internet, the carrier's
network); the checks follow each other on it: a call phone to phone, a call to the PSTN with what
an observer reads on each segment (labkit.analysis.exposure, measured from the captures), a toll
fraud attempt refused by the dialplan before the trunk, then the VPS's firewall (variant
``firewalled``): the chain still calls, a scan finds nothing, the dropped packets are counted.
"""
from __future__ import annotations

import time
import uuid

import pytest

from labkit import analysis
from labkit.lab import Lab, leftovers
from labkit.lab.conversation import HEARD, talk

pytestmark = pytest.mark.live
SEGMENTS = ("lan", "internet", "carrier")
VPS, BOX, BOB, TELCO, PSTN = "203.0.113.10", "203.0.113.1", "203.0.113.50", "198.51.100.10", "198.51.100.30"
CAROL, DID = "0639980001", "0199001234"
#: One SIP OPTIONS over UDP from the attacker's host to the VPS's 5060 (RFC 3261 §11).
PROBE = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(("
         "'OPTIONS sip:203.0.113.10 SIP/2.0\\r\\nVia: SIP/2.0/UDP 203.0.113.66:5099;branch=z9hG4bK-probe\\r\\n"
         "From: <sip:probe@attacker.example>;tag=1\\r\\nTo: <sip:203.0.113.10>\\r\\nCall-ID: probe\\r\\n"
         "CSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n').encode(), "
         "('203.0.113.10', 5060))")
#: 40 TCP connections to the VPS's 5061 started at once; prints how many were established.
FLOOD = ("import socket, time\nsocks = []\nfor _ in range(40):\n    s = socket.socket(); s.setblocking(False)\n"
         "    s.connect_ex(('203.0.113.10', 5061)); socks.append(s)\ntime.sleep(0.5)\nopened = 0\n"
         "for s in socks:\n    try:\n        s.getpeername(); opened += 1\n    except OSError:\n        pass\n"
         "    s.close()\nprint(opened)\n")
#: Numbers a fraudster would call: premium rate (08 99 …; ARCEP has no fiction block in 08, so
#: this one is only ever dialled inside the lab, where the PBX refuses it) and international
#: (00 44 20 7946 0xxx, Ofcom's drama range).
FRAUD = ("0899091234", "00442079460123")
NAMES = {"192.168.0.11": "alice", BOX: "box", VPS: "vps", BOB: "bob", TELCO: "telco", PSTN: "pstn",
         "198.51.100.31": "carol"}


@pytest.fixture(scope="module", params=["modern", "legacy"])
def chain(request):
    instance = Lab.load("whole-chain", track=request.param, name=f"wc{request.param[0]}{uuid.uuid4().hex[:6]}")
    instance.up()
    yield instance
    instance.down()
    assert leftovers(instance.name) == []


def _wait_trunk_and_phones(lab, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    registered = {}
    while time.monotonic() < deadline:
        registered = lab.pbx.registered()
        if {"6000", "6001"} <= set(registered) and lab.pbx.wait_trunk(timeout=0.5) == "Registered":
            break
        time.sleep(0.2)
    return registered


def test_alice_behind_the_box_calls_bob_over_tls_and_srtp(chain):
    registered = _wait_trunk_and_phones(chain)
    # Alice is seen at the box's public address (her TLS connection, NATed), Bob at his own.
    assert registered["6000"].startswith(BOX + ":") and registered["6001"].startswith(BOB + ":"), registered
    conversation = talk(chain, "alice", "6001", seconds=2)
    assert conversation.two_way, conversation.summary()
    assert chain.phone("alice").last_call().media_encryption == "0,audio,AES_CM_128_HMAC_SHA1_80"


def test_a_call_to_the_pstn_and_what_each_segment_reads(chain):
    with chain.capture(*SEGMENTS, name="pstn-call") as capture:
        conversation = chain.talk("alice", CAROL, "carol", seconds=2.5)
    assert conversation.correlation["alice"] >= HEARD and conversation.correlation["carol"] >= HEARD, \
        conversation.summary()
    table = analysis.exposure({s: capture.files[s] for s in SEGMENTS}, NAMES)
    print(table.drop(columns=["methods"]).to_string())
    rows = {(r.segment, r.a, r.b): r for r in table.itertuples()}
    # The phones' side: TLS to 5061 and SRTP; no SIP, no key, nothing to listen to.
    for key in (("lan", "alice", "vps"), ("internet", "box", "vps")):
        row = rows[key]
        assert (row.sip_readable, row.keys_readable, row.media, row.media_readable) == \
            (False, False, "SRTP", False), row
        assert row.signalling == "TLS/5061" and row.media_entropy > 7.9
    # The trunk: plain SIP over UDP, and the media VPS ↔ PSTN plain RTP one can play.
    trunk, media = rows[("carrier", "telco", "vps")], rows[("carrier", "pstn", "vps")]
    assert trunk.sip_readable and trunk.signalling == "SIP/UDP" and "INVITE" in trunk.methods, trunk
    assert not trunk.keys_readable  # there is no key to read: the trunk has no SRTP at all
    assert media.media == "RTP" and media.media_readable and media.audio_seconds >= 2, media
    segments = analysis.exposure_by_segment(table).set_index("segment")
    print(segments.to_string())
    assert not segments.loc["lan", "sip_readable"] and segments.loc["carrier", "sip_readable"]


def test_toll_fraud_is_refused_by_the_dialplan_before_the_trunk(chain):
    with chain.capture("carrier", name="fraud") as capture:
        for number in FRAUD:
            call = chain.phone("alice").call(number).wait_closed(10)
            closed = next(e for e in call.events if e.get("type") == "CALL_CLOSED")
            # Hangup(21): Q.850 "call rejected", 403 Forbidden on the wire (RFC 3398 §8.2.6.1).
            assert "403" in str(closed.get("param")), (number, closed)
            assert not any(e.get("type") == "CALL_ESTABLISHED" for e in call.events)
        # A national call right after: the trunk is there, only fraud is refused.
        conversation = chain.talk("alice", CAROL, "carol", seconds=1)
    assert conversation.established, conversation.summary()
    log = chain.pbx.log(200)
    assert all(f"{n} refused (toll fraud)" in log for n in FRAUD), log[-2000:]
    sip = analysis.sip_messages(capture.files["carrier"])
    invites = sip[sip.method == "INVITE"].request_uri.astype(str)
    assert invites.str.contains(CAROL).any()                                 # the national call went out
    assert not any(invites.str.contains(n).any() for n in FRAUD), list(invites)  # the fraud did not


def test_the_firewalled_vps_passes_the_chain_and_drops_the_rest(chain):
    lab = chain
    lab.switch("firewalled")
    try:
        assert {"6000", "6001"} <= set(_wait_trunk_and_phones(lab, timeout=15))
        assert lab.pbx.wait_trunk(timeout=5) == "Registered"
        firewall = lab.firewall("vps")
        before = firewall.counters()
        # Anyone but the carrier sending SIP to 5060/udp: svmap's OPTIONS from the attacker.
        scan = lab.attack("attacker", "svmap", target=VPS, timeout=10)
        assert scan.found == [], scan.output
        # The chain still works: phone to phone over TLS, and out through the trunk.
        assert talk(lab, "alice", "6001", seconds=2).two_way
        out = lab.talk("alice", CAROL, "carol", seconds=2)
        assert out.correlation["alice"] >= HEARD and out.correlation["carol"] >= HEARD, out.summary()
        after = firewall.counters()
        delta = {k: after[k]["packets"] - before.get(k, {"packets": 0})["packets"] for k in after}
        print(delta)
        assert delta["everything else"] >= 1, after       # svmap's OPTIONS, dropped and counted
        assert delta["SIP over TLS"] >= 1                  # new TLS connections (the rest: conntrack)
        # Only the first packets of each media flow meet this rule: after the first answer the flow
        # is conntrack's (established), accepted before any rule.
        assert delta["RTP"] >= 2
        # The carrier's answers and in-dialog requests ride the conntrack entries of what the VPS
        # sent (its REGISTER from 5060 to the carrier's 5060 keeps one alive): the source rule is
        # what lets the carrier in once those are gone.  Forget them, and call in from the PSTN.
        lab.host("vps").run(["conntrack", "-F"])
        before = firewall.counters()
        inbound = lab.talk("carol", DID, "alice", seconds=2)
        assert inbound.correlation["alice"] >= HEARD and inbound.correlation["carol"] >= HEARD, \
            inbound.summary()
        after = firewall.counters()
        assert after["SIP from the carrier"]["packets"] > before["SIP from the carrier"]["packets"], after
        # The attacker's SIP to 5060/udp, sent by hand this time: dropped and counted too.
        dropped = after["everything else"]["packets"]
        lab.host("attacker").run(["python3", "-c", PROBE], check=False)
        assert firewall.counters()["everything else"]["packets"] > dropped
        # The rate limit: 40 TLS connections opened at once from one address; the meter lets the
        # burst through (nftables' default: 5 packets), then 20 a second; the other SYNs are dropped
        # (measured on both tracks: 5 opened, 35 dropped).
        before = firewall.counters()
        opened = int(lab.host("attacker").run(["python3", "-c", FLOOD]).stdout.strip())
        after = firewall.counters()
        print({"opened": opened, "accepted": after["SIP over TLS"]["packets"] - before["SIP over TLS"]["packets"],
               "dropped": after["everything else"]["packets"] - before["everything else"]["packets"]})
        assert 1 <= opened <= 20, opened
        assert after["everything else"]["packets"] - before["everything else"]["packets"] >= 20
    finally:
        lab.switch(None)
    assert "labkit_firewall" not in lab.host("vps").run(["nft", "list", "tables"]).stdout
