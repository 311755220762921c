"""Release student copies of the notebooks, and grade what students hand back.

``release(source, out)``
    Instructor notebooks → student copies: solution regions become stubs, cells tagged
    ``hidden`` disappear, cells tagged ``solution`` become an empty exercise cell, outputs
    and noisy metadata go.  The copy is verified to contain no solution text.

``grade(submissions, out_csv, source=...)``
    ``submissions/<student>/<notebook>.ipynb`` → each notebook is run top to bottom in a
    fresh kernel (``LABKIT_MODE=replay``, cwd = the student's folder, errors allowed), the
    ``hidden`` cells of ``source/<notebook>.ipynb`` are appended, then a grading cell writes
    the results of every check (:mod:`labkit.grading.checks`) to a file whose name carries a random
    nonce.  Grades come only from that file, never from what the notebook prints.  A check
    that was not reached (the kernel died, a cell or the whole notebook timed out, the
    file is missing) scores 0: never a false pass.

Not a sandbox: the grader defends against a notebook tampering with :mod:`labkit.grading.checks`
(monkeypatching ``report``, re-registering a check, printing fake results), but a
submission is arbitrary code run as the grading user: grade untrusted work in a container.
"""
from __future__ import annotations

import argparse
import ast
import atexit
import asyncio
import csv
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import GradingError, LabkitError

__all__ = ["GradingError", "GradeReport", "Row", "release", "grade", "release_main", "grade_main"]

log = logging.getLogger(__name__)
_nbclient_log = logging.getLogger(__name__ + ".nbclient")  # nbclient's complaints: in our reasons
_nbclient_log.addHandler(logging.NullHandler())
_nbclient_log.propagate = False

CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "*Your answer here.*"
STATUSES = ("pass", "fail", "not-reached", "invalid-notebook")
CSV_COLUMNS = ("student", "notebook", "check", "points", "max_points", "status", "message")
SUMMARY_COLUMNS = ("student", "points", "max_points", "status", "notes")
LAYOUT = "SUBMISSIONS/<student>/<notebook>.ipynb (one folder per student)"

_BEGIN = re.compile(r"^(\s*)#{1,3}\s*BEGIN SOLUTION\b.*$")
_END = re.compile(r"^\s*#{1,3}\s*END SOLUTION\b.*$")
_MD_REGION = re.compile(r"<!--\s*BEGIN SOLUTION\s*-->(.*?)<!--\s*END SOLUTION\s*-->", re.S)
_ANY_MARKER = re.compile(r"(BEGIN|END) SOLUTION")
_KEEP_CELL_META = ("tags", "editable", "deletable")
_TRIVIAL = {"pass", "return", "break", "continue", "else:", "try:", "finally:", "except:",
            "raise", "return None", "None", "True", "False", "...", *CODE_STUB, MARKDOWN_STUB}


# =========================================================================== release


def release(source: Path, out: Path) -> list[Path]:
    """Write student copies of *source* (a notebook or a folder of them) into *out*.

    *out* is a folder (created if needed), or a ``.ipynb`` path when *source* is one
    notebook.  Nothing is written if any notebook is malformed; returns the written paths.
    """
    source, out = Path(source), Path(out)
    if not source.exists():
        raise GradingError(f"{source} does not exist", hint="give a notebook or a folder of notebooks")
    if source.is_dir():
        notebooks = sorted(p for p in source.glob("*.ipynb") if p.is_file())
        if not notebooks:
            raise GradingError(f"no notebooks (*.ipynb) in {source}")
        if out.suffix == ".ipynb":
            raise GradingError(f"{out} is a notebook path but {source} is a folder",
                               hint="give an output folder")
        targets = [out / p.name for p in notebooks]
    else:
        notebooks = [source]
        targets = [out if out.suffix == ".ipynb" else out / source.name]
    for src, dst in zip(notebooks, targets):
        if dst.resolve() == src.resolve():
            raise GradingError(f"releasing {src} would overwrite it with the student copy",
                               hint="choose another output folder (e.g. release/)")
    prepared = [(dst, *_student_copy(src)) for src, dst in zip(notebooks, targets)]
    written = []
    import nbformat
    for dst, nb, removed in prepared:
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(dst))
        try:
            _verify_no_leak(dst, removed)
        except GradingError:
            dst.unlink(missing_ok=True)
            raise
        written.append(dst)
    return written


