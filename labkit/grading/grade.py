"""Grade what students hand back; the ``labkit release`` and ``labkit grade`` commands.

``grade(submissions, out_csv, source=...)``
    ``submissions/<student>/<notebook>.ipynb`` (:mod:`~labkit.grading.collect`) → each
    notebook is run top to bottom in a fresh kernel (:mod:`~labkit.grading.execute`), in
    the sandbox (:mod:`~labkit.grading.sandbox`: an unprivileged uid of its own, no
    network, a copy of the student's folder, the limits of :mod:`~labkit.grading.limits`),
    in replay mode (``LABKIT_MODE=replay``), errors allowed.  The ``hidden`` cells of
    ``source/<notebook>.ipynb`` are appended, then a grading cell writes the results of every
    check (:mod:`labkit.grading.checks`) to a file whose name carries a random nonce.
    Grades come only from that file, never from what the notebook prints.  A check that was
    not reached (the kernel died, a limit stopped the notebook, the file is missing) scores
    0: never a false pass.  The CSVs and feedback: :mod:`~labkit.grading.report`.

The grader also defends against a notebook tampering with :mod:`labkit.grading.checks`
(monkeypatching ``report``, re-registering a check, printing fake results).  Without the
sandbox (``sandbox=False``, ``--no-sandbox``) a notebook is code run as the grading user:
for the instructor's own trusted notebooks only.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import TYPE_CHECKING

import labkit.grading.collect as collect
import labkit.grading.report as report
from labkit.errors import GradingError, LabkitError
from labkit.grading.limits import Limits, MiB, explain_error, size
from labkit.grading.release import release
from labkit.grading.report import GradeReport, Outcome, Row

if TYPE_CHECKING:  # imported when grading: every notebook imports this package (checks)
    from labkit.grading.execute import Session
    from labkit.grading.sandbox import Sandbox

__all__ = ["GradingError", "GradeReport", "Row", "release", "grade", "release_main", "grade_main"]

log = logging.getLogger(__name__)

NO_SANDBOX_WARNING = (
    "WARNING: --no-sandbox: the notebooks run as YOU, with your files, your network and no "
    "limit but time and output.\n"
    "WARNING: a notebook can read the solutions, other students' work and the grades, and "
    "change them. Only for your own trusted notebooks.")


def grade(submissions: Path, out_csv: Path, *, source: Path | None = None, timeout: float = 60,
          total_timeout: float = 600, env: dict | None = None, jobs: int = 1,
          limits: Limits | None = None, sandbox: bool = True) -> GradeReport:
    """Grade ``submissions/<student>/<notebook>.ipynb``; write the CSVs and feedback files.

    *env* is added to the kernel's environment (which has ``LABKIT_MODE=replay`` unless
    *env* says otherwise); *timeout* bounds each cell, *total_timeout* each notebook,
    *limits* the rest (memory, processes, disk, output); *jobs* notebooks are graded at
    once.  ``sandbox=False`` runs the notebooks as the calling user: trusted notebooks only.
    """
    from labkit.grading.execute import Session
    from labkit.grading.sandbox import Sandbox

    submissions, out_csv = Path(submissions), Path(out_csv)
    if timeout <= 0 or total_timeout <= 0:
        raise GradingError("timeouts must be positive")
    limits = limits or Limits()
    settings = {"LABKIT_MODE": "replay", **{k: str(v) for k, v in (env or {}).items()}}
    kernel_env = {**os.environ, **settings}
    students = collect.discover(submissions)
    if submissions.resolve() in out_csv.resolve().parents:
        raise GradingError(f"{out_csv} is inside the submissions folder {submissions}",
                           cause="its feedback/ folder would look like a student next time",
                           hint="write the grades elsewhere, e.g. -o grades/grades.csv")
    hidden = collect.hidden_cells(Path(source)) if source is not None else {}
    collect.load_checks(kernel_env)

    # the notebooks graded: those handed in by at least one student (the others get 0)
    notes: list[str] = []
    if source is None:
        notes.append("no --source given: checks in hidden cells of the instructor notebooks "
                     "are not graded")
    submitted = sorted({nb for nbs in students.values() for nb in nbs})
    expected: dict[str, list[collect.Expected]] = {}
    for nb_id in submitted:
        checks = collect.expected_checks(nb_id, hidden.get(nb_id, []))
        if checks:
            expected[nb_id] = checks
        else:
            notes.append(f"no checks are registered for notebook {nb_id!r}: not graded")
    if not expected:
        raise GradingError(f"nothing to grade in {submissions}: no submitted notebook has checks",
                           cause="a notebook's checks are registered under its file name "
                                 "(00-orientation.ipynb -> \"00-orientation\") by labkit.grading.exercises",
                           hint="check the notebook file names and `python -c 'import labkit.grading.exercises'`")

    confined = None
    if sandbox:
        confined = Sandbox(limits, base=os.environ, settings=settings,
                           hide=[submissions, out_csv, *report.paths(out_csv),
                                 *([Path(source)] if source is not None else [])])
        confined.check()
    else:
        notes.append("the notebooks ran WITHOUT the sandbox (--no-sandbox), as the grading user")

    tasks = [(student, nb_id) for student in students for nb_id in expected]
    session = Session()
    extras = collect.extra_modules(kernel_env)

    def work(task: tuple[str, str]) -> Outcome:
        student, nb_id = task
        path = students[student].get(nb_id)
        if path is None:
            return Outcome(reason=f"not submitted: {student}/{nb_id}.ipynb was not found")
        try:
            return _grade_notebook(path, nb_id, hidden.get(nb_id, []), extras, kernel_env,
                                   timeout, total_timeout, limits, session, confined)
        except GradingError:  # the sandbox itself failed: no notebook is graded without it
            raise
        except Exception as exc:  # a grader bug must cost this notebook, not the others
            log.exception("grading %s failed", path)
            return Outcome(reason=f"grading failed ({type(exc).__name__}: {exc})")

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

    per_student: dict[str, list[tuple[str, Outcome, list[Row]]]] = {s: [] for s in students}
    for (student, nb_id), outcome in zip(tasks, outcomes):
        per_student[student].append((nb_id, outcome, report.rows(student, nb_id, expected[nb_id], outcome)))
    return report.write(out_csv, per_student, notes)


def _wait(future):
    """The future's result, waking up often so that Ctrl-C is seen at once."""
    while True:
        try:
            return future.result(timeout=0.25)
        except FuturesTimeout:
            continue


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


