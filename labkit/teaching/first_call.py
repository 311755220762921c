"""The first call's diagnosis (notebook 01): a ``first-call`` lab with one fault per student.

:class:`FirstCallSession` is a base class of :class:`labkit.teaching.session.Session`:

* :meth:`~FirstCallSession.call_diagnosis` starts the lab with one fault of :data:`CALL_FAULTS`,
  picked from the student's id (:func:`labkit.teaching.faults.pick`); every fault breaks the call
  Bob (6001) → Alice (6000) on both tracks, each with its own trace on the wire;
* :meth:`~FirstCallSession.fix_call` applies the student's fix: lab-file lines (YAML), one key
  of :data:`FIX_KEYS` a line, each read into its one place in the lab file (:func:`read_fix`)
  and checked by the lab model.
"""
from __future__ import annotations

import copy
import re
import time
from typing import Any

from labkit.errors import LabkitError, LabStateError
from labkit.spec import load_spec, merge_overrides, stanza
from labkit.teaching.display import Text
from labkit.teaching.faults import pick as pick_for_student
from labkit.teaching.faults import read_fix_lines

LAB = "first-call"
CALLER, CALLER_EXTENSION = "bob", "6001"

#: The faults a diagnosis lab may hide: name → what is wrong (one line each, as the notebook says).
CALL_FAULTS: dict[str, str] = {
    # Asterisk binds 5080 (sip.conf udpbindaddr = 0.0.0.0:5080, pjsip.conf bind = 0.0.0.0:5080);
    # the phones register to the PBX's address without a port, so to 5060, where nothing listens:
    # each REGISTER is answered by ICMP port unreachable, and Bob's phone, not registered, does
    # not dial at all (no INVITE).
    "asterisk-on-another-port": "Asterisk listens for SIP on port 5080, the phones send to 5060",
    # Bob's endpoint in a context that exists but has no 6000: INVITE challenged (401), then,
    # with Bob's credentials, answered 404 Not Found.
    "bob-in-lobby-context": "Bob's endpoint is in the dialplan context 'lobby', where 6000 is not",
    # Asterisk insists on SRTP keyed in the SDP (chan_sip encryption=yes, PJSIP
    # media_encryption=sdes, not optimistic); the phones offer plain RTP (RTP/AVP, no a=crypto):
    # Bob's INVITE is answered 488 Not Acceptable Here.
    "asterisk-insists-on-srtp": "Asterisk accepts only encrypted media (SRTP); the phones offer plain RTP",
}
#: The ``lobby`` context of the fault: the reception's 0 reaches Alice, nothing else.
LOBBY = ["exten => 0,1,Dial({{ tech }}/6000,20)", "same => n,Hangup()"]
WRONG_PORT = 5080

#: The lab-file keys a fix may set, and the place each one goes to.
FIX_KEYS: dict[str, str] = {
    "sip_port": "the PBX (pbx.sip_port)",
    "context": "Bob's endpoint (pbx.endpoints, extension 6001)",
    "encryption": "the PBX's media (pbx.media.encryption)",
}


class CallFixError(LabStateError):
    """A fix text the exercise cannot read (the message says why)."""


def pick_call_fault(student: str | None = None) -> tuple[int, str]:
    """(number from 1, name) of the first-call fault for a student id (``LABKIT_STUDENT`` by default)."""
    return pick_for_student("first-call", CALL_FAULTS, student)


def _endpoints(lab: str, context: str | None = None) -> list[dict]:
    out = []
    for endpoint in load_spec(lab).pbx.endpoints:
        row = endpoint.model_dump(exclude_defaults=True) | {"context": endpoint.context}
        if context is not None and endpoint.extension == CALLER_EXTENSION:
            row["context"] = context
        out.append(row)
    return out


def call_fault_overrides(fault: str, lab: str = LAB) -> dict:
    """Lab-file overrides that make ``fault`` (a name of :data:`CALL_FAULTS`) on ``lab``."""
    if fault == "asterisk-on-another-port":
        return {"pbx": {"sip_port": WRONG_PORT}}
    if fault == "bob-in-lobby-context":
        return {"pbx": {"dialplan": {"lobby": list(LOBBY)}, "endpoints": _endpoints(lab, "lobby")}}
    if fault == "asterisk-insists-on-srtp":
        return {"pbx": {"media": {"encryption": "sdes"}}}
    raise CallFixError(f"{fault!r} is not one of the faults: {', '.join(CALL_FAULTS)}")


