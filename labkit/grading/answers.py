"""What a student's kernel hands the grader: the *answers*, as JSON data, and nothing else.

Every check names the variables it reads (``answers=("sip_port",)``).  In the kernel,
:func:`encode` turns each value into plain JSON data:

* ``None``, ``True``/``False``, numbers and strings as they are (a subclass of ``int``,
  ``float`` or ``str`` becomes the plain value it holds: its own ``__eq__`` is gone);
* lists, tuples, sets (sorted) → lists; dicts → dicts whose keys are strings;
* numpy and pandas scalars → Python's; numpy arrays and pandas Index → lists; a pandas
  Series → a dict (index → value);
* anything else (a function, a DataFrame, an object of the student's) → its type and the
  start of its repr, *marked* as not readable: a check reading it fails and says so.

At grading time the last cell of the notebook (written by the grader) calls :func:`dump`,
which writes ``{"labkit_answers": 1, "notebook": …, "answers": {name: entry}}`` to the
results file; the grader reads it back with :func:`load` — ``json.loads``: no object of
the student's crosses, whatever the kernel did.  Outside grading, ``checks.run`` makes the
same round trip through JSON before a check sees the values (:func:`roundtrip`), so a cell
shows what the grader will decide.

What a check receives is an :class:`Answers` mapping: ``answers["sip_port"]`` is the value;
a variable the notebook never set raises :class:`MissingAnswer`, an unreadable one
:class:`UnreadableAnswer`, a name the check did not declare :class:`UndeclaredAnswer` (a bug
in the check) — each a failed check with a readable message, never a pass.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FORMAT", "Answers", "MissingAnswer", "UnreadableAnswer", "UndeclaredAnswer", "Unreadable",
           "encode", "collect", "dump", "load", "decode", "roundtrip"]

FORMAT = 1
MAX_DEPTH = 12          # nesting of lists and dicts
MAX_ITEMS = 20_000      # scalars in one answer
MAX_TEXT = 200_000      # characters of one string (a configuration text is a few KiB)
MAX_REPR = 200          # characters kept of what cannot be read
MAX_FILE = 4 << 20      # bytes of the answers file the grader reads (KernelManager.fetch)


# =========================================================================== in the kernel


class _TooLarge(Exception):
    pass


class _NotData(Exception):
    def __init__(self, value: Any):
        super().__init__()
        self.value = value


def encode(value: Any) -> dict[str, Any]:
    """One answer as an entry of the answers file: ``{"value": …}`` or ``{"unreadable": …}``."""
    budget = [MAX_ITEMS]
    inner = None
    try:
        return {"value": _plain(value, 0, budget)}
    except _TooLarge:
        why = "too large"
    except _NotData as exc:
        why = "not data"
        if exc.value is not value:
            inner = _type_name(exc.value)
    except RecursionError:
        why = "too deeply nested"
    except Exception as exc:  # the student's object broke while being read
        why = f"{type(exc).__name__} while reading it"
    entry = {"unreadable": _type_name(value), "repr": _safe_repr(value), "why": why}
    if inner is not None:
        entry["holds"] = inner
    return entry


def collect(names: Iterable[str], namespace: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """name → entry, for each of *names* (``{"missing": true}`` when it is not defined).

    A dotted name (``session.recorder.entries``) is a variable's attribute, read in the
    kernel like any answer: data the student hands in, never trusted as truth."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        first, *attributes = name.split(".")
        try:
            present = first in namespace
            value = namespace[first] if present else None
            for attribute in attributes:
                if not present:
                    break
                value = getattr(value, attribute)
        except Exception:
            present = False
        out[name] = encode(value) if present else {"missing": True}
    return out


