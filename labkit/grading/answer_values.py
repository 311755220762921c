"""The plain values students hand in to checks, read strictly: a check compares what the
student meant, and says what it expected when the type is wrong (a bool is not a number)."""
from __future__ import annotations


def whole_number(value) -> int:
    """A whole number the student gave (5060, 5060.0 or "5060"; not True)."""
    if isinstance(value, bool):
        raise TypeError(f"expected a number, not {value!r}")
    return int(value)


def seconds(value) -> float:
    """A duration in seconds (an int or a float; not True, not text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number of seconds, not {value!r}")
    return float(value)


def said_address(value) -> str:
    """An IPv4 address the student gave, with any ``:port`` and spaces left out."""
    return str(value).strip().split(":")[0]
