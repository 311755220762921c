"""labkit.grading.checks outside a kernel: answers judged as JSON data, never a crash, never a false pass."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from labkit.grading import answers, checks, probes
from labkit.grading.checks import check, configure, recording
from labkit.grading.truth import Truth, TruthUnavailable

# module globals, to test that run() defaults to the caller's globals outside a kernel
unit_value = 7


@check("unit", "value-7", points=2, hint="seven", answers=("unit_value",))
def _value(answer, truth):
    return answer["unit_value"] == 7


@check("unit", "detail", answers=("x",))
def _detail(answer, truth):
    return answer["x"] > 0, f"x is {answer['x']}"


@check("unit", "array-compare", answers=("arr",))
def _array(answer, truth):
    return np.array([1, 2]) == answer["arr"]  # ambiguous truth value: must fail, not pass


@check("unit", "undeclared", answers=("x",))
def _undeclared(answer, truth):
    return answer["y"] == 1  # a bug in the check: y is not declared


@check("unit", "secret", points=3, hidden=True, answers=())
def _secret(answer, truth):
    return True


@check("unit", "old-style")
def _old_style(ns):
    return ns["unit_value"] == 7


recording("unit-rec", "00-orientation", lab="first-call")


@check("unit-rec", "sip-port", answers=("port",))
def _port(answer, truth):
    return answer["port"] == int(truth.session("00-orientation").sip.dport.mode().iloc[0])


@check("unit-rec", "undeclared-session", answers=())
def _undeclared_session(answer, truth):
    return truth.session("01-first-call") is not None


def test_registered_in_order():
    ids = [c.id for c in checks.registered("unit")]
    assert ids == ["value-7", "detail", "array-compare", "undeclared", "secret", "old-style"]
    assert checks.registered("toy")[0].id == "answer-42"  # the toy module is loaded
    assert checks.registered("no-such-notebook") == []
    assert checks.registered("unit")[0].answers == ("unit_value",)
    assert checks.registered("unit")[-1].legacy


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


def test_the_truth_is_the_checks_not_the_namespaces(capsys):
    """sum-list's truth is the sum of the numbers the notebook gives, whatever `numbers` says."""
    assert checks.run("toy", "sum-list", {"numbers": [1, 2], "total": 26}).passed
    assert not checks.run("toy", "sum-list", {"numbers": [1, 2], "total": 3}).passed


def test_missing_answer_is_a_readable_fail(capsys):
    r = checks.run("toy", "sum-list", {"numbers": [1, 2]})
    assert not r.passed and r.points == 0 and r.max_points == 2
    assert r.message == "`total` is not defined: run the exercise cell first"
    r = checks.run("toy", "answer-42", {})
    assert r.message == "`answer` is not defined: run the exercise cell first"


def test_problems_are_fails(capsys):
    r = checks.run("unit", "array-compare", {"arr": [1, 2]})
    assert not r.passed and "ValueError" in r.message
    r = checks.run("unit", "detail", {"x": "text"})
    assert not r.passed and "TypeError" in r.message
    r = checks.run("unit", "undeclared", {"x": 1, "y": 1})
    assert not r.passed and "a bug in the check: it reads `y`" in r.message
    r = checks.run("unit-rec", "undeclared-session", {})
    assert not r.passed and "session '01-first-call' is not declared" in r.message


def test_functions_and_objects_are_not_answers(capsys):
    r = checks.run("unit", "detail", {"x": lambda: 1})
    assert not r.passed and "`x` is a function" in r.message and "hand in a value" in r.message


def test_detail_and_default_namespace_is_callers_globals(capsys):
    r = checks.run("unit", "value-7")  # unit_value from this module's globals
    assert r.passed and r.points == 2
    r = checks.run("unit", "detail", {"x": 3})
    assert r.passed and r.message == "x is 3"


def test_old_style_checks_still_run_in_a_notebook_but_are_not_graded(capsys):
    assert checks.run("unit", "old-style", {"unit_value": 7}).passed
    (chk,) = [c for c in checks.registered("unit") if c.id == "old-style"]
    judged = checks.judge(chk, answers.Answers({"unit_value": 7}), Truth("unit", "modern"))
    assert not judged.passed and judged.message == checks.LEGACY_MESSAGE


def test_hidden_checks(capsys):
    r = checks.run("unit", "secret", {})
    assert not r.passed and r.points == 0 and r.hidden
    assert r.message == "hidden check: graded later"
    assert "hidden check: graded later" in capsys.readouterr().out
    visible = checks.run_all("unit", {"unit_value": 7, "x": 1}, include_hidden=False)
    assert [x.id for x in visible] == ["value-7", "detail", "array-compare", "undeclared", "old-style"]
    every = checks.run_all("unit", {"unit_value": 7, "x": 1})
    assert every[-2].id == "secret" and every[-2].passed and every[-2].points == 3