def dump(notebook: str, names: Iterable[str], path: str, namespace: Mapping[str, Any] | None = None) -> None:
    """Write the answers of *names* to *path* (the grading cell).  The file is rewritten
    after each answer, so that one answer that cannot be read in time costs only itself."""
    if namespace is None:
        namespace = _user_namespace()
    answers: dict[str, dict[str, Any]] = {}
    _write(path, notebook, answers, complete=False)
    for name in names:
        answers.update(collect([name], namespace))
        _write(path, notebook, answers, complete=False)
    _write(path, notebook, answers, complete=True)


def _write(path: str, notebook: str, answers: dict, *, complete: bool) -> None:
    data = {"labkit_answers": FORMAT, "notebook": notebook, "complete": complete, "answers": answers}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".answers-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _user_namespace() -> Mapping[str, Any]:
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        shell = None
    return shell.user_ns if shell is not None else {}


def _plain(value: Any, depth: int, budget: list[int]) -> Any:
    """*value* as plain JSON data (raises _NotData / _TooLarge)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge()
    if depth > MAX_DEPTH:
        raise _TooLarge()
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is int:
        if value.bit_length() > 256:
            raise _TooLarge()
        return value
    if kind is float:
        return value
    if kind is str:
        if len(value) > MAX_TEXT:
            raise _TooLarge()
        return value
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    if np is not None:
        if isinstance(value, np.generic):
            item = value.item()
            if type(item) not in (bool, int, float, str, type(None)):
                raise _NotData(value)
            return _plain(item, depth, budget)
        if isinstance(value, np.ndarray):
            return _plain(value.tolist(), depth, budget)
    if pd is not None:
        if isinstance(value, pd.Series):
            return {_key(k): _plain(v, depth + 1, budget) for k, v in value.items()}
        if isinstance(value, pd.Index):
            return [_plain(v, depth + 1, budget) for v in value.tolist()]
        if value is pd.NA or value is pd.NaT:
            return None
    # subclasses: the plain value they hold, without their methods (an __eq__ always True…)
    if isinstance(value, bool):
        return bool.__bool__(value)
    if isinstance(value, int):
        return _plain(int.__int__(value), depth, budget)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        text = str.__str__(value)
        if len(text) > MAX_TEXT:
            raise _TooLarge()
        return str.__getitem__(text, slice(None))
    if isinstance(value, (Mapping, dict)):
        return {_key(k): _plain(v, depth + 1, budget) for k, v in dict.items(dict(value))}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1, budget) for v in list(value)]
    if isinstance(value, (set, frozenset)):
        items = [_plain(v, depth + 1, budget) for v in list(value)]
        return sorted(items, key=_order)
    raise _NotData(value)


def _key(key: Any) -> str:
    """A dict key as text (JSON keys are strings): ``5060`` → ``"5060"``."""
    plain = _plain(key, 0, [1 << 30])
    if isinstance(plain, str):
        return plain
    if plain is None or isinstance(plain, (bool, int, float)):
        return str(plain)
    raise _NotData(key)


def _order(item: Any) -> tuple:
    """A total order for a set's items (numbers by value, then strings, then the rest)."""
    if isinstance(item, bool) or item is None:
        return (0, str(item))
    if isinstance(item, (int, float)):
        return (1, item if not (isinstance(item, float) and math.isnan(item)) else math.inf, "")
    if isinstance(item, str):
        return (2, item)
    return (3, json.dumps(item, sort_keys=True))


def _type_name(value: Any) -> str:
    try:
        kind = type(value)
        module = str.__str__(kind.__module__)
        name = str.__str__(kind.__qualname__)
        return name if module in ("builtins", "__main__") else f"{module}.{name}"
    except Exception:
        return "object"


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")


def _stable(text: str) -> str:
    """Memory addresses masked: the same notebook gives the same feedback every time."""
    return _ADDRESS.sub("0x…", text)


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
        if not isinstance(text, str):
            raise TypeError
        text = str.__getitem__(text, slice(0, MAX_REPR))
    except Exception:
        text = f"<{_type_name(value)}>"
    return _stable(" ".join(text.split()))


