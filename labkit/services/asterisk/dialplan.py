"""Which extension of a context the *running* Asterisk picks for a dialled number.

The answer is asked of Asterisk itself (``dialplan show NUMBER@CONTEXT``), not re-implemented:
Asterisk lists every extension of the context that matches the number, in the order it tries
them — an exact extension first, then patterns from the most specific to the least
(``_0[1-7]XXXXXXXX`` before ``_X.``) — so the first line is the one a call would run.  Pattern
syntax: ``X`` any digit, ``Z`` 1–9, ``N`` 2–9, ``[1-7]`` one digit of a set, ``.`` one or more
characters, ``!`` zero or more (Asterisk's "Pattern Matching" documentation).  A pattern's
length counts: ``_0[1-7]XXXXXXX`` (one X short) matches 9 digits, not a French 10-digit number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from labkit.errors import AsteriskError

# '  '_0[1-7]XXXXXXXX' => 1. NoOp(national)        [extensions.conf:16]'
_LINE = re.compile(r"^\s*'(?P<extension>[^']+)'\s*=>\s*(?P<priority>\d+)\.\s*(?P<step>.*?)\s*"
                   r"(?:\[(?P<where>[^\]]+)\])?\s*$")


@dataclass(frozen=True)
class DialplanMatch:
    """What Asterisk would run for ``number`` dialled in ``context``."""

    number: str
    context: str
    #: The extension that wins (exact or pattern), None when nothing matches.
    extension: str | None
    #: Its first step, e.g. ``Dial(SIP/trunk/0612345678,60,tr)``, and where it was written.
    first_step: str = ""
    where: str = ""
    #: The other extensions that also match, in the order Asterisk would try them.
    also: tuple[str, ...] = field(default=())


def parse(output: str, number: str, context: str) -> DialplanMatch:
    """Read ``dialplan show NUMBER@CONTEXT`` (same format on Asterisk 16 and 22)."""
    if f"no existence of '{context}' context" in output:
        raise AsteriskError(f"The dialplan has no context {context!r}.",
                            hint="`dialplan show` lists the contexts; check the lab file's dialplan")
    rows = [m.groupdict() for line in output.splitlines() if (m := _LINE.match(line))]
    if not rows:
        return DialplanMatch(number, context, None)
    first = rows[0]
    return DialplanMatch(number, context, first["extension"], first["step"], first["where"] or "",
                         tuple(r["extension"] for r in rows[1:]))


def match(pbx, number: str, context: str) -> DialplanMatch:
    """Ask the running Asterisk ``pbx`` which extension ``number`` reaches in ``context``."""
    if not re.fullmatch(r"[0-9*#+A-Za-z]{1,32}", number) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", context):
        raise AsteriskError(f"{number!r}@{context!r} is not a number and a context name.",
                            hint="digits (and * # +) for the number, letters, digits, _ or - for the context")
    # A number that matches nothing makes the command "fail": the text says so, it is no error.
    output = pbx.cli(f"dialplan show {number}@{context}")
    return parse(output, number, context)


def match_table(pbx, numbers: list[str], context: str) -> pd.DataFrame:
    """One row per dialled number: the extension that wins, its first step, the others that match."""
    rows = []
    for number in numbers:
        found = match(pbx, number, context)
        rows.append({"number": number, "digits": len(number), "extension": found.extension or "(none)",
                     "first_step": found.first_step, "where": found.where, "also_matches": ", ".join(found.also)})
    return pd.DataFrame(rows, columns=["number", "digits", "extension", "first_step", "where", "also_matches"])