def _student_copy(src: Path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell

    raw = src.read_bytes()
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as exc:
        raise GradingError(f"{src} is not a readable notebook", cause=f"{type(exc).__name__}: {exc}") from None
    if (nb.metadata.get("labkit") or {}).get("student_copy"):
        raise GradingError(f"{src} is already a student copy", hint="release the instructor notebook")
    removed: list[tuple[str, str]] = []  # (where, line) of every line taken out
    cells = []
    for n, cell in enumerate(nb.cells, 1):
        where = f"{src.name} cell {n}"
        tags = list(cell.get("metadata", {}).get("tags", []))
        source = cell.get("source", "")
        if "hidden" in tags:
            continue
        if "solution" in tags:
            removed += [(where, line) for line in source.splitlines()]
            new = (new_markdown_cell(MARKDOWN_STUB) if cell.cell_type == "markdown"
                   else new_code_cell("\n".join(CODE_STUB)))
        elif cell.cell_type == "code":
            text, gone = _strip_code(source, where)
            removed += [(where, line) for line in gone]
            new = new_code_cell(text)
        elif cell.cell_type == "markdown":
            text, gone = _strip_markdown(source, where)
            removed += [(where, line) for line in gone]
            new = new_markdown_cell(text)
            if "attachments" in cell:
                new["attachments"] = cell["attachments"]
        else:
            new = new_raw_cell(source)
        if cell.get("id"):
            new["id"] = cell["id"]
        meta = {k: v for k, v in cell.get("metadata", {}).items() if k in _KEEP_CELL_META}
        if "tags" in meta:
            meta["tags"] = [t for t in meta["tags"] if t not in ("solution", "hidden")]
            if not meta["tags"]:
                del meta["tags"]
        new["metadata"] = meta
        if _ANY_MARKER.search(new["source"]):
            raise GradingError(f"{where}: a solution marker was not recognised",
                               cause="markers must be on their own line: `### BEGIN SOLUTION` / "
                                     "`### END SOLUTION` (code), `<!-- BEGIN SOLUTION -->` … "
                                     "`<!-- END SOLUTION -->` (markdown)")
        cells.append(new)
    meta: dict[str, Any] = {}
    if "kernelspec" in nb.metadata:
        meta["kernelspec"] = nb.metadata["kernelspec"]
    if "language_info" in nb.metadata:
        meta["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    meta["labkit"] = {"student_copy": True, "source": src.name,
                      "source_sha256": hashlib.sha256(raw).hexdigest()}
    out = new_notebook(cells=cells, metadata=meta)
    nbformat.validate(out)
    return out, removed


def _strip_code(source: str, where: str) -> tuple[str, list[str]]:
    out: list[str] = []
    removed: list[str] = []
    begin_line: int | None = None
    for i, line in enumerate(source.splitlines(), 1):
        begin = _BEGIN.match(line)
        if begin:
            if begin_line is not None:
                raise GradingError(f"{where}, line {i}: BEGIN SOLUTION inside another solution "
                                   f"region (opened line {begin_line})",
                                   hint="close the first region with `### END SOLUTION`")
            begin_line = i
            out += [begin.group(1) + stub for stub in CODE_STUB]
        elif _END.match(line):
            if begin_line is None:
                raise GradingError(f"{where}, line {i}: END SOLUTION without BEGIN SOLUTION")
            begin_line = None
        elif begin_line is not None:
            removed.append(line)
        else:
            out.append(line)
    if begin_line is not None:
        raise GradingError(f"{where}, line {begin_line}: BEGIN SOLUTION has no END SOLUTION",
                           cause="the rest of the cell would be released as the solution",
                           hint="add `### END SOLUTION` where the solution ends")
    return "\n".join(out), removed


def _strip_markdown(source: str, where: str) -> tuple[str, list[str]]:
    removed: list[str] = []

    def replace(match: re.Match) -> str:
        removed.extend(match.group(1).splitlines())
        return MARKDOWN_STUB

    text = _MD_REGION.sub(replace, source)
    if "BEGIN SOLUTION" in text:
        raise GradingError(f"{where}: <!-- BEGIN SOLUTION --> has no <!-- END SOLUTION -->")
    if "END SOLUTION" in text:
        raise GradingError(f"{where}: <!-- END SOLUTION --> without <!-- BEGIN SOLUTION -->")
    return text, removed


def _meaningful(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#") and s not in _TRIVIAL and re.search(r"\w", s) is not None


def _verify_no_leak(path: Path, removed: Iterable[tuple[str, str]]) -> None:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    text = "\n".join(cell.source for cell in nb.cells)
    for where, line in removed:
        if not _meaningful(line):
            continue
        s = line.strip()
        if re.search(r"(?<!\w)" + re.escape(s) + r"(?!\w)", text):
            raise GradingError(f"the student copy {path.name} would still contain solution text "
                               f"from {where}: {s!r}",
                               cause="that line is also written outside the solution region",
                               hint="reword it outside the region, or move it out of the solution")
    for cell in nb.cells:
        if "hidden" in cell.metadata.get("tags", []) or cell.get("outputs"):
            raise GradingError(f"the student copy {path.name} still has hidden cells or outputs")


# =========================================================================== grade


@dataclass
class Row:
    student: str
    notebook: str
    check: str
    points: float
    max_points: float
    status: str
    message: str
    hint: str = ""

    def csv(self) -> dict[str, str]:
        return {"student": self.student, "notebook": self.notebook, "check": self.check,
                "points": _num(self.points), "max_points": _num(self.max_points),
                "status": self.status, "message": self.message}


@dataclass
class GradeReport:
    rows: list[Row]
    summary: list[dict[str, str]]
    out_csv: Path
    summary_csv: Path
    feedback_dir: Path
    notes: list[str] = field(default_factory=list)

    def total(self, student: str) -> tuple[float, float]:
        mine = [r for r in self.rows if r.student == student]
        return sum(r.points for r in mine), sum(r.max_points for r in mine)

    def table(self) -> str:
        width = max([len("student"), *(len(s["student"]) for s in self.summary)])
        lines = [f"{'student':<{width}}  {'points':>12}  status"]
        for s in self.summary:
            pts = f"{s['points']}/{s['max_points']}"
            lines.append(f"{s['student']:<{width}}  {pts:>12}  {s['status']}"
                         + (f"  ({s['notes']})" if s["notes"] else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class _Expected:
    id: str
    points: float
    hint: str
    hidden: bool


@dataclass
class _Outcome:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # check id -> reported
    reason: str = ""          # why some checks may not have been reached
    invalid: str = ""         # the notebook could not be read
    cell_errors: list[str] = field(default_factory=list)


def grade(submissions: Path, out_csv: Path, *, source: Path | None = None, timeout: float = 60,
          total_timeout: float = 600, env: dict | None = None, jobs: int = 1) -> GradeReport:
    """Grade ``submissions/<student>/<notebook>.ipynb``; write the CSVs and feedback files.

    *env* is added to the kernel's environment (which has ``LABKIT_MODE=replay`` unless
    *env* says otherwise); *timeout* bounds each cell, *total_timeout* each notebook;
    *jobs* notebooks are graded at once.
    """
    submissions, out_csv = Path(submissions), Path(out_csv)
    if timeout <= 0 or total_timeout <= 0:
        raise GradingError("timeouts must be positive")
    kernel_env = dict(os.environ)
    kernel_env["LABKIT_MODE"] = "replay"
    kernel_env.update({k: str(v) for k, v in (env or {}).items()})
    students = _discover(submissions)
    if submissions.resolve() in out_csv.resolve().parents:
        raise GradingError(f"{out_csv} is inside the submissions folder {submissions}",
                           cause="its feedback/ folder would look like a student next time",
                           hint="write the grades elsewhere, e.g. -o grades/grades.csv")
    hidden = _hidden_cells(Path(source)) if source is not None else {}
    _load_checks(kernel_env)

    # the notebooks graded: those handed in by at least one student (the others get 0)
    notes: list[str] = []
    if source is None:
        notes.append("no --source given: checks in hidden cells of the instructor notebooks "
                     "are not graded")
    submitted = sorted({nb for nbs in students.values() for nb in nbs})
    expected: dict[str, list[_Expected]] = {}
    for nb_id in submitted:
        checks = _expected_checks(nb_id, hidden.get(nb_id, []))
        if checks:
            expected[nb_id] = checks
        else:
            notes.append(f"no checks are registered for notebook {nb_id!r}: not graded")
    if not expected:
        raise GradingError(f"nothing to grade in {submissions}: no submitted notebook has checks",
                           cause="a notebook's checks are registered under its file name "
                                 "(00-orientation.ipynb -> \"00-orientation\") by labkit.grading.exercises",
                           hint="check the notebook file names and `python -c 'import labkit.grading.exercises'`")

    tasks = [(student, nb_id) for student in students for nb_id in expected]
    session = _Session()
    extras = _extra_modules(kernel_env)

    def work(task: tuple[str, str]) -> _Outcome:
        student, nb_id = task
        path = students[student].get(nb_id)
        if path is None:
            return _Outcome(reason=f"not submitted: {student}/{nb_id}.ipynb was not found")
        try:
            return _grade_notebook(path, nb_id, hidden.get(nb_id, []), extras, kernel_env,
                                   timeout, total_timeout, session)
        except Exception as exc:  # a grader bug must cost this notebook, not the others
            log.exception("grading %s failed", path)
            return _Outcome(reason=f"grading failed ({type(exc).__name__}: {exc})")

    # Kernels run in worker threads, so that Ctrl-C reaches this thread: it stops the
    # grading, kills every kernel and propagates (no grades are written).
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="labkit-grade")
    try:
        futures = [pool.submit(work, t) for t in tasks]
        outcomes = [_wait(f) for f in futures]
    except BaseException:
        session.abort.set()
        session.kill_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)

    rows: list[Row] = []
    per_student: dict[str, list[tuple[str, _Outcome, list[Row]]]] = {s: [] for s in students}
    for (student, nb_id), outcome in zip(tasks, outcomes):
        nb_rows = _rows(student, nb_id, expected[nb_id], outcome)
        rows += nb_rows
        per_student[student].append((nb_id, outcome, nb_rows))

    summary = [_summary(student, items) for student, items in per_student.items()]
    summary_csv = out_csv.with_name(out_csv.stem + ".summary.csv") if out_csv.suffix == ".csv" \
        else out_csv.with_name(out_csv.name + ".summary.csv")
    feedback_dir = out_csv.parent / "feedback"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.csv() for r in rows)
    with open(summary_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(summary)
    feedback_dir.mkdir(parents=True, exist_ok=True)
    for student, items in per_student.items():
        (feedback_dir / f"{student}.md").write_text(_feedback(student, items), encoding="utf-8")
    return GradeReport(rows, summary, out_csv, summary_csv, feedback_dir, notes)


# ------------------------------------------------------------------ discovery, checks


def _discover(submissions: Path) -> dict[str, dict[str, Path]]:
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


def _hidden_cells(source: Path) -> dict[str, list[str]]:
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


def _extra_modules(kernel_env: dict[str, str]) -> list[str]:
    return kernel_env.get("LABKIT_EXERCISES", "").replace(",", " ").split()


def _load_checks(kernel_env: dict[str, str]) -> None:
    """Fill this process's registry with what the kernels will load."""
    import importlib

    from labkit.grading import exercises
    for entry in reversed(kernel_env.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    for name in _extra_modules(kernel_env):
        if name not in exercises.loaded:
            exercises._load(name)
    if exercises.errors:
        raise GradingError("some exercise modules cannot be imported: " + "; ".join(
            f"{k}: {v}" for k, v in exercises.errors.items()),
            cause="grading without their checks would give wrong grades",
            hint="fix the module (python -c 'import labkit.grading.exercises') and grade again")
    importlib.import_module("labkit.grading.checks")


def _expected_checks(nb_id: str, hidden_sources: list[str]) -> list[_Expected]:
    from labkit.grading import checks
    found = {c.id: _Expected(c.id, c.points, c.hint, c.hidden) for c in checks.registered(nb_id)}
    for n, src in enumerate(hidden_sources, 1):
        for exp in _checks_in_code(src, nb_id, f"hidden cell {n} of {nb_id}"):
            found[exp.id] = exp
    return list(found.values())


def _checks_in_code(source: str, nb_id: str, where: str) -> list[_Expected]:
    """The ``check(...)`` registrations of a hidden cell, read without running it."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        source = TransformerManager().transform_cell(source)
    except Exception:
        pass
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise GradingError(f"{where} is not valid Python: {exc}") from None
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name != "check":
            continue
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise GradingError(f"{where}: check(...) needs literal arguments",
                               cause="the grader reads hidden checks without running them, to "
                                     "score them 0 when a notebook never reaches them",
                               hint='write e.g. @check("00-orientation", "sip-port", points=1)') from None
        if len(args) < 2 or args[0] != nb_id:
            continue
        found.append(_Expected(str(args[1]), float(kwargs.get("points", 1)),
                               str(kwargs.get("hint", "")), bool(kwargs.get("hidden", False))))
    return found


# ------------------------------------------------------------------ one notebook


_RESET_CELL = '''\
# labkit grading: fresh checks, whatever the notebook did to them
import sys as _lk_sys, os as _lk_os, importlib as _lk_importlib
try:
    _lk_ip = get_ipython()
    for _lk_event in list(_lk_ip.events.callbacks):
        _lk_ip.events.callbacks[_lk_event] = []
    _lk_ip.ast_transformers[:] = []
    _lk_ip.input_transformers_post[:] = []
except Exception:
    pass
_lk_os.environ["LABKIT_EXERCISES"] = {extras!r}
for _lk_name in [n for n in list(_lk_sys.modules) if n in ("labkit.grading.checks", "labkit.grading.exercises")
                 or n.startswith("labkit.grading.exercises.") or n in {extra_set!r}]:
    del _lk_sys.modules[_lk_name]
_lk_path, _lk_sys.path[:] = list(_lk_sys.path), [p for p in _lk_sys.path if p not in ("", ".", _lk_os.getcwd())]
try:
    _lk_importlib.invalidate_caches()
    _lk_importlib.import_module("labkit.grading.checks")
    _lk_importlib.import_module("labkit.grading.exercises")
finally:
    _lk_sys.path[:] = _lk_path
'''

_REPORT_CELL = '''\
# labkit grading: the results
import sys as _lk_sys
_lk_sys.modules["labkit.grading.checks"].report({nb_id!r}, {path!r})
'''


def _read_submission(path: Path):
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
        raise _Invalid(f"{type(exc).__name__}: {detail}"[:300]) from None


class _Invalid(Exception):
    pass


def _grade_notebook(path: Path, nb_id: str, hidden_sources: list[str], extras: list[str],
                    env: dict[str, str], timeout: float, total_timeout: float,
                    session: _Session) -> _Outcome:
    from nbformat.v4 import new_code_cell, new_notebook

    try:
        cells = _read_submission(path)
    except _Invalid as exc:
        return _Outcome(invalid=f"cannot read the notebook: {exc}")
    n_student = len(cells)
    labels = [f"cell {i + 1}" for i in range(n_student)]
    workdir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
    report = workdir / f"report-{secrets.token_hex(16)}.json"
    try:
        cells.append(new_code_cell(_RESET_CELL.format(extras=" ".join(extras), extra_set=tuple(extras))))
        labels.append("the grading set-up cell")
        for n, src in enumerate(hidden_sources, 1):
            cells.append(new_code_cell(src))
            labels.append(f"hidden cell {n}")
        cells.append(new_code_cell(_REPORT_CELL.format(nb_id=nb_id, path=str(report))))
        labels.append("the grading cell")
        nb = new_notebook(cells=cells, metadata={"kernelspec": {
            "name": "python3", "display_name": "Python 3", "language": "python"}})
        reason = asyncio.run(_execute(nb, path.parent, env, timeout, total_timeout, labels,
                                      workdir / "kernel.log", session))
        outcome = _Outcome(reason=reason or "")
        for i, cell in enumerate(nb.cells[:n_student]):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    evalue = " ".join(str(out.get("evalue", "")).split())[:200]
                    first = next((ln.strip() for ln in cell.source.splitlines()
                                  if ln.strip() and not ln.strip().startswith("#")), "")[:60].replace("`", "'")
                    outcome.cell_errors.append(
                        f"{labels[i]}" + (f" (`{first}`)" if first else "")
                        + f" raised {out.get('ename')}" + (f": {evalue}" if evalue else ""))
        grading_error = next((o for o in nb.cells[-1].get("outputs", [])
                              if o.get("output_type") == "error"), None)
        data, problem = _read_report(report, nb_id)
        if data is not None:
            outcome.results = data
        injected_errors = [f"{labels[i]} failed ({o.get('ename')}: {o.get('evalue')})"
                           for i in range(n_student, len(nb.cells) - 1)
                           for o in nb.cells[i].get("outputs", []) if o.get("output_type") == "error"]
        if not outcome.reason:
            if grading_error is not None:
                outcome.reason = (f"the grading cell failed ({grading_error.get('ename')}: "
                                  f"{grading_error.get('evalue')})")
            elif injected_errors:
                outcome.reason = "; ".join(injected_errors)
            elif problem:
                outcome.reason = problem
        return outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _read_report(path: Path, nb_id: str) -> tuple[dict[str, dict] | None, str]:
    if not path.exists():
        return None, "the grading cell wrote no results"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("labkit_report") != 1 or data.get("notebook") != nb_id:
            raise ValueError("not a report of this notebook")
        results = {}
        for r in data["results"]:
            if not (isinstance(r["id"], str) and isinstance(r["passed"], bool)):
                raise ValueError("malformed result")
            results[r["id"]] = {"passed": r["passed"], "message": str(r.get("message", ""))}
    except Exception as exc:
        return None, f"the results file is unreadable ({type(exc).__name__})"
    return results, "" if data.get("complete") is True else "the grading cell did not finish"


def _wait(future):
    """The future's result, waking up often so that Ctrl-C is seen at once."""
    while True:
        try:
            return future.result(timeout=0.25)
        except FuturesTimeout:
            continue


class _Session:
    """One grading run: the kernels alive now, and whether to stop."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self._lock = threading.Lock()
        self._kernels: list[dict[str, Any]] = []

    def add(self, kernel: dict[str, Any]) -> None:
        with self._lock:
            self._kernels.append(kernel)

    def remove(self, kernel: dict[str, Any]) -> None:
        with self._lock:
            if kernel in self._kernels:
                self._kernels.remove(kernel)

    def kill_all(self) -> None:
        with self._lock:
            kernels = list(self._kernels)
        for kernel in kernels:
            _kill(_descendants(kernel), kernel)


async def _execute(nb, cwd: Path, env: dict[str, str], timeout: float, total_timeout: float,
                   labels: list[str], kernel_log: Path, session: _Session) -> str | None:
    """Run *nb* in a fresh kernel; return why it stopped early (or None)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    class Client(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            # Keep only errors (for the feedback): a cell printing in a loop must not fill
            # the grader's memory, and grades never come from outputs anyway.
            if msg.get("msg_type") != "error":
                return None
            return super().output(outs, msg, display_id, cell_index)

    client = Client(nb, kernel_name="python3", allow_errors=True,
                    shutdown_kernel="immediate", interrupt_on_timeout=False,
                    startup_timeout=int(max(10, min(60, total_timeout))),
                    resources={"metadata": {"path": str(cwd)}}, log=_nbclient_log)
    limit = {"seconds": float(timeout)}
    client.timeout_func = lambda cell: limit["seconds"]
    procs: dict[int, Any] = {}
    kernel: dict[str, Any] = {}
    start = time.monotonic()
    deadline = start + total_timeout
    reason: str | None = None
    client.reset_execution_trackers()
    log_fh = open(kernel_log, "wb")  # the kernel's own stderr: quiet, but kept for errors
    try:
        # Start the kernel ourselves, so that its process is known (and killed in the end)
        # even if starting fails half-way; async_setup_kernel then uses it.
        client.km = client.create_kernel_manager()
        try:
            await client.async_start_new_kernel(env=env, cwd=str(cwd),
                                                stdout=subprocess.DEVNULL, stderr=log_fh)
        finally:
            kernel.update(_kernel_process(client))
            session.add(kernel)
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                if session.abort.is_set():
                    reason = "grading was interrupted"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reason = (f"the notebook ran out of time (total limit {_num(total_timeout)} s) "
                              f"before {labels[index]}")
                    break
                limit["seconds"] = min(float(timeout), remaining)
                try:
                    await client.async_execute_cell(cell, index,
                                                    execution_count=client.code_cells_executed + 1)
                except CellTimeoutError:
                    if limit["seconds"] < timeout:
                        reason = (f"the notebook ran out of time (total limit "
                                  f"{_num(total_timeout)} s) in {labels[index]}")
                    else:
                        reason = f"{labels[index]} timed out after {_num(timeout)} s"
                    break
                except DeadKernelError:
                    reason = f"kernel died in {labels[index]}"
                    break
                finally:
                    procs.update(_descendants(kernel))
    except Exception as exc:  # the kernel would not start, the connection broke…
        reason = reason or f"the notebook could not be run ({type(exc).__name__}: {exc})"
        tail = _tail(kernel_log)
        if tail:
            reason += f"; kernel said: {tail}"
    finally:
        procs.update(_descendants(kernel))
        if client.km is not None:  # the kernel started but async_setup_kernel never ran
            try:
                await client.km.shutdown_kernel(now=True)
            except Exception:
                pass
        _kill(procs, kernel)
        session.remove(kernel)
        log_fh.close()
        atexit.unregister(client._cleanup_kernel)  # left registered when the kernel failed to start
    return reason


def _tail(path: Path, limit: int = 300) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines()
                 if ln.strip() and "without encryption" not in ln]
    except OSError:
        return ""
    return " | ".join(lines[-3:])[-limit:]


def _kernel_process(client) -> dict[str, Any]:
    import psutil
    try:
        pid = client.km.provisioner.process.pid
        proc = psutil.Process(pid)
        return {"proc": proc, "pid": pid, "created": proc.create_time()}
    except Exception:
        return {}


def _descendants(kernel: dict[str, Any]) -> dict[int, Any]:
    import psutil
    proc = kernel.get("proc")
    if proc is None:
        return {}
    found = {}
    try:
        if proc.is_running():
            found[proc.pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
    except psutil.Error:
        pass
    return found


def _kill(procs: dict[int, Any], kernel: dict[str, Any]) -> None:
    """Kill what is left of the kernel: its processes and its process group."""
    import psutil
    pid, created = kernel.get("pid"), kernel.get("created")
    if pid is not None:  # the kernel leads its own session: catch children it spawned late
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.pid != os.getpid() and os.getpgid(proc.pid) == pid \
                        and proc.create_time() >= created - 1:
                    procs[proc.pid] = proc
            except (OSError, psutil.Error):
                pass
    alive = []
    for proc in procs.values():
        try:
            if proc.is_running():
                proc.kill()
                alive.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


# ------------------------------------------------------------------ outputs


def _rows(student: str, nb_id: str, expected: list[_Expected], outcome: _Outcome) -> list[Row]:
    rows = []
    for exp in expected:
        if outcome.invalid:
            rows.append(Row(student, nb_id, exp.id, 0.0, exp.points, "invalid-notebook",
                            outcome.invalid, exp.hint))
        elif exp.id in outcome.results:
            res = outcome.results[exp.id]
            rows.append(Row(student, nb_id, exp.id, exp.points if res["passed"] else 0.0,
                            exp.points, "pass" if res["passed"] else "fail", res["message"], exp.hint))
        else:
            rows.append(Row(student, nb_id, exp.id, 0.0, exp.points, "not-reached",
                            outcome.reason or "the check did not report", exp.hint))
    return rows


def _summary(student: str, items) -> dict[str, str]:
    rows = [r for _, _, nb_rows in items for r in nb_rows]
    statuses = {r.status for r in rows}
    status = ("invalid-notebook" if "invalid-notebook" in statuses
              else "not-reached" if "not-reached" in statuses else "ok")
    notes = []
    for nb_id, outcome, _ in items:
        if outcome.invalid:
            notes.append(f"{nb_id}: {outcome.invalid}")
        elif outcome.reason:
            notes.append(f"{nb_id}: {outcome.reason}")
    return {"student": student, "points": _num(sum(r.points for r in rows)),
            "max_points": _num(sum(r.max_points for r in rows)), "status": status,
            "notes": "; ".join(notes)}


def _feedback(student: str, items) -> str:
    rows_all = [r for _, _, rows in items for r in rows]
    lines = [f"# Feedback for {student}", "",
             f"**Total: {_num(sum(r.points for r in rows_all))}/"
             f"{_num(sum(r.max_points for r in rows_all))}**", ""]
    for nb_id, outcome, rows in items:
        lines += [f"## {nb_id} — {_num(sum(r.points for r in rows))}/"
                  f"{_num(sum(r.max_points for r in rows))}", ""]
        if outcome.invalid:
            lines += [f"Your notebook could not be read: {outcome.invalid}", ""]
        elif outcome.reason:
            lines += [f"Not every check could be reached: {outcome.reason}.", ""]
        for r in rows:
            mark = "✓" if r.status == "pass" else "✗"
            text = f"- {mark} {_num(r.points)}/{_num(r.max_points)} `{r.check}`"
            if r.status == "not-reached":
                text += " — not reached"
            elif r.status != "invalid-notebook" and r.message:
                text += f" — {r.message}"
            if r.status != "pass" and r.hint:
                text += f" — hint: {r.hint}"
            lines.append(text)
        if outcome.cell_errors:
            lines += ["", "Errors in your notebook:"]
            lines += [f"- {e}" for e in outcome.cell_errors[:20]]
        lines.append("")
    return "\n".join(lines)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# =========================================================================== CLI entry points


def release_main(argv: list[str] | None = None) -> int:
    """``labkit release SOURCE -o OUT``."""
    parser = argparse.ArgumentParser(prog="labkit release",
                                     description="Write student copies of instructor notebooks.")
    parser.add_argument("source", type=Path, help="an instructor notebook or a folder of them")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output folder (or .ipynb path for one notebook)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        written = release(args.source, args.output)
    except LabkitError as exc:
        print(f"labkit release: {exc.explain()}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def grade_main(argv: list[str] | None = None) -> int:
    """``labkit grade SUBMISSIONS -o grades.csv [--source notebooks/]``."""
    parser = argparse.ArgumentParser(
        prog="labkit grade",
        description=f"Run and grade submitted notebooks ({LAYOUT}).")
    parser.add_argument("submissions", type=Path, help="folder of student folders")
    parser.add_argument("-o", "--output", type=Path, default=Path("grades.csv"),
                        help="grades CSV (default: grades.csv); a .summary.csv and feedback/ go beside it")
    parser.add_argument("--source", type=Path, help="instructor notebooks (for hidden cells)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per cell (default 60)")
    parser.add_argument("--total-timeout", type=float, default=600,
                        help="seconds per notebook (default 600)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded at once")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.submissions.is_dir():
        print(f"labkit grade: submissions folder {args.submissions} does not exist "
              f"(expected {LAYOUT})", file=sys.stderr)
        return 2
    try:
        report = grade(args.submissions, args.output, source=args.source, timeout=args.timeout,
                       total_timeout=args.total_timeout, jobs=max(1, args.jobs))
    except LabkitError as exc:
        print(f"labkit grade: {exc.explain()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit grade: interrupted; every kernel was stopped, no grades were written.",
              file=sys.stderr)
        return 130
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    print(f"\nwrote {report.out_csv}, {report.summary_csv} and {report.feedback_dir}/")
    return 0
