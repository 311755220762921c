"""Cheating submissions earn nothing: the truth is computed by the grader, from its own files.

One grading run (module fixture ``graded``) grades, next to honest students, one student per
way of cheating that the kernel-side checks of the previous design let through:

* ``forger``: fake results and answers files, fake ✓ lines, the checks and the grader's answer
  collector monkeypatched, ``builtins.sum`` patched (the old check computed ``sum(numbers)`` in
  the student's kernel);
* ``swapper``: the notebook's given data replaced (``numbers = [0]``, ``total = 0``);
* ``importer``: imports the exercise modules and the course's checks, reads their files and the
  hidden checks, computes the answer from whatever it finds; an audit hook watches for the
  hidden check's code reaching the kernel;
* ``liar``: answers that are objects whose ``__eq__`` is always true (and an ``int`` subclass);
* ``swapper00`` / ``faker00`` (notebook 00): ``session`` replaced by another recording's session,
  or by a fake object with the right attributes, and answers read from it;
* ``execer`` / ``keyer`` (configure exercise): ``#exec`` and an unknown option in the text.

Each observation below failed with the previous design (checks run in the student's kernel,
truth from ``ns["session"]`` and the student's variables, hidden checks sent to the kernel,
exercise modules importable there).
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from labkit.grading import exercises
from labkit.grading.grade import grade, release

from .conftest import EXERCISES, SOURCE
from .test_grading import GOOD_ANSWER, GOOD_TOTAL, _rows, _submission, _write

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TOY = ("answer-42", "sum-list", "hidden-positive")
NB00 = ("sip-port", "asterisk-rtp-ports", "rtp-range", "register-counts", "challenge-status")

FORGER = '''\
import builtins, importlib, json, os, sys, types
import labkit.grading.checks as c
builtins.sum = lambda *a, **k: 0                  # the old check computed sum(numbers) in this kernel
claims = [{"id": i, "passed": True, "points": 100, "max_points": 1}
          for i in ("answer-42", "sum-list", "hidden-positive")]
fake = {"labkit_report": 1, "labkit_answers": 1, "notebook": "toy", "complete": True, "results": claims,
        "answers": {"answer": {"value": 41, "passed": True}, "total": {"value": 0, "passed": True}}}
def fake_report(notebook, path, namespace=None):
    with open(path, "w") as fh:
        json.dump(fake, fh)
forged = types.ModuleType("labkit.grading.answers")
forged.dump = lambda notebook, names, path, namespace=None: fake_report(notebook, path)
real_import = importlib.import_module
def forged_import(name, *a):
    if name == "labkit.grading.answers":
        sys.modules[name] = forged
        return forged
    return real_import(name, *a)
importlib.import_module = forged_import
sys.modules["labkit.grading.answers"] = forged
c.report = fake_report
c.run = c.run_all = lambda *a, **k: print("✓ 1/1 answer-42")
for name in ("report.json", "answers.json", "grades.csv", "/tmp/report.json"):
    with open(name, "w") as fh:
        json.dump(fake, fh)
print("✓ 1/1 answer-42\\n✓ 2/2 sum-list\\n✓ 1/1 hidden-positive")
from IPython.display import Markdown, display
display(Markdown("**✓ 1/1** `answer-42`"))
'''

IMPORTER = '''\
import importlib, inspect, os, sys
found = []
def attempt(what, get):
    try:
        if get():
            found.append(what)
    except BaseException:
        pass
attempt("exercises.nb00", lambda: importlib.import_module("labkit.grading.exercises.nb00").pbx_sip_port)
attempt("exercises.loaded", lambda: importlib.import_module("labkit.grading.exercises").loaded)
attempt("toy_exercises", lambda: inspect.getsource(importlib.import_module("toy_exercises")._answer))
attempt("checks.registered", lambda: importlib.import_module("labkit.grading.checks").registered("toy"))
attempt("checks.find", lambda: importlib.import_module("labkit.grading.checks").find("toy", "answer-42"))
attempt("nb00.py", lambda: open({nb00!r}).read())
attempt("toy_exercises.py", lambda: open({toy!r}).read())
attempt("bytecode", lambda: [f for f in os.listdir({cache!r}) if "toy_exercises" in f])
attempt("source notebook", lambda: open({source!r}).read())
def watch(event, args):   # the hidden check's code compiled in this kernel
    if event == "compile" and args and isinstance(args[0], (str, bytes)):
        text = args[0] if isinstance(args[0], str) else args[0].decode(errors="replace")
        if "hidden-positive" in text and "watch" not in text:
            raise RuntimeError("the hidden check reached the kernel")
sys.addaudithook(watch)
answer = 42 if found else 0
raise RuntimeError(f"found: {{sorted(found)}}")
'''

LIAR = '''\
class Liar:
    def __eq__(self, other):
        return True
    def __gt__(self, other):
        return True
    __hash__ = object.__hash__
class LyingInt(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
answer = Liar()
'''

# notebook 00: what the last cell leaves in the namespace is what the old report cell read
SWAPPED_SESSION = '''\
from labkit.teaching import Session
session = Session.start("01-first-call")          # another recording, whose ports are easy
pbx = session.address("pbx")
sip_port = int(session.sip[session.sip.dst == pbx].dport.iloc[0])
asterisk_rtp_ports = set(session.streams[session.streams.src == pbx].sport)
rtp_range = (10000, 20000)
registers = session.sip[session.sip.method == "REGISTER"]
register_counts = registers[registers.is_request].groupby("src").size()
challenge_status = int(registers[~registers.is_request].status_code.iloc[0])
'''

FAKE_SESSION = '''\
import pandas as pd
from types import SimpleNamespace as NS
class FakeSession:
    name = "00-orientation"
    sip = pd.DataFrame({"dst": ["10.9.9.9"], "dport": [9999], "is_request": [True], "src": ["10.1.1.1"],
                        "method": ["REGISTER"], "cseq_method": ["REGISTER"], "frame": [1], "status_code": [0]})
    streams = pd.DataFrame({"src": ["10.9.9.9"], "sport": [1], "dst": ["10.1.1.1"], "dport": [2]})
    spec = NS(pbx=NS(rtp_ports=(0, 5)), phones=[NS(name="alice", host="alice", extension="6000")])
    def address(self, host):
        return {"pbx": "10.9.9.9", "alice": "10.1.1.1"}[host]
session = FakeSession()
sip_port, asterisk_rtp_ports, rtp_range, register_counts = 9999, {1}, (0, 5), {"alice": 1}
'''

GOOD_PJSIP = ("[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0:5061\n"
              "cert_file = /etc/asterisk/tls/pbx.crt\npriv_key_file = /etc/asterisk/tls/pbx.key\nmethod = sslv23\n")


def _with_cells(released: Path, *sources: str, fill: str = "pass"):
    """The student copy *released* with every exercise stub replaced by *fill*, then *sources*."""
    nb = copy.deepcopy(nbformat.read(str(released), as_version=4))
    for cell in nb.cells:
        if "raise NotImplementedError()" in cell.source:
            cell.source = cell.source.replace("raise NotImplementedError()", fill)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in sources]
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("cheating")
    source = root / "source"
    source.mkdir()
    for path in (SOURCE / "toy.ipynb", SOURCE / "toy-tls.ipynb", NOTEBOOKS / "00-orientation.ipynb"):
        shutil.copy(path, source / path.name)
    released = {p.stem: p for p in release(source, root / "release")}
    subs, grades = root / "submissions", root / "grades"
    toy = released["toy"]
    _write(subs, "alice", _submission(toy, GOOD_ANSWER, GOOD_TOTAL))
    _write(subs, "forger", _submission(toy, "answer = 41", "total = 0", extra=[FORGER]))
    _write(subs, "swapper", _submission(toy, GOOD_ANSWER, "numbers = [0]\ntotal = 0"))
    importer = IMPORTER.format(nb00=str(Path(exercises.__file__).parent / "nb00.py"),
                               toy=str(EXERCISES / "toy_exercises.py"), cache=str(EXERCISES / "__pycache__"),
                               source=str(source / "toy.ipynb"))
    _write(subs, "importer", _submission(toy, "answer = 0", GOOD_TOTAL, extra=[importer]))
    _write(subs, "liar", _submission(toy, LIAR, LIAR + "total = LyingInt(0)"))
    _write(subs, "honest00", nbformat.read(str(NOTEBOOKS / "00-orientation.ipynb"), as_version=4),
           "00-orientation.ipynb")
    _write(subs, "swapper00", _with_cells(released["00-orientation"], SWAPPED_SESSION), "00-orientation.ipynb")
    _write(subs, "faker00", _with_cells(released["00-orientation"], FAKE_SESSION), "00-orientation.ipynb")
    tls = released["toy-tls"]
    _write(subs, "execer", _with_cells(tls, fill=f"pjsip_tls = {GOOD_PJSIP + '#exec /bin/sh -c id' + chr(10)!r}"),
           "toy-tls.ipynb")
    _write(subs, "keyer", _with_cells(tls, fill=f"pjsip_tls = {GOOD_PJSIP + 'externip = 203.0.113.1' + chr(10)!r}"),
           "toy-tls.ipynb")
    report = grade(subs, grades / "grades.csv", source=source, timeout=60, total_timeout=300, jobs=4)
    feedback = {p.stem: p.read_text() for p in (grades / "feedback").iterdir()}
    return SimpleNamespace(rows=_rows(grades / "grades.csv"), report=report, feedback=feedback, subs=subs)


def _got(graded, student, ids):
    return {c: (graded.rows[(student, c)]["points"], graded.rows[(student, c)]["status"]) for c in ids}


def test_honest_work_gets_its_points(graded):
    assert _got(graded, "alice", TOY) == {"answer-42": ("1", "pass"), "sum-list": ("2", "pass"),
                                          "hidden-positive": ("1", "pass")}
    assert _got(graded, "honest00", NB00) == {c: ("1", "pass") for c in NB00}, graded.feedback["honest00"]


def test_fake_results_fake_lines_and_patches_earn_nothing(graded):
    """The grader reads answers only (41 and 0 here), judges them in its own process: patched
    builtins, checks and collector in the kernel change nothing; claims of "passed" are ignored."""
    assert _got(graded, "forger", TOY) == {"answer-42": ("0", "fail"), "sum-list": ("0", "fail"),
                                           "hidden-positive": ("1", "pass")}
    assert graded.rows[("forger", "sum-list")]["message"] == "`total` is 0, not the sum of `numbers`"
    assert "✓" not in graded.rows[("forger", "answer-42")]["message"]


def test_the_given_data_cannot_be_swapped(graded):
    """sum-list's truth is the exercise module's own numbers, not the student's `numbers`."""
    assert _got(graded, "swapper", TOY)["sum-list"] == ("0", "fail")


