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
from typing import Any

from labkit.errors import LabkitError, LabStateError
from labkit.spec import load_spec, merge_overrides
from labkit.spec.load import YamlTextError, yaml_text
from labkit.teaching.display import Text
from labkit.teaching.faults import pick as pick_for_student

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
    if not isinstance(text, str) or not text.strip():
        raise CallFixError("The fix should be text: lab-file lines such as `context: …`, one key a line "
                           f"(keys: {', '.join(FIX_KEYS)}).")
    try:
        value = yaml_text(text)
    except YamlTextError as exc:
        raise CallFixError(f"Your fix is not valid YAML: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise CallFixError("The fix should be lines `key: value` (a YAML mapping), e.g. `context: …`; "
                           f"keys: {', '.join(FIX_KEYS)}.")
    unknown = [str(k) for k in value if k not in FIX_KEYS]
    if unknown:
        raise CallFixError(f"{', '.join(map(repr, unknown))}: not a key this exercise lets you change; "
                           + "; ".join(f"{k}: {place}" for k, place in FIX_KEYS.items()) + ".")
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


class FirstCallSession:
    """The first call's diagnosis (a base class of ``Session``)."""

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
