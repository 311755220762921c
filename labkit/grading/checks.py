"""Graded checks: the student's *answers*, judged against a truth the checks compute themselves.

An exercise module (``labkit/grading/exercises/nb00.py``…) declares the sessions its
notebook starts and registers its checks::

    from labkit.grading.checks import check, recording

    recording("00-orientation", "00-orientation", lab="first-call")

    @check("00-orientation", "sip-port", answers=("sip_port",), points=1,
           hint="look at the UDP destination port of the INVITE")
    def _sip_port(answer, truth):
        expected = pbx_sip_port(truth.session("00-orientation"))   # opened by the checking code
        return int(answer["sip_port"]) == expected, f"you said {answer['sip_port']!r}"

``answer`` holds the values of the variables named in ``answers=``, as JSON data
(:mod:`labkit.grading.answers`: numbers, strings, True/False, lists and dicts of them),
never an object of the student's; ``truth`` opens the notebook's sessions from recordings
(:mod:`labkit.grading.truth`).  A check returns ``bool`` or ``(bool, detail)``.  Whatever
goes wrong inside it (an answer missing or unreadable, the wrong type…) is a *fail* with a
readable message: never a crash of the check cell, never a pass.

A *configure* exercise (:func:`configure`) takes the student's text, builds a fresh lab
with it and measures the lab (:mod:`labkit.grading.probes`).

In a notebook, ``checks.run("00-orientation", "sip-port")`` judges at once: the answer goes
through the same JSON round trip and the truth is computed the same way, in the kernel.
While ``labkit grade`` runs a notebook (``LABKIT_GRADING=1``, in its sandbox) the exercise
modules are out of the kernel's reach: a check cell only says that the answer goes to the
grader; the grader's last cell hands the answers over and the grader judges them in its own
process.  Hidden checks (``hidden=True``) count only at grading time.

Old-style checks — ``@check(nb, id)`` without ``answers=``, ``func(ns)`` reading the
notebook's namespace — still run in a notebook; the grader cannot judge them (they need the
student's objects) and scores them 0 with a note until they are converted.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.grading import answers as _answers
from labkit.grading.probes import DEFAULT_TIMEOUT, Probe, tls_lines
from labkit.grading.truth import Truth, TruthUnavailable, recording, recordings

__all__ = ["Check", "Result", "check", "configure", "recording", "recordings", "run", "run_all",
           "evaluate", "judge", "registered", "notebooks", "find", "collecting", "grading",
           "tls_lines", "LEGACY_MESSAGE"]

CheckFunc = Callable[..., "bool | tuple[bool, str]"]

HIDDEN_MESSAGE = "hidden check: graded later"
HANDED_MESSAGE = "answer handed to the grader"
LEGACY_MESSAGE = ("not graded: an old-style check (func(ns)) reads the notebook's objects; "
                  "the grader judges answers only (convert it: answers=(…), func(answer, truth))")


def grading() -> bool:
    """True in a kernel that ``labkit grade`` runs (the exercise modules are hidden there)."""
    return os.environ.get("LABKIT_GRADING") == "1"


@dataclass(frozen=True)
class Check:
    notebook: str
    id: str
    points: float
    hint: str
    hidden: bool
    func: CheckFunc
    answers: tuple[str, ...] | None = None   # None: an old-style check, func(ns)
    probe: Probe | None = None                # a configure exercise: func(lab)

    @property
    def legacy(self) -> bool:
        return self.answers is None


@dataclass
class Result:
    notebook: str
    id: str
    points: float
    max_points: float
    passed: bool
    message: str
    hidden: bool
    not_run: bool = False   # a live probe this machine could not run (never a pass)

    def line(self) -> str:
        """One line of plain text: ``✓ 1/1 sip-port`` or ``✗ 0/1 sip-port — why — hint: …``."""
        if self.message in (HIDDEN_MESSAGE, HANDED_MESSAGE) or self.not_run:
            return " ".join(f"• {self.id}: {self.message}".split())
        mark = "✓" if self.passed else "✗"
        text = f"{mark} {_num(self.points)}/{_num(self.max_points)} {self.id}"
        if self.message:
            text += f" — {self.message}"
        return " ".join(text.split())  # one line, whatever the message holds

    def __repr__(self) -> str:
        return f"Result({self.notebook}: {self.line()})"

    def _ipython_display_(self) -> None:
        # run() has already shown this result in this cell: not twice as the cell's Out[]
        # (a later cell showing it again does show it).
        ip = _ipython()
        if ip is not None and getattr(self, "_shown_in", None) == ip.execution_count:
            return
        _display(self, hint="", mark_shown=False)


# notebook id -> check id -> Check (insertion order = registration order)
_REGISTRY: dict[str, dict[str, Check]] = {}
_SINK: contextvars.ContextVar[dict[str, dict[str, Check]] | None] = contextvars.ContextVar(
    "labkit_checks_sink", default=None)
_loaded = False


def _register(chk: Check) -> None:
    target = _SINK.get()
    (target if target is not None else _REGISTRY).setdefault(chk.notebook, {})[chk.id] = chk


def _validate(notebook: str, id: str, points: float) -> None:
    if not isinstance(notebook, str) or not notebook or not isinstance(id, str) or not id:
        raise ValueError("check(notebook, id): both must be non-empty strings")
    if not isinstance(points, (int, float)) or isinstance(points, bool) or points < 0:
        raise ValueError(f"check {notebook}/{id}: points must be a number >= 0, not {points!r}")


def check(notebook: str, id: str, *, points: float = 1, hint: str = "", hidden: bool = False,
          answers: Iterable[str] | None = None):
    """Decorator registering check *id* of *notebook*.

    With ``answers=("name", …)``: ``func(answer, truth) -> bool | (bool, detail)`` where
    ``answer["name"]`` is the student's value (JSON data) and ``truth`` a
    :class:`~labkit.grading.truth.Truth`.  Without (old style, notebook only):
    ``func(ns) -> …`` reading the notebook's namespace.  Registering the same id again
    replaces the check (so re-running a cell is harmless).
    """
    _validate(notebook, id, points)
    names = _names(notebook, id, answers) if answers is not None else None

    def register(func: CheckFunc) -> CheckFunc:
        if not callable(func):
            raise TypeError(f"check {notebook}/{id}: {func!r} is not callable")
        _register(Check(notebook, id, float(points), hint, bool(hidden), func, names))
        return func

    return register


def configure(notebook: str, id: str, *, answer: str | Mapping[str, str], lab: str,
              apply: Callable[[str, Any], dict] = tls_lines, points: float = 1, hint: str = "",
              hidden: bool = False, timeout: float = DEFAULT_TIMEOUT, wait_registered: bool = False):
    """Decorator registering a *configure* exercise: ``func(lab) -> bool | (bool, detail)``
    measures a running lab built from *lab* and the student's text, within *timeout* seconds.

    *answer* is the variable holding the text — or, when each track has its own, a mapping
    from the track's SIP configuration file to the variable (``{"sip.conf": "sip_tls",
    "pjsip.conf": "pjsip_tls"}``); ``apply(text, track)`` turns the text into lab-file
    overrides (default :func:`~labkit.grading.probes.tls_lines`).  See :mod:`labkit.grading.probes`."""
    _validate(notebook, id, points)
    if isinstance(answer, Mapping):
        variables = tuple((str(k), v) for k, v in answer.items())
        names = _names(notebook, id, [v for _, v in variables])
    else:
        names = _names(notebook, id, [answer])
        variables = (("", names[0]),)
    if not callable(apply):
        raise TypeError(f"check {notebook}/{id}: apply must be a function (text, track) -> overrides")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"check {notebook}/{id}: timeout must be positive")
    probe = Probe(lab=lab, variables=variables, apply=apply, timeout=float(timeout),
                  wait_registered=bool(wait_registered))

    def register(func: CheckFunc) -> CheckFunc:
        if not callable(func):
            raise TypeError(f"check {notebook}/{id}: {func!r} is not callable")
        _register(Check(notebook, id, float(points), hint, bool(hidden), func, tuple(dict.fromkeys(names)), probe))
        return func

    return register


def _names(notebook: str, id: str, names: Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError(f"check {notebook}/{id}: answers=(…) is a tuple of names, not one string")
    names = tuple(names)
    for name in names:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"check {notebook}/{id}: {name!r} is not a variable name "
                             "(or a variable's attribute: session.recorder.entries)")
    return names


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, dict[str, Check]]]:
    """Within the block, checks registered (e.g. by an instructor's hidden cells run by the
    grader) go to the dict yielded, not to the registry."""
    found: dict[str, dict[str, Check]] = {}
    token = _SINK.set(found)
    try:
        yield found
    finally:
        _SINK.reset(token)


def registered(notebook: str) -> list[Check]:
    """The checks of *notebook*, in registration order (hidden ones included)."""
    _ensure_loaded()
    return list(_REGISTRY.get(notebook, {}).values())


def notebooks() -> list[str]:
    """The notebook ids that have checks."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def find(notebook: str, id: str, *, sources: Iterable[str] = ()) -> Check | None:
    """Check *id* of *notebook*: from the exercise modules, else from *sources* (code cells
    registering checks, run here: an instructor's hidden cells)."""
    _ensure_loaded()
    chk = _REGISTRY.get(notebook, {}).get(id)
    if chk is None:
        for src in sources:
            with collecting() as found:
                exec(compile(_python(src), f"<hidden cell of {notebook}>", "exec"), {"__name__": "__labkit_hidden__"})
            chk = found.get(notebook, {}).get(id, chk)
    return chk