def test_unknown_check_fails_without_raising(capsys):
    r = checks.run("toy", "nope", {})
    assert not r.passed and "no check 'nope'" in r.message and "answer-42" in r.message


def test_while_graded_a_check_cell_only_hands_the_answer_over(capsys, monkeypatch):
    monkeypatch.setenv("LABKIT_GRADING", "1")
    r = checks.run("toy", "answer-42", {"answer": 42})
    assert not r.passed and r.message == "answer handed to the grader"
    assert capsys.readouterr().out == "• answer-42: answer handed to the grader\n"
    assert checks.run_all("toy", {"answer": 42}) == []


def test_the_truth_comes_from_recordings_the_check_opens(capsys):
    """A session in the namespace is not read: a fake one with port 9999 changes nothing."""
    class Fake:
        name = "00-orientation"
        sip = pd.DataFrame({"dport": [9999]})
    assert checks.run("unit-rec", "sip-port", {"port": 5060, "session": Fake()}).passed
    assert not checks.run("unit-rec", "sip-port", {"port": 9999, "session": Fake()}).passed
    with pytest.raises(TruthUnavailable, match="cannot be opened"):
        Truth("unit-rec", "modern", data=__import__("pathlib").Path("/nonexistent")).session("00-orientation")


def test_collecting_keeps_registrations_apart():
    with checks.collecting() as found:
        @check("elsewhere", "x", answers=())
        def _x(answer, truth):
            return True
    assert list(found["elsewhere"]) == ["x"]
    assert checks.registered("elsewhere") == []


def test_check_rejects_bad_registration():
    with pytest.raises(ValueError):
        check("unit", "", points=1)
    with pytest.raises(ValueError):
        check("unit", "neg", points=-1)
    with pytest.raises(ValueError, match="a tuple of names"):
        check("unit", "one", answers="x")
    with pytest.raises(ValueError, match="not a variable name"):
        check("unit", "bad", answers=("not a name",))
    with pytest.raises(ValueError, match="timeout"):
        configure("unit", "c", answer="t", lab="first-call", timeout=0)


# ---------------------------------------------------------------- answers: what crosses


class Liar:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__


class LyingInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class LyingStr(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


@pytest.mark.parametrize("value, plain", [
    (5060, 5060), (2.5, 2.5), ("x", "x"), (True, True), (None, None),
    (np.int64(7), 7), (np.float32(0.5), 0.5), (np.bool_(True), True), (np.str_("a"), "a"),
    ({3, 1, 2}, [1, 2, 3]), ((1, "a"), [1, "a"]), (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
    (pd.Series({"192.168.0.11": np.int64(2)}), {"192.168.0.11": 2}), (pd.Index([1, 2]), [1, 2]),
    ({5060: "sip", True: 1}, {"5060": "sip", "True": 1}), (LyingInt(3), 3), (LyingStr("ab"), "ab"),
])
def test_answers_become_plain_json(value, plain):
    entry = answers.encode(value)
    assert entry == {"value": plain}
    assert type(entry["value"]) is type(plain)
    assert json.loads(json.dumps(entry)) == entry


@pytest.mark.parametrize("value, kind", [
    (Liar(), "Liar"), (lambda: 1, "function"), (pd.DataFrame({"a": [1]}), "DataFrame"),
    (object(), "object"), ([1, Liar()], "list"), (b"bytes", "bytes"),
])
def test_anything_else_is_marked_unreadable(value, kind):
    entry = answers.encode(value)
    assert "value" not in entry and kind in entry["unreadable"] and entry["why"] == "not data"
    values = answers.decode({"x": entry})
    with pytest.raises(answers.UnreadableAnswer, match="hand in a value"):
        answers.Answers(values)["x"]


def test_too_large_answers_and_liars_fail():
    assert answers.encode("x" * (answers.MAX_TEXT + 1))["why"] == "too large"
    assert answers.encode(list(range(answers.MAX_ITEMS + 1)))["why"] == "too large"
    assert answers.encode(10 ** 100)["why"] == "too large"
    nested: list = []
    for _ in range(50):
        nested = [nested]
    assert answers.encode(nested)["why"] == "too large"
    # what __eq__ says never matters: the check sees plain data
    assert not checks.run("toy", "answer-42", {"answer": Liar()}).passed
    assert not checks.run("toy", "answer-42", {"answer": LyingInt(41)}).passed
    assert not checks.run("toy", "sum-list", {"total": LyingInt(0)}).passed


def test_dotted_answers_read_attributes():
    class Box:
        inner = {"a": [1, 2]}
    got = answers.collect(["box.inner", "box.missing", "nothing.at_all"], {"box": Box()})
    assert got == {"box.inner": {"value": {"a": [1, 2]}}, "box.missing": {"missing": True},
                   "nothing.at_all": {"missing": True}}


def test_answers_file_round_trip_and_problems(tmp_path):
    path = tmp_path / "a.json"
    answers.dump("toy", ["answer", "total", "gone"], str(path), {"answer": 42, "total": Liar()})
    values, problem = answers.load(path.read_bytes(), "toy")
    assert problem == "" and values["answer"] == 42 and isinstance(values["total"], answers.Unreadable)
    assert "gone" not in values
    assert answers.load(None, "toy") == (None, "the grading cell wrote no answers")
    assert answers.load(b'{"labkit_answers": 1, "notebook": "toy", "answers": {"a"', "toy")[0] is None
    assert answers.load(b"\xff\xfe not even text", "toy")[0] is None
    assert answers.load(json.dumps({"labkit_answers": 1, "notebook": "other", "complete": True,
                                    "answers": {}}).encode(), "toy")[0] is None
    # claims of results are not answers: "passed" is never read
    fake = {"labkit_answers": 1, "notebook": "toy", "complete": True,
            "answers": {"answer": {"passed": True}, "total": {"value": 26, "passed": False}},
            "results": [{"id": "answer-42", "passed": True}]}
    values, _ = answers.load(json.dumps(fake).encode(), "toy")
    assert values == {"total": 26}
    cut = json.dumps({"labkit_answers": 1, "notebook": "toy", "complete": False,
                      "answers": {"answer": {"value": 42}}}).encode()
    assert answers.load(cut, "toy") == ({"answer": 42}, "the grading cell did not finish")


def test_evaluate_judges_plain_answers_like_the_grader():
    results = {r.id: r for r in checks.evaluate("toy", {"answer": np.int64(42), "total": 26})}
    assert results["answer-42"].passed and results["sum-list"].passed
    results = checks.evaluate("toy-tls", {"pjsip_tls": "x"})
    assert [(r.id, r.not_run) for r in results] == [("tls-registers", True)]


# ---------------------------------------------------------------- configure: the text is data


def test_a_configure_answer_is_validated_before_any_lab(monkeypatch):
    """#exec and unknown options are refused with the lab model's message; no lab is made."""
    chk = checks.find("toy-tls", "tls-registers")
    monkeypatch.setattr(probes, "can_run_here", lambda: pytest.fail("a refused text must not reach a lab"))
    for text, words in [
        ("[transport-tls]\ntype = transport\n#exec /bin/sh -c id\n", "directives (#include, #exec …) are not allowed"),
        ("[transport-tls]\ntype = transport\nexternip = 1.2.3.4\n", "'externip' is not one of the options"),
        ("[transport-tls]\ncert_file = /etc/shadow\n", "a file under /etc/asterisk/tls/"),
    ]:
        done = probes.run(chk, text, "modern")
        assert done.status == "fail" and done.message.startswith("your configuration was refused: ")
        assert "pbx.tls.pjsip_conf (stanza line" in done.message and words in done.message, done.message
    done = probes.run(chk, ["not", "text"], "modern")
    assert done.status == "fail" and "`pjsip_tls` should be text" in done.message
    done = probes.run(chk, "tlsenable = maybe;\n#include /etc/passwd\n", "legacy")
    assert "pbx.tls.sip_conf (stanza line 2)" in done.message


def test_yaml_overrides_accept_only_the_exercises_keys():
    apply = probes.yaml_override("pbx.codecs", "pbx.nat")
    assert apply("pbx:\n  codecs: [alaw]\n", None) == {"pbx": {"codecs": ["alaw"]}}
    with pytest.raises(probes.Refused, match="pbx.dialplan.work: not a key this exercise lets you set"):
        apply("pbx:\n  dialplan:\n    work: ['exten => _X.,1,System(id)']\n", None)
    with pytest.raises(probes.Refused, match="not valid YAML"):
        apply("pbx: [", None)
    with pytest.raises(probes.Refused, match="a YAML mapping"):
        apply("- 1\n", None)


def test_a_probe_that_cannot_run_here_is_not_a_pass(monkeypatch):
    chk = checks.find("toy-tls", "tls-registers")
    monkeypatch.setattr(probes, "can_run_here", lambda: (False, "no labs on this machine"))
    done = probes.run(chk, "[transport-tls]\ntype = transport\nprotocol = tls\n", "modern")
    assert (done.status, done.passed) == ("not-run", False)
    assert done.message == "not run here: no labs on this machine"


def test_apply_may_take_the_student_and_must_give_overrides():
    """A lab of the student's own (a fault picked for them): apply(text, track, student=…)."""
    seen = []

    def apply(text, track, student=None):
        seen.append((text, track.name, student))
        return {"pbx": {"direct_media": student == "alice"}}

    probe = probes.Probe(lab="first-call", variables=(("", "fix"),), apply=apply)
    assert probes.validate(probe, "x", "modern", "alice") == {"pbx": {"direct_media": True}}
    assert seen == [("x", "modern", "alice")]
    assert probe.answer("legacy") == "fix"
    with pytest.raises(TypeError, match="not lab-file overrides"):
        probes.validate(probes.Probe("first-call", (("", "fix"),), lambda text, track: [text]), "x", "modern")
