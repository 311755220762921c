"""Asterisk's configuration syntax, as ``main/config.c`` reads it, for the audit.

What is understood (enough for ``sip.conf``, ``pjsip.conf`` and ``extensions.conf``):

* ``[name]`` opens a section; ``[name](!)`` is a template (never an object itself);
  ``[name](tpl1,tpl2)`` inherits the settings of the templates, in order, before its own;
  ``[name](!,tpl)`` both; ``[name](+)`` adds lines to the section of that name above.
* ``key = value`` and ``key => value`` are the same thing to the parser (``=>`` is the
  dialplan's habit: ``exten =>``, ``register =>``).
* ``;`` starts a comment, ``\\;`` is a literal semicolon (PJSIP's ``\\;lr``), ``;-- … --;``
  is a block comment.
* ``#include`` / ``#tryinclude`` / ``#exec`` are *not* followed (the audit reads the
  files it is given, nothing else): each gives a note in the report.

Sections keep their order and their line numbers, so that a finding can say
``sip.conf:42 [6000]``.  PJSIP repeats a name for objects of different types (endpoint
``[6000]`` and aor ``[6000]``): sections are a list, never a dict keyed by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

#: ``[name]`` then optional ``(options)``, e.g. ``[6000](!,phone-template)``.
_HEADER = re.compile(r"^\[(?P<name>[^\]]*)\]\s*(?:\((?P<opts>[^)]*)\))?\s*$")
_DIRECTIVE = re.compile(r"^#\s*(include|tryinclude|exec)\b\s*(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Setting:
    """One ``key = value`` line.  ``key`` is lower-case (Asterisk's keys are
    case-insensitive); ``value`` keeps its case (secrets, dialplan)."""

    key: str
    value: str
    line: int
    arrow: bool = False     #: written ``=>`` rather than ``=``


@dataclass
class Section:
    name: str
    line: int
    template: bool = False                            #: ``(!)``: a template, not an object
    inherits: list[str] = field(default_factory=list)  #: templates named in ``(…)``
    own: list[Setting] = field(default_factory=list)
    #: Own settings after the templates' ones (filled by :func:`parse`).
    settings: list[Setting] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The last value of ``key`` (a later line overrides an earlier one, and a
        section's own lines override its templates')."""
        found = self.setting(key)
        return found.value if found else default

    def setting(self, key: str) -> Setting | None:
        key = key.lower()
        for item in reversed(self.settings):
            if item.key == key:
                return item
        return None

    def all(self, key: str) -> list[Setting]:
        key = key.lower()
        return [s for s in self.settings if s.key == key]

    @property
    def type(self) -> str:
        """The PJSIP/chan_sip ``type`` (endpoint, aor, auth, friend, peer…), lower-case."""
        return (self.get("type") or "").lower()


@dataclass
class ConfFile:
    """A parsed configuration file: its display name, kind and sections."""

    name: str
    kind: str                       #: "sip", "pjsip" or "extensions"
    sections: list[Section]
    notes: list[str] = field(default_factory=list)
    text: str = ""

    def section(self, name: str, type_: str | None = None) -> Section | None:
        for section in self.sections:
            if section.name == name and not section.template and (
                    type_ is None or section.type == type_):
                return section
        return None

    def objects(self, *types: str) -> list[Section]:
        """Sections that are real objects (not templates), optionally of these types."""
        return [s for s in self.sections
                if not s.template and (not types or s.type in types)]


def strip_comment(line: str) -> str:
    """The line without its ``;`` comment; ``\\;`` stays a literal ``;``."""
    out, i = [], 0
    while i < len(line):
        char = line[i]
        if char == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if char == ";":
            break
        out.append(char)
        i += 1
    return "".join(out).strip()


def parse(text: str, name: str, kind: str) -> ConfFile:
    """Parse ``text`` (the contents of ``name``) into sections, resolving templates."""
    sections: list[Section] = []
    notes: list[str] = []
    current: Section | None = None
    in_block = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw
        if in_block:                       # inside ;-- … --;
            if "--;" not in line:
                continue
            line = line.split("--;", 1)[1]
            in_block = False
        if ";--" in line and "--;" not in line.split(";--", 1)[1]:
            line, in_block = line.split(";--", 1)[0], True
        line = strip_comment(line)
        if not line:
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            notes.append(f"{name}:{number}: #{directive.group(1).lower()} {directive.group(2)} "
                         "not followed: audit that file too (pass it on the command line).")
            continue
        header = _HEADER.match(line)
        if header:
            opts = [o.strip() for o in (header.group("opts") or "").split(",") if o.strip()]
            section_name = header.group("name").strip()
            if "+" in opts:                # [name](+): more lines for an earlier section
                earlier = [s for s in sections if s.name == section_name]
                if earlier:
                    current = earlier[-1]
                    continue
            current = Section(section_name, number, template="!" in opts,
                              inherits=[o for o in opts if o not in ("!", "+")])
            sections.append(current)
            continue
        if "=" not in line:
            notes.append(f"{name}:{number}: not a setting, ignored: {line}")
            continue
        key, _, value = line.partition("=")
        arrow = value.startswith(">")
        setting = Setting(key.strip().lower(), value[1:].strip() if arrow else value.strip(),
                          number, arrow)
        if current is None:                # settings before any [section]
            current = Section("", number)
            sections.append(current)
        current.own.append(setting)
    by_name: dict[str, Section] = {}
    for section in sections:               # a template must be defined before its user
        resolved: list[Setting] = []
        for parent in section.inherits:
            template = by_name.get(parent)
            if template is None:
                notes.append(f"{name}:{section.line}: [{section.name}] inherits from "
                             f"[{parent}], which is not defined above it.")
                continue
            resolved.extend(template.settings)
        section.settings = resolved + section.own
        by_name[section.name] = section
    return ConfFile(name, kind, sections, notes, text)


def guess_kind(name: str, text: str) -> str | None:
    """sip, pjsip or extensions from the file name, else from what is in it."""
    base = name.rsplit("/", 1)[-1].lower()
    if base.startswith("pjsip") and base.endswith(".conf"):
        return "pjsip"
    if base.startswith("extensions") and base.endswith(".conf"):
        return "extensions"
    if base in ("sip.conf", "users.conf") or (base.startswith("sip") and base.endswith(".conf")):
        return "sip"
    if re.search(r"^\s*(exten|same)\s*=>", text, re.MULTILINE):
        return "extensions"
    if re.search(r"^\s*type\s*=\s*(endpoint|aor|auth|transport|identify|registration)\b",
                 text, re.MULTILINE | re.IGNORECASE):
        return "pjsip"
    if re.search(r"^\s*type\s*=\s*(friend|peer|user)\b", text, re.MULTILINE | re.IGNORECASE) \
            or re.search(r"^\s*(allowguest|alwaysauthreject|tlsenable)\s*=", text,
                         re.MULTILINE | re.IGNORECASE):
        return "sip"
    return None