# =========================================================================== in the grader


@dataclass(frozen=True)
class Unreadable:
    """An answer the kernel could not hand over as data (its type and the start of its repr)."""
    type: str
    repr: str
    why: str
    holds: str = ""   # the type inside it that is not data (a list holding a function…)


class AnswerError(Exception):
    """An answer a check cannot use: the check fails with this message."""


class MissingAnswer(AnswerError, KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"`{self.name}` is not defined: run the exercise cell first"


class UnreadableAnswer(AnswerError):
    def __init__(self, name: str, what: Unreadable):
        super().__init__(name)
        self.name, self.what = name, what

    def __str__(self) -> str:
        if self.what.why == "too large":
            return f"`{self.name}` is too large to hand in (a {self.what.type})"
        what = self.what.type + (f" holding a {self.what.holds}" if self.what.holds else "")
        return (f"`{self.name}` is a {what} ({self.what.repr}): hand in a value — a number, "
                "a string, True/False, or a list or dict of them")


class UndeclaredAnswer(AnswerError):
    def __str__(self) -> str:
        return (f"a bug in the check: it reads `{self.args[0]}` but does not name it in "
                "answers=(…)")


class Answers(Mapping):
    """The answers a check may read: JSON values, read-only, each problem a readable failure."""

    def __init__(self, values: Mapping[str, Any], declared: Iterable[str] | None = None):
        self._values = dict(values)
        self._declared = None if declared is None else frozenset(declared)

    def __getitem__(self, name: str) -> Any:
        if self._declared is not None and name not in self._declared:
            raise UndeclaredAnswer(name)
        if name not in self._values:
            raise MissingAnswer(name)
        value = self._values[name]
        if isinstance(value, Unreadable):
            raise UnreadableAnswer(name, value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except (MissingAnswer, UnreadableAnswer):
            return default

    def __contains__(self, name: object) -> bool:
        return name in self._values and not isinstance(self._values[name], Unreadable)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def only(self, names: Iterable[str]) -> Answers:
        """The answers of *names* alone (what one check may read)."""
        names = tuple(names)
        return Answers({k: v for k, v in self._values.items() if k in names}, declared=names)

    def __repr__(self) -> str:
        return f"Answers({self._values!r})"


def decode(entries: Mapping[str, Any]) -> dict[str, Any]:
    """Entries of an answers file → name → value (or :class:`Unreadable`); missing ones left out."""
    values: dict[str, Any] = {}
    for name, entry in entries.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            continue
        if "unreadable" in entry:
            values[name] = Unreadable(*(_stable(" ".join(str(entry.get(key, default)).split()))[:limit]
                                        for key, default, limit in (("unreadable", "object", 100),
                                                                    ("repr", "", MAX_REPR),
                                                                    ("why", "not data", 100),
                                                                    ("holds", "", 100))))
        elif "value" in entry:
            values[name] = entry["value"]
    return values


def load(raw: bytes | None, notebook: str) -> tuple[dict[str, Any] | None, str]:
    """The answers the grading cell wrote (None and why, if there are none to read)."""
    if raw is None:
        return None, "the grading cell wrote no answers"
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("labkit_answers") != FORMAT or data.get("notebook") != notebook:
            raise ValueError("not the answers of this notebook")
        if not isinstance(data.get("answers"), dict):
            raise ValueError("no answers")
        values = decode(data["answers"])
    except Exception as exc:
        return None, f"the answers file is unreadable ({type(exc).__name__})"
    return values, "" if data.get("complete") is True else "the grading cell did not finish"


def roundtrip(names: Iterable[str], namespace: Mapping[str, Any]) -> Answers:
    """What the grader would receive for *names*: encoded, through JSON text, decoded."""
    names = tuple(names)
    text = json.dumps(collect(names, namespace), ensure_ascii=False)
    return Answers(decode(json.loads(text)), declared=names)