def _grade_notebook(path: Path, nb_id: str, hidden_sources: list[str], extras: list[str],
                    env: dict[str, str], timeout: float, total_timeout: float, limits: Limits,
                    session: Session, confined: Sandbox | None) -> Outcome:
    from nbformat.v4 import new_code_cell, new_notebook

    from labkit.grading.execute import KernelManager, execute

    try:
        cells = collect.read_submission(path)
    except collect.Invalid as exc:
        return Outcome(invalid=f"cannot read the notebook: {exc}")
    folder = path.parent.resolve()
    if confined is not None and path.parent.is_symlink():  # it would show another folder
        return Outcome(reason=f"the student's folder is a symbolic link (to {folder}): not run")
    if confined is not None and (held := collect.folder_size(folder)) > limits.disk_bytes:
        return Outcome(reason=f"the student's folder holds {size(held)} of files, more than "
                              f"the {size(limits.disk_bytes)} a notebook gets while graded")
    n_student = len(cells)
    labels = [f"cell {i + 1}" for i in range(n_student)]
    km = (confined.kernel_manager(folder, output_bytes=limits.output_bytes) if confined is not None
          else KernelManager(output_bytes=limits.output_bytes))
    results = f"report-{secrets.token_hex(16)}.json"
    with km:
        cells.append(new_code_cell(_RESET_CELL.format(extras=" ".join(extras), extra_set=tuple(extras))))
        labels.append("the grading set-up cell")
        for n, src in enumerate(hidden_sources, 1):
            cells.append(new_code_cell(src))
            labels.append(f"hidden cell {n}")
        cells.append(new_code_cell(_REPORT_CELL.format(nb_id=nb_id, path=f"{km.results_dir}/{results}")))
        labels.append("the grading cell")
        nb = new_notebook(cells=cells, metadata={"kernelspec": {
            "name": "python3", "display_name": "Python 3", "language": "python"}})
        run = execute(nb, km, cwd=folder, env=env, timeout=timeout, total_timeout=total_timeout,
                      output_bytes=limits.output_bytes, labels=labels, session=session,
                      fetch=(results,))
    outcome = Outcome(reason=run.reason, stopped=[run.stopped] if run.stopped else [])
    for i, cell in enumerate(nb.cells[:n_student]):
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error":
                continue
            ename, evalue = str(out.get("ename")), str(out.get("evalue", ""))
            short = " ".join(evalue.split())[:200]
            first = next((ln.strip() for ln in cell.source.splitlines()
                          if ln.strip() and not ln.strip().startswith("#")), "")[:60].replace("`", "'")
            outcome.cell_errors.append(
                f"{labels[i]}" + (f" (`{first}`)" if first else "")
                + f" raised {ename}" + (f": {short}" if short else ""))
            line = explain_error(labels[i], ename, evalue, limits)
            if line and line not in outcome.stopped:
                outcome.stopped.append(line)
    grading_error = next((o for o in nb.cells[-1].get("outputs", [])
                          if o.get("output_type") == "error"), None)
    data, problem = _parse_report(run.files.get(results), nb_id)
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


