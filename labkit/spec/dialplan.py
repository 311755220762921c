"""What a lab file's dialplan must get right before Asterisk reads it.

Asterisk loads a dialplan with a bad pattern or a ``Goto`` to a missing context without a
word of complaint; the call fails later, at the moment a student dials.  These checks say it
at load time, with the place in the lab file:

* a pattern (``exten => _…``) only holds Asterisk's pattern characters: digits, ``X`` (any
  digit), ``Z`` (1–9), ``N`` (2–9), ``[…]`` sets of characters and ranges, ``.`` (one or more
  characters), ``!`` (zero or more), and the dialable ``* # +`` (Asterisk's "Pattern
  Matching" documentation; a letter such as ``Y`` is matched literally, so nobody can dial it);
* a ``Goto``/``Gosub``/``GotoIf`` with a context, and an ``include =>``, name a context the
  dialplan declares;
* in the trunk's context, an extension that is a public number (0033…, +33…, 0X… with ten
  digits) is one of the trunk account's numbers at the carrier (the line or an alias): the
  carrier never sends a call for another number to this PBX.
"""
from __future__ import annotations

import re

from labkit.spec.model import LabSpec

#: ``exten => NAME,PRIORITY,…`` (also ``exten =>`` with spaces, and ``same`` lines have no name).
_EXTEN = re.compile(r"^\s*exten\s*=>?\s*(?P<name>[^,]+?)\s*,")
_INCLUDE = re.compile(r"^\s*include\s*=>?\s*(?P<context>[A-Za-z0-9_-]+)")
#: Applications whose first argument may be ``context,extension,priority``.
_JUMP = re.compile(r"\b(?P<app>Goto|Gosub)\((?P<args>[^()]*)\)", re.IGNORECASE)
#: GotoIf(condition?context,exten,prio:context,exten,prio): the branches after '?'.
_GOTOIF = re.compile(r"\bGotoIf\((?P<args>.*)\)", re.IGNORECASE)
_SET = r"\[[0-9A-Za-z*#+\-]+\]"
_PATTERN_BODY = re.compile(rf"^(?:[0-9XZNxzn*#+]|{_SET})*[.!]?$")
#: A French public number in any of its written forms (what a carrier sends as a DID).
_PUBLIC_NUMBER = re.compile(r"^(?:0033[1-9][0-9]{8}|\+33[1-9][0-9]{8}|0[1-9][0-9]{8})$")


def pattern_problem(name: str) -> str | None:
    """Why extension ``name`` (``_0[1-7]XXXXXXXX``, ``330``, ``s``…) is not a valid one."""
    if not name.startswith("_"):
        return None
    body = name[1:]
    if not body:
        return "an empty pattern ('_' alone) matches nothing"
    if _PATTERN_BODY.fullmatch(body):
        return None
    bad = sorted({c for c in re.sub(_SET, "", body) if not re.fullmatch(r"[0-9XZNxzn*#+.!]", c)})
    why = (f"{', '.join(repr(c) for c in bad)} is no pattern character" if bad
           else "'.' or '!' can only end a pattern, and a [set] is not empty")
    return (f"pattern {name!r}: {why}; Asterisk patterns use digits, X (any digit), Z (1-9), "
            "N (2-9), [1-7] (a set), '.' (one or more), '!' (zero or more) and * # +")


def _jump_contexts(line: str) -> list[str]:
    """The contexts a line jumps to (Goto/Gosub with three arguments, GotoIf's branches, include)."""
    found = []
    if (m := _INCLUDE.match(line)):
        found.append(m.group("context"))
    for m in _JUMP.finditer(line):
        parts = [p.strip() for p in m.group("args").split(",")]
        if len(parts) == 3 and "$" not in parts[0]:
            found.append(parts[0])
    if (m := _GOTOIF.search(line)) and "?" in m.group("args"):
        for branch in m.group("args").split("?", 1)[1].split(":"):
            parts = [p.strip() for p in branch.split(",")]
            if len(parts) == 3 and "$" not in parts[0]:
                found.append(parts[0])
    return found


def _owned_numbers(spec: LabSpec) -> set[str] | None:
    """Every form of the numbers the trunk's account owns at the carrier (None: no such account)."""
    trunk, carrier = spec.pbx.trunk, spec.carrier
    account = next((a for a in carrier.accounts if a.line == trunk.account), None) if carrier else None
    if account is None:
        return None
    owned = set()
    for number in (account.line, *account.aliases):      # 0033 form in the lab file
        national = number[4:]
        owned |= {number, f"+33{national}", f"0{national}"}
    return owned


def dialplan_problems(spec: LabSpec) -> list[tuple[str, str]]:
    """(place, message) for each pattern, jump or DID the dialplan gets wrong."""
    problems = []
    contexts = set(spec.pbx.dialplan)
    security = spec.pbx.security
    if security.allow_guest and security.guest_context not in contexts:
        problems.append(("pbx.security.guest_context", f"guests are allowed and land in context "
                         f"{security.guest_context!r}, which the dialplan does not declare; contexts: "
                         f"{', '.join(spec.pbx.dialplan)}"))
    trunk = spec.pbx.trunk
    owned = _owned_numbers(spec) if trunk is not None else None
    for context, lines in spec.pbx.dialplan.items():
        for j, line in enumerate(lines):
            place = f"pbx.dialplan.{context}[{j}]"
            name = m.group("name") if (m := _EXTEN.match(line)) else None
            if name and (problem := pattern_problem(name)):
                problems.append((place, problem))
            for target in _jump_contexts(line):
                if target not in contexts:
                    problems.append((place, f"jumps to context {target!r}, which the dialplan does not "
                                     f"declare; contexts: {', '.join(spec.pbx.dialplan)}"))
            if (owned is not None and context == trunk.context and name
                    and _PUBLIC_NUMBER.fullmatch(name) and name not in owned):
                numbers = ", ".join(sorted(n for n in owned if n.startswith("0033")))
                problems.append((place, f"{name} is not a number of the trunk's account {trunk.account} "
                                 f"(its numbers: {numbers}): the carrier never sends a call for it here"))
    return problems
