"""Live, both tracks: the running Asterisk says which extension a dialled number reaches."""
from __future__ import annotations

import pytest

from labkit.errors import AsteriskError
from labkit.services.asterisk import dialplan

pytestmark = pytest.mark.live

# The report's outbound context, with fictional numbers, and its trap: a pattern one X short.
OUTBOUND = {"pbx": {"dialplan": {
    "work": ["exten => _6XXX,1,Dial({{ tech }}/${EXTEN},20)", "same => n,Hangup()"],
    "outbound": ["exten => 330,1,Dial({{ tech }}/6000,20)",
                 "exten => _0[1-7]XXXXXXX,1,NoOp(national, one X short)",
                 "exten => _09XXXXXXXX,1,NoOp(non-geographic 09)",
                 "exten => _0[1-7]XXXXXXXX,1,NoOp(national)"]}}}


@pytest.mark.parametrize("track", ["modern", "legacy"])
def test_pattern_tester_asks_asterisk(make_lab, track):
    lab = make_lab(track=track, overrides=OUTBOUND)
    table = dialplan.match_table(lab.pbx, ["0199001234", "019900123", "0912345678", "330", "12"], "outbound")
    winner = dict(zip(table.number, table.extension))
    assert winner == {"0199001234": "_0[1-7]XXXXXXXX", "019900123": "_0[1-7]XXXXXXX",
                      "0912345678": "_09XXXXXXXX", "330": "330", "12": "(none)"}, table
    assert table.set_index("number").loc["0199001234", "first_step"] == "NoOp(national)"
    assert table.set_index("number").loc["0199001234", "where"].startswith("extensions.conf:")
    with pytest.raises(AsteriskError):
        dialplan.match(lab.pbx, "0199001234", "nosuch")
