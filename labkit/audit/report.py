"""The audit's findings as a text table (for people) or JSON (for programs)."""
from __future__ import annotations

import json
import textwrap

from labkit.audit.model import SEVERITIES, Finding

_WIDTH = 100


def summary(findings: list[Finding]) -> str:
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    if not findings:
        return "No weak setting found."
    return f"{len(findings)} finding(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())


def text(findings: list[Finding], notes: list[str] = ()) -> str:
    """A table (severity, where, rule) then each finding with what, why, source and fix."""
    lines = []
    if findings:
        where_width = min(max(len(f.where) for f in findings), 48)
        lines.append(f"{'#':>3}  {'SEVERITY':<8}  {'WHERE':<{where_width}}  RULE")
        for number, finding in enumerate(findings, 1):
            lines.append(f"{number:>3}  {finding.severity.upper():<8}  "
                         f"{finding.where:<{where_width}}  {finding.rule}")
        lines.append("")
    for number, finding in enumerate(findings, 1):
        lines.append(f"[{number}] {finding.severity.upper()}  {finding.where}  {finding.rule}")
        for label, value in (("what", finding.what), ("why", finding.why),
                             ("source", finding.source)):
            lines += textwrap.wrap(value, _WIDTH, initial_indent=f"    {label + ':':<8}",
                                   subsequent_indent=" " * 12)
        fix = finding.fix.splitlines()
        lines.append(f"    {'fix:':<8}{fix[0]}")
        lines += [" " * 12 + more for more in fix[1:]]
        lines.append("")
    for note in notes:
        lines += textwrap.wrap(note, _WIDTH, initial_indent="note: ", subsequent_indent="      ")
    lines.append(summary(findings))
    return "\n".join(lines) + "\n"


def as_json(findings: list[Finding], notes: list[str] = ()) -> str:
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    return json.dumps({"findings": [f.as_dict() for f in findings], "counts": counts,
                       "notes": list(notes)}, indent=2, ensure_ascii=False) + "\n"
