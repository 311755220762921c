"""What there is to grade: the submissions folder, the notebooks in it, the checks expected.

``SUBMISSIONS/<student>/<notebook>.ipynb``: one folder per student, named after the
student; any other shape is refused with a clear error (it is never guessed).  A notebook
that cannot be read is not an error of the grader: :func:`read_submission` raises
:class:`Invalid` and the notebook's checks score 0 as ``invalid-notebook``.

The checks a notebook is graded on are those registered by the exercise modules
(:mod:`labkit.grading.exercises`, plus ``LABKIT_EXERCISES``) and those written in the
``hidden`` cells of the instructor's notebook, which the grader runs in its own process
(never in a student's kernel).  Every one of them gets a row, reached or not.
"""
from __future__ import annotations

import importlib
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from labkit.errors import GradingError

__all__ = ["LAYOUT", "Invalid", "discover", "folder_size", "hidden_cells", "hidden_checks",
           "extra_modules", "load_checks", "expected_checks", "exercise_paths", "read_submission"]

LAYOUT = "SUBMISSIONS/<student>/<notebook>.ipynb (one folder per student)"


class Invalid(Exception):
    """A submitted notebook that cannot be read (its text says why)."""


def discover(submissions: Path) -> dict[str, dict[str, Path]]:
    """student -> notebook id -> path, for every ``<student>/<notebook>.ipynb``."""
    if not submissions.is_dir():
        raise GradingError(f"submissions folder {submissions} does not exist",
                           hint=f"the expected layout is {LAYOUT}")
    stray = sorted(p.name for p in submissions.iterdir() if p.is_file() and p.suffix == ".ipynb")
    if stray:
        raise GradingError(f"notebooks directly in {submissions}: {', '.join(stray[:5])}"
                           + (" …" if len(stray) > 5 else ""),
                           cause=f"labkit grade expects {LAYOUT}; other layouts are not guessed",
                           hint="put each student's notebooks in a folder named after the student")
    students: dict[str, dict[str, Path]] = {}
    for d in sorted(submissions.iterdir()):
        if not d.is_dir() or d.name.startswith((".", "_")):
            continue
        students[d.name] = {p.stem: p for p in sorted(d.glob("*.ipynb")) if p.is_file()}
    if not students:
        raise GradingError(f"no student folders in {submissions}", hint=f"the expected layout is {LAYOUT}")
    return students


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under *folder* (symbolic links are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def hidden_cells(source: Path) -> dict[str, list[str]]:
    """notebook id -> sources of its code cells tagged ``hidden``."""
    import nbformat

    if not source.exists():
        raise GradingError(f"source {source} does not exist",
                           hint="give the folder of instructor notebooks (with hidden cells)")
    paths = [source] if source.is_file() else sorted(source.glob("*.ipynb"))
    found: dict[str, list[str]] = {}
    for path in paths:
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as exc:
            raise GradingError(f"source notebook {path} cannot be read",
                               cause=f"{type(exc).__name__}: {exc}") from None
        found[path.stem] = [c.source for c in nb.cells if c.cell_type == "code"
                            and "hidden" in c.get("metadata", {}).get("tags", [])]
    return found


def extra_modules(env: Mapping[str, str]) -> list[str]:
    """The exercise modules named in ``LABKIT_EXERCISES`` of *env*."""
    return env.get("LABKIT_EXERCISES", "").replace(",", " ").split()


def load_checks(env: Mapping[str, str]) -> None:
    """Fill this process's registry with what the kernels will load (refuse broken modules)."""
    from labkit.grading import exercises
    for entry in reversed(env.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    for name in extra_modules(env):
        if name not in exercises.loaded:
            exercises._load(name)
    if exercises.errors:
        raise GradingError("some exercise modules cannot be imported: " + "; ".join(
            f"{k}: {v}" for k, v in exercises.errors.items()),
            cause="grading without their checks would give wrong grades",
            hint="fix the module (python -c 'import labkit.grading.exercises') and grade again")
    importlib.import_module("labkit.grading.checks")


def hidden_checks(nb_id: str, hidden_sources: list[str]) -> list:
    """The checks of *nb_id* that the instructor notebook's ``hidden`` cells register.

    The cells are run here, in the grader's process (the instructor's code: never sent to
    a student's kernel), with registrations collected apart from the registry."""
    from labkit.grading import checks
    found: dict = {}
    for n, src in enumerate(hidden_sources, 1):
        where = f"hidden cell {n} of {nb_id}"
        try:
            code = compile(checks._python(src), f"<{where}>", "exec")
        except SyntaxError as exc:
            raise GradingError(f"{where} is not valid Python: {exc}") from None
        with checks.collecting() as registered:
            try:
                exec(code, {"__name__": "__labkit_hidden__"})
            except Exception as exc:
                raise GradingError(f"{where} failed in the grader ({type(exc).__name__}: {exc})",
                                   cause="hidden cells are run by the grader, to register hidden checks",
                                   hint="run the instructor notebook and fix the cell") from None
        for chk in registered.get(nb_id, {}).values():
            found[chk.id] = chk
    return list(found.values())


def expected_checks(nb_id: str, hidden: list) -> list:
    """The registered checks of *nb_id*, then those of its hidden cells."""
    from labkit.grading import checks
    found = {c.id: c for c in checks.registered(nb_id)}
    for chk in hidden:
        found[chk.id] = chk
    return list(found.values())


def exercise_paths(env: Mapping[str, str]) -> list[Path]:
    """The files of the exercise modules (the truth of every check), for the sandbox to hide:
    ``labkit/grading/exercises`` and each ``LABKIT_EXERCISES`` module, with their bytecode."""
    from labkit.grading import exercises
    found = [Path(exercises.__file__).resolve().parent]
    for name in extra_modules(env):
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None)
        if not origin:
            continue
        path = Path(origin).resolve()
        if path.name == "__init__.py":
            found.append(path.parent)
            continue
        found.append(path)
        cache = path.parent / "__pycache__"
        if cache.is_dir():
            found.append(cache)
    return found


def read_submission(path: Path):
    """The cells of a submitted notebook, rebuilt clean (outputs and metadata dropped)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell

    try:
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        cells = []
        for cell in nb.cells:
            src = cell["source"]
            if isinstance(src, list):
                src = "".join(src)
            if not isinstance(src, str):
                raise ValueError("a cell source is not text")
            if cell["cell_type"] == "code":
                cells.append(new_code_cell(src))
            else:  # kept (not run) so that "cell N" counts like the student's notebook
                cells.append(new_markdown_cell(src))
        return cells
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise Invalid(f"{type(exc).__name__}: {detail}"[:300]) from None
