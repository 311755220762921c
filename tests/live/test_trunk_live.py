"""Live, both tracks: the SIP trunk to a real Kamailio carrier, every error of the report.

Each response code is produced by its cause and gone with its fix, seen in a capture of
the "internet" (between the PBX's router and the carrier) *and* in Asterisk's log; the
trunk's state is read as a student would (``sip show registry`` / ``pjsip show
registrations``).  Calls are judged by what the phones heard (labkit.lab.conversation's
correlation ≥ 0.9 at both ends), early media by the PSTN's announcement heard before the
answer.  One lab per test; the checks of a test follow each other on it, each variant of
``configs/labs/trunk-office.yaml`` switched on and off with ``lab.switch``.
"""
from __future__ import annotations

import itertools
import time

import pytest

from labkit import analysis
from labkit.analysis import correlate, read_wav
from labkit.errors import DaemonError, PhoneError
from labkit.lab.conversation import HEARD
from labkit.services import kamailio
from labkit.spec import load_spec

pytestmark = pytest.mark.live
TRACKS = ["modern", "legacy"]
PBX, CARRIER, PSTN = "198.51.100.10", "203.0.113.10", "203.0.113.30"
LINE, DID, CAROL = "0033199001234", "0199001234", "0639980001"


def _variant(name: str) -> dict:
    return load_spec("trunk-office").variant(name)


def _sip(capture):
    """The trunk's SIP (PBX ↔ carrier) in a capture of the internet, stopped first."""
    sip = analysis.sip_messages(capture.stop().files["internet"])
    return sip[sip.src.isin([PBX, CARRIER]) & sip.dst.isin([PBX, CARRIER])]


def _phase(lab, name: str):
    """A capture of the internet for one step of a test (``with _phase(lab, "fix") as cap:``)."""
    return lab.capture("internet", name=name)


def _answers(sip, method: str) -> list[str]:
    """'401 Unauthorized', '200 OK' … of the responses to ``method``, in order."""
    rows = sip[(sip.cseq_method == method) & sip.status_code.notna()]
    return [f"{int(r.status_code)} {r.reason}" for r in rows.itertuples()]


def _log_since(lab, mark: int) -> str:
    """What Asterisk logged after ``mark`` characters (its messages file)."""
    return (lab.pbx.log_dir / "messages").read_text(errors="replace")[mark:]


def _log_mark(lab) -> int:
    return len((lab.pbx.log_dir / "messages").read_text(errors="replace"))


# -- the domain: not resolvable, the report's hosts fix, the DNS fix ---------------------------

@pytest.mark.parametrize("track", TRACKS)
def test_unresolvable_domain_then_the_hosts_fix_then_dns(make_lab, track):
    lab = make_lab("trunk-office", track=track, up=False, overrides=_variant("unresolvable-domain"))
    lab.up(capture=("internet",), capture_name="domain")
    legacy = track == "legacy"

    # Cause: no outbound proxy, and the lab DNS knows nothing of sip.carrier.example.
    assert lab.dns.lookup("sip.carrier.example") == []
    assert lab.dns.lookup("proxy.carrier.example") == ["sbc1.carrier.example.", CARRIER]  # the CNAME
    assert lab.pbx.wait_trunk(timeout=1.5) != "Registered"
    log = _log_since(lab, 0)
    if legacy:  # the report's two lines, word for word
        assert 'getaddrinfo("sip.carrier.example", "(null)", ...): Name or service not known' in log
        assert "to (null) returned -1: Invalid argument" in log
    else:
        assert "No response received from 'sip:sip.carrier.example'" in log
    assert _answers(_sip(lab.captures[0]), "REGISTER") == []  # nothing reached the carrier

    # The report's fix: the domain in the PBX's /etc/hosts.  chan_sip resolves with
    # getaddrinfo and registers; PJSIP asks the DNS only (NAPTR, SRV, A) and still fails.
    with _phase(lab, "hosts-fix") as capture:
        lab.switch("hosts-fix")
        assert (lab.config_dir / "etc" / "by-host" / "pbx" / "hosts").read_text().endswith(
            f"{CARRIER}\tsip.carrier.example\t# etc_hosts in the lab file\n")
        state = lab.pbx.wait_trunk(timeout=5 if legacy else 2)
        assert (state == "Registered") is legacy, state
    assert ("200 OK" in _answers(_sip(capture), "REGISTER")) is legacy

    # The proper fix: the carrier's DNS publishes the domain (NAPTR → SRV → A, RFC 3263).
    with _phase(lab, "dns-fix") as capture:
        lab.switch(None)
        assert lab.pbx.wait_trunk(timeout=5) == "Registered"
    assert lab.dns.lookup("sip.carrier.example", "NAPTR") == [
        '10 10 "s" "SIP+D2U" "" _sip._udp.sip.carrier.example.']
    assert lab.dns.lookup("_sip._udp.sip.carrier.example", "SRV") == ["10 10 5060 sbc1.carrier.example."]
    sip = _sip(capture)
    assert _answers(sip, "REGISTER")[-2:] == ["401 Unauthorized", "200 OK"]  # 401: the normal challenge
    assert set(sip[sip.method == "REGISTER"].request_uri) == {"sip:sip.carrier.example"}


