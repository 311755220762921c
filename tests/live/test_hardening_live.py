"""Live, both tracks: a PBX on the open Internet meets SIPVicious (exposed-pbx).

What an attacker on the lab's Internet learns, and what each of the report's settings changes:
svmap finds the server (and its User-Agent); svwar lists the extensions only when chan_sip
answers an unknown user differently (``alwaysauthreject=no``) — PJSIP challenges everybody
alike; svcrack finds a dictionary password and not a drawn one; a stranger's call rings a
phone only when guests are allowed.  Every attack is bounded by the kit (count, time, the
lab's own addresses).  One lab per track for the module, switched between variants.
"""
from __future__ import annotations

import re

import pytest

from labkit import analysis, tracks
from labkit.lab import Lab, leftovers
from labkit.lab.conversation import talk
from labkit.spec import load_spec

pytestmark = pytest.mark.live
PBX, ATTACKER = "203.0.113.10", "203.0.113.66"
#: The first passwords of every dictionary (and the report's own "test", padded to the
#: lab file's minimum of 8 characters by the variant's choice of 12345678).
DICTIONARY = ["123456", "password", "12345678", "qwerty", "123456789", "1234", "test", "secret",
              "6000", "6001", "000000", "111111", "abc123", "asterisk", "voip"]


@pytest.fixture(scope="module", params=["modern", "legacy"])
def lab(request):
    instance = Lab.load("exposed-pbx", track=request.param, name=f"hx-{request.param}")
    instance.up(capture=("internet",), capture_name="attacks")
    yield instance
    instance.down()
    assert leftovers(instance.name) == []


@pytest.fixture
def shipped(lab):
    lab.switch(None)
    lab.wait_registered()
    return lab


def test_svmap_finds_the_pbx_and_the_phones_with_their_user_agents(shipped):
    scan = shipped.attack("attacker", "svmap", target="203.0.113.0/27", timeout=15)
    devices = {row["sip_device"]: row["user_agent"] for row in scan.found}
    # The softphones on the open Internet answer OPTIONS too: they are found as well.
    assert set(devices) == {f"{PBX}:5060", "203.0.113.21:5060", "203.0.113.22:5060"}, scan.output
    assert devices[f"{PBX}:5060"] == f"Asterisk PBX (labkit {shipped.track.name})"
    assert devices["203.0.113.21:5060"].startswith("baresip")


def test_extensions_leak_only_from_chan_sip_with_alwaysauthreject_no(shipped):
    lab = shipped
    scan = lab.attack("attacker", "svwar", extensions="5990-6010", timeout=20)
    assert scan.found == [] and scan.refused_to_enumerate, scan.output

    lab.switch("leaky-auth")
    lab.wait_registered()
    with lab.capture("internet", name="svwar-leaky") as capture:
        leaky = lab.attack("attacker", "svwar", extensions="5990-6010", timeout=20)
    sip = analysis.sip_messages(capture.files["internet"])
    answers = sip[(sip.src == PBX) & (sip.dst == ATTACKER) & sip.status_code.notna()]
    if lab.track is tracks.LEGACY:
        assert [row["extension"] for row in leaky.found] == ["6000", "6001"], leaky.output
        # The leak itself: a known user is challenged, an unknown one is "not found".
        assert set(answers.status_code.astype(int)) == {401, 404}
    else:
        # PJSIP has no alwaysauthreject: every unidentified request gets the same 401.
        assert leaky.found == [] and leaky.refused_to_enumerate, leaky.output
        assert set(answers.status_code.astype(int)) == {401}


def _guest_call(lab) -> str:
    """A stranger's INVITE to 6000 from the attacker; the PBX's final answer."""
    result = lab.sipp("attacker", "guest_call", extension="6000", keys={"caller": "666"}, timeout=10)
    finals = [line.split()[1] for line in result.messages.splitlines()
              if line.startswith("SIP/2.0 ") and not line.split()[1].startswith("1")]
    return finals[0] if finals else f"no answer: {result.log}"


def test_a_strangers_call_rings_only_when_guests_are_allowed(shipped):
    lab = shipped
    assert _guest_call(lab) in {"401", "403", "404"}
    calls_before = len(lab.phone("alice").calls)
    lab.switch("guests")
    lab.wait_registered()
    assert _guest_call(lab) == "200"
    assert len(lab.phone("alice").calls) == calls_before + 1   # Alice's phone rang and answered
    assert "guest call to 6000" in lab.pbx.log(200)


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_a_dictionary_password_is_cracked_and_a_drawn_one_is_not(make_lab, track):
    lab = make_lab("exposed-pbx", track=track, overrides=load_spec("exposed-pbx").variant("weak-secret"))
    weak = lab.attack("attacker", "svcrack", extension="6000", passwords=DICTIONARY, timeout=20)
    assert weak.found == [{"extension": "6000", "password": "12345678"}], weak.output
    drawn = lab.attack("attacker", "svcrack", extension="6001", passwords=DICTIONARY, timeout=20)
    assert drawn.found == [], drawn.output


