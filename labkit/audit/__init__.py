"""``labkit audit``: the weak settings of an Asterisk configuration, with why and the fix.

Reads ``sip.conf`` (chan_sip), ``pjsip.conf`` (PJSIP), ``extensions.conf`` and a folder of
certificates and keys — the kit's rendered files or any Asterisk's — and reports each weak
setting: severity, ``file:line [section]``, what, why (with the document that says so) and
the line that fixes it::

    from labkit.audit import audit, report
    findings = audit(["/etc/asterisk/sip.conf", "/etc/asterisk/extensions.conf"])
    print(report.text(findings))

Modules, one concern each: :mod:`~labkit.audit.parse` (Asterisk's config syntax),
:mod:`~labkit.audit.sip` and :mod:`~labkit.audit.pjsip` (the channel drivers' rules),
:mod:`~labkit.audit.dialplan` (toll fraud: who reaches a trunk, with which numbers),
:mod:`~labkit.audit.files` (certificates and keys), :mod:`~labkit.audit.report`.
"""
from __future__ import annotations

from collections.abc import Iterable

from labkit.audit import report
from labkit.audit.core import Source, load, run
from labkit.audit.model import SEVERITIES, Finding

__all__ = ["SEVERITIES", "Finding", "audit", "audit_with_notes", "report"]


def audit(paths_or_texts: Iterable[Source] | Source) -> list[Finding]:
    """Every weak setting in what is given, most severe first.

    ``paths_or_texts``: file or folder paths, ``(name, text)`` pairs, or configuration text
    (a string containing a newline; its kind is guessed from its contents).  Raises
    :class:`labkit.errors.AuditError` for a missing, unreadable or binary file.
    """
    return audit_with_notes(paths_or_texts)[0]


def audit_with_notes(paths_or_texts) -> tuple[list[Finding], list[str]]:
    """:func:`audit`, and the notes (``#include`` not followed, files skipped…)."""
    if isinstance(paths_or_texts, (str, tuple)) or hasattr(paths_or_texts, "__fspath__"):
        paths_or_texts = [paths_or_texts]
    inputs = load(paths_or_texts)
    return run(inputs), inputs.notes
