"""Grade what students hand back; the ``labkit release`` and ``labkit grade`` commands.

``grade(submissions, out_csv, source=...)``
    ``submissions/<student>/<notebook>.ipynb`` (:mod:`~labkit.grading.collect`) → each
    notebook is run top to bottom in a fresh kernel (:mod:`~labkit.grading.execute`), in
    the sandbox (:mod:`~labkit.grading.sandbox`: an unprivileged uid of its own, no
    network, a copy of the student's folder, the limits of :mod:`~labkit.grading.limits`,
    and no view of the exercise modules — the truth of every check), in replay mode
    (``LABKIT_MODE=replay``, ``LABKIT_GRADING=1``), errors allowed.  A last cell written
    by the grader hands over the student's *answers*: the JSON values of the variables the
    checks name (:mod:`labkit.grading.answers`), in a file whose name carries a random nonce.

    Then the grader, in its own process, judges them: each check computes its truth from
    recordings it opens itself (:mod:`labkit.grading.truth`: the kit's recordings of the
    sessions the notebook declares, on the grading track), never from an object of the
    student's; a *configure* check applies the student's text to a fresh lab and measures it
    (:mod:`labkit.grading.probes`).  The checks of the ``hidden`` cells of
    ``source/<notebook>.ipynb`` are registered by running those cells here: they never reach
    a student's kernel.  Grades never come from what the notebook prints or claims.  A check
    that was not reached (the kernel died, a limit stopped the notebook, no answers) scores 0:
    never a false pass.  The CSVs and feedback: :mod:`~labkit.grading.report`.

Without the sandbox (``sandbox=False``, ``--no-sandbox``) a notebook is code run as the
grading user: for the instructor's own trusted notebooks only.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import labkit.grading.collect as collect
import labkit.grading.report as report
from labkit.errors import GradingError, LabkitError
from labkit.grading.limits import Limits, MiB, explain_error, size
from labkit.grading.release import release
from labkit.grading.report import UNPROBED, GradeReport, Outcome, Row

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


@dataclass(frozen=True)
class _Judging:
    """What the grader judges a notebook's answers with (the same for every student)."""
    track: str
    probes: bool                  # run the live probes of configure checks
    probes_why: str               # why not, when they are not run
    probe_timeout: float | None
    hidden_sources: dict[str, list[str]]
    probe_env: dict[str, str]


