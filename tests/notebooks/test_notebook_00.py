"""Notebook 00 (orientation): its checks judge answers, not code.

Stored outputs, replay on both tracks, live runs and hygiene of 00 and 01 are shared in
test_notebooks.py; what is particular to notebook 00's exercises is here.
"""
from __future__ import annotations

import pytest

from . import nbtools
from .nbtools import TRACKS


# -- the checks judge answers, not code: right answers pass, wrong ones fail -------------------
@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, tmp_path):
    """The answers as the grader receives them (plain values, JSON round trip), the truth from
    the recordings the checks open themselves (checks.evaluate: what labkit grade does)."""
    from labkit.grading import checks
    from labkit.teaching.session import Session
    session = Session.start("00-orientation", track=track, mode="replay")  # the test's, for the answers
    right = {"sip_port": 5060,
             "asterisk_rtp_ports": set(session.streams[session.streams.src == "192.168.0.10"].sport),
             "rtp_range": [10000, 20000], "register_counts": {"alice": 2, "bob": 2}, "challenge_status": 401}
    wrong = {"sip_port": 5061, "asterisk_rtp_ports": {5060},
             "rtp_range": "yes", "register_counts": {"alice": 1, "bob": 1}, "challenge_status": 407}
    assert all(r.passed for r in checks.evaluate("00-orientation", right, track=track))
    assert not any(r.passed for r in checks.evaluate("00-orientation", wrong, track=track))
    # a missing variable is a readable failure, not a crash
    missing = checks.evaluate("00-orientation", {"session": session}, track=track)
    assert not any(r.passed for r in missing) and "is not defined" in missing[0].message
    # the same right answers against another lab's capture (a swapped artifact): Asterisk's RTP
    # ports of the first call are not those of 00-orientation
    swapped = nbtools.recordings_folder(tmp_path / "swapped", track, ["00-orientation"],
                                        {"00-orientation": "01-first-call"})
    failed = {r.id for r in checks.evaluate("00-orientation", right, track=track, data=swapped) if not r.passed}
    assert "asterisk-rtp-ports" in failed
