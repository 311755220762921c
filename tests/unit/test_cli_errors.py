"""Bad input at the command line: a clear message each, exit status 2, never a traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "labs"
LABKIT = [sys.executable, "-m", "labkit.cli"]


def labkit(*args, env=None):
    argv = [*LABKIT, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("lab_file, expected", [
    ("bad-yaml-indent.yaml", "not valid YAML at line"),
    ("bad-unknown-key.yaml", "unknown key"),
    ("bad-duplicate-extension.yaml", "duplicate extension"),
    ("bad-address-outside.yaml", "is not a host address of network"),
    ("bad-port-collision.yaml", "already taken by pbx.sip_port"),
])
def test_bad_lab_file_is_explained(lab_file, expected):
    result = labkit("up", BAD / lab_file)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "What to do:" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_unknown_lab_name_lists_the_shipped_labs():
    result = labkit("up", "frist-call")
    assert result.returncode == 2 and "first-call" in result.stderr and "Traceback" not in result.stderr


def test_missing_image_is_explained(tmp_path, monkeypatch, capsys):
    from labkit import cli
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # past the root check, to the image check
    assert cli.main(["up", "first-call", "--no-build"]) == 2
    err = capsys.readouterr().err
    assert "not built" in err and "labkit images build" in err and "Traceback" not in err
    assert not (tmp_path / "home" / "labs").exists() or not any((tmp_path / "home" / "labs").iterdir())


def test_not_root_is_explained(tmp_path, monkeypatch, capsys):
    from labkit import cli
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["up", "first-call"]) == 2
    err = capsys.readouterr().err
    assert "must run as root" in err
    assert "replay" in err  # the way forward without root
    assert "Traceback" not in err


def test_status_without_labs(tmp_path):
    result = labkit("status", env={"LABKIT_HOME": str(tmp_path)})
    assert result.returncode == 0 and "No lab is running" in result.stdout


def test_down_of_unknown_lab(tmp_path):
    result = labkit("down", "nope", env={"LABKIT_HOME": str(tmp_path)})
    assert result.returncode == 2 and "No lab named 'nope'" in result.stderr


@pytest.mark.live
def test_port_already_in_use_is_explained(lab_name):
    """Something already listens on the PBX's SIP port inside its namespace."""
    from labkit.errors import PortInUse
    from labkit.net.netns import Namespace
    from labkit.services.base import ensure_port_free

    namespace = Namespace(f"lk-{lab_name}-x")
    namespace.create()
    try:
        squatter = namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatter.bind(("0.0.0.0", 5060))
        with pytest.raises(PortInUse) as info:
            ensure_port_free(namespace, 5060, "udp", "Asterisk (SIP)")
        assert "UDP port 5060" in str(info.value) and "What to do" in str(info.value)
        squatter.close()
        ensure_port_free(namespace, 5060, "udp", "Asterisk (SIP)")  # free again: no error
    finally:
        namespace.delete()
