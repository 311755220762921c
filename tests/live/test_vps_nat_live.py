"""Live, both tracks: the VPS's NAT diagnosis (labkit.teaching.vps_nat, notebook 02b).

For each fault of ``VPS_FAULTS`` on each track, a fresh ``vps-pbx`` lab (named ``vf-…``) with the
fault: the call Bob → Alice is not two-way, and the capture on the home side and on the Internet
side holds the fault's own evidence (what a student reads to tell the three apart); then
``Session.fix_vps`` applies another fault's fix (still broken) and the right one (two-way, judged
by ``labkit.grading.probes.two_way_call``), as the notebook does on the running lab.  Each test
takes its lab down and checks nothing is left.  About 2 minutes for the six.
"""
from __future__ import annotations

import time

import pandas as pd
import pytest

from labkit import analysis
from labkit.grading import probes
from labkit.teaching.vps_nat import VPS_FAULTS, vps_fault_overrides

pytestmark = pytest.mark.live
TRACKS = ["modern", "legacy"]
VPS, BOX = "198.51.100.10", "198.51.100.1"
FIREWALL_FIX = "firewall_allow:\n  - {proto: udp, ports: 5060}\n  - {proto: udp, ports: 10000-20000}\n"
#: (another fault's fix, the right fix) per fault and track: both of the ALG fault's fixes are used.
FIXES = {
    ("no-symmetric-handling", "modern"): (FIREWALL_FIX, "symmetric: yes"),
    ("no-symmetric-handling", "legacy"): ("sip_alg: no", "symmetric: yes"),
    ("alg-with-direct-media", "modern"): ("symmetric: yes", "direct_media: no"),
    ("alg-with-direct-media", "legacy"): (FIREWALL_FIX, "sip_alg: no"),
    ("firewall-without-rtp", "modern"): ("direct_media: no", FIREWALL_FIX),
    ("firewall-without-rtp", "legacy"): ("symmetric: yes", FIREWALL_FIX),
}


def _wire(pcap) -> tuple[pd.DataFrame, pd.DataFrame]:
    sip = analysis.sip_messages(pcap)
    sip["sdp_c_addr"] = sip.sdp_c_addr.replace("", pd.NA)  # no SDP: no c= address
    return sip, analysis.rtp_streams(analysis.rtp_packets(pcap, sip=sip), sip=sip)


def _assert_evidence(fault: str, track: str, internet, lan) -> None:
    """What the notebook tells the students to look for, per fault (VPS_FAULTS's comments)."""
    sip, streams = internet
    lan_sip, lan_streams = lan
    from_vps = sip[sip.src == VPS]
    invites_from_vps = from_vps[from_vps.method == "INVITE"]
    rtp_to_vps = streams[streams.dst == VPS]
    rtp_from_vps = streams[streams.src == VPS]
    alice_ok = sip[(sip.src == BOX) & (sip.status_code == 200) & sip.sdp_c_addr.notna()]
    if fault == "no-symmetric-handling" and track == "modern":
        # Asterisk's INVITE for Alice goes to her private Contact: it never reaches the Internet
        assert invites_from_vps.empty and streams.empty
        assert (sip[sip.method == "INVITE"].src == BOX).all()
    elif fault == "no-symmetric-handling":
        # answered, but Asterisk's ACK goes to the private Contact: Alice's 200 OK repeated;
        # the phones' RTP reaches the VPS, Asterisk's goes to the private c= (nowhere)
        assert len(invites_from_vps) >= 1 and len(alice_ok) >= 2
        assert len(rtp_to_vps) == 2 and rtp_from_vps.empty
        assert set(sip[sip.src == BOX].sdp_c_addr.dropna()) <= {"192.168.0.11", "192.168.0.12"}
    elif fault == "alg-with-direct-media":
        # the ALG's public address in the phones' SDP, Asterisk's re-INVITEs sending each
        # phone there, and at home RTP to the box's public address that never comes back
        assert set(sip[sip.src == BOX].sdp_c_addr.dropna()) == {BOX}
        reinvites = lan_sip[(lan_sip.src == VPS) & (lan_sip.method == "INVITE") & (lan_sip.sdp_c_addr == BOX)]
        assert len(reinvites) >= 2
        to_box = lan_streams[lan_streams.dst == BOX]
        assert set(to_box.src) == {"192.168.0.11", "192.168.0.12"}
        assert (streams.packets <= 5).all()  # RTP through the VPS only until the re-INVITEs
    else:
        # clean signalling (one 200 OK from Alice, Asterisk's ACK on the wire), RTP to the VPS only
        acks_from_vps = from_vps[from_vps.method == "ACK"]
        assert len(alice_ok) == 1 and len(acks_from_vps) >= 1
        assert len(rtp_to_vps) == 2 and rtp_from_vps.empty


def _session(lab, track: str, overrides: dict, tmp_path):
    """A live Session on a lab this test brought up (its own name), recording nothing."""
    from labkit.teaching.recorder import Recorder
    from labkit.teaching.session import Session
    session = Session("vf-live", "vps-pbx", track, "live", overrides)
    session.recorder = Recorder(tmp_path / "session.json", replay=False, write=False)
    session.lab = lab
    return session


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("fault", list(VPS_FAULTS))
def test_live_fault_shows_on_the_wire_and_only_the_right_fix_mends_it(fault, track, tmp_path):
    from labkit.lab import Lab, leftovers
    overrides = vps_fault_overrides(fault)
    lab = Lab.load("vps-pbx", track=track, overrides=overrides,
                   name=f"vf-{list(VPS_FAULTS).index(fault)}{track[0]}")
    try:
        lab.up(progress=False, build_images=False, wait_registered=False)
        with lab.capture("lan", "internet", name="fault") as running:
            two_way, why, _ = probes.two_way_call(lab, "bob", "6000")
            time.sleep(1)  # the last retransmissions and BYEs
        assert not two_way, why
        _assert_evidence(fault, track, _wire(running.files["internet"]), _wire(running.files["lan"]))

        session = _session(lab, track, overrides, tmp_path)
        wrong, right = FIXES[fault, track]
        session.fix_vps(wrong)
        two_way, why, _ = probes.two_way_call(lab, "bob", "6000")
        assert not two_way, f"{wrong!r} mended {fault}: {why}"

        shown = str(session.fix_vps(right))
        assert "symmetric = yes" in shown and "udp 10000-20000" in shown
        two_way, why, _ = probes.two_way_call(lab, "bob", "6000")
        assert two_way, f"{right!r} did not mend {fault}: {why}"
    finally:
        lab.down()
    assert leftovers(lab.name) == []
