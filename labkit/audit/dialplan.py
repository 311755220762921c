"""``extensions.conf``: who can reach a trunk, and to which numbers.

Toll fraud is the attack that pays: a hacked PBX calls premium or far-away numbers that
share their revenue with the attacker, all night, on its owner's bill.  The questions, for
every context a call can *enter* (the ``context`` of a peer/endpoint, of chan_sip's guests,
of PJSIP's ``anonymous``, and the contexts those ``include``):

* can an unauthenticated caller reach a ``Dial`` through a trunk?  (high: anyone, now)
* can an authenticated phone dial *any* number (``_X.``, ``_.``), international numbers
  (``_00.``, ``_+.``) or premium-rate ones (``_08.``, ``_00338.``) through the trunk?
  (medium: one stolen password away)

A pattern's reach is tested, not read: each pattern is turned into a regular expression
(Asterisk's rules: ``X`` 0-9, ``Z`` 1-9, ``N`` 2-9, ``[…]`` a set, ``.`` one or more
characters, ``!`` zero or more) and tried on probe numbers.  ``Goto``/``Gosub``/
``GotoIf`` to another context and ``Local/…@context`` are followed; a ``Goto`` with a
computed extension (``${EXTEN:4}``) is assumed to reach any extension of its target
context — the caller's pattern still limits what gets there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from labkit.audit.model import SOURCES, Finding
from labkit.audit.parse import ConfFile

#: Probe numbers (fictional where a fictional range exists: Ofcom's 020 7946 0xxx drama
#: range, ARCEP's 01 99 00 fiction range).
NATIONAL = "0199000123"
INTERNATIONAL = ("00442079460000", "+442079460000", "011442079460000")
#: French premium-rate numbers (08 9x: "numéros à valeur ajoutée"), national and
#: international forms.
PREMIUM = ("0899000000", "0033899000000", "+33899000000")
_APP = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_NOT_CONTEXTS = {"general", "globals"}


@dataclass
class Extension:
    context: str
    pattern: str
    line: int
    apps: list[tuple[str, str, int]] = field(default_factory=list)  #: (app, args, line)


@dataclass
class Dialplan:
    file: ConfFile
    contexts: dict[str, list[Extension]] = field(default_factory=dict)
    includes: dict[str, list[str]] = field(default_factory=dict)


def load(conf: ConfFile) -> Dialplan:
    plan = Dialplan(conf)
    for section in conf.sections:
        if section.name.lower() in _NOT_CONTEXTS or section.template or not section.name:
            continue
        extensions = plan.contexts.setdefault(section.name, [])
        includes = plan.includes.setdefault(section.name, [])
        last: Extension | None = None
        for setting in section.settings:
            if setting.key == "include":
                includes.append(setting.value.split(",", 1)[0].strip())
            elif setting.key in ("exten", "same"):
                parts = _split_args(setting.value)
                if setting.key == "exten":
                    if len(parts) < 3:
                        continue
                    pattern = parts[0].split("/", 1)[0].strip()   # _X./callerid
                    app = ",".join(parts[2:])
                    last = next((e for e in extensions if e.pattern == pattern), None)
                    if last is None:
                        last = Extension(section.name, pattern, setting.line)
                        extensions.append(last)
                else:
                    if last is None or len(parts) < 2:
                        continue
                    app = ",".join(parts[1:])
                match = _APP.match(app)
                if match:
                    last.apps.append((match.group(1).lower(), match.group(2) or "", setting.line))
    return plan


def _split_args(text: str) -> list[str]:
    """Split on commas outside parentheses and brackets."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def pattern_regex(pattern: str) -> re.Pattern:
    """Asterisk's extension pattern as a regular expression (exact names match themselves)."""
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern) + r"\Z")
    out, i, body = [], 0, pattern[1:]
    while i < len(body):
        char = body[i]
        upper = char.upper()
        if upper == "X":
            out.append("[0-9]")
        elif upper == "Z":
            out.append("[1-9]")
        elif upper == "N":
            out.append("[2-9]")
        elif char == ".":
            out.append(".+")
        elif char == "!":
            out.append(".*")
        elif char == "[":
            end = body.find("]", i)
            if end < 0:
                out.append(re.escape(char))
            else:
                out.append("[" + body[i + 1:end].replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _matches(pattern: str, number: str) -> bool:
    try:
        return bool(pattern_regex(pattern).match(number))
    except re.error:
        return False


def classify(pattern: str) -> tuple[str, str] | None:
    """``(kind, example)`` of the most dangerous number class the pattern lets through:
    catch-all, international or premium; None for a pattern limited to something else."""
    if all(_matches(pattern, n) for n in ("12", NATIONAL, INTERNATIONAL[0])):
        return "catch-all", "any number"
    for number in INTERNATIONAL:
        if _matches(pattern, number):
            return "international", number
    for number in PREMIUM:
        if _matches(pattern, number):
            return "premium", number
    return None


# -- following Dial and Goto --------------------------------------------------------------------
_DIAL_APPS = ("dial", "queue")     # Queue members are dial strings too, rarely trunks
_GOTO_APPS = ("goto", "gosub", "gotoif", "gosubif", "macro")


def _dial_targets(args: str) -> list[tuple[str, str]]:
    """``(tech, peer)`` of each destination of a Dial (``SIP/6000``,
    ``PJSIP/${EXTEN}@carrier``, ``SIP/carrier/${EXTEN}`` → (sip, carrier))."""
    first = _split_args(args)[0] if args else ""
    out = []
    for target in first.split("&"):
        tech, _, rest = target.strip().partition("/")
        if not rest:
            continue
        if "@" in rest:
            peer = rest.rsplit("@", 1)[1]
        elif "/" in rest:
            peer = rest.split("/", 1)[0]
        else:
            peer = rest
        out.append((tech.lower(), peer.strip()))
    return out


def _goto_targets(app: str, args: str, context: str) -> list[str]:
    """Contexts a Goto-like application jumps to (same context when none is named)."""
    if app in ("gotoif", "gosubif"):
        _, _, branches = args.partition("?")
        specs = [b for b in re.split(r":(?![^(]*\))", branches) if b.strip()]
    elif app == "macro":
        return ["macro-" + _split_args(args)[0].strip()]
    else:
        specs = [args]
    out = []
    for spec in specs:
        parts = _split_args(spec)
        out.append(parts[0].strip() if len(parts) == 3 else context)
    return out


class Reach:
    """Which extensions end in a Dial through a trunk (with the Dial line as evidence)."""

    def __init__(self, plan: Dialplan, trunk_names: set[str] | None):
        self.plan = plan
        #: None = no sip/pjsip file given: any ``@host`` or ``peer/number`` Dial counts.
        self.trunks = trunk_names
        self._memo: dict[tuple[str, str], tuple[int, str] | None] = {}

    def is_trunk_dial(self, args: str) -> str | None:
        first = _split_args(args)[0] if args else ""
        for tech, peer in _dial_targets(args):
            if tech == "local":
                continue
            if self.trunks is None:
                if "@" in first or first.count("/") >= 2 or tech in ("dahdi", "iax2"):
                    return peer
            elif peer in self.trunks:
                return peer
        return None

    def extension(self, ext: Extension, seen: frozenset = frozenset()) -> tuple[int, str] | None:
        """``(line, trunk)`` of a Dial through a trunk this extension reaches, or None."""
        key = (ext.context, ext.pattern)
        if key in self._memo:
            return self._memo[key]
        if key in seen:
            return None
        seen = seen | {key}
        found = None
        for app, args, line in ext.apps:
            if app in _DIAL_APPS:
                trunk = self.is_trunk_dial(args)
                if trunk:
                    found = (line, trunk)
                for tech, peer in _dial_targets(args):
                    if tech == "local" and not found:
                        found = self.context(peer, seen)
            elif app in _GOTO_APPS:
                for target in _goto_targets(app, args, ext.context):
                    if target != ext.context or app == "macro":
                        found = found or self.context(target, seen)
            if found:
                break
        self._memo[key] = found
        return found

    def context(self, name: str, seen: frozenset = frozenset()) -> tuple[int, str] | None:
        for ext in self.plan.contexts.get(name, []):
            found = self.extension(ext, seen)
            if found:
                return found
        return None

    def entry_extensions(self, context: str) -> list[Extension]:
        """The extensions a call entering ``context`` can match (its includes too)."""
        out, todo, seen = [], [context], set()
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            out.extend(self.plan.contexts.get(name, []))
            todo.extend(self.plan.includes.get(name, []))
        return out


def _unauth_fix(open_to: list[str]) -> str:
    """The fix for each way in without a password, one line each."""
    fixes = []
    for who in open_to:
        if who.startswith("guests"):
            fixes.append("allowguest = no   ; sip.conf [general]")
        elif who.startswith("[anonymous]"):
            fixes.append("delete the [anonymous] endpoint (pjsip.conf)")
        elif "insecure=invite" in who:
            fixes.append(f"delete insecure=invite from {who.split()[0]} (sip.conf)")
        else:
            fixes.append(f"auth = ... on {who.split()[0]} (pjsip.conf), or an identify by address")
    fixes.append("; and give callers who are not yours a context without a Dial to a trunk")
    return "\n".join(dict.fromkeys(fixes))


def check(plan: Dialplan, entries, trunk_names: set[str] | None) -> list[Finding]:
    """``entries``: ``(context, authenticated, who, file, line)`` from the SIP rules."""
    reach = Reach(plan, trunk_names)
    name = plan.file.name
    # context → who enters it (unauthenticated first)
    by_context: dict[str, list[tuple[bool, str]]] = {}
    for context, authenticated, who, _file, _line in entries:
        by_context.setdefault(context, []).append((authenticated, who))
    done: set[tuple[str, int]] = set()
    out: list[Finding] = []
    for context in sorted(by_context, key=lambda c: all(a for a, _ in by_context[c])):
        whos = by_context[context]
        open_to = [w for a, w in whos if not a]
        for ext in reach.entry_extensions(context):
            if (ext.context, ext.line) in done:
                continue
            found = reach.extension(ext)
            if not found:
                continue
            dial_line, trunk = found
            via = f" (entered from [{context}])" if ext.context != context else ""
            if open_to:
                done.add((ext.context, ext.line))
                out.append(Finding(
                    "dialplan.unauthenticated-dialout", "high", name, ext.line, ext.context,
                    f"exten {ext.pattern} calls out through trunk {trunk!r} "
                    f"(Dial at {name}:{dial_line}) "
                    f"and is reachable without a password by {'; '.join(open_to)}{via}",
                    "Anyone on the Internet can place calls on your trunk, at your cost: this is "
                    "how hacked PBXs run up bills overnight (premium and far-away numbers).",
                    SOURCES["extensions.conf.sample"] + ': "everybody out there may use your '
                    'public context without authentication"; ' + SOURCES["fraud"],
                    _unauth_fix(open_to)))
                continue
            kind = classify(ext.pattern)
            if kind is None:
                continue
            done.add((ext.context, ext.line))
            kind_name, example = kind
            what = {"catch-all": f"catch-all pattern {ext.pattern} sends any number",
                    "international": f"pattern {ext.pattern} sends international numbers "
                                     f"(e.g. {example})",
                    "premium": f"pattern {ext.pattern} sends premium-rate numbers "
                               f"(e.g. {example})"}[kind_name]
            out.append(Finding(
                f"dialplan.{kind_name}", "medium", name, ext.line, ext.context,
                f"{what} to trunk {trunk!r} (Dial at {name}:{dial_line}), for "
                + ", ".join(w for _, w in whos) + via,
                "One stolen or guessed phone password is then enough to call premium and "
                "international numbers that pay the attacker (International Revenue Share "
                "Fraud); a dialplan should let through only the numbers the site needs.",
                SOURCES["fraud"],
                "exten => _0[1-7]XXXXXXXX,1,...   ; list the national ranges you need; "
                "international and 08 9x only through a PIN or not at all"))
    return out
