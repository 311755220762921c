"""The notebook recorder: one ordered log, each cell replayed with the answer it got."""
from __future__ import annotations

import json

import pytest

from labkit.errors import LabStateError
from labkit.teaching.recorder import Recorder


def test_the_same_question_before_and_after_a_fix_replays_each_answer(tmp_path):
    path = tmp_path / "session.json"
    live = Recorder(path, replay=False, write=True, about={"session": "t"})
    answers = iter(["6001  Unavailable", "6001  OK (12 ms)"])
    assert live("cli", {"command": "sip show peers"}, lambda: next(answers)) == "6001  Unavailable"
    live("configure-pbx", {"nat": {"symmetric": True}}, lambda: "nat = force_rport,comedia")
    assert live("cli", {"command": "sip show peers"}, lambda: next(answers)) == "6001  OK (12 ms)"
    assert json.loads(path.read_text())["session"] == "t"

    replay = Recorder(path, replay=True)
    never = lambda: pytest.fail("replay must not ask the lab")  # noqa: E731
    assert replay("cli", {"command": "sip show peers"}, never) == "6001  Unavailable"
    assert replay("configure-pbx", {"nat": {"symmetric": True}}, never) == "nat = force_rport,comedia"
    assert replay("cli", {"command": "sip show peers"}, never) == "6001  OK (12 ms)"
    # A student re-running the cell once more gets the last answer, not an error.
    assert replay("cli", {"command": "sip show peers"}, never) == "6001  OK (12 ms)"
    assert replay.results("cli") == ["6001  Unavailable", "6001  OK (12 ms)", "6001  OK (12 ms)"]


def test_stored_form_and_live_result_differ_when_asked(tmp_path):
    path = tmp_path / "session.json"
    live = Recorder(path, replay=False, write=True)
    assert live("cli", {"command": "x"}, lambda: "id 0x55d0a1b2c3", stored=lambda s: s[:3]) == "id 0x55d0a1b2c3"
    assert Recorder(path, replay=True)("cli", {"command": "x"}, lambda: None) == "id "


def test_replay_of_an_unrecorded_question_says_how_to_record(tmp_path):
    path = tmp_path / "session.json"
    Recorder(path, replay=False, write=True)("registrations", {}, lambda: {"6000": "a"})
    with pytest.raises(LabStateError) as caught:
        Recorder(path, replay=True)("cli", {"command": "core show version"}, lambda: None)
    assert "core show version" in caught.value.message and "record_notebooks.py" in caught.value.hint


@pytest.mark.parametrize("content", [None, "", "{not json", '{"entries": 3}'])
def test_a_missing_or_broken_recording_is_a_clear_error(tmp_path, content):
    path = tmp_path / "session.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LabStateError) as caught:
        Recorder(path, replay=True)
    assert "record" in caught.value.explain()


def test_a_sessions_wait_pauses_live_returns_at_once_in_replay_and_refuses_long_waits(tmp_path):
    import time
    from types import SimpleNamespace

    from labkit.teaching.session import Session
    path = tmp_path / "session.json"
    live = SimpleNamespace(recorder=Recorder(path, replay=False, write=True))
    live._ask = lambda kind, compute, stored=None, **args: live.recorder(kind, args, compute, stored)
    started = time.monotonic()
    assert Session.wait(live, 0.2) == 0.2 and time.monotonic() - started >= 0.2
    replay = SimpleNamespace(recorder=Recorder(path, replay=True))
    replay._ask = lambda kind, compute, stored=None, **args: replay.recorder(kind, args, compute, stored)
    started = time.monotonic()
    assert Session.wait(replay, 0.2) == 0.2 and time.monotonic() - started < 0.1
    for bad in (-1, 121):
        with pytest.raises(LabStateError, match="between 0 and 120"):
            Session.wait(live, bad)
