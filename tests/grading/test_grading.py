"""release and grade, end to end, with real kernels on the toy notebook.

The submissions are built in the test from the *released* student copy, with the exercise
cells filled in the way each kind of student would.
"""
from __future__ import annotations

import asyncio
import copy
import csv
import os
import signal
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from labkit.grading.grade import GradingError, grade, grade_main, release, release_main

from .conftest import SOURCE

SOLUTION_TEXT = ["6 * 7", "acc += x", "acc = 0", "return acc", "Deep Thought", "seven and a half"]


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    (path,) = release(SOURCE / "toy.ipynb", out)
    return path


def _submission(released: Path, answer: str, total: str, extra: list[str] = ()) -> nbformat.NotebookNode:
    """The student copy with its two exercise cells filled in (and *extra* cells after them)."""
    nb = copy.deepcopy(nbformat.read(str(released), as_version=4))
    for i, cell in enumerate(nb.cells):
        if "# YOUR CODE HERE" not in cell.source:
            continue
        if "def add_all" in cell.source:
            cell.source = total
            at = i
        else:
            cell.source = answer
    for k, src in enumerate(extra):
        nb.cells.insert(at + 1 + k, nbformat.v4.new_code_cell(src))
    return nb


def _write(root: Path, student: str, nb, name: str = "toy.ipynb") -> Path:
    (root / student).mkdir(parents=True, exist_ok=True)
    path = root / student / name
    nbformat.write(nb, str(path))
    return path