def _parse_report(raw: bytes | None, nb_id: str) -> tuple[dict[str, dict] | None, str]:
    """The results the grading cell wrote (None and why, if they cannot be trusted)."""
    if raw is None:
        return None, "the grading cell wrote no results"
    try:
        data = json.loads(raw.decode("utf-8"))
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
    default = Limits()
    parser = argparse.ArgumentParser(
        prog="labkit grade",
        description=f"Run and grade submitted notebooks ({collect.LAYOUT}), each in a sandbox.")
    parser.add_argument("submissions", type=Path, help="folder of student folders")
    parser.add_argument("-o", "--output", type=Path, default=Path("grades.csv"),
                        help="grades CSV (default: grades.csv); a .summary.csv and feedback/ go beside it")
    parser.add_argument("--source", type=Path, help="instructor notebooks (for hidden cells)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per cell (default 60)")
    parser.add_argument("--total-timeout", type=float, default=600,
                        help="seconds per notebook (default 600)")
    parser.add_argument("--memory-mb", type=int, default=default.memory_bytes // MiB,
                        help=f"memory per process of a notebook, MiB (default {default.memory_bytes // MiB})")
    parser.add_argument("--processes", type=int, default=default.processes,
                        help=f"processes and threads per notebook (default {default.processes})")
    parser.add_argument("--disk-mb", type=int, default=default.disk_bytes // MiB,
                        help=f"disk for a notebook's folder, and for its /tmp, MiB (default "
                             f"{default.disk_bytes // MiB})")
    parser.add_argument("--output-mb", type=int, default=default.output_bytes // MiB,
                        help=f"output per notebook, MiB (default {default.output_bytes // MiB})")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded at once")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run the notebooks as yourself, without the sandbox nor its "
                             "limits (time and output still apply): only for your own "
                             "trusted notebooks")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.submissions.is_dir():
        print(f"labkit grade: submissions folder {args.submissions} does not exist "
              f"(expected {collect.LAYOUT})", file=sys.stderr)
        return 2
    if args.no_sandbox:
        print(NO_SANDBOX_WARNING, file=sys.stderr)
    try:
        limits = Limits(memory_bytes=args.memory_mb * MiB, processes=args.processes,
                        disk_bytes=args.disk_mb * MiB, output_bytes=args.output_mb * MiB)
        result = grade(args.submissions, args.output, source=args.source, timeout=args.timeout,
                       total_timeout=args.total_timeout, jobs=max(1, args.jobs), limits=limits,
                       sandbox=not args.no_sandbox)
    except LabkitError as exc:
        print(f"labkit grade: {exc.explain()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit grade: interrupted; every kernel was stopped, no grades were written.",
              file=sys.stderr)
        return 130
    print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    print(f"\nwrote {result.out_csv}, {result.summary_csv} and {result.feedback_dir}/")
    return 0
