"""Routing calls and caller ID (notebook 06): what a notebook asks a ``dialplan-office`` lab.

:class:`DialplanSession` is a base class of :class:`labkit.teaching.session.Session`, next to
:class:`labkit.teaching.trunk.TrunkSession` (whose ``switch``, ``mark``, ``exchange`` and ``raw``
this notebook uses too).  Every method goes through the session's one ordered log
(``self._ask``), so that it reads the same live and in replay.

* the **dialplan** Asterisk runs (:meth:`~DialplanSession.dialplan`: the contexts of the rendered
  ``extensions.conf``);
* the **pattern tester** (:meth:`~DialplanSession.match_table`): for each number, the extension
  the *running* Asterisk picks (``dialplan show NUMBER@CONTEXT``, one recorded CLI answer per
  number, read by :func:`labkit.services.asterisk.dialplan.parse`);
* a number **really dialled** (:meth:`~DialplanSession.dial`): the route Asterisk ran first (its
  ``Executing`` log line) and the final answer the phone got (404, 484 …);
* a call **from the PSTN** to a DID (:meth:`~DialplanSession.ring`): the number the PBX received,
  the route it ran, which office phones rang;
* a call **to the PSTN** (:meth:`~DialplanSession.present`): what the called phone displays, or
  the refusal; and the caller IDs of every hop in the capture (:meth:`~DialplanSession.caller_ids`);
* the student's own contexts (:meth:`~DialplanSession.load_dialplan`): ``extensions.conf`` text
  read into the lab file's ``pbx.dialplan`` (:func:`dialplan_contexts`: only the lines and
  applications of this notebook, refused otherwise) and run.
"""
from __future__ import annotations

import re
import time
from typing import Any

import pandas as pd

from labkit import tracks
from labkit.errors import LabStateError
from labkit.services.asterisk import dialplan as asterisk_dialplan
from labkit.teaching.display import Text

#: The line and its alias at the carrier (0033 form), a number the account does not own, and
#: Carol's mobile (all fictional: ARCEP's blocks 01 99 00, 03 53 01, 06 39 98).
LINE, ALIAS, FOREIGN = "0033199001234", "0033199001235", "0033353010001"
PSTN_NUMBER = "0639980001"
#: The office's phones.
OFFICE = ("alice", "bob")
#: The contexts a student may write, and the applications their lines may run.
CONTEXTS = ("outgoing", "incoming", "trunk-out")
APPLICATIONS = ("Answer", "Busy", "Congestion", "Dial", "Goto", "GotoIf", "Hangup", "NoOp", "Progress",
                "Ringing", "Set", "Wait")
#: What ``${…}`` may read, and what ``Set()`` may change.
_VARIABLE = re.compile(r"^(?:EXTEN(?::-?\d+(?::\d+)?)?|CALLERID\((?:num|name|all)\))$")
_SETTABLE = re.compile(r"^CALLERID\((?:num|name|all|pres|num-pres|name-pres)\)$")
_HEADER = re.compile(r"^\[(?P<name>[A-Za-z0-9_-]+)\]$")
_LINE = re.compile(r"^(?P<kind>exten|same)\s*=>\s*(?P<rest>.+)$")
_APP = re.compile(r"^(?P<app>[A-Za-z]+)\((?P<args>.*)\)$")
# "Executing [0199009999@outgoing:1] NoOp("PJSIP/520-00000003", "route national") in new stack"
_EXECUTING = re.compile(r'Executing \[(?P<number>[^@\]]+)@(?P<context>[^:\]]+):(?P<priority>\d+)\] '
                        r'(?P<app>\w+)\("[^"]*", "(?P<args>.*)"\) in new stack')


class DialplanTextError(LabStateError):
    """Dialplan text that cannot be read into the lab file (the message says why)."""