def grade(submissions: Path, out_csv: Path, *, source: Path | None = None, timeout: float = 60,
          total_timeout: float = 600, env: dict | None = None, jobs: int = 1,
          limits: Limits | None = None, sandbox: bool = True, probes: bool = True,
          unprobed: str = "zero", probe_timeout: float | None = None) -> GradeReport:
    """Grade ``submissions/<student>/<notebook>.ipynb``; write the CSVs and feedback files.

    *env* is added to the kernel's environment (which has ``LABKIT_MODE=replay`` unless
    *env* says otherwise; ``LABKIT_TRACK`` there is also the track the truth is read on);
    *timeout* bounds each cell, *total_timeout* each notebook, *limits* the rest (memory,
    processes, disk, output); *jobs* notebooks are graded at once.  ``sandbox=False`` runs
    the notebooks as the calling user: trusted notebooks only.  *probes* runs the live
    probes of configure checks (each within its own timeout, or *probe_timeout*); a probe
    that cannot run here scores 0 (``unprobed="zero"``) or is not counted (``"exclude"``).
    """
    from labkit import tracks
    from labkit.grading import checks
    from labkit.grading import probes as probing
    from labkit.grading.execute import Session
    from labkit.grading.sandbox import Sandbox
    from labkit.grading.truth import Truth

    submissions, out_csv = Path(submissions), Path(out_csv)
    if timeout <= 0 or total_timeout <= 0 or (probe_timeout is not None and probe_timeout <= 0):
        raise GradingError("timeouts must be positive")
    if unprobed not in UNPROBED:
        raise GradingError(f"unprobed must be one of {', '.join(UNPROBED)}, not {unprobed!r}")
    limits = limits or Limits()
    extra = {k: str(v) for k, v in (env or {}).items()}
    loader_env = {**os.environ, **extra}
    # the kernel knows it is graded; it is not told where the checks live
    settings = {"LABKIT_MODE": "replay", **extra, "LABKIT_GRADING": "1", "LABKIT_EXERCISES": ""}
    kernel_env = {**os.environ, **settings}
    try:
        track = tracks.get(kernel_env.get("LABKIT_TRACK", tracks.DEFAULT.name)).name
    except LabkitError as exc:
        raise GradingError(f"LABKIT_TRACK: {exc.message}") from None
    students = collect.discover(submissions)
    if submissions.resolve() in out_csv.resolve().parents:
        raise GradingError(f"{out_csv} is inside the submissions folder {submissions}",
                           cause="its feedback/ folder would look like a student next time",
                           hint="write the grades elsewhere, e.g. -o grades/grades.csv")
    hidden_sources = collect.hidden_cells(Path(source)) if source is not None else {}
    collect.load_checks(loader_env)

    # the notebooks graded: those handed in by at least one student (the others get 0)
    notes: list[str] = []
    if source is None:
        notes.append("no --source given: checks in hidden cells of the instructor notebooks "
                     "are not graded")
    submitted = sorted({nb for nbs in students.values() for nb in nbs})
    expected: dict[str, list[checks.Check]] = {}
    for nb_id in submitted:
        found = collect.expected_checks(nb_id, collect.hidden_checks(nb_id, hidden_sources.get(nb_id, [])))
        if found:
            expected[nb_id] = found
        else:
            notes.append(f"no checks are registered for notebook {nb_id!r}: not graded")
    if not expected:
        raise GradingError(f"nothing to grade in {submissions}: no submitted notebook has checks",
                           cause="a notebook's checks are registered under its file name "
                                 "(00-orientation.ipynb -> \"00-orientation\") by labkit.grading.exercises",
                           hint="check the notebook file names and `python -c 'import labkit.grading.exercises'`")
    for nb_id, found in expected.items():
        legacy = [c.id for c in found if c.legacy]
        if legacy:
            notes.append(f"{nb_id}: old-style checks score 0 until converted to answers=(…): "
                         + ", ".join(legacy))
        try:  # every recording a truth comes from, opened now: a missing one stops the grading
            Truth(nb_id, track).open_all()
        except LabkitError as exc:
            raise GradingError(f"the truth of {nb_id}'s checks cannot be opened: {exc.message}",
                               cause=exc.cause, hint=exc.hint) from None

    run_probes, probes_why = False, ""
    if any(c.probe is not None for found in expected.values() for c in found):
        if not probes:
            probes_why = "not run: live probes were switched off (--no-probes)"
        else:
            able, why = probing.can_run_here()
            run_probes, probes_why = able, ("" if able else f"not run here: {why}")
        if probes_why:
            notes.append(f"configure checks {probes_why}; they score "
                         + ("0" if unprobed == "zero" else "nothing (not counted)"))
    judging = _Judging(track, run_probes, probes_why, probe_timeout, hidden_sources,
                       {k: v for k, v in loader_env.items() if k != "LABKIT_GRADING"})

    confined = None
    if sandbox:
        confined = Sandbox(limits, base=os.environ, settings=settings,
                           hide=[submissions, out_csv, *report.paths(out_csv),
                                 *([Path(source)] if source is not None else []),
                                 *collect.exercise_paths(loader_env)])
        confined.check()
    else:
        notes.append("the notebooks ran WITHOUT the sandbox (--no-sandbox), as the grading user")

    tasks = [(student, nb_id) for student in students for nb_id in expected]
    session = Session()

    def work(task: tuple[str, str]) -> Outcome:
        student, nb_id = task
        path = students[student].get(nb_id)
        if path is None:
            return Outcome(reason=f"not submitted: {student}/{nb_id}.ipynb was not found")
        try:
            return _grade_notebook(path, student, nb_id, expected[nb_id], kernel_env, timeout,
                                   total_timeout, limits, session, confined, judging)
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
        per_student[student].append(
            (nb_id, outcome, report.rows(student, nb_id, expected[nb_id], outcome, unprobed=unprobed)))
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
# labkit grading: a fresh answer collector, whatever the notebook did to it
import sys as _lk_sys, os as _lk_os, importlib as _lk_importlib
try:
    _lk_ip = get_ipython()
    for _lk_event in list(_lk_ip.events.callbacks):
        _lk_ip.events.callbacks[_lk_event] = []
    _lk_ip.ast_transformers[:] = []
    _lk_ip.input_transformers_post[:] = []
except Exception:
    pass
for _lk_name in [n for n in list(_lk_sys.modules) if n.startswith("labkit.grading")]:
    del _lk_sys.modules[_lk_name]
_lk_path, _lk_sys.path[:] = list(_lk_sys.path), [p for p in _lk_sys.path if p not in ("", ".", _lk_os.getcwd())]
try:
    _lk_importlib.invalidate_caches()
    _lk_importlib.import_module("labkit.grading.answers")
