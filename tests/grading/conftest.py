"""Make the toy checks importable here (the grader's process) and in the probes' child processes
(they inherit the environment); the grading sandbox hides them from the notebooks' kernels."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "fixtures" / "source"
EXERCISES = HERE / "fixtures" / "exercises"


@pytest.fixture(scope="package", autouse=True)
def toy_checks():
    """``LABKIT_EXERCISES=toy_exercises`` with its folder on the path (child processes inherit it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_EXERCISES", "toy_exercises")
        mp.setenv("PYTHONPATH", os.pathsep.join(
            p for p in (str(EXERCISES), os.environ.get("PYTHONPATH", "")) if p))
        mp.syspath_prepend(str(EXERCISES))
        import toy_exercises  # noqa: F401  (registers the "toy" checks in this process)
        yield