# -- the registrar: 404 Domain not bound, 403 and PJSIP's retries, 401 then 200 -----------------

@pytest.mark.parametrize("track", TRACKS)
def test_registrar_errors_each_with_its_fix(make_lab, track):
    lab = make_lab("trunk-office", track=track, up=False, overrides=_variant("register-to-proxy"))
    lab.up(capture=("internet",), capture_name="registrar")
    legacy = track == "legacy"

    # Registering on the proxy's name: the carrier is the registrar of its domain only.
    assert lab.pbx.wait_trunk("Rejected", timeout=3) == "Rejected"
    sip = _sip(lab.captures[0])
    assert _answers(sip, "REGISTER") == ["404 Domain not bound"]
    assert set(sip[sip.method == "REGISTER"].request_uri) == {"sip:proxy.carrier.example"}
    log = _log_since(lab, 0)
    assert ("Got 404 Not found on SIP register to service 0033199001234@proxy.carrier.example" in log
            if legacy else "Fatal response '404' received from 'sip:proxy.carrier.example'" in log)
    assert "not our domain" in lab.carrier.log()

    # A wrong password: the normal 401 challenge, then 403 — and never again (both
    # generations give up after a 403 by default).
    mark = _log_mark(lab)
    with _phase(lab, "wrong-password") as capture:
        lab.switch("wrong-password")
        expected = "No Authentication" if legacy else "Rejected"
        assert lab.pbx.wait_trunk(expected, timeout=3) == expected
        time.sleep(2.5)
    assert _answers(_sip(capture), "REGISTER") == ["401 Unauthorized", "403 Wrong login or password"]
    log = _log_since(lab, mark)
    assert ("Forbidden - wrong password on authentication for REGISTER" in log if legacy
            else "Fatal response '403' received from 'sip:sip.carrier.example'" in log)

    # Retrying after a 403: PJSIP's forbidden_retry_interval, chan_sip's register_retry_403.
    with _phase(lab, "retry") as capture:
        lab.reconfigure(pbx={"trunk": {"forbidden_retry_interval": 1, "retry_interval": 1}})
        time.sleep(3)
    assert _answers(_sip(capture), "REGISTER").count("403 Wrong login or password") >= 2

    # The right password: 401 then 200, Registered.
    with _phase(lab, "fixed") as capture:
        lab.switch(None)
        assert lab.pbx.wait_trunk(timeout=5) == "Registered"
    assert _answers(_sip(capture), "REGISTER")[-2:] == ["401 Unauthorized", "200 OK"]


# -- qualify, and the carrier's restart ----------------------------------------------------------