finally:
    _lk_sys.path[:] = _lk_path
'''

_ANSWERS_CELL = '''\
# labkit grading: the answers
import sys as _lk_sys
_lk_sys.modules["labkit.grading.answers"].dump({nb_id!r}, {names!r}, {path!r}, globals())
'''


def _grade_notebook(path: Path, student: str, nb_id: str, expected: list, env: dict[str, str],
                    timeout: float, total_timeout: float, limits: Limits, session: Session,
                    confined: Sandbox | None, judging: _Judging) -> Outcome:
    from nbformat.v4 import new_code_cell, new_notebook

    from labkit.grading import answers as handed
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
    names = list(dict.fromkeys(name for chk in expected for name in (chk.answers or ())))
    own = {"LABKIT_STUDENT": student}  # exercises that give each student a lab of their own
    env = {**env, **own}
    km = (confined.kernel_manager(folder, output_bytes=limits.output_bytes, env=own) if confined is not None
          else KernelManager(output_bytes=limits.output_bytes))
    results = f"answers-{secrets.token_hex(16)}.json"
    with km:
        cells.append(new_code_cell(_RESET_CELL))
        labels.append("the grading set-up cell")
        cells.append(new_code_cell(_ANSWERS_CELL.format(nb_id=nb_id, names=names,
                                                        path=f"{km.results_dir}/{results}")))
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
    values, problem = handed.load(run.files.get(results), nb_id)
    setup_errors = [f"{labels[i]} failed ({o.get('ename')}: {o.get('evalue')})"
                    for i in range(n_student, len(nb.cells) - 1)
                    for o in nb.cells[i].get("outputs", []) if o.get("output_type") == "error"]
    if not outcome.reason:
        if grading_error is not None:
            outcome.reason = (f"the grading cell failed ({grading_error.get('ename')}: "
                              f"{grading_error.get('evalue')})")
        elif setup_errors:
            outcome.reason = "; ".join(setup_errors)
        elif problem:
            outcome.reason = problem
    if values is not None:
        outcome.results = _judge(nb_id, student, expected, handed.Answers(values), judging)
    return outcome


def _judge(nb_id: str, student: str, expected: list, given, judging: _Judging) -> dict[str, dict]:
    """Judge the answers of one notebook, here in the grader: check id -> result."""
    from labkit.grading import checks, probes
    from labkit.grading.answers import AnswerError
    from labkit.grading.truth import LOCK, Truth

    truth = Truth(nb_id, judging.track, student=student)
    out: dict[str, dict] = {}
    for chk in expected:
        if chk.probe is None:
            with LOCK:
                result = checks.judge(chk, given, truth)
            out[chk.id] = {"passed": result.passed, "message": result.message}
            continue
        try:
            text = given.only(chk.answers)[chk.probe.answer(judging.track)]
        except AnswerError as exc:
            out[chk.id] = {"passed": False, "message": str(exc)}
            continue
        if not judging.probes:
            try:  # a refused text is refused here too: no lab is needed to say so
                probes.validate(chk.probe, text, judging.track, student)
            except LabkitError as exc:
                out[chk.id] = {"passed": False, "message": probes.refusal(exc)}
                continue
            except Exception as exc:
                out[chk.id] = {"passed": False, "message": f"your text cannot be applied ({type(exc).__name__})"}
                continue
            out[chk.id] = {"passed": False, "message": judging.probes_why, "status": "not-run"}
            continue
        done = probes.run(chk, text, judging.track, student=student, timeout=judging.probe_timeout,
                          sources=judging.hidden_sources.get(nb_id, []), env=judging.probe_env)
        out[chk.id] = {"passed": done.passed, "message": done.message,
                       **({"status": "not-run"} if done.status == "not-run" else {})}
    return out


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
    parser.add_argument("--source", type=Path,
                        help="instructor notebooks (their hidden cells are run by the grader: hidden checks)")
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
    parser.add_argument("--no-probes", action="store_true",
                        help="do not bring up labs for configure checks (they are not run)")
    parser.add_argument("--unprobed", choices=UNPROBED, default="zero",
                        help="how a configure check that was not run scores: zero (0 out of its "
                             "points, the default) or exclude (not counted)")
    parser.add_argument("--probe-timeout", type=float, default=None,
                        help="seconds per live probe (default: each probe's own, 180 s unless it says)")
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
                       sandbox=not args.no_sandbox, probes=not args.no_probes, unprobed=args.unprobed,
                       probe_timeout=args.probe_timeout)
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