def read_fix(text: str) -> dict[str, Any]:
    """The keys of a fix's text (YAML lines ``key: value``), only those of :data:`FIX_KEYS`."""
    value = read_fix_lines(text, FIX_KEYS, CallFixError, "context")
    if isinstance(value.get("encryption"), bool):
        raise CallFixError("encryption: YAML reads a bare yes/no as true/false; the lab file's values are "
                           'the words "no", "sdes" or "dtls": write them in quotes (encryption: "no").')
    return dict(value)


def fix_overrides(fix: dict[str, Any], lab: str = LAB) -> dict:
    """The fix's keys as lab-file overrides (each in its place), not yet merged over a fault."""
    out: dict = {}
    if "sip_port" in fix:
        out = merge_overrides(out, {"pbx": {"sip_port": fix["sip_port"]}})
    if "context" in fix:
        context = fix["context"]
        out = merge_overrides(out, {"pbx": {"endpoints": _endpoints(lab, str(context))}})
    if "encryption" in fix:
        out = merge_overrides(out, {"pbx": {"media": {"encryption": fix["encryption"]}}})
    return out


def call_fix_overrides(text: str, fault: str, lab: str = LAB) -> dict:
    """The student's fix over their fault, as lab-file overrides, checked by the lab model
    (a value the model refuses — a context the dialplan lacks, a port out of range — is refused
    with the lab file's message)."""
    overrides = merge_overrides(call_fault_overrides(fault, lab), fix_overrides(read_fix(text), lab))
    try:
        load_spec(lab, overrides)
    except LabkitError as exc:
        raise CallFixError(f"Your fix does not make a valid lab file: {exc.message}") from None
    return overrides


#: What a telecom engineer asks Asterisk first while a call is up: its channels (a B2BUA has
#: two: the caller's and the callee's) and its bridges (the technology joining them).
CONSOLE = ("core show channels", "bridge show all")
#: The lines of Asterisk's log about the media path of a call (all ``ast_verb(4, …)`` in
#: res_rtp_asterisk.c and bridge_native_rtp.c, Asterisk 16 and 22 alike; logger.conf writes
#: verbose messages up to level 4 to the lab's log).
MEDIA_LOG = ("Strict RTP", "RTP bridged", "Remotely bridged", "switching from")
_LOG_LINE = re.compile(r"^\[[\d-]+ ([\d:.]+)\] VERBOSE\[\d+\](?:\[C-[0-9a-f]+\])? ([\w.]+): (.*)$")
_POINTER = re.compile(r"0x[0-9a-f]+ -- ")


def media_log_lines(text: str, marks: tuple[str, ...] = MEDIA_LOG) -> list[str]:
    """Asterisk's log lines holding one of ``marks``, as ``time file: message``; the memory
    address naming an RTP instance becomes ``rtp#1``, ``rtp#2`` … in order of appearance (one
    instance per stream Asterisk receives, stable from one run to the next)."""
    names: dict[str, str] = {}
    out = []
    for line in text.splitlines():
        found = _LOG_LINE.match(line.strip())
        if not found or not any(mark in found.group(3) for mark in marks):
            continue
        when, source, message = found.groups()
        pointer = _POINTER.match(message)
        if pointer:
            name = names.setdefault(pointer.group(0), f"rtp#{len(names) + 1}")
            message = f"{name}: {message[pointer.end():]}"
        out.append(f"{when} {source}: {message}")
    return out


#: The CLI command that makes Asterisk print every SIP message it sends or receives, whole, on its
#: console and in its log (VERBOSE): chan_sip's debug, PJSIP's logger (res_pjsip_logger.c).
SIP_TRACE_ON = {"sip.conf": "sip set debug on", "pjsip.conf": "pjsip set logger on"}
#: A log entry's first line (time, source file, the rest): its continuation lines follow it.
_ENTRY = re.compile(r"^\[[\d-]+ ([\d:.]+)\] [A-Z]+\[\d+\](?:\[C-[0-9a-f]+\])? ([\w.]+): ?(.*)$")
#: The line Asterisk prints above a traced message: ``<--- SIP read from UDP:… --->`` (chan_sip),
#: ``<--- Received SIP request (823 bytes) from UDP:… --->`` (PJSIP); chan_sip also closes it.
#: chan_sip's request that opens a transaction is introduced on the entry's own line instead:
#: ``Reliably Transmitting (no NAT) to 192.168.0.11:5060:``, and closed by ``---``.
_TRACE_HEAD = re.compile(r"^<--- (.+) --->$|^((?:Reliably )?Transmitting \(.+\) to \S+):$")
_TRACE_END = re.compile(r"^<-{8,}>$|^---$")