@pytest.mark.parametrize("track", TRACKS)
def test_qualify_and_registration_across_a_carrier_restart(make_lab, track):
    lab = make_lab("trunk-office", track=track, up=False,
                   overrides={"pbx": {"trunk": {"qualify_frequency": 1}}})
    lab.up(capture=("internet",), capture_name="restart")
    assert lab.pbx.wait_trunk(timeout=5) == "Registered"

    # qualify: OPTIONS from the PBX, answered by the carrier itself.
    deadline = time.monotonic() + 4
    while not lab.pbx.trunk_reachable() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lab.pbx.trunk_reachable(), lab.pbx.trunk_status()
    assert "200 Keepalive" in _answers(_sip(lab.captures[0]), "OPTIONS")

    # A restart: a new main process, answering within a second, its registrations kept
    # (db_text): a call for the DID still reaches the PBX.
    before = lab.carrier.process_record.pid
    assert lab.carrier.registrations() == {LINE: [f"sip:{LINE}@{PBX}:5060"]}
    assert lab.carrier.restart() < 1.0
    assert lab.carrier.process_record.pid != before
    assert lab.carrier.registrations() == {LINE: [f"sip:{LINE}@{PBX}:5060"]}
    assert lab.pbx.trunk_state() == "Registered"
    inbound = lab.talk("carol", DID, "alice", seconds=2)
    assert inbound.established and inbound.two_way, inbound.summary()

    # A carrier that keeps them in memory only forgets the trunk, which still says Registered.
    lab.switch("forgetful-carrier")
    assert lab.pbx.wait_trunk(timeout=5) == "Registered"
    lab.carrier.restart()
    assert lab.carrier.registrations() == {} and lab.pbx.trunk_state() == "Registered"
    with _phase(lab, "forgotten") as capture:
        lost = lab.talk("carol", DID, "alice", seconds=1, answer_timeout=5)
    assert not lost.established and lost.error.endswith("480 Temporarily Unavailable"), lost.error
    sip = analysis.sip_messages(capture.files["internet"])
    to_pstn = sip[(sip.src == CARRIER) & (sip.dst == PSTN) & sip.status_code.notna()]
    assert 480 in to_pstn.status_code.tolist()


# -- the outbound call ------------------------------------------------------------------------------

@pytest.mark.parametrize("track", TRACKS)
def test_outbound_call_407_early_media_and_two_way_audio(make_lab, track):
    lab = make_lab("trunk-office", track=track, up=False, overrides=_variant("wrong-domain-calls"))
    lab.up(capture=("internet",), capture_name="call")

    # The report's host=proxy: the carrier authenticates the call, then refuses its domain.
    assert lab.pbx.wait_trunk(timeout=5) == "Registered"
    wrong = lab.phone("alice").call(CAROL)
    with pytest.raises(PhoneError):
        wrong.wait_established(8)
    sip = _sip(lab.captures[0])
    invites = sip[sip.method == "INVITE"]
    assert set(invites.request_uri) == {f"sip:{CAROL}@proxy.carrier.example"}
    assert _answers(sip, "INVITE") == ["407 Proxy Authentication Required", "400 Wrong domain"]

    # Fixed: NUMBER@domain.  INVITE → 407 → INVITE with credentials → 100/183/180/200.
    lab.switch(None)
    assert lab.pbx.wait_trunk(timeout=5) == "Registered"
    with _phase(lab, "call") as capture:
        conversation = lab.talk("alice", CAROL, "carol", seconds=3)
    assert conversation.established, conversation.error
    # Two-way audio: each phone heard the other's sentence.
    assert conversation.correlation["alice"] >= HEARD and conversation.correlation["carol"] >= HEARD, \
        conversation.summary()
    # Early media: before the answer, Alice heard the PSTN's announcement.
    announcement, _ = read_wav(lab.pstn.announcement_file)
    heard = conversation.heard["alice"]
    assert correlate(heard[:len(announcement) + 8000], announcement) >= HEARD

    pcap = capture.files["internet"]
    sip = analysis.sip_messages(pcap)
    call = sip[sip.src.isin([PBX, CARRIER]) & sip.dst.isin([PBX, CARRIER])]
    # (the exchange rings, then the phone does: two 180s count as one step here)
    ladder = [key for key, _ in itertools.groupby(
        r.method if r.is_request else str(int(r.status_code)) for r in call.itertuples()
        if r.cseq_method in ("INVITE", "ACK", "BYE"))]
    assert ladder[:9] == ["INVITE", "407", "ACK", "INVITE", "100", "183", "180", "200", "ACK"], ladder
    assert ladder[-2:] == ["BYE", "200"]
    invites = call[call.method == "INVITE"]
    assert list(invites.has_auth) == [False, True]  # Proxy-Authorization after the 407
    assert set(invites.request_uri) == {f"sip:{CAROL}@sip.carrier.example"}
    session_progress = call[(call.status_code == 183)]
    assert session_progress.has_sdp.all()  # 183 with SDP: early media
    # On the wire: the PSTN's RTP reached the PBX before the 200 OK.
    answered = call[(call.status_code == 200) & (call.cseq_method == "INVITE")].time.min()
    streams = analysis.rtp_streams(pcap)
    early = streams[(streams.src == PSTN) & (streams.dst == PBX)]
    assert not early.empty and early.first_time.min() < answered
    # The carrier sent the call on without the PBX's credentials (consume_credentials).
    to_pstn = sip[(sip.method == "INVITE") & (sip.dst == PSTN)]
    assert not to_pstn.empty and not to_pstn.has_auth.any()


