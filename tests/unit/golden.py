"""Compare text with a golden file.

``assert_golden(text, path)`` passes when ``path`` holds exactly ``text``; on a mismatch
it fails with a unified diff (golden → actual).  With ``LABKIT_UPDATE_GOLDEN=1`` in the
environment the golden file is (re)written instead and the check passes: regenerate,
then *read the diff* (``git diff tests/golden``) before committing.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

UPDATE_ENV = "LABKIT_UPDATE_GOLDEN"


def updating() -> bool:
    return os.environ.get(UPDATE_ENV, "") == "1"


def assert_golden(actual: str, golden: str | os.PathLike[str]) -> None:
    path = Path(golden)
    if updating():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with {UPDATE_ENV}=1", pytrace=False)
    expected = path.read_text(encoding="utf-8")
    if expected != actual:
        diff = "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
            for line in difflib.unified_diff(
                expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                fromfile=f"{path} (golden)", tofile="actual"))
        pytest.fail(f"output differs from golden file {path} "
                    f"(rerun with {UPDATE_ENV}=1 to accept):\n{diff}", pytrace=False)