def dialplan_contexts(text: str, allowed: tuple[str, ...] = CONTEXTS, *,
                      tech: str | None = None) -> dict[str, list[str]]:
    """``extensions.conf`` text (``[context]`` headers, ``exten =>``/``same =>`` lines, ``;``
    comments) as the lab file's ``pbx.dialplan``: context → lines.  Only the contexts
    ``allowed``, the :data:`APPLICATIONS`, ``${EXTEN}``/``${CALLERID(…)}`` and ``Set(CALLERID(…)=…)``;
    with ``tech`` (``SIP``/``PJSIP``), ``Dial`` must use that channel technology.  The text is
    data: anything else (``#include``, ``System()``, other functions) is refused with the line."""
    if not isinstance(text, str):
        raise DialplanTextError(f"The dialplan should be text (the lines you wrote), not {type(text).__name__}.")
    contexts: dict[str, list[str]] = {}
    current = None
    problems = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        header = _HEADER.match(line)
        if header:
            current = header.group("name")
            if current not in allowed:
                problems.append(f"line {number}: [{current}] is not a context of this exercise "
                                f"({', '.join(allowed)})")
            elif current in contexts:
                problems.append(f"line {number}: [{current}] a second time: write each context once")
            contexts.setdefault(current, [])
            continue
        found = _LINE.match(line)
        if not found:
            problems.append(f"line {number}: {line!r} — only [context], exten => … and same => … lines")
            continue
        if current is None:
            problems.append(f"line {number}: a line before any [context]")
            continue
        problem = _line_problem(found.group("kind"), found.group("rest"), tech)
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        contexts[current].append(f"{found.group('kind')} => {found.group('rest').strip()}")
    empty = [name for name, lines in contexts.items() if not lines]
    problems += [f"[{name}] has no line" for name in empty]
    if problems:
        raise DialplanTextError("Your dialplan is not valid here: " + "; ".join(problems[:5]))
    if not contexts:
        raise DialplanTextError("No [context] in your text.")
    return contexts


def _line_problem(kind: str, rest: str, tech: str | None) -> str | None:
    parts = [p.strip() for p in rest.split(",", 2 if kind == "exten" else 1)]
    if kind == "exten":
        if len(parts) < 3:
            return f"exten => {rest}: exten => NAME,PRIORITY,Application(…)"
        name, priority, step = parts
        if not re.fullmatch(r"[0-9A-Za-z_*#+\[\]\-.!]+", name):
            return f"extension {name!r}: digits, a pattern starting with _, or s"
        if priority not in ("1", "n") and not re.fullmatch(r"n\([A-Za-z0-9_-]+\)|\d+", priority):
            return f"priority {priority!r}: 1, n or n(label)"
    else:
        if len(parts) < 2:
            return f"same => {rest}: same => n,Application(…)"
        priority, step = parts
        if not re.fullmatch(r"n|n\([A-Za-z0-9_-]+\)|\d+", priority):
            return f"priority {priority!r}: n or n(label)"
    app = _APP.match(step)
    if not app:
        return f"{step!r} is not Application(arguments)"
    name, args = app.group("app"), app.group("args")
    if name not in APPLICATIONS:
        return f"{name}() is not an application of this exercise ({', '.join(APPLICATIONS)})"
    for variable in re.findall(r"\$\{([^}]*)\}", args):
        if not _VARIABLE.match(variable):
            return f"${{{variable}}}: only ${{EXTEN}}, ${{EXTEN:n}} and ${{CALLERID(num)}} here"
    bare = re.sub(r"\$\{[^}]*\}", "", args)
    if re.search(r"[A-Za-z_]+\(", re.sub(r"\bn\(", "", bare)) and name != "Set":
        return f"{name}({args}): no function calls in the arguments"
    if "`" in args or "{{" in args or "}}" in args:
        return f"{name}({args}): ` {{{{ }}}} are not allowed"
    if name == "Set":
        target = args.split("=", 1)[0].strip()
        if "=" not in args or not _SETTABLE.match(target):
            return f"Set({args}): only Set(CALLERID(num)=…), CALLERID(name), CALLERID(pres)"
        if re.search(r"[A-Za-z_]+\(", re.sub(r"\$\{[^}]*\}", "", args.split("=", 1)[1])):
            return f"Set({args}): no function calls in the value"
    if name == "Dial" and tech:
        target = args.split(",", 1)[0]
        for each in target.split("&"):
            used = each.split("/", 1)[0].strip()
            if used != tech:
                return (f"Dial({args}): this track dials {tech}/… (chan_sip: SIP/, PJSIP: PJSIP/), "
                        f"not {used}/")
    return None


