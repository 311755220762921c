"""The kit's files that are not Python: lab files, templates, scenarios, recorded captures.

``configs/`` and ``data/`` live at the top of the repository, where instructors and
students look for them; ``labkit/configs`` and ``labkit/data`` are symbolic links to them,
so that the same paths work in three ways: from the repository, from an editable install,
and from a built wheel (setuptools copies what the links point to into the wheel as
package data).  Everything that reads one of these files goes through here.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _package_dir(name: str) -> Path:
    # files() gives a Traversable; for a package installed on disk (wheel or editable) it
    # is a real path, which the tools we hand these files to (bwrap, tshark) need.
    return Path(str(files("labkit").joinpath(name))).resolve()


def configs_dir() -> Path:
    """``configs/``: lab files, Asterisk templates per track, SIPp scenarios, schema."""
    return _package_dir("configs")


def data_dir() -> Path:
    """``data/``: reference captures, notebook recordings and their manifest."""
    return _package_dir("data")


def labs_dir() -> Path:
    return configs_dir() / "labs"


def templates_dir(service: str) -> Path:
    """The templates of one service, e.g. ``templates_dir("asterisk")``."""
    return configs_dir() / service
