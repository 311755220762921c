"""Live, both tracks: SIPp scenarios against the lab's Asterisk (scripted SIP)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.live


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_sipp_registers_with_digest_and_a_wrong_secret_is_refused(make_lab, track):
    lab = make_lab(track=track)
    good = lab.sipp("bob", "register", extension="6001")
    assert good.ok, good.log
    assert "SIP/2.0 401 Unauthorized" in good.messages and "SIP/2.0 200 OK" in good.messages
    assert "Authorization: Digest" in good.messages
    # Asterisk now has SIPp's contact (port 5070) for 6001: the registration replaced Bob's.
    assert lab.pbx.registered()["6001"] == "192.168.0.12:5070"

    bad = lab.sipp("bob", "register", extension="6001", secret="not-the-secret")
    assert not bad.ok
    answers = {_status(block) for block in bad.messages.split("-----") if "CSeq: 2 REGISTER" in block
               and "SIP/2.0 " in block and "received" in block}
    # The credentials are refused: PJSIP challenges again (401), chan_sip says 403 Forbidden
    # (the report's "403 Wrong login or password").
    assert answers == ({"401"} if track == "modern" else {"403"}), bad.messages


def _status(block: str) -> str:
    line = next(line for line in block.splitlines() if line.startswith("SIP/2.0 "))
    return line.split()[1]