def sip_trace(text: str) -> list[dict[str, str]]:
    """The SIP messages of Asterisk's trace in its log (``sip set debug on`` / ``pjsip set logger
    on``), in order: ``time``, ``head`` (the line Asterisk printed above the message: direction,
    transport, address) and ``message`` (the SIP text as it was sent or read)."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        found = _ENTRY.match(line)
        if found:
            entries.append([found.group(1), found.group(3)])
        elif entries:
            entries[-1].append(line)
    out = []
    for when, *lines in entries:
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines or not _TRACE_HEAD.match(lines[0].strip()):
            continue
        head = lines[0].strip()
        if not head.startswith("<---"):
            head = f"<--- {head[:-1]} --->"
        body = []
        for line in lines[1:]:
            if _TRACE_END.match(line.strip()):
                break
            body.append(line)
        message = "\n".join(body).strip("\n")
        if message:
            out.append({"time": when, "head": head, "message": message})
    return out


def _names(message: str, what: str) -> bool:
    """Whether a SIP message is the request ``what`` (a method) or the response ``what`` (a code)."""
    first = message.split("\n", 1)[0].split()
    return bool(first) and (first[0] == what or (first[0].startswith("SIP/") and first[1:2] == [what]))


class FirstCallSession:
    """The first call's diagnosis (a base class of ``Session``)."""

    def configure_direct_media(self, sip_conf: str | None = None, pjsip_conf: str | None = None) -> Text:
        """Your direct-media lines, applied to the running lab: ``sip_conf`` (``directmedia`` in
        ``[general]`` or the peers, legacy) or ``pjsip_conf`` (``direct_media`` in the
        endpoints, modern).  The track's own text is read as data (:func:`direct_media_setting`)
        into the lab file's ``pbx.direct_media``; Asterisk is rendered again and restarted, the
        phones register again.  Returns the lines of Asterisk's SIP configuration now in force."""
        from labkit import tracks
        config = tracks.get(self.track).sip_config
        text = sip_conf if config == "sip.conf" else pjsip_conf
        if text is None:
            raise DirectMediaTextError(f"This track's Asterisk reads {config}: give its lines "
                                       f"({'sip_conf' if config == 'sip.conf' else 'pjsip_conf'}=…).")
        enabled = direct_media_overrides(text, config)["pbx"]["direct_media"]
        option = "directmedia" if config == "sip.conf" else "direct_media"

        def change():
            self.lab.reconfigure({"direct_media": enabled})
            for phone in self.lab.phones:
                self.lab.phone(phone).register_again()
            lines = (line.strip() for line in self.lab.pbx.config(config).splitlines())
            return "\n".join(dict.fromkeys(line for line in lines if line.startswith(option)))
        try:
            rendered = self._ask("direct-media-lines", change, direct_media=enabled)
        except LabStateError:
            if self.mode != "replay":
                raise
            raise DirectMediaTextError(
                f"Your lines give direct media {'yes' if enabled else 'no (for at least one phone)'}; this "
                "recording was made from lines that give the opposite, and replay can only show what was "
                "recorded.", hint="read your lines again, or run the notebook live (as root)") from None
        return Text(rendered)

    def call_console(self, caller: str = "bob", callee: str = "6000", seconds: float = 3.0,
                     commands: tuple[str, ...] = CONSOLE):
        """Like :meth:`call`, and while the call is up (1 s after the answer) Asterisk's CLI is
        asked ``commands``.  Returns (the RTP statistics per channel, the console's outputs)."""
        import pandas as pd

        from labkit.teaching.session import _stable

        def place_call():
            call = self.lab.phone(caller).call(callee).wait_established(10)
            time.sleep(min(1.0, seconds))
            console = [{"command": c, "output": _stable(self.lab.pbx.cli(c))} for c in commands]
            time.sleep(max(0.0, seconds - 1.0))
            stats = self.lab.pbx.channel_stats()
            call.hangup()
            return {"stats": stats, "console": console}
        result = self._ask("call-console", place_call, caller=caller, callee=callee, seconds=seconds,
                           commands=list(commands))
        shown = "\n\n".join(f"*CLI> {c['command']}\n{c['output'].rstrip()}" for c in result["console"])
        return pd.DataFrame(result["stats"]), Text(shown)

    def sip_trace_on(self) -> Text:
        """Ask Asterisk to print every SIP message it sends or receives (:data:`SIP_TRACE_ON`:
        the track's command); returns the command and Asterisk's answer."""
        from labkit import tracks
        command = SIP_TRACE_ON[tracks.get(self.track).sip_config]
        return Text(f"*CLI> {command}\n{str(self.cli(command)).strip()}")

    def traced(self, what: str, index: int = 0) -> Text:
        """Message ``index`` among those of Asterisk's SIP trace that are the request ``what``
        (``"INVITE"``) or the response ``what`` (``"401"``), with the line Asterisk printed above
        it (who sent it, to whom, over what); the trace must have been switched on before
        (:meth:`sip_trace_on`)."""
        from labkit.teaching.session import _read_from

        def find():
            matching = [b for b in sip_trace(_read_from(self.lab.pbx.log_dir / "messages", 0))
                        if _names(b["message"], what)]
            if not -len(matching) <= index < len(matching):
                raise LabStateError(f"Asterisk's SIP trace holds {len(matching)} {what} message(s): "
                                    f"there is no number {index}.",
                                    hint="switch the trace on (sip_trace_on) before the messages you want to see")
            return matching[index]
        block = self._ask("sip-trace", find, what=what, index=index)
        return Text(f"{block['time']}  {block['head']}\n{block['message']}")

    def media_log(self, *marks: str) -> Text:
        """What Asterisk logged about the media path (:data:`MEDIA_LOG`: strict RTP, the bridge
        technology), with the time and the source file of each line."""
        marks = marks or MEDIA_LOG
        from labkit.teaching.session import _read_from
        lines = self._ask("media-log", lambda: media_log_lines(
            _read_from(self.lab.pbx.log_dir / "messages", 0), marks), marks=list(marks))
        return Text("\n".join(lines) or "(no such line in Asterisk's log)")

    @classmethod
    def call_diagnosis(cls, name: str, lab: str = LAB, *, student: str | None = None,
                       track: str | None = None, mode: str | None = None,
                       capture: tuple[str, ...] = ("lan",)):
        """A first-call lab with one fault of :data:`CALL_FAULTS`, picked from the student's id
        (``LABKIT_STUDENT``): the recording is ``<name>-<number>``."""
        number, fault = pick_call_fault(student)
        return cls.start(f"{name}-{number}", lab, track=track, mode=mode, capture=capture,
                         overrides=call_fault_overrides(fault, lab), wait_registered=False)

    def fix_call(self, fix: str) -> Text:
        """Your fix, as lab-file lines (``sip_port: …``, ``context: …``, ``encryption: …``):
        each key goes to its place (:data:`FIX_KEYS`) over the lab as it runs; the services it
        changes are restarted.  Returns the lab-file values now in force."""
        keys = read_fix(fix)
        changes = fix_overrides(keys, self.lab_name)
        try:
            load_spec(self.lab_name, merge_overrides(copy.deepcopy(self.overrides or {}), changes))
        except LabkitError as exc:
            raise CallFixError(f"Your fix does not make a valid lab file: {exc.message}") from None

        def change():
            self.lab.reconfigure(**changes)
            return "applied"
        self._ask("fix-call", change, fix=dict(sorted(keys.items())))
        return Text("\n".join(f"{FIX_KEYS[k]}: {k} = {v}" for k, v in keys.items()))


