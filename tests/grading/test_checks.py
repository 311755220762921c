"""labkit.grading.checks outside a kernel: plain calls with a namespace, never a crash, never a false pass."""
from __future__ import annotations

import json

import pytest

from labkit.grading import checks
from labkit.grading.checks import check

# a module global, to test that run() defaults to the caller's globals outside a kernel
unit_value = 7


@check("unit", "value-7", points=2, hint="seven")
def _value(ns):
    return ns["unit_value"] == 7


@check("unit", "detail")
def _detail(ns):
    return ns["x"] > 0, f"x is {ns['x']}"


@check("unit", "not-done")
def _not_done(ns):
    return ns["parse"]("INVITE") == "INVITE"


@check("unit", "array-compare")
def _array(ns):
    import numpy as np
    return np.array([1, 2]) == ns["arr"]  # ambiguous truth value: must fail, not pass


@check("unit", "secret", points=3, hidden=True)
def _secret(ns):
    return True


def test_registered_in_order():
    ids = [c.id for c in checks.registered("unit")]
    assert ids == ["value-7", "detail", "not-done", "array-compare", "secret"]
    assert checks.registered("toy")[0].id == "answer-42"  # the toy module is loaded
    assert checks.registered("no-such-notebook") == []


def test_run_pass_and_fail(capsys):
    ok = checks.run("toy", "answer-42", {"answer": 42})
    assert (ok.passed, ok.points, ok.max_points, ok.hidden) == (True, 1, 1, False)
    bad = checks.run("toy", "answer-42", {"answer": 41})
    assert (bad.passed, bad.points) == (False, 0)
    assert "41" in bad.message
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "✓ 1/1 answer-42"
    assert out[1].startswith("✗ 0/1 answer-42") and "hint: the answer to everything" in out[1]
    assert "\n" not in repr(bad) and repr(ok) == "Result(toy: ✓ 1/1 answer-42)"


def test_missing_variable_is_a_readable_fail(capsys):
    r = checks.run("toy", "sum-list", {"numbers": [1, 2]})
    assert not r.passed and r.points == 0 and r.max_points == 2
    assert r.message == "`total` is not defined: run the exercise cell first"
    r = checks.run("toy", "answer-42", {})
    assert r.message == "`answer` is not defined: run the exercise cell first"


def test_exceptions_in_student_work_are_fails(capsys):
    def stub(_):
        raise NotImplementedError()
    r = checks.run("unit", "not-done", {"parse": stub})
    assert not r.passed and "NotImplementedError" in r.message
    r = checks.run("unit", "not-done", {"parse": 42})
    assert not r.passed and r.message.startswith("error while checking: TypeError")
    r = checks.run("unit", "array-compare", {"arr": [1, 2]})
    assert not r.passed and "ValueError" in r.message
    r = checks.run("unit", "detail", {"x": "text"})
    assert not r.passed and "TypeError" in r.message


def test_detail_and_default_namespace_is_callers_globals(capsys):
    r = checks.run("unit", "value-7")  # unit_value from this module's globals
    assert r.passed and r.points == 2
    r = checks.run("unit", "detail", {"x": 3})
    assert r.passed and r.message == "x is 3"


def test_hidden_checks(capsys):
    r = checks.run("unit", "secret", {})
    assert not r.passed and r.points == 0 and r.hidden
    assert r.message == "hidden check: graded later"
    assert "hidden check: graded later" in capsys.readouterr().out
    visible = checks.run_all("unit", {"unit_value": 7, "x": 1}, include_hidden=False)
    assert [x.id for x in visible] == ["value-7", "detail", "not-done", "array-compare"]
    every = checks.run_all("unit", {"unit_value": 7, "x": 1})
    assert every[-1].id == "secret" and every[-1].passed and every[-1].points == 3


def test_unknown_check_fails_without_raising(capsys):
    r = checks.run("toy", "nope", {})
    assert not r.passed and "no check 'nope'" in r.message and "answer-42" in r.message


def test_report_writes_json(tmp_path):
    path = tmp_path / "r.json"
    checks.report("toy", str(path), {"answer": 42, "numbers": [1, 2], "total": 4})
    data = json.loads(path.read_text())
    assert data["complete"] is True and data["notebook"] == "toy"
    assert [(r["id"], r["passed"]) for r in data["results"]] == [("answer-42", True), ("sum-list", False)]


def test_check_rejects_bad_registration():
    with pytest.raises(ValueError):
        check("unit", "", points=1)
    with pytest.raises(ValueError):
        check("unit", "neg", points=-1)