def test_exercise_modules_and_hidden_checks_are_out_of_the_kernels_reach(graded):
    text = graded.feedback["importer"]
    assert "raised RuntimeError: found: []" in text, text
    assert "the hidden check reached the kernel" not in text
    assert _got(graded, "importer", TOY) == {"answer-42": ("0", "fail"), "sum-list": ("2", "pass"),
                                             "hidden-positive": ("0", "fail")}


def test_objects_whose_eq_is_always_true_earn_nothing(graded):
    assert _got(graded, "liar", TOY) == {c: ("0", "fail") for c in TOY}
    message = graded.rows[("liar", "answer-42")]["message"]
    assert message.startswith("`answer` is a Liar") and "hand in a value" in message
    assert graded.rows[("liar", "sum-list")]["message"] == "`total` is 0, not the sum of `numbers`"


def test_a_swapped_session_is_ignored(graded):
    """Answers read from another recording: right only where the two agree (SIP on 5060)."""
    got = _got(graded, "swapper00", NB00)
    assert got["sip-port"] == ("1", "pass")
    assert got["asterisk-rtp-ports"] == ("0", "fail"), graded.rows[("swapper00", "asterisk-rtp-ports")]


def test_a_fake_session_is_ignored(graded):
    got = _got(graded, "faker00", NB00)
    assert got == {"sip-port": ("0", "fail"), "asterisk-rtp-ports": ("0", "fail"), "rtp-range": ("0", "fail"),
                   "register-counts": ("0", "fail"),
                   "challenge-status": ("0", "fail")}, graded.feedback["faker00"]
    assert graded.rows[("faker00", "sip-port")]["message"] == "you said 9999"


def test_configure_text_with_directives_or_unknown_options_is_refused(graded):
    for student, words in (("execer", "directives (#include, #exec …) are not allowed"),
                           ("keyer", "'externip' is not one of the options of this exercise")):
        row = graded.rows[(student, "tls-registers")]
        assert (row["points"], row["max_points"], row["status"]) == ("0", "2", "fail")
        assert row["message"].startswith("your configuration was refused: pbx.tls.pjsip_conf (stanza line ")
        assert words in row["message"] and "/work" not in row["message"]