# -- the PBX at home behind the box ----------------------------------------------------------------

@pytest.mark.parametrize("track", TRACKS)
def test_trunk_through_the_isp_box(make_lab, track):
    lab = make_lab("trunk-home", track=track)
    assert lab.pbx.wait_trunk(timeout=5) == "Registered"
    # The carrier sees the box's public address (the PBX announces it: externip/external_*).
    assert lab.carrier.registrations() == {LINE: [f"sip:{LINE}@203.0.113.1:5060"]}
    out = lab.talk("alice", CAROL, "carol", seconds=2.5)
    assert out.established and out.two_way, out.summary()
    back = lab.talk("carol", DID, "alice", seconds=2)
    assert back.established and back.two_way, back.summary()


# -- Kamailio's own lifecycle ------------------------------------------------------------------------

def test_kamailio_ready_within_its_deadline_stopped_by_pid(make_lab):
    lab = make_lab("trunk-office", track="modern")
    carrier = lab.carrier
    assert lab.pbx.wait_trunk(timeout=5) == "Registered"
    assert carrier.ready() and carrier.probe() == "SIP/2.0 200 Keepalive"
    assert carrier.probe("sip.carrier.example") == "SIP/2.0 200 Keepalive"  # qualify's target
    launcher = carrier.process_record.pid
    namespace = carrier.namespace
    assert launcher in namespace.pids()
    workers = [p for p in namespace.pids() if p != launcher]
    assert workers, "Kamailio's main process and workers run in the carrier's namespace"

    started = time.monotonic()
    carrier.stop()
    assert time.monotonic() - started < carrier.stop_timeout  # SIGTERM was enough
    assert namespace.pids() == []  # nothing of it left, workers included
    assert carrier.process_record is None and not carrier.running()

    started = time.monotonic()
    carrier.start()
    carrier.wait_ready()
    assert time.monotonic() - started < 2.0, "ready within its deadline (measured: tens of ms)"
    assert lab.pbx.trunk_state() == "Registered"


def test_a_broken_carrier_config_is_refused_with_its_line(make_lab, monkeypatch, tmp_path):
    broken = (kamailio.TEMPLATES / "carrier.cfg.j2").read_text().replace(
        'loadmodule "tm.so"', 'this line is not kamailio;\nloadmodule "tm.so"', 1)
    (tmp_path / "carrier.cfg.j2").write_text(broken)
    monkeypatch.setattr(kamailio, "TEMPLATES", tmp_path)
    lab = make_lab("trunk-office", track="modern", up=False)
    with pytest.raises(DaemonError) as caught:
        lab.up()
    rendered = (lab.config_dir / "telco" / "kamailio.cfg").read_text().splitlines()
    line = rendered.index("this line is not kamailio;") + 1
    assert f"at line {line}: 'this line is not kamailio;'" in caught.value.message
    assert f"kamailio -c says: parse error in config file /srv/conf/kamailio.cfg, line {line}" \
        in caught.value.cause
    assert not lab.record.processes  # refused before anything started
