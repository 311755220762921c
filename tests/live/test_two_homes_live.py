"""Live, both tracks: the report's real topology — two phones behind two different boxes, both
homes on 192.168.1.0/24, Asterisk on a VPS with its NAT settings on (lab ``two-homes``).

Direct media: Asterisk re-INVITEs each phone with the other's private address; Bob's phone asks
its own home network who has Alice's address (ARP), nobody answers, and neither phone hears the
other.  Media anchored on Asterisk (the same lab, reconfigured): two-way audio.
"""
from __future__ import annotations

import pytest

from labkit import analysis
from labkit.lab.conversation import talk
from labkit.teaching.two_nat import arp_requests

pytestmark = pytest.mark.live
ALICE, BOB, VPS = "192.168.1.11", "192.168.1.12", "198.51.100.10"


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_direct_media_between_two_homes_is_silent_anchored_is_two_way(make_lab, track):
    lab = make_lab("two-homes", track=track, up=False, overrides={"pbx": {"direct_media": True}})
    lab.up(capture=("home-b",), capture_name="two-homes")
    direct = talk(lab, "bob", "6000")
    assert direct.established and max(direct.correlation.values(), default=0.0) < 0.5, direct.summary()

    lab.reconfigure({"direct_media": False})
    for phone in ("alice", "bob"):
        assert lab.phone(phone).register_again()
    assert talk(lab, "bob", "6000").two_way

    pcap = lab.captures[0].stop().files["home-b"]
    sip = analysis.sip_messages(pcap)
    to_bob = sip[(sip.method == "INVITE") & (sip.src == VPS) & (sip.dst == BOB)]
    assert ALICE in set(to_bob.sdp_c_addr)                       # the re-INVITE: Alice's private address
    arp = arp_requests(pcap)
    asked = arp[(arp.asker == BOB) & (arp.asked == ALICE)]
    assert len(asked) == 1 and not asked.answered.iloc[0]          # looked for in Bob's own home
    streams = analysis.rtp_streams(pcap)
    assert ALICE not in set(streams.dst)                         # not one RTP packet sent there
