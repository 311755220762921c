"""The registry of graded checks: one module per notebook.

``nb00.py`` holds the checks of ``00-orientation.ipynb``, ``nb01.py`` those of the next
notebook, and so on; each declares the sessions its notebook starts
(:func:`labkit.grading.checks.recording`) and registers its checks with
:func:`labkit.grading.checks.check` (and :func:`~labkit.grading.checks.configure`).  Importing
this package imports every ``nbNN`` module present (a missing one is fine) plus the modules
named in the environment variable ``LABKIT_EXERCISES`` (comma- or space-separated, e.g.
a course's own checks or the test suite's toy checks).

These modules hold the truth of every check: the grader imports them in its own process,
and the grading sandbox hides them (and their bytecode) from the notebooks it runs.

A module that exists but fails to import is *not* silently skipped: its error is kept in
:data:`errors`, a warning is issued, a check cell names it, and ``labkit grade`` refuses
to grade (grading with checks missing would give wrong grades).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import warnings
from types import ModuleType

#: the per-notebook modules expected in this package (others named ``nb*`` are found too)
MODULES = ("nb00", "nb01", "nb03")

#: module name -> module, for every exercise module imported
loaded: dict[str, ModuleType] = {}
#: module name -> "ExceptionType: message", for every exercise module that failed to import
errors: dict[str, str] = {}


def extra_modules() -> list[str]:
    """The module names listed in ``LABKIT_EXERCISES``."""
    return os.environ.get("LABKIT_EXERCISES", "").replace(",", " ").split()


def _load(name: str) -> None:
    try:
        loaded[name] = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return  # the module is not there (yet): fine
        errors[name] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken module: keep the reason, do not hide it
        errors[name] = f"{type(exc).__name__}: {exc}"


def _discover() -> list[str]:
    names = set(MODULES)
    names.update(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("nb"))
    return [f"{__name__}.{n}" for n in sorted(names)]


for _name in [*_discover(), *extra_modules()]:
    _load(_name)

if errors:
    warnings.warn("labkit.grading.exercises: some exercise modules failed to import: "
                  + "; ".join(f"{k}: {v}" for k, v in errors.items()), stacklevel=2)
