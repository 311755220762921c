"""Notebook 01's direct-media exercise as data (labkit.teaching.first_call): the student's
sip.conf / pjsip.conf lines are read into the lab file's ``pbx.direct_media``, never executed;
what the exercise cannot read is refused with the reason (no lab, no root)."""
from __future__ import annotations

import pytest

from labkit.grading import checks, probes
from labkit.spec import load_spec
from labkit.teaching.first_call import (
    DirectMediaTextError,
    direct_media_overrides,
    direct_media_setting,
    media_log_lines,
)

RIGHT = {
    "sip.conf": ["[general]\ndirectmedia = yes\n",
                 "[6000]\ntype=friend\ndirectmedia=yes\n[6001]\ndirectmedia=yes ; both peers\n",
                 "[general]\ndirectmedia = no\n[6000]\ndirectmedia = yes\n[6001]\ndirectmedia = yes\n"],
    "pjsip.conf": ["[6000]\ndirect_media = yes\n[6001]\ndirect_media = yes\n",
                   "[6000]\ntype = endpoint\ndirect_media=true\n[6001]\ntype=endpoint\ndirect_media=yes\n"],
}


@pytest.mark.parametrize(("config", "text"), [(c, t) for c, texts in RIGHT.items() for t in texts])
def test_right_lines_switch_direct_media_on(config, text):
    overrides = direct_media_overrides(text, config)
    assert overrides == {"pbx": {"direct_media": True}}
    assert load_spec("first-call", overrides).pbx.direct_media is True


@pytest.mark.parametrize(("config", "text", "phones"), [
    ("sip.conf", "[general]\ndirectmedia=no\n", {"6000": False, "6001": False}),
    ("sip.conf", "[6000]\ndirectmedia=yes\n", {"6000": True, "6001": False}),       # Bob's peer keeps no
    ("sip.conf", "[general]\ndirectmedia=yes\n[6001]\ndirectmedia=no\n", {"6000": True, "6001": False}),
    ("pjsip.conf", "[6000]\ndirect_media=yes\n", {"6000": True, "6001": False}),
])
def test_lines_that_leave_a_phone_anchored_read_as_off(config, text, phones):
    """Valid lines, read as they say: the media bypasses Asterisk only if both phones allow it."""
    assert direct_media_setting(text, config) == phones
    assert direct_media_overrides(text, config) == {"pbx": {"direct_media": False}}


@pytest.mark.parametrize(("config", "text", "reason"), [
    ("sip.conf", "[general]\ndirect_media = yes\n", "other generation's spelling: sip.conf says directmedia"),
    ("pjsip.conf", "[6000]\ndirectmedia = yes\n", "other generation's spelling: pjsip.conf says direct_media"),
    ("sip.conf", "[general]\ndirectmedia = yes\nallow = ulaw\n", "'allow' is not one of the options"),
    ("pjsip.conf", "[6000]\ncontext = lobby\ndirect_media = yes\n", "'context' is not one of the options"),
    ("sip.conf", "#include /etc/passwd\n[general]\ndirectmedia = yes\n", "directives (#include, #exec"),
    ("pjsip.conf", '#exec /bin/sh -c "id"\n', "directives (#include, #exec"),
    ("sip.conf", "directmedia = yes\n", "start with a section header"),
    ("pjsip.conf", "[general]\ndirect_media = yes\n", "[general]: write direct_media in a phone's endpoint"),
    ("sip.conf", "[6002]\ndirectmedia = yes\n", "[6002]"),
    ("sip.conf", "[general]\ndirectmedia = nonat\n", "reads yes or no"),
    ("pjsip.conf", "[6000]\ntype = aor\ndirect_media = yes\n", "an endpoint (type = endpoint)"),
    ("sip.conf", "[general]\ndirectmedia = yes; $(reboot)\n", None),   # a comment: read as yes
    ("sip.conf", "[general]\ndirectmedia = yes`reboot`\n", "directmedia: a value of"),
    ("sip.conf", "[general]\nallow = ulaw\n", "'allow' is not one of the options"),
    ("pjsip.conf", "[6000]\ntype = endpoint\n", "No direct_media line"),
    ("pjsip.conf", "", "empty"),
])
def test_what_the_exercise_cannot_read_is_refused(config, text, reason):
    if reason is None:
        assert direct_media_overrides(text, config) == {"pbx": {"direct_media": True}}
        return
    with pytest.raises(DirectMediaTextError) as caught:
        direct_media_overrides(text, config)
    assert reason in caught.value.message


@pytest.mark.parametrize("track", ["legacy", "modern"])
def test_the_probe_reads_its_tracks_text_and_refuses_the_other_syntax(track):
    """The grader's validation (no lab): the track's file is read, the other's spelling refused."""
    probe = checks.find("01-first-call", "direct-media-lines").probe
    right, other = ("[general]\ndirectmedia=yes", "[6000]\ndirect_media=yes\n[6001]\ndirect_media=yes")
    if track == "modern":
        right, other = other, right
    assert probe.answer(track) == ("direct_sip" if track == "legacy" else "direct_pjsip")
    assert probes.validate(probe, right, track) == {"pbx": {"direct_media": True}}
    with pytest.raises(probes.Refused, match="other generation's spelling"):
        probes.validate(probe, other, track)
    with pytest.raises(probes.Refused, match="directives"):
        probes.validate(probe, "#include extensions.conf", track)


def _line(when: str, source: str, message: str, thread: str = "[36][C-00000001]") -> str:
    return f"[2026-12-03 {when}] VERBOSE{thread} {source}: {message}"


def test_media_log_lines_keep_the_media_path_and_name_rtp_instances():
    rtp, a, b = "res_rtp_asterisk.c", "0x7ff30c00e890 -- ", "0x7ff2e400b470 -- "
    log = "\n".join([
        _line("16:37:52.154", rtp, a + "Strict RTP learning after remote address set to: 192.168.0.12:28612"),
        _line("16:37:52.155", "asterisk.c", "Remote UNIX connection", thread="[11]"),
        _line("16:37:52.162", "bridge_native_rtp.c", "Locally RTP bridged 'SIP/6001-0' and 'SIP/6000-1' in stack"),
        _line("16:37:52.164", rtp, b + "Strict RTP switching to RTP target address 192.168.0.11:5200 as source"),
        _line("16:37:57.173", rtp, a + "Strict RTP learning complete - Locking on source address 192.168.0.12:28612"),
    ])
    assert media_log_lines(log) == [
        f"16:37:52.154 {rtp}: rtp#1: Strict RTP learning after remote address set to: 192.168.0.12:28612",
        "16:37:52.162 bridge_native_rtp.c: Locally RTP bridged 'SIP/6001-0' and 'SIP/6000-1' in stack",
        f"16:37:52.164 {rtp}: rtp#2: Strict RTP switching to RTP target address 192.168.0.11:5200 as source",
        f"16:37:57.173 {rtp}: rtp#1: Strict RTP learning complete - Locking on source address 192.168.0.12:28612",
    ]
    assert media_log_lines(log, ("Locking",)) == [media_log_lines(log)[-1]]
