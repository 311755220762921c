"""Notebook 00 (orientation): what its exercises need beyond the common session.

:class:`OrientationSession` is a base class of :class:`labkit.teaching.session.Session`:

* :meth:`~OrientationSession.registration_diagnosis` starts the ``first-call`` lab with one fault
  of :data:`REGISTRATION_FAULTS`, picked from the student's id
  (:func:`labkit.teaching.faults.pick`): each one keeps Bob's phone (6001) from registering, on
  both tracks, with its own trace on the wire;
* :meth:`~OrientationSession.fix_registration` applies the student's fix: lab-file lines (YAML),
  one key of :data:`FIX_KEYS` a line, for Bob's phone (:func:`read_fix`), checked by the lab model.
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
PHONE, EXTENSION = "bob", "6001"
#: Bob's account on Asterisk in every diagnosis lab (sip.conf secret= / pjsip.conf password=),
#: the same whatever the fault, so that the rendered file does not tell the faults apart.
ASTERISK_SECRET = "Hq4mZt7wLx2c"
#: The password Bob's phone answers the challenge with in the ``wrong-password`` lab (a typo).
PHONE_SECRET = "Hq4mZt7wLx2e"
#: The user Bob's phone registers as in the ``unknown-user`` lab: no account of the lab has it.
UNKNOWN_USER = "6010"
#: Where Bob's phone registers in the ``registrar-is-alice`` lab: Alice's phone, not Asterisk.
ALICE_ADDRESS = "192.168.0.11"

#: The faults a diagnosis lab may hide: name → what is wrong (one line each, as the notebook says).
#: Measured on both tracks (Asterisk 22 PJSIP, Asterisk 16 chan_sip, baresip phones).
REGISTRATION_FAULTS: dict[str, str] = {
    # Bob's REGISTER is challenged (401), sent again with a digest made from the wrong password,
    # and refused: chan_sip answers 403 Forbidden (the phone gives up); PJSIP challenges again
    # (401), and baresip answers each new challenge at once, a dozen times in a few ms.
    "wrong-password": "Bob's phone answers the challenge with a password that is not Asterisk's",
    # The same answers as a wrong password (chan_sip alwaysauthreject=yes, PJSIP by design: a
    # scanner must not learn which accounts exist); only the REGISTER itself shows the user
    # (To, From, Authorization username=): 6010, an account the lab does not have.
    "unknown-user": "Bob's phone registers as 6010, a user Asterisk has no account for",
    # Bob's REGISTER goes to 192.168.0.11, Alice's phone, which answers 501 Not Implemented
    # (a user agent, not a registrar); Asterisk never sees it.
    "registrar-is-alice": "Bob's phone sends its REGISTER to 192.168.0.11 (Alice's phone), not to Asterisk",
}

#: The lab-file keys a fix may set (all of Bob's phone: ``phones:``, the entry named bob).
FIX_KEYS: dict[str, str] = {
    "password": "the password Bob's phone answers a challenge with",
    "user": "the user name Bob's phone registers as (its address of record and digest login)",
    "registrar": "the address Bob's phone sends its REGISTER to",
}


class RegistrationFixError(LabStateError):
    """A fix text the exercise cannot read (the message says why)."""


def pick_registration_fault(student: str | None = None) -> tuple[int, str]:
    """(number from 1, name) of the registration fault for a student id (``LABKIT_STUDENT`` by default)."""
    return pick_for_student("registration", REGISTRATION_FAULTS, student)


def _endpoints(lab: str) -> list[dict]:
    """The lab's endpoints, Bob's with :data:`ASTERISK_SECRET`."""
    out = []
    for endpoint in load_spec(lab).pbx.endpoints:
        row = endpoint.model_dump(exclude_defaults=True) | {"context": endpoint.context}
        if endpoint.extension == EXTENSION:
            row["secret"] = ASTERISK_SECRET
        out.append(row)
    return out


def _phones(lab: str, bob: dict[str, Any], base: dict | None = None) -> list[dict]:
    """The lab's phones (as ``base`` overrides make them), Bob's entry changed by ``bob``
    (a ``None`` removes a key: back to its default)."""
    out = []
    for phone in load_spec(lab, base).phones:
        row = phone.model_dump(exclude_defaults=True)
        if phone.name == PHONE:
            for key, value in bob.items():
                if value is None:
                    row.pop(key, None)
                else:
                    row[key] = value
        out.append(row)
    return out


def registration_fault_overrides(fault: str, lab: str = LAB) -> dict:
    """Lab-file overrides that make ``fault`` (a name of :data:`REGISTRATION_FAULTS`) on ``lab``."""
    bob = {"wrong-password": {"password": PHONE_SECRET}, "unknown-user": {"user": UNKNOWN_USER},
           "registrar-is-alice": {"registrar": ALICE_ADDRESS}}.get(fault)
    if bob is None:
        raise RegistrationFixError(f"{fault!r} is not one of the faults: {', '.join(REGISTRATION_FAULTS)}")
    return {"pbx": {"endpoints": _endpoints(lab)}, "phones": _phones(lab, bob)}


def read_fix(text: str) -> dict[str, Any]:
    """The keys of a fix's text (YAML lines ``key: value``), only those of :data:`FIX_KEYS`;
    a value is text (YAML's numbers become their digits), or null (back to the default)."""
    if not isinstance(text, str) or not text.strip():
        raise RegistrationFixError("The fix should be text: lab-file lines such as `registrar: …`, one key a "
                                   f"line (keys: {', '.join(FIX_KEYS)}).")
    try:
        value = yaml_text(text)
    except YamlTextError as exc:
        raise RegistrationFixError(f"Your fix is not valid YAML: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise RegistrationFixError("The fix should be lines `key: value` (a YAML mapping), e.g. `user: …`; "
                                   f"keys: {', '.join(FIX_KEYS)}.")
    unknown = [str(k) for k in value if k not in FIX_KEYS]
    if unknown:
        raise RegistrationFixError(f"{', '.join(map(repr, unknown))}: not a key this exercise lets you change; "
                                   + "; ".join(f"{k}: {place}" for k, place in FIX_KEYS.items()) + ".")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, (bool, list, dict, float)):
            raise RegistrationFixError(f"{key}: {item!r} is not a value for it: write text (in quotes if "
                                       "YAML would read it otherwise), or null for the default.")
        out[key] = None if item is None else str(item)
    return out