# -- direct media, as the student writes it (notebook 01, §7) ----------------------------------------
#: The office's phones: the sections a direct-media line may be written in (besides [general]).
PHONES = ("6000", "6001")
#: What a student may write in sip.conf for direct media: a peer's (or [general]'s) directmedia
#: (Asterisk 16's sip.conf.sample: yes, no, nonat, update, outgoing; this exercise reads yes or no).
CHAN_SIP_DIRECT = stanza.Rules(options={
    "directmedia": "yes or no", "type": "friend (or peer)"}, sections=True)
#: What a student may write in pjsip.conf: an endpoint's direct_media (Asterisk 22's
#: res_pjsip/pjsip_config.xml: an endpoint option, default yes).
PJSIP_DIRECT = stanza.Rules(options={"direct_media": "yes or no", "type": "endpoint"}, sections=True)
#: Asterisk's ast_true()/ast_false() words (main/utils.c).
_TRUE, _FALSE = ("yes", "true", "y", "t", "1", "on"), ("no", "false", "n", "f", "0", "off")


class DirectMediaTextError(LabStateError):
    """A student's direct-media lines that cannot be read as this exercise's setting."""


def direct_media_setting(text: str, config: str) -> dict[str, bool]:
    """Each phone's direct media (``{"6000": True, "6001": True}``) from the lines a student
    wrote: ``sip.conf`` (``directmedia`` in ``[general]`` or a peer ``[6000]``/``[6001]``; a
    peer's line wins over ``[general]``) or ``pjsip.conf`` (``direct_media`` in the endpoints
    ``[6000]``/``[6001]``).  A phone the text does not name keeps the kit's ``no``."""
    if config not in ("sip.conf", "pjsip.conf"):
        raise DirectMediaTextError(f"No direct-media lines for {config!r}.", hint="sip.conf or pjsip.conf")
    if not isinstance(text, str):
        raise DirectMediaTextError(f"The lines should be text, not {type(text).__name__}.")
    legacy = config == "sip.conf"
    option = "directmedia" if legacy else "direct_media"
    parsed, problems = stanza.parse(text, CHAN_SIP_DIRECT if legacy else PJSIP_DIRECT)
    other = "direct_media" if legacy else "directmedia"
    problems = [(n, f"{other} is the other generation's spelling: {config} says {option}"
                 if m.startswith(f"'{other}'") else
                 "start with a section header: [6000], [6001]" + (" or [general]" if legacy else "")
                 if m.startswith("start with a section") else m) for n, m in problems]
    if problems:
        raise DirectMediaTextError(f"Your {config} lines are not valid here: " + "; ".join(
            f"line {n}: {m}" for n, m in problems[:4]))
    allowed = (("general",) if legacy else ()) + PHONES
    wrong = [s for s in parsed.sections() if s not in allowed]
    if wrong:
        where = "[general] or a phone's peer" if legacy else "a phone's endpoint"
        raise DirectMediaTextError(f"[{wrong[0]}]: write {option} in {where}: "
                                   + ", ".join(f"[{s}]" for s in allowed))
    kind = {s: v for s, k, v in parsed.lines if k == "type"}
    for section, value in kind.items():
        expected = ("friend", "peer") if legacy else ("endpoint",)
        if section == "general" or value not in expected:
            raise DirectMediaTextError(f"[{section}] type = {value}: direct media is set on "
                                       + ("a peer (type = friend)" if legacy else "an endpoint (type = endpoint)"))
    values: dict[str, bool] = {}
    for section, key, value in parsed.lines:
        if key != option:
            continue
        word = value.strip().lower()
        if word not in _TRUE + _FALSE:
            raise DirectMediaTextError(f"{option} = {value}: this exercise reads yes or no"
                                       + (" (nonat, update and outgoing are chan_sip's variants of yes)"
                                          if legacy else ""))
        values[section] = word in _TRUE
    if not values:
        raise DirectMediaTextError(f"No {option} line: write `{option} = …` under "
                                   + ("[general] or [6000] and [6001]" if legacy else "[6000] and [6001]"))
    general = values.get("general", False)
    return {phone: values.get(phone, general) for phone in PHONES}


def direct_media_overrides(text: str, config: str) -> dict:
    """The lab file's ``pbx.direct_media`` from the student's lines: on only when both phones
    allow it (Asterisk bridges the media natively between two channels that both allow it; with
    one ``no`` the media stays anchored on Asterisk)."""
    phones = direct_media_setting(text, config)
    return {"pbx": {"direct_media": all(phones.values())}}