def test_the_firewall_hides_the_pbx_from_the_scanner_and_lets_the_phones_call(shipped):
    lab = shipped
    lab.switch("firewalled")
    lab.wait_registered()
    before = lab.firewall("vps").counters()
    scan = lab.attack("attacker", "svmap", target="203.0.113.0/27", timeout=15)
    # The phones still answer a scan (they have no firewall); the PBX no longer does.
    assert f"{PBX}:5060" not in {row["sip_device"] for row in scan.found}, scan.output
    war = lab.attack("attacker", "svwar", extensions="5990-6010", timeout=10)
    assert war.found == []
    conversation = talk(lab, "bob", "6000", seconds=2)
    assert conversation.two_way, conversation.summary()
    after = lab.firewall("vps").counters()
    dropped = after["everything else"]["packets"] - before["everything else"]["packets"]
    assert dropped >= 2, after                       # svmap's OPTIONS and svwar's REGISTERs
    assert after["SIP from Bob"]["packets"] > before["SIP from Bob"]["packets"]
    assert after["RTP"]["packets"] > before["RTP"]["packets"]
    # Switched back: no firewall table any more.
    lab.switch(None)
    assert "labkit_firewall" not in lab.host("vps").run(["nft", "list", "tables"]).stdout


def _security_events(lab, address: str) -> dict[str, int]:
    """How many events of each kind Asterisk's security log holds for ``address``."""
    counts: dict[str, int] = {}
    for line in (lab.pbx.log_dir / "security").read_text().splitlines():
        found = re.search(r'SecurityEvent="(\w+)".*RemoteAddress="IPV4/\w+/([\d.]+)/', line)
        if found and found.group(2) == address:
            counts[found.group(1)] = counts.get(found.group(1), 0) + 1
    return counts


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_fail2ban_bans_a_password_guesser_and_not_the_phones(make_lab, track):
    lab = make_lab("exposed-pbx", track=track, up=False, overrides=load_spec("exposed-pbx").variant("fail2ban"))
    lab.up(capture=("internet",), capture_name="fail2ban")
    assert lab.fail2ban.banned() == []
    guesses = [f"guess{i:04d}" for i in range(300)]
    attack = lab.attack("attacker", "svcrack", extension="6000", passwords=guesses, timeout=8)
    assert attack.found == []
    assert lab.fail2ban.banned() == [ATTACKER]
    # The phones were never banned: a call during the ban has two-way audio.
    conversation = talk(lab, "bob", "6000", seconds=2)
    assert conversation.two_way, conversation.summary()
    sip = analysis.sip_messages(lab.captures[0].stop().files["internet"])
    sent = sip[(sip.src == ATTACKER) & (sip.method == "REGISTER")]
    answered = sip[(sip.dst == ATTACKER) & sip.status_code.notna()]
    # Far fewer answers than the guesses: cut off within seconds (the log is polled each second).
    assert 10 <= len(answered) < len(guesses), len(answered)
    assert answered.time.max() - sent.time.min() < 5
    assert len(sent) > len(answered)                  # the rest met the ban's drop
    # What fail2ban counted: the security framework's events for the attacker (res_security_log).
    events = _security_events(lab, ATTACKER)
    assert events.get("InvalidPassword" if lab.track is tracks.LEGACY else "ChallengeResponseFailed", 0) >= 5, events
    lab.fail2ban.unban(ATTACKER)
    assert lab.fail2ban.banned() == []


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_fail2ban_bans_an_enumeration_before_it_reaches_the_extensions(make_lab, track):
    lab = make_lab("exposed-pbx", track=track, up=False,
                   overrides=load_spec("exposed-pbx").variant("leaky-fail2ban"))
    lab.up(capture=("internet",), capture_name="enumeration")
    scan = lab.attack("attacker", "svwar", extensions="5800-6100", timeout=10)
    sip = analysis.sip_messages(lab.captures[0].stop().files["internet"])
    sent = sip[(sip.src == ATTACKER) & (sip.method == "REGISTER")]
    answered = sip[(sip.dst == ATTACKER) & sip.status_code.notna()]
    failures = lab.pbx.log(400).count("failed for '203.0.113.66")
    events = _security_events(lab, ATTACKER)
    print({"sent": len(sent), "answered": len(answered), "events": events,
           "first request to last answer": round(float(answered.time.max() - sent.time.min()), 2)})
    if lab.track is tracks.LEGACY:
        # Each missing user is a 404 and a logged failure: banned after a few dozen, in well under
        # a second of the scan and 200 extensions before 6000 — svwar learns nothing.
        assert lab.fail2ban.banned() == [ATTACKER]
        assert scan.found == [], scan.output
        assert set(answered.status_code.astype(int)) == {404}
        assert 5 <= len(answered) < 200 and len(sent) > len(answered), (len(sent), len(answered))
        assert answered.time.max() - sent.time.min() < 3
        assert failures >= 5 and events.get("InvalidAccountID", 0) >= 5, events
    else:
        # PJSIP challenges a missing user like a real one: svwar stops after its sanity check,
        # two logged failures, under fail2ban's maxretry — nothing learnt, nothing to ban.
        assert scan.refused_to_enumerate and scan.found == [], scan.output
        assert len(sent) <= 3 and set(answered.status_code.astype(int)) == {401}
        assert failures == len(sent) and events.get("InvalidAccountID", 0) == len(sent), events
        assert lab.fail2ban.banned() == []
