"""Shared test set-up.

Live tests (``@pytest.mark.live``) bring up real labs: they need root and the lab images.
Where they cannot run they are skipped with the reason — except when
``LABKIT_REQUIRE_LIVE=1`` (set by ``make test``, hence by CI): then they fail, so that a
machine that cannot run labs never reports a green suite.
"""
from __future__ import annotations

import os
import uuid

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0 or os.environ.get("LABKIT_REQUIRE_LIVE") == "1":
        return  # run them: without root they fail with labkit's "must run as root" error
    reason = "live test: needs root (namespaces, sandboxes); run `make test` as root"
    for item in items:
        if "live" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def lab_name():
    """A lab name unique to this test, so tests never collide with a user's labs."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def make_lab(lab_name):
    """Factory for labs that are always taken down, then checked for leftovers."""
    from labkit.lab import Lab, leftovers

    made = []

    def make(lab="first-call", track="modern", name=None, up=True):
        instance = Lab.load(lab, track=track, name=name or lab_name)
        made.append(instance)
        return instance.up() if up else instance

    yield make
    for instance in made:
        instance.down()
        assert leftovers(instance.name) == []