def dialplan_text(contexts: dict[str, list[str]]) -> str:
    """The lab file's contexts back as ``extensions.conf`` text."""
    return "\n\n".join(f"[{name}]\n" + "\n".join(lines) for name, lines in contexts.items())


def context_lines(rendered: str, contexts: tuple[str, ...]) -> str:
    """The ``[context]`` blocks of a rendered ``extensions.conf`` named in ``contexts`` (all
    when empty), comment and empty lines dropped."""
    out: list[str] = []
    keep = False
    for line in rendered.splitlines():
        stripped = line.strip()
        header = _HEADER.match(stripped)
        if header:
            keep = not contexts or header.group("name") in contexts
            if keep:
                out += ["", stripped] if out else [stripped]
            continue
        if keep and stripped and not stripped.startswith(";"):
            out.append(stripped)
    return "\n".join(out)


def route_of(log: str, number: str, context: str | None = None) -> str | None:
    """The first step Asterisk ran for ``number`` (``NoOp(route national)``) in a log excerpt."""
    for found in _EXECUTING.finditer(log):
        if found.group("number") == number and (context is None or found.group("context") == context):
            return f"{found.group('app')}({found.group('args')})"
    return None


def executed(log: str, context: str) -> list[tuple[str, str]]:
    """(number, first step) of each extension Asterisk entered in ``context`` (priority 1)."""
    return [(m.group("number"), f"{m.group('app')}({m.group('args')})") for m in _EXECUTING.finditer(log)
            if m.group("context") == context and m.group("priority") == "1"]


def user_of(uri: str) -> str:
    """The user part of a SIP URI or a From value (``sip:0199001234@…`` → ``0199001234``)."""
    found = re.search(r"sips?:([^@;>]*)@", uri or "")
    return found.group(1) if found else ""


def closed_with(call) -> str:
    return next((str(e.get("param")) for e in call.events if e.get("type") == "CALL_CLOSED"), "")


def final_answer(text: str) -> str:
    """'484 Address Incomplete' out of baresip's closing reason, or the text as it is."""
    found = re.search(r"\b([3-6]\d\d)\b\s*([^\n;]*)", text or "")
    return f"{found.group(1)} {found.group(2).strip()}".strip() if found else (text or "").strip()