def fix_overrides(fix: dict[str, Any], base: dict, lab: str = LAB) -> dict:
    """The fix's keys as lab-file overrides over ``base`` (the fault's): Bob's phone changed."""
    return {"phones": _phones(lab, fix, base)}


def registration_fix_overrides(text: str, fault: str, lab: str = LAB) -> dict:
    """The student's fix over their fault, as lab-file overrides, checked by the lab model
    (a value the model refuses — a password too short, a user that is not digits — is refused
    with the lab file's message)."""
    base = registration_fault_overrides(fault, lab)
    try:
        overrides = merge_overrides(base, fix_overrides(read_fix(text), base, lab))
        load_spec(lab, overrides)
    except LabkitError as exc:
        if isinstance(exc, RegistrationFixError):
            raise
        raise RegistrationFixError(f"Your fix does not make a valid lab file: {exc.message}") from None
    return overrides


class OrientationSession:
    """Notebook 00's part of a session (registration, the peers' state, its diagnosis lab)."""

    @classmethod
    def registration_diagnosis(cls, name: str, lab: str = LAB, *, student: str | None = None,
                               track: str | None = None, mode: str | None = None,
                               capture: tuple[str, ...] = ("lan",)):
        """A first-call lab with one fault of :data:`REGISTRATION_FAULTS`, picked from the
        student's id (``LABKIT_STUDENT``): the recording is ``<name>-<number>``."""
        number, fault = pick_registration_fault(student)
        return cls.start(f"{name}-{number}", lab, track=track, mode=mode, capture=capture,
                         overrides=registration_fault_overrides(fault, lab), wait_registered=False)

    def fix_registration(self, fix: str) -> Text:
        """Your fix, as lab-file lines for Bob's phone (``password: …``, ``user: …``,
        ``registrar: …``), over the lab as it runs: Bob's phone is configured again and restarted
        (and Asterisk, as every reconfiguration does).  Returns the values now in force."""
        keys = read_fix(fix)
        base = copy.deepcopy(self.overrides or {})
        try:
            changes = fix_overrides(keys, base, self.lab_name)
            spec = load_spec(self.lab_name, merge_overrides(base, changes))
        except LabkitError as exc:
            raise RegistrationFixError(f"Your fix does not make a valid lab file: {exc.message}") from None

        def change():
            self.lab.reconfigure(**changes)
            _restart_phone(self.lab, spec)
            return "applied"
        self._ask("fix-registration", change, fix=dict(sorted(keys.items())))
        self.overrides = merge_overrides(base, changes)
        return Text("\n".join(f"{FIX_KEYS[k]}: {k} = {v}" for k, v in keys.items()))


def _restart_phone(lab, spec) -> None:
    """Bob's softphone rendered again from ``spec`` and restarted (softphones do not follow
    ``Lab.reconfigure``: only the PBX and the sections' services do)."""
    phone, entry = lab.phone(PHONE), spec.phone(PHONE)
    endpoint = spec.endpoint(entry.extension)
    phone.secret = entry.password or lab.credentials.secrets[endpoint.extension]
    phone.user = entry.user or endpoint.extension
    phone.registrar = entry.registrar or str(spec.address_of(spec.pbx.host))
    phone.stop()
    phone.render()
    phone.start()
    phone.wait_ready()
