"""Shared test set-up.

Live tests (``@pytest.mark.live``) bring up real labs: they need root and the lab images.
Where they cannot run they are skipped with the reason — except when
``LABKIT_REQUIRE_LIVE=1`` (set by ``make test``, hence by CI): then they fail, so that a
machine that cannot run labs never reports a green suite.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0 or os.environ.get("LABKIT_REQUIRE_LIVE") == "1":
        return  # run them: without root they fail with labkit's "must run as root" error
    reason = "live test: needs root (namespaces, sandboxes); run `make test` as root"
    for item in items:
        if "live" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def labkit_home(tmp_path_factory):
    """Every lab of the test run lives in a throw-away LABKIT_HOME (subprocesses and notebook
    kernels inherit it), so tests never meet a user's labs and leave no lab directories.
    At the end, any lab still recorded there (a test that failed half-way) is cleaned."""
    home = tmp_path_factory.mktemp("labkit-home")
    previous = os.environ.get("LABKIT_HOME")
    os.environ["LABKIT_HOME"] = str(home)
    yield home
    from labkit.lab import clean_record
    from labkit.state import recorded_labs
    for record in recorded_labs():
        clean_record(record)
    _LEFTOVERS.extend(_wait_for_no_leftovers())
    if previous is None:
        os.environ.pop("LABKIT_HOME", None)
    else:
        os.environ["LABKIT_HOME"] = previous
    shutil.rmtree(home, ignore_errors=True)


_LEFTOVERS: list[str] = []
#: How long a notebook kernel still taking its labs down at exit may take.
_LEFTOVER_GRACE = float(os.environ.get("LABKIT_LEFTOVER_GRACE", "30"))


def _wait_for_no_leftovers() -> list[str]:
    """Lab namespaces and lab processes still on the machine, whatever LABKIT_HOME made
    them (after a grace period for a kernel finishing its own teardown)."""
    from labkit.lab.cleanup import unrecorded_leftovers
    deadline = time.monotonic() + _LEFTOVER_GRACE
    while True:
        found = unrecorded_leftovers()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def pytest_sessionfinish(session, exitstatus):
    """A test run ends with no lab namespace and no lab process on the machine."""
    if _LEFTOVERS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["", "LEFTOVERS: the test run left these on the machine (no lab may outlive its test):",
                 *(f"  {item}" for item in _LEFTOVERS)]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)


@pytest.fixture
def lab_name():
    """A lab name unique to this test, so tests never collide with a user's labs."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def make_lab(lab_name):
    """Factory for labs that are always taken down, then checked for leftovers."""
    from labkit.lab import Lab, leftovers

    made = []

    def make(lab="first-call", track="modern", name=None, up=True, overrides=None):
        instance = Lab.load(lab, track=track, name=name or lab_name, overrides=overrides)
        made.append(instance)
        return instance.up() if up else instance

    yield make
    for instance in made:
        instance.down()
        assert leftovers(instance.name) == []
