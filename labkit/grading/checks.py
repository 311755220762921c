"""Graded checks: verify what a student's lab or capture *shows*, never the text of their code.

An exercise module (``labkit/exercises/nb00.py``…) registers checks for a notebook::

    from labkit.grading.checks import check

    @check("00-orientation", "sip-port", points=1, hint="look at the UDP destination port of the INVITE")
    def _sip_port(ns):
        truth = ns["session"].invites()[0].dst_port      # the truth, from the capture
        return ns["sip_port"] == truth, f"you said {ns['sip_port']!r}"

A check function receives the notebook namespace (the student's variables) and returns
``bool`` or ``(bool, detail)``.  Whatever goes wrong inside it (a variable not defined,
the wrong type, ``NotImplementedError`` from an unfinished exercise, …) is a *fail* with a
readable message: never a crash of the check cell, never a pass.

In a notebook, a check cell calls ``labkit.grading.checks.run("00-orientation", "sip-port")``;
the grader (``labkit grade``) calls :func:`report` in a fresh kernel after the student's
cells have run.  Hidden checks (``hidden=True``) count only at grading time.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Check", "Result", "check", "run", "run_all", "report", "registered", "notebooks"]

CheckFunc = Callable[[Mapping[str, Any]], "bool | tuple[bool, str]"]


@dataclass(frozen=True)
class Check:
    notebook: str
    id: str
    points: float
    hint: str
    hidden: bool
    func: CheckFunc


@dataclass
class Result:
    notebook: str
    id: str
    points: float
    max_points: float
    passed: bool
    message: str
    hidden: bool

    def line(self) -> str:
        """One line of plain text: ``✓ 1/1 sip-port`` or ``✗ 0/1 sip-port — why — hint: …``."""
        if self.hidden and self.message == HIDDEN_MESSAGE:
            return f"• {self.id}: {HIDDEN_MESSAGE}"
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


HIDDEN_MESSAGE = "hidden check: graded later"

# notebook id -> check id -> Check (insertion order = registration order)
_REGISTRY: dict[str, dict[str, Check]] = {}
_loaded = False


def check(notebook: str, id: str, *, points: float = 1, hint: str = "", hidden: bool = False):
    """Decorator registering ``func(ns) -> bool | (bool, detail)`` as check *id* of *notebook*.

    Registering the same id again replaces the check (so re-running a cell is harmless).
    """
    if not isinstance(notebook, str) or not notebook or not isinstance(id, str) or not id:
        raise ValueError("check(notebook, id): both must be non-empty strings")
    if not isinstance(points, (int, float)) or isinstance(points, bool) or points < 0:
        raise ValueError(f"check {notebook}/{id}: points must be a number >= 0, not {points!r}")

    def register(func: CheckFunc) -> CheckFunc:
        if not callable(func):
            raise TypeError(f"check {notebook}/{id}: {func!r} is not callable")
        _REGISTRY.setdefault(notebook, {})[id] = Check(
            notebook, id, float(points), hint, bool(hidden), func)
        return func

    return register


def registered(notebook: str) -> list[Check]:
    """The checks of *notebook*, in registration order (hidden ones included)."""
    _ensure_loaded()
    return list(_REGISTRY.get(notebook, {}).values())


def notebooks() -> list[str]:
    """The notebook ids that have checks."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def run(notebook: str, id: str, namespace: Mapping | None = None) -> Result:
    """Run one check and show its result (in a notebook: a line of Markdown).

    Never raises because of the student's work: a problem is a failed :class:`Result`.
    A hidden check is not evaluated here: it shows "hidden check: graded later".
    """
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
    result = _evaluate(chk, namespace)
    _display(result, hint="" if result.passed else chk.hint)
    return result


def run_all(notebook: str, namespace: Mapping | None = None, *,
            include_hidden: bool = True) -> list[Result]:
    """Evaluate every check of *notebook* (silently) and return the results."""
    if namespace is None:
        namespace = _default_namespace(inspect.currentframe())
    return list(_iter_results(notebook, namespace, include_hidden))


def report(notebook: str, path: str, namespace: Mapping | None = None) -> None:
    """Evaluate every check of *notebook*, hidden ones included, into the JSON file *path*.

    The file is rewritten (atomically) after each check, with ``"complete": false`` until
    the last one: if a check hangs or kills the kernel, the checks already evaluated count.
    """
    if namespace is None:
        namespace = _default_namespace(inspect.currentframe())
    results: list[dict[str, Any]] = []
    _write_report(path, notebook, results, complete=False)
    for result in _iter_results(notebook, namespace, include_hidden=True):
        results.append(asdict(result))
        _write_report(path, notebook, results, complete=False)
    _write_report(path, notebook, results, complete=True)


# --------------------------------------------------------------------------- internals


class MissingVariable(KeyError):
    """The student's namespace lacks a variable a check needs."""

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


def _evaluate(chk: Check, namespace: Mapping[str, Any]) -> Result:
    def result(passed: bool, message: str) -> Result:
        return Result(chk.notebook, chk.id, chk.points if passed else 0.0, chk.points,
                      passed, message, chk.hidden)

    try:
        value = chk.func(_Namespace(namespace))
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
    except MissingVariable as exc:
        return result(False, str(exc))
    except NotImplementedError:
        return result(False, "not done yet: the exercise still raises NotImplementedError "
                             "(replace `raise NotImplementedError()` with your code)")
    except RecursionError:
        return result(False, "RecursionError: maximum recursion depth exceeded")
    except Exception as exc:  # the student's variables broke the check: a fail
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return result(False, f"error while checking: {type(exc).__name__}"
                             + (f": {text}" if text else ""))
    return result(passed, detail)


def _iter_results(notebook: str, namespace: Mapping, include_hidden: bool) -> Iterator[Result]:
    for chk in registered(notebook):
        if chk.hidden and not include_hidden:
            continue
        yield _evaluate(chk, namespace)


def _write_report(path: str, notebook: str, results: list[dict], *, complete: bool) -> None:
    data = {"labkit_report": 1, "notebook": notebook, "complete": complete, "results": results}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".report-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, default=str)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _ensure_loaded() -> None:
    """Fill the registry by importing ``labkit.grading.exercises`` (once)."""
    global _loaded
    if not _loaded:
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
        if result.hidden and result.message == HIDDEN_MESSAGE:
            md = f"🔒 `{result.id}` — *{HIDDEN_MESSAGE}*"
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