def _python(source: str) -> str:
    """A cell's source as Python (IPython's magics and shell escapes translated)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:
        return source


# --------------------------------------------------------------------------- judging


def judge(chk: Check, answer: _answers.Answers, truth: Truth) -> Result:
    """Judge one (new-style, not configure) check: *answer* is what the student handed in,
    *truth* where the check reads its truth.  Never raises because of the answers."""
    def result(passed: bool, message: str) -> Result:
        return Result(chk.notebook, chk.id, chk.points if passed else 0.0, chk.points,
                      passed, message, chk.hidden)

    if chk.legacy:
        return result(False, LEGACY_MESSAGE)
    return _outcome(result, lambda: chk.func(answer.only(chk.answers), truth))


def _outcome(result, call) -> Result:
    try:
        value = call()
        detail = ""
        if isinstance(value, tuple):
            if len(value) != 2:
                return result(False, f"the check returned {len(value)} values instead of "
                                     "(passed, detail): a bug in the check")
            value, detail = value
            detail = "" if detail is None else str(detail)
        if value is None:
            return result(False, "the check returned nothing: a bug in the check")
        passed = bool(value)  # an array or a Series raises here: a fail, not a pass
    except (_answers.AnswerError, MissingVariable) as exc:
        return result(False, str(exc))
    except TruthUnavailable as exc:
        return result(False, f"the truth of this check cannot be computed here: {exc.message}")
    except NotImplementedError:
        return result(False, "not done yet: the exercise still raises NotImplementedError "
                             "(replace `raise NotImplementedError()` with your code)")
    except RecursionError:
        return result(False, "RecursionError: maximum recursion depth exceeded")
    except Exception as exc:  # the answers broke the check: a fail
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return result(False, f"error while checking: {type(exc).__name__}"
                             + (f": {text}" if text else ""))
    return result(passed, detail)


def evaluate(notebook: str, answers: Mapping[str, Any], *, track: str | None = None, data: Path | None = None,
             include_hidden: bool = True, probes: bool = False) -> list[Result]:
    """Judge plain *answers* (name → value) for every check of *notebook*, as the grader
    would: each value through the JSON round trip, the truth from the kit's recordings on
    *track* (or from the folder *data*).  Configure checks are probed only with ``probes=True``."""
    from labkit.teaching.session import default_track
    truth = Truth(notebook, track or default_track(), data=data)
    out = []
    for chk in registered(notebook):
        if chk.hidden and not include_hidden:
            continue
        if chk.probe is not None and not probes:
            out.append(_not_run(chk, "a live probe (evaluate(…, probes=True) runs it)"))
            continue
        out.append(_judge_here(chk, answers, truth))
    return out


def _judge_here(chk: Check, namespace: Mapping[str, Any], truth: Truth) -> Result:
    """One check, judged in this process from *namespace* (the student's variables)."""
    if chk.legacy:
        return _evaluate_legacy(chk, namespace)
    answer = _answers.roundtrip(chk.answers, namespace)
    if chk.probe is not None:
        return _probe_here(chk, answer, truth)
    from labkit.grading.truth import LOCK
    with LOCK:
        return judge(chk, answer, truth)


def _probe_here(chk: Check, answer: _answers.Answers, truth: Truth) -> Result:
    from labkit.grading import probes
    try:
        text = answer[chk.probe.answer(truth.track)]
    except _answers.AnswerError as exc:
        return Result(chk.notebook, chk.id, 0.0, chk.points, False, str(exc), chk.hidden)
    done = probes.run(chk, text, truth.track, student=truth.student)
    if done.status == "not-run":
        return _not_run(chk, done.message)
    return Result(chk.notebook, chk.id, chk.points if done.passed else 0.0, chk.points, done.passed,
                  done.message, chk.hidden)


def _not_run(chk: Check, why: str) -> Result:
    return Result(chk.notebook, chk.id, 0.0, chk.points, False, why, chk.hidden, not_run=True)


# --------------------------------------------------------------------------- in a notebook


def run(notebook: str, id: str, namespace: Mapping | None = None) -> Result:
    """Judge one check and show its result (in a notebook: a line of Markdown).

    Never raises because of the student's work: a problem is a failed :class:`Result`.
    A hidden check is not evaluated here: it shows "hidden check: graded later".  While the
    notebook is graded, nothing is judged in it: the cell says that the answer goes to the grader.
    """
    if grading():
        result = Result(notebook, id, 0.0, 0.0, False, HANDED_MESSAGE, False)
        _display(result, hint="")
        return result
    if namespace is None:
        namespace = _default_namespace(inspect.currentframe())
    _ensure_loaded()
    chk = _REGISTRY.get(notebook, {}).get(id)
    if chk is None:
        result = Result(notebook, id, 0.0, 0.0, False, _unknown(notebook, id), False)
        _display(result, hint="")
        return result
    if chk.hidden:
        result = Result(notebook, id, 0.0, chk.points, False, HIDDEN_MESSAGE, True)
        _display(result, hint="")
        return result
    if chk.probe is not None and not _live_here():
        result = _not_run(chk, "checked on a live lab by the grader (this notebook runs in replay mode)")
    else:
        result = _judge_here(chk, namespace, Truth.local(notebook, namespace))
    _display(result, hint="" if result.passed else chk.hint)
    return result


def run_all(notebook: str, namespace: Mapping | None = None, *,
            include_hidden: bool = True) -> list[Result]:
    """Judge every check of *notebook* (silently) and return the results (none while graded)."""
    if grading():
        return []
    if namespace is None:
        namespace = _default_namespace(inspect.currentframe())
    truth = Truth.local(notebook, namespace)
    out = []
    for chk in registered(notebook):
        if chk.hidden and not include_hidden:
            continue
        if chk.probe is not None and not _live_here():
            out.append(_not_run(chk, "checked on a live lab by the grader (this notebook runs in replay mode)"))
        else:
            out.append(_judge_here(chk, namespace, truth))
    return out


def _live_here() -> bool:
    from labkit.teaching.session import current_mode
    try:
        return current_mode() == "live"
    except Exception:
        return False


# --------------------------------------------------------------------------- old-style checks


class MissingVariable(KeyError):
    """The student's namespace lacks a variable an old-style check needs."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"`{self.name}` is not defined: run the exercise cell first"


class _Namespace(Mapping):
    """Read-only view of the notebook namespace whose missing keys explain themselves."""

    def __init__(self, data: Mapping[str, Any]):
        self._data = data

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise MissingVariable(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def _evaluate_legacy(chk: Check, namespace: Mapping[str, Any]) -> Result:
    def result(passed: bool, message: str) -> Result:
        return Result(chk.notebook, chk.id, chk.points if passed else 0.0, chk.points,
                      passed, message, chk.hidden)

    return _outcome(result, lambda: chk.func(_Namespace(namespace)))


# --------------------------------------------------------------------------- internals


def _ensure_loaded() -> None:
    """Fill the registry by importing ``labkit.grading.exercises`` (once; never while graded)."""
    global _loaded
    if not _loaded and not grading():
        _loaded = True
        importlib.import_module("labkit.grading.exercises")


def _unknown(notebook: str, id: str) -> str:
    known = list(_REGISTRY.get(notebook, {}))
    text = f"no check {id!r} for notebook {notebook!r}"
    text += f" (known: {', '.join(known)})" if known else " (this notebook has no checks)"
    try:
        from labkit.grading import exercises
        if exercises.errors:
            text += "; some exercise modules failed to import: " + "; ".join(
                f"{name}: {err}" for name, err in exercises.errors.items())
    except Exception:
        pass
    return text


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _in_kernel() -> bool:
    ip = _ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _default_namespace(frame) -> Mapping[str, Any]:
    """The IPython user namespace in a kernel/IPython, else the globals of the caller."""
    ip = _ipython()
    if ip is not None:
        return ip.user_ns
    caller = frame.f_back if frame is not None else None
    return caller.f_globals if caller is not None else {}


def _display(result: Result, *, hint: str, mark_shown: bool = True) -> None:
    plain = result.line()
    if hint:
        plain += f" — hint: {hint}"
        plain = " ".join(plain.split())
    if _in_kernel():
        from IPython.display import display
        if result.message == HIDDEN_MESSAGE:
            md = f"🔒 `{result.id}` — *{HIDDEN_MESSAGE}*"
        elif result.message == HANDED_MESSAGE:
            md = f"📨 `{result.id}` — *{HANDED_MESSAGE}*"
        elif result.not_run:
            md = f"🧪 `{result.id}` — *{result.message}*"
        else:
            mark = "✓" if result.passed else "✗"
            md = f"**{mark} {_num(result.points)}/{_num(result.max_points)}** `{result.id}`"
            if result.message:
                md += f" — {result.message}"
            if hint:
                md += f"  \n💡 *hint:* {hint}"
        display({"text/markdown": md, "text/plain": plain}, raw=True)
        if mark_shown:  # run() showed it: the cell's Out[] must not show it again
            object.__setattr__(result, "_shown_in", _ipython().execution_count)
    else:
        print(plain)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