class DialplanSession:
    """The routing and caller-ID operations of a notebook's session (a base class of ``Session``)."""

    @property
    def tech(self) -> str:
        """What ``Dial`` names on this track: ``PJSIP`` (modern) or ``SIP`` (legacy)."""
        return tracks.get(self.track).channel_tech

    # -- the dialplan -----------------------------------------------------------------------
    def dialplan(self, *contexts: str) -> Text:
        """The contexts of the ``extensions.conf`` Asterisk runs (all without arguments)."""
        text = self._ask("config", lambda: self.lab.pbx.config("extensions.conf"), file="extensions.conf")
        return Text(context_lines(text, tuple(contexts)))

    def dialplan_show(self, number: str, context: str = "outgoing") -> Text:
        """``dialplan show NUMBER@CONTEXT``: every extension of the context that matches, in the
        order Asterisk tries them."""
        command = f"dialplan show {number}@{context}"
        return Text(f"> {command}\n" + str(self.cli(command)).strip())

    def match_table(self, numbers: list[str], context: str = "outgoing") -> pd.DataFrame:
        """The pattern tester: per number, the extension the running Asterisk picks in
        ``context`` (``(none)``: no match), its first step, and the others that match too."""
        rows = []
        for number in numbers:
            if not re.fullmatch(r"[0-9*#+A-Za-z]{1,32}", str(number)):
                raise LabStateError(f"{number!r} is not a number to dial.")
            found = asterisk_dialplan.parse(str(self.cli(f"dialplan show {number}@{context}")), number, context)
            rows.append({"number": number, "digits": len(number), "extension": found.extension or "(none)",
                         "first_step": found.first_step, "also_matches": ", ".join(found.also)})
        return pd.DataFrame(rows, columns=["number", "digits", "extension", "first_step", "also_matches"])

    # -- numbers dialled from the office ----------------------------------------------------
    def dial(self, caller: str, numbers: list[str], context: str = "outgoing", *,
             label: str = "dial") -> pd.DataFrame:
        """``caller`` really dials each number (and hangs up at once): the route Asterisk ran
        first (its log), or ``(none)``, and the final answer the phone got when no one answered."""
        self.mark(_fresh(label, self.marks()))
        rows = []
        for number in numbers:
            result = self._ask("dial", lambda n=number: self._dial_now(caller, n, context),
                               caller=caller, number=number)
            rows.append({"number": number, **result})
        self._capture_so_far()  # live: the capture holds these calls from now on
        return pd.DataFrame(rows, columns=["number", "route", "answer"])

    def _dial_now(self, caller: str, number: str, context: str) -> dict[str, str]:
        from labkit.errors import PhoneError
        log_file = self.lab.pbx.log_dir / "messages"
        mark = _size(log_file)
        phone = self.lab.phone(caller)
        call = phone.call(number)
        try:
            call.wait_established(3)
        except PhoneError:
            pass  # refused here or further on: the route is what is measured
        finally:
            try:
                phone.command("hangup")
            except PhoneError:
                pass
        deadline = time.monotonic() + 5
        rejected = f"to extension '{number}' rejected because extension not found in context '{context}'"
        while True:
            log = _read_from(log_file, mark)
            route = route_of(log, number, context)
            answer = final_answer(closed_with(call))
            if route or rejected in log or answer.startswith("484"):
                if not answer[:1].isdigit():
                    time.sleep(0.5)
                    answer = final_answer(closed_with(call))
                return {"route": route or "(none)", "answer": answer if answer[:1].isdigit() else ""}
            if time.monotonic() > deadline:
                return {"route": "(none)", "answer": answer}
            time.sleep(0.2)

    # -- calls from the PSTN ----------------------------------------------------------------
    def ring(self, number: str, caller: str = "carol", context: str = "incoming", *,
             label: str = "ring") -> pd.DataFrame:
        """``caller`` (on the PSTN) dials ``number``; one row: the number the PBX received (its
        Request-URI's user, the extension it entered in ``context``), the route it ran first,
        which office phones rang, and how the caller's call ended when no one could answer."""
        self.mark(_fresh(label, self.marks()))
        result = self._ask("ring", lambda: self._ring_now(caller, number, context), caller=caller, number=number)
        return pd.DataFrame([{"dialled": number, **result}],
                            columns=["dialled", "pbx_received", "route", "rang", "caller_got"])

    def _ring_now(self, caller: str, number: str, context: str) -> dict[str, Any]:
        log_file = self.lab.pbx.log_dir / "messages"
        mark = _size(log_file)
        before = {p: len(self.lab.phone(p).calls) for p in OFFICE}
        talk = self.lab.talk(caller, number, "alice", seconds=0.5, answer_timeout=6)
        rang = [p for p in OFFICE if len(self.lab.phone(p).calls) > before[p]]
        time.sleep(0.3)
        steps = executed(_read_from(log_file, mark), context)
        received, route = steps[0] if steps else ("", "(none)")
        return {"pbx_received": received, "route": route, "rang": ", ".join(rang) or "(nobody)",
                "caller_got": "" if rang else final_answer(talk.error)}

    # -- calls to the PSTN: caller ID -------------------------------------------------------
    def present(self, caller: str = "alice", number: str = PSTN_NUMBER, callee: str = "carol", *,
                label: str = "present") -> pd.DataFrame:
        """``caller`` dials ``number`` on the PSTN, ``callee`` answers (half a second): what the
        called phone displays as the caller's number, or how the call was refused.  The step is
        marked ``label`` (``label-2`` … when taken), for :meth:`caller_ids` and ``raw``."""
        self.mark(_fresh(label, self.marks()))

        def converse():
            phone = self.lab.phone(callee)
            before = len(phone.calls)
            talk = self.lab.talk(caller, number, callee, seconds=0.5, answer_timeout=6)
            if len(phone.calls) == before:
                return {"displays": "(no call)", "caller_got": final_answer(talk.error)}
            return {"displays": user_of(phone.calls[-1].peer) or phone.calls[-1].peer, "caller_got": "answered"}
        result = self._ask("present", converse, caller=caller, number=number, callee=callee)
        self._capture_so_far()
        return pd.DataFrame([{"caller": caller, "dialled": number, f"{callee}_displays": result["displays"],
                              "caller_got": result["caller_got"]}])

    def caller_ids(self, since: str | None = None) -> pd.DataFrame:
        """Each INVITE between the PBX, the carrier and the PSTN in the capture since the mark
        ``since`` (a step's label, up to the next one), hop by hop: From, P-Asserted-Identity,
        Remote-Party-ID and Privacy as they crossed the wire (empty: absent)."""
        from labkit import analysis
        place = "internet" if "internet" in self.places else self.places[0]
        self._capture_so_far()
        until = self._read_time()
        ids = analysis.caller_ids(self.pcap_at(place))
        sip = self.table("sip", place)[["frame", "time"]]
        ids = ids.merge(sip.drop_duplicates("frame"), on="frame", how="left")
        ids = ids[ids.time <= until]
        if since is not None:
            marks = self.marks()
            if since not in marks:
                raise LabStateError(f"No mark {since!r} in this session.", hint=f"marks: {', '.join(marks)}")
            start = marks[since]
            later = [t for t in marks.values() if t > start]
            ids = ids[(ids.time >= start) & (ids.time < (min(later) if later else float("inf")))]
        names = {str(self.spec.address_of(h.name)): h.name for h in self.spec.hosts
                 if _has_address(self.spec, h.name)}
        # The first INVITE of each hop (the one the proxy's 407 challenged says the same).
        ids = ids.assign(hop=[f"{names.get(s, s)} → {names.get(d, d)}" for s, d in zip(ids.src, ids.dst)])
        ids = ids.drop_duplicates(["hop", "call_id"]).sort_values("frame")
        out = ids[["hop", "request_uri", "from_user", "pai_user", "rpid_user", "privacy"]].copy()
        out["request_uri"] = out.request_uri.map(user_of)
        return out.rename(columns={"request_uri": "to_number", "from_user": "From", "pai_user": "P-Asserted-Identity",
                                   "rpid_user": "Remote-Party-ID", "privacy": "Privacy"}).reset_index(drop=True)

    def carrier_change(self, variant: str) -> Text:
        """Run the lab as one of its file's variants without saying which (an exercise reads
        what changed from the wire); then the trunk's state."""
        self.switch(variant, wait="Registered")
        return Text(f"The lab changed (a variant of its file). The trunk: {self.trunk_state() or 'unknown'}")

    # -- the student's contexts -------------------------------------------------------------
    def load_dialplan(self, text: str) -> Text:
        """Your contexts (``extensions.conf`` text: ``[outgoing]``, ``[incoming]``,
        ``[trunk-out]``) in place of the lab file's, checked by the lab model (patterns, jumps,
        DIDs the account owns) and run: Asterisk reloads its dialplan."""
        from labkit.spec import load_spec, merge_overrides
        contexts = dialplan_contexts(text, tech=self.tech)
        overrides = merge_overrides(self.overrides, {"pbx": {"dialplan": contexts}})
        load_spec(self.lab_name, overrides)  # the lab model's checks, in both modes
        self.mark(_fresh("yours", self.marks()))

        def change():
            self.lab.reconfigure(pbx={"dialplan": contexts})
            return "applied"
        try:
            self._ask("load-dialplan", change, dialplan=contexts)
        except LabStateError:
            if self.mode != "replay":
                raise
            return Text("Your dialplan is valid (the lab model accepts it). This replay can only show the "
                        "dialplan that was recorded: run the notebook live, or let the grader run yours.\n\n"
                        + dialplan_text(contexts))
        return Text("Asterisk now runs:\n\n" + dialplan_text(contexts))


def _has_address(spec, host: str) -> bool:
    try:
        spec.address_of(host)
    except Exception:  # a host of the file with no address of its own
        return False
    return True


def _fresh(label: str, marks: dict) -> str:
    n, out = 1, label
    while out in marks:
        n += 1
        out = f"{label}-{n}"
    return out


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