def _rows(path: Path) -> dict[tuple[str, str], dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    table = {(r["student"], r["check"]): r for r in rows}
    assert len(table) == len(rows)  # one row per (student, check)
    return table


def _kernels_left() -> list[str]:
    """The kernels (and their children) still running under this test process."""
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
            if any("ipykernel" in part for part in cmdline):
                left.append(f"pid {child.pid} ({child.status()}, ppid {child.ppid()}, "
                            f"started {time.time() - child.create_time():.1f} s ago): {' '.join(cmdline)}")
        except psutil.Error:
            pass
    return left


def _sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", marker]:
            found.append(proc)
    return found


GOOD_ANSWER = "answer = 42"
GOOD_TOTAL = "def add_all(xs):\n    return sum(xs)\n\ntotal = add_all(numbers)"

CHEAT = '''\
# every way of claiming points without the right answer: fake results files, fake check
# lines, checks patched and re-registered, and the grader's own answer collector replaced
import importlib, json, sys, types
import labkit.grading.checks as c
claims = [{"id": i, "passed": True, "message": "", "points": 100, "max_points": 1}
          for i in ("answer-42", "sum-list", "hidden-positive")]
fake = {"labkit_report": 1, "labkit_answers": 1, "notebook": "toy", "complete": True,
        "results": claims, "answers": {"answer": {"value": 41, "passed": True}, "total": {"value": 26}}}
def fake_dump(notebook, names, path, namespace=None):
    with open(path, "w") as fh:
        json.dump(fake, fh)
forged = types.ModuleType("labkit.grading.answers")
forged.dump = fake_dump
real_import = importlib.import_module
def forged_import(name, *a):
    if name == "labkit.grading.answers":
        sys.modules[name] = forged
        return forged
    return real_import(name, *a)
importlib.import_module = forged_import
sys.modules["labkit.grading.answers"] = forged
c.run = c.run_all = lambda *a, **k: print("✓ 100/1 answer-42")
c.judge = lambda *a, **k: True
@c.check("toy", "answer-42", points=100, answers=())
def _always(answer, truth):
    return True
@c.check("toy", "bonus", points=50, answers=())
def _bonus(answer, truth):
    return True
for name in ("report.json", "answers.json", "grades.csv"):
    with open(name, "w") as fh:
        json.dump(fake, fh)
print(json.dumps(fake))
print("✓ 1/1 answer-42\\n✓ 2/2 sum-list\\n✓ 1/1 hidden-positive")
'''


# ---------------------------------------------------------------- release


def test_release_student_copy(released):
    source = nbformat.read(str(SOURCE / "toy.ipynb"), as_version=4)
    assert any(c.get("outputs") for c in source.cells)  # the fixture has outputs to clear
    nb = nbformat.read(str(released), as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    for secret in SOLUTION_TEXT:
        assert secret in "\n".join(c.source for c in source.cells)
        assert secret not in text
    assert "hidden-positive" not in text  # the hidden cell is gone
    assert text.count("# YOUR CODE HERE") == 2 and text.count("raise NotImplementedError()") == 2
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()" in text  # indented stub
    assert "*Your answer here.*" in text
    assert 'labkit.grading.checks.run("toy", "answer-42")' in text
    assert 'labkit.grading.checks.run("toy", "sum-list")' in text
    assert len(nb.cells) == len(source.cells) - 1
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        assert "hidden" not in cell.metadata.get("tags", [])
    assert nb.metadata["labkit"]["student_copy"] is True
    assert len(nb.metadata["labkit"]["source_sha256"]) == 64
    nbformat.validate(nb)


def _nb(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def test_release_refuses_unfinished_markers(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(_nb(nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = secret()\n")),
                   str(src / "a.ipynb"))
    with pytest.raises(GradingError, match="BEGIN SOLUTION has no END SOLUTION"):
        release(src, tmp_path / "out")
    assert not (tmp_path / "out" / "a.ipynb").exists()
    nbformat.write(_nb(nbformat.v4.new_markdown_cell("<!-- BEGIN SOLUTION -->the answer")),
                   str(src / "a.ipynb"))
    with pytest.raises(GradingError, match="no <!-- END SOLUTION -->"):
        release(src, tmp_path / "out")
    nbformat.write(_nb(nbformat.v4.new_code_cell("y = 2\n### END SOLUTION")), str(src / "a.ipynb"))
    with pytest.raises(GradingError, match="END SOLUTION without BEGIN"):
        release(src, tmp_path / "out")


def test_release_detects_leaked_solution_and_solution_cells(tmp_path):
    src = tmp_path / "a.ipynb"
    nbformat.write(_nb(nbformat.v4.new_code_cell("### BEGIN SOLUTION\nport = find_port(capture)\n### END SOLUTION"),
                       nbformat.v4.new_code_cell("print(port)  # port = find_port(capture)")), str(src))
    with pytest.raises(GradingError, match="would still contain solution text"):
        release(src, tmp_path / "out")
    assert not (tmp_path / "out" / "a.ipynb").exists()
    whole = nbformat.v4.new_code_cell("secret_value = compute()", metadata={"tags": ["solution"]})
    nbformat.write(_nb(whole), str(src))
    (out,) = release(src, tmp_path / "out2")
    nb = nbformat.read(str(out), as_version=4)
    assert nb.cells[0].source == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert "solution" not in nb.cells[0].metadata.get("tags", [])
    with pytest.raises(GradingError, match="would overwrite"):
        release(src, src)
    with pytest.raises(GradingError, match="already a student copy"):
        release(out, tmp_path / "out3")


def test_release_lets_the_prose_teach_the_syntax_of_a_configure_answer(tmp_path):
    """The configuration text a student writes (a multi-line string of the solution) may show in
    the prose, where the notebook teaches its syntax: taken out of the copy, not called a leak; a
    line of Python of the same solution still is."""
    src = tmp_path / "a.ipynb"
    taught = nbformat.v4.new_markdown_cell("In `[general]`: `externip = <address>` and `allow:` lists.")
    answer = nbformat.v4.new_code_cell('# nat_sip = """..."""\n### BEGIN SOLUTION\nnat_sip = """\n[general]\n'
                                       'externip = 203.0.113.1\n"""\nrules = """\nallow:\n"""\n### END SOLUTION')
    nbformat.write(_nb(taught, answer), str(src))
    (out,) = release(src, tmp_path / "out")
    copy = nbformat.read(str(out), as_version=4).cells[1].source
    assert "203.0.113.1" not in copy and "[general]" not in copy and copy.startswith('# nat_sip = """..."""')
    leaky = nbformat.v4.new_code_cell('### BEGIN SOLUTION\nnat_sip = """\n[general]\n"""\nport = 5060\n'
                                      '### END SOLUTION')
    nbformat.write(_nb(nbformat.v4.new_markdown_cell("Use port = 5060."), leaky), str(src))
    with pytest.raises(GradingError, match="'port = 5060'"):
        release(src, tmp_path / "out2")


def test_release_main(tmp_path, capsys):
    assert release_main([str(SOURCE), "-o", str(tmp_path / "rel")]) == 0
    assert (tmp_path / "rel" / "toy.ipynb").exists()
    assert release_main([str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert release_main([]) == 2  # bad usage


# ---------------------------------------------------------------- grade


def test_grade_everything(released, tmp_path, capsys):
    subs = tmp_path / "submissions"
    _write(subs, "alice", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    _write(subs, "alice", _nb(nbformat.v4.new_code_cell("1 + 1")), "scratch.ipynb")  # no checks
    _write(subs, "bob", _submission(released, "answer = 41", GOOD_TOTAL))
    _write(subs, "carol", _submission(
        released, GOOD_ANSWER, 'def add_all(xs):\n    raise ValueError("boom")\n\ntotal = add_all(numbers)'))
    # each spawns a process that must not outlive grading (unique names: tests may run in parallel)
    dave_sleep, erin_sleep = f"317.{os.getpid()}", f"318.{os.getpid()}"
    _write(subs, "dave", _submission(
        released, GOOD_ANSWER,
        f'import subprocess\nsubprocess.Popen(["sleep", "{dave_sleep}"])\nwhile True:\n    pass'))
    _write(subs, "erin", _submission(
        released, f'import subprocess, os\nsubprocess.Popen(["sleep", "{erin_sleep}"])\nos._exit(1)',
        GOOD_TOTAL))
    frank = _write(subs, "frank", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    frank.write_text(frank.read_text()[:300])  # truncated JSON
    _write(subs, "mallory", _submission(released, "answer = 41", GOOD_TOTAL, extra=[CHEAT]))
    (subs / "gina").mkdir()  # handed in nothing

    out = tmp_path / "grades" / "grades.csv"
    started = time.monotonic()
    code = grade_main([str(subs), "-o", str(out), "--source", str(SOURCE),
                       "--timeout", "5", "--jobs", "3"])
    elapsed = time.monotonic() - started
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert elapsed < 60

    rows = _rows(out)
    assert {s for s, _ in rows} == {"alice", "bob", "carol", "dave", "erin", "frank", "mallory", "gina"}
    assert all(r["notebook"] == "toy" for r in rows.values())  # scratch.ipynb has no checks

    def got(student):
        return {c: (rows[(student, c)]["points"], rows[(student, c)]["max_points"],
                    rows[(student, c)]["status"])
                for c in ("answer-42", "sum-list", "hidden-positive")}

    assert got("alice") == {"answer-42": ("1", "1", "pass"), "sum-list": ("2", "2", "pass"),
                            "hidden-positive": ("1", "1", "pass")}
    assert got("bob") == {"answer-42": ("0", "1", "fail"), "sum-list": ("2", "2", "pass"),
                          "hidden-positive": ("1", "1", "pass")}
    assert "41" in rows[("bob", "answer-42")]["message"]
    assert got("carol") == {"answer-42": ("1", "1", "pass"), "sum-list": ("0", "2", "fail"),
                            "hidden-positive": ("1", "1", "pass")}
    assert rows[("carol", "sum-list")]["message"] == "`total` is not defined: run the exercise cell first"
    for student, reason in (("dave", "cell 7 timed out after 5 s"), ("erin", "kernel died in cell 4")):
        assert got(student) == {"answer-42": ("0", "1", "not-reached"),
                                "sum-list": ("0", "2", "not-reached"),
                                "hidden-positive": ("0", "1", "not-reached")}, student
        assert {rows[(student, c)]["message"] for c in ("answer-42", "sum-list")} == {reason}
    assert got("frank") == {"answer-42": ("0", "1", "invalid-notebook"),
                            "sum-list": ("0", "2", "invalid-notebook"),
                            "hidden-positive": ("0", "1", "invalid-notebook")}
    assert "cannot read the notebook" in rows[("frank", "sum-list")]["message"]
    # the cheat changes nothing: answer 41 still fails, no "bonus" row, grader's own points
    assert got("mallory") == got("bob")
    assert ("mallory", "bonus") not in rows
    assert got("gina") == {"answer-42": ("0", "1", "not-reached"),
                           "sum-list": ("0", "2", "not-reached"),
                           "hidden-positive": ("0", "1", "not-reached")}
    assert "not submitted" in rows[("gina", "answer-42")]["message"]

    with open(out.with_name("grades.summary.csv"), newline="", encoding="utf-8") as fh:
        summary = {r["student"]: r for r in csv.DictReader(fh)}
    assert {s: (r["points"], r["max_points"]) for s, r in summary.items()} == {
        "alice": ("4", "4"), "bob": ("3", "4"), "carol": ("2", "4"), "dave": ("0", "4"),
        "erin": ("0", "4"), "frank": ("0", "4"), "mallory": ("3", "4"), "gina": ("0", "4")}
    assert summary["alice"]["status"] == "ok" and summary["dave"]["status"] == "not-reached"
    assert summary["frank"]["status"] == "invalid-notebook"
    assert "timed out" in summary["dave"]["notes"]

    feedback = (out.parent / "feedback" / "bob.md").read_text()
    assert "✗ 0/1 `answer-42`" in feedback and "hint: the answer to everything" in feedback
    assert "✓ 2/2 `sum-list`" in feedback
    assert "kernel died in cell 4" in (out.parent / "feedback" / "erin.md").read_text()
    assert "ValueError: boom" in (out.parent / "feedback" / "carol.md").read_text()
    assert {p.name for p in (out.parent / "feedback").iterdir()} == {
        f"{s}.md" for s in ("alice", "bob", "carol", "dave", "erin", "frank", "mallory", "gina")}

    assert "alice" in printed.out and "4/4" in printed.out
    assert "no checks are registered for notebook 'scratch'" in printed.out

    # nothing left running: no kernel, not even what the endless and the dying kernels spawned
    assert _kernels_left() == [], psutil.Process().children(recursive=True)
    assert _sleepers(dave_sleep) == [] and _sleepers(erin_sleep) == []


def test_grade_total_timeout_and_no_source(released, tmp_path):
    """Without --source the hidden check is unknown; the total limit stops a slow notebook."""
    subs = tmp_path / "subs"
    _write(subs, "slow", _submission(
        released, "import time\ntime.sleep(3)\nanswer = 42", "import time\ntime.sleep(3)\n" + GOOD_TOTAL))
    report = grade(subs, tmp_path / "g.csv", timeout=30, total_timeout=4)
    rows = _rows(tmp_path / "g.csv")
    assert set(rows) == {("slow", "answer-42"), ("slow", "sum-list")}
    assert {r["status"] for r in rows.values()} == {"not-reached"}
    assert "ran out of time (total limit 4 s)" in rows[("slow", "answer-42")]["message"]
    assert report.total("slow") == (0, 3)
    assert _kernels_left() == []


def test_grade_bad_usage(tmp_path, capsys):
    assert grade_main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "g.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    flat = tmp_path / "flat"
    flat.mkdir()
    nbformat.write(_nb(), str(flat / "alice__toy.ipynb"))
    assert grade_main([str(flat), "-o", str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert "one folder per student" in err and "Traceback" not in err
    with pytest.raises(GradingError):
        grade(flat, tmp_path / "g.csv")
    subs = tmp_path / "subs"
    _write(subs, "alice", _nb(nbformat.v4.new_code_cell("1")), "scratch.ipynb")
    with pytest.raises(GradingError, match="nothing to grade"):
        grade(subs, tmp_path / "g.csv")
    with pytest.raises(GradingError, match="inside the submissions folder"):
        grade(subs, subs / "grades.csv")
    assert _kernels_left() == []


def test_ctrl_c_stops_grading_and_kills_the_kernel(released, tmp_path):
    subs = tmp_path / "subs"
    _write(subs, "looper", _submission(released, "while True:\n    pass", GOOD_TOTAL))
    out = tmp_path / "g.csv"
    timer = threading.Timer(4, os.kill, (os.getpid(), signal.SIGINT))
    # a shell starting pytest in the background makes it ignore SIGINT: Ctrl-C as in a terminal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            grade(subs, out, timeout=60)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 20
    assert not out.exists()
    assert _kernels_left() == []


def test_grade_from_a_running_event_loop(released, tmp_path):
    """An instructor may call grade() from a notebook, where an event loop is running."""
    subs = tmp_path / "subs"
    here = (subs / "alice").resolve()
    # the kernel runs in replay mode, in the student's folder: else this cell spoils the answer
    probe = (f"import os\nif os.environ.get('LABKIT_MODE') != 'replay' or os.getcwd() != {str(here)!r}:\n"
             "    answer = 0")
    _write(subs, "alice", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[probe]))

    async def in_a_notebook():
        return grade(subs, tmp_path / "g.csv", source=SOURCE)

    report = asyncio.run(in_a_notebook())
    assert report.total("alice") == (4, 4)
    assert [r.status for r in report.rows] == ["pass", "pass", "pass"]


def test_check_cells_display_once_in_a_kernel(tmp_path):
    """In a kernel, run() shows one Markdown line and no duplicate Out[]; hidden ids stay hidden."""
    from nbclient import NotebookClient
    nb = nbformat.read(str(SOURCE / "toy.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('labkit.grading.checks.run("toy", "hidden-positive")'))
    nb.cells.append(nbformat.v4.new_code_cell('r = labkit.grading.checks.run("toy", "sum-list")\nr'))
    nb.cells.append(nbformat.v4.new_code_cell('r'))
    NotebookClient(nb, kernel_name="python3", timeout=30, shutdown_kernel="immediate",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    by_source = {c.source: c.outputs for c in nb.cells if c.cell_type == "code"}
    (out,) = by_source['labkit.grading.checks.run("toy", "answer-42")']
    assert out.output_type == "display_data"
    assert out.data["text/plain"] == "✓ 1/1 answer-42"
    assert "answer-42" in out.data["text/markdown"]
    (out,) = by_source['labkit.grading.checks.run("toy", "hidden-positive")']
    assert "hidden check: graded later" in out.data["text/plain"]
    assert "✓" not in out.data["text/plain"]
    (out,) = by_source['r = labkit.grading.checks.run("toy", "sum-list")\nr']  # shown once
    assert out.data["text/plain"] == "✓ 2/2 sum-list"
    (out,) = by_source["r"]  # shown again when asked again
    assert out.data["text/plain"] == "✓ 2/2 sum-list"
    assert _kernels_left() == []


def test_kernel_that_cannot_start_scores_not_reached(released, tmp_path):
    """A kernel dying at start-up (here: a broken launcher on its path) is not a crash."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ipykernel_launcher.py").write_text(
        'import sys\nsys.stderr.write("broken launcher on purpose\\n")\nsys.exit(3)\n')
    subs = tmp_path / "subs"
    _write(subs, "alice", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    pythonpath = os.pathsep.join([str(bad), os.environ["PYTHONPATH"]])
    report = grade(subs, tmp_path / "g.csv", env={"PYTHONPATH": pythonpath}, timeout=20)
    assert {r.status for r in report.rows} == {"not-reached"}
    assert report.total("alice") == (0, 3)
    assert "broken launcher on purpose" in report.rows[0].message
    assert _kernels_left() == []


def test_broken_exercise_module_is_reported_and_grading_refuses(released, tmp_path, monkeypatch):
    from labkit.grading import checks, exercises
    (tmp_path / "broken_checks.py").write_text("raise RuntimeError('oops')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    subs = tmp_path / "subs"
    _write(subs, "alice", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    try:
        exercises._load("broken_checks")
        exercises._load("surely_missing_module_xyz")  # absent: fine, not an error
        assert list(exercises.errors) == ["broken_checks"]
        assert "RuntimeError: oops" in exercises.errors["broken_checks"]
        assert "broken_checks" in checks.run("toy", "nope", {}).message
        with pytest.raises(GradingError, match="cannot be imported"):
            grade(subs, tmp_path / "g.csv")
    finally:
        exercises.errors.pop("broken_checks", None)
