"""Live: the first-call lab on both tracks — up, registered, a bridged call, down, no leftovers."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from labkit.errors import LabStateError
from labkit.lab import Lab, leftovers

pytestmark = pytest.mark.live
TRACKS = ["modern", "legacy"]
LABKIT = [sys.executable, "-m", "labkit.cli"]


@pytest.mark.parametrize("track", TRACKS)
def test_first_call_registers_and_bridges_rtp_both_ways(make_lab, track):
    lab = make_lab(track=track)

    # Registered, seen through AMI …
    registered = lab.pbx.registered()
    assert registered == {"6000": "192.168.0.11:5060", "6001": "192.168.0.12:5060"}
    # … and through the CLI of the track's channel driver.
    peers = lab.pbx.cli("sip show peers" if track == "legacy" else "pjsip show contacts")
    assert "192.168.0.11" in peers and "192.168.0.12" in peers

    call = lab.phone("bob").call("6000").wait_established(10)
    time.sleep(2.0)
    stats = lab.pbx.channel_stats()
    call.hangup()

    # Two call legs through Asterisk (media anchored: direct_media off), RTP both ways on each.
    assert len(stats) == 2, stats
    for row in stats:
        assert row["rx_packets"] > 50 and row["tx_packets"] > 50, row
        assert row["rx_lost"] == 0, row
    alice_call = lab.phone("alice").last_call()
    assert alice_call is not None and alice_call.direction == "incoming"


def test_two_labs_side_by_side(make_lab, lab_name):
    first = make_lab(name=lab_name + "a")
    second = make_lab(track="legacy", name=lab_name + "b")
    assert first.pbx.registered().keys() == second.pbx.registered().keys() == {"6000", "6001"}
    for lab in (first, second):
        lab.phone("bob").call("6000").wait_established(10).hangup()
    first.down()
    assert leftovers(first.name) == []
    # Taking one down leaves the other running.
    assert set(second.pbx.registered()) == {"6000", "6001"}


def test_exception_inside_with_tears_down(lab_name):
    with pytest.raises(RuntimeError):
        with Lab.load("first-call", name=lab_name) as lab:
            assert lab.pbx.running()
            raise RuntimeError("student code failed")
    assert leftovers(lab_name) == []


def _run_lab_script(lab_name: str) -> subprocess.Popen:
    """A Python process that brings a lab up inside ``with`` and then waits forever."""
    script = textwrap.dedent(f"""
        import time
        from labkit.lab import Lab
        with Lab.load("first-call", name={lab_name!r}) as lab:
            print("UP", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "UP"
    return proc


def test_ctrl_c_tears_down(lab_name):
    proc = _run_lab_script(lab_name)
    assert leftovers(lab_name)  # it is running
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    assert leftovers(lab_name) == []


def test_sigkill_then_clean_leaves_nothing(lab_name):
    proc = _run_lab_script(lab_name)
    proc.kill()
    proc.wait(10)
    time.sleep(0.2)
    left = leftovers(lab_name)
    assert any(item.startswith("process") for item in left), left
    assert any(item.startswith("namespace") for item in left), left

    # A new `up` under the same name refuses, saying what to do.
    with pytest.raises(LabStateError, match="labkit clean|labkit down"):
        Lab.load("first-call", name=lab_name).up()

    result = subprocess.run([*LABKIT, "clean", lab_name], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "namespace" in result.stdout
    assert leftovers(lab_name) == []


def test_cli_up_status_cli_down(lab_name):
    def labkit(*args):
        return subprocess.run([*LABKIT, *args], capture_output=True, text=True, timeout=120)

    up = labkit("up", "first-call", "--track", "legacy", "--name", lab_name)
    try:
        assert up.returncode == 0, up.stderr
        # Another process sees the lab through its record.
        status = labkit("status", lab_name)
        assert "6000" in status.stdout and "192.168.0.11:5060" in status.stdout
        assert re.search(r"pbx/asterisk\s+running \(pid \d+\)", status.stdout), status.stdout
        peers = labkit("cli", "--lab", lab_name, "sip show peers")
        assert "2 sip peers" in peers.stdout
        wrong = labkit("cli", "--lab", lab_name, "pjsip show endpoints")
        assert wrong.returncode == 2 and "legacy track" in wrong.stderr
        assert "Traceback" not in wrong.stderr
    finally:
        down = labkit("down", lab_name)
    assert down.returncode == 0, down.stderr
    assert leftovers(lab_name) == []


def test_stale_record_is_reported_then_cleaned(lab_name):
    from labkit.state import LabRecord
    record = LabRecord(name=lab_name, lab_file="first-call", track="modern",
                       namespaces=[f"lk-{lab_name}-pbx"])
    record.save()
    with pytest.raises(LabStateError, match="left over from a crash"):
        Lab.load("first-call", name=lab_name).up()
    subprocess.run([*LABKIT, "clean", lab_name], check=True, capture_output=True, timeout=60)
    assert leftovers(lab_name) == []


def test_cli_nat_lab_without_waiting_and_status_of_the_box(lab_name):
    def labkit(*args):
        return subprocess.run([*LABKIT, *args], capture_output=True, text=True, timeout=120)

    refused = labkit("up", "home-pbx", "--name", lab_name)
    # Bob cannot register before the port forwards: the error says how to come up anyway.
    assert refused.returncode == 2 and "--no-wait" in refused.stderr
    assert leftovers(lab_name) == []
    up = labkit("up", "home-pbx", "--name", lab_name, "--no-wait")
    try:
        assert up.returncode == 0, up.stderr
        status = labkit("status", lab_name).stdout
        assert "box box: public address 203.0.113.1; forwards none; SIP ALG off" in status
        assert "6000" in status and "6001" not in status.split("registrations:")[1]
    finally:
        labkit("down", lab_name)
    assert leftovers(lab_name) == []
