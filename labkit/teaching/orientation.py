"""Notebook 00 (orientation): what its exercises need beyond the common session.

:class:`OrientationSession` is a base class of :class:`labkit.teaching.session.Session`:

* :meth:`~OrientationSession.registration_diagnosis` starts the ``first-call`` lab with one fault
  of :data:`REGISTRATION_FAULTS`, picked from the student's id
  (:func:`labkit.teaching.faults.pick`): each one keeps Bob's phone (6001) from registering, on
  both tracks, with its own trace on the wire;
* :meth:`~OrientationSession.fix_registration` applies the student's fix: lab-file lines (YAML),
  one key of :data:`FIX_KEYS` a line, for Bob's phone (:func:`read_fix`), checked by the lab model;
* :meth:`~OrientationSession.with_carol` starts the lab with a third phone, Carol, and
  :meth:`~OrientationSession.add_account` gives her the account the student wrote as a
  ``sip.conf`` peer or ``pjsip.conf`` endpoint + auth + aor: the text is read as data
  (:func:`account_settings`, :mod:`labkit.spec.stanza`), never written as it is into Asterisk's
  files; the kit renders the account from the lab model, and Carol's phone gets its password.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from labkit.errors import LabkitError, LabStateError
from labkit.spec import load_spec, merge_overrides, stanza
from labkit.teaching.display import Text
from labkit.teaching.faults import pick as pick_for_student
from labkit.teaching.faults import read_fix_lines

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
    value = read_fix_lines(text, FIX_KEYS, RegistrationFixError, "registrar")
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


# -- configure: Carol's account, written by the student ------------------------------------------
CAROL, CAROL_ADDRESS = "carol", "192.168.0.13"
#: Values of an account's lines: a caller ID's quotes and brackets too (each value then goes
#: through the lab model's own pattern: a secret, a context, an extension).
_ACCOUNT_VALUE = re.compile(r'^[A-Za-z0-9 _.,:/@+=!*<>"%~-]*$')
_CODECS = "codecs, accepted as written but not rendered: every account of the lab gets the lab's (ulaw, alaw)"
CHAN_SIP_ACCOUNT = stanza.Rules(options={
    "type": "friend (a peer that registers, calls and is called)",
    "host": "dynamic (the address is learnt from the REGISTER)",
    "secret": "the account's password",
    "context": "the dialplan context of the phone's calls",
    "callerid": '"Name" <extension>',
    "disallow": _CODECS, "allow": _CODECS,
}, sections=True, value_pattern=_ACCOUNT_VALUE)
PJSIP_ACCOUNT = stanza.Rules(options={
    "type": "endpoint, auth or aor",
    "context": "the dialplan context of the phone's calls (endpoint)",
    "auth": "the name of the auth section (endpoint)",
    "aors": "the name of the aor section (endpoint)",
    "callerid": '"Name" <extension> (endpoint)',
    "disallow": _CODECS, "allow": _CODECS,
    "auth_type": "userpass (auth)",
    "username": "the digest login (auth)",
    "password": "the account's password (auth)",
    "max_contacts": "how many phones may register at once (aor)",
    "remove_existing": "yes: a new registration replaces the oldest (aor)",
}, sections=True, value_pattern=_ACCOUNT_VALUE)
_ACCOUNT_RULES = {"sip.conf": CHAN_SIP_ACCOUNT, "pjsip.conf": PJSIP_ACCOUNT}


class AccountTextError(LabStateError):
    """Account lines the exercise cannot read (the message says why)."""


def _blocks(parsed: stanza.Stanza) -> list[tuple[str, dict[str, str]]]:
    """The sections in their order, as (name, options); a ``type`` line in a section that already
    has one starts another (PJSIP's endpoint and aor may share a name)."""
    out: list[tuple[str, dict[str, str]]] = []
    for section, option, value in parsed.lines:
        if not out or out[-1][0] != section or (option == "type" and "type" in out[-1][1]):
            out.append((section, {}))
        out[-1][1][option] = value
    return out


def _extension(name: str, what: str) -> str:
    if not re.fullmatch(r"[0-9]{2,8}", name):
        raise AccountTextError(f"[{name}]: {what} is named after the user that registers, the extension "
                               "(2 to 8 digits), e.g. [6002]")
    return name


def _display_name(options: dict[str, str]) -> str | None:
    value = options.get("callerid")
    if value is None:
        return None
    found = re.fullmatch(r'"?([^"<>]*?)"?\s*<([0-9]{2,8})>', value.strip())
    if not found or not found.group(1).strip():
        raise AccountTextError(f'callerid = {value}: write "Name" <extension>, e.g. "Carol" <6002>')
    return found.group(1).strip()


def _codecs(options: dict[str, str]) -> None:
    for key in ("disallow", "allow"):
        for codec in filter(None, (c.strip() for c in options.get(key, "").split(","))):
            if codec not in ("all", "ulaw", "alaw", "g722"):
                raise AccountTextError(f"{key} = {codec}: this lab's Asterisk knows all, ulaw, alaw, g722")


def _read_peer(blocks) -> dict:
    if len(blocks) != 1:
        raise AccountTextError(f"write one peer section, e.g. [6002] (found {len(blocks)} sections)")
    name, options = blocks[0]
    extension = _extension(name, "a chan_sip peer")
    kind = options.get("type")
    if kind not in ("friend", "peer"):
        raise AccountTextError(f"type = {kind or '(missing)'}: a phone that registers and is called is a friend "
                               "(type = friend; a user cannot register)")
    if options.get("host") != "dynamic":
        raise AccountTextError(f"host = {options.get('host', '(missing)')}: chan_sip refuses the REGISTER of a "
                               "peer that is not host = dynamic (its address is learnt from the REGISTER)")
    for key in ("secret", "context"):
        if not options.get(key):
            raise AccountTextError(f"{key} = … is missing in [{name}]")
    _codecs(options)
    return {"extension": extension, "secret": options["secret"], "context": options["context"],
            "name": _display_name(options)}


def _read_endpoint(blocks) -> dict:
    by_type: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for name, options in blocks:
        kind = options.get("type")
        if kind not in ("endpoint", "auth", "aor"):
            raise AccountTextError(f"[{name}]: type = {kind or '(missing)'}; a phone's account is three sections, "
                                   "type = endpoint, type = auth and type = aor")
        by_type.setdefault(kind, []).append((name, options))
    missing = [k for k in ("endpoint", "auth", "aor") if len(by_type.get(k, [])) != 1]
    if missing:
        raise AccountTextError("write one section of each type, endpoint, auth and aor (not one: "
                               f"{', '.join(missing)})")
    (name, endpoint), (auth_name, auth), (aor_name, aor) = (by_type[k][0] for k in ("endpoint", "auth", "aor"))
    extension = _extension(name, "the endpoint")
    if endpoint.get("auth") != auth_name:
        raise AccountTextError(f"auth = {endpoint.get('auth', '(missing)')} in the endpoint: it names the auth "
                               f"section, [{auth_name}]")
    if endpoint.get("aors") != aor_name:
        raise AccountTextError(f"aors = {endpoint.get('aors', '(missing)')} in the endpoint: it names the aor "
                               f"section, [{aor_name}]")
    if aor_name != extension:
        raise AccountTextError(f"[{aor_name}]: PJSIP finds the aor of a REGISTER by the user in its To header: "
                               f"name the aor like the endpoint, [{extension}]")
    if not endpoint.get("context"):
        raise AccountTextError(f"context = … is missing in the endpoint [{name}]")
    if auth.get("auth_type", "userpass") != "userpass":
        raise AccountTextError(f"auth_type = {auth['auth_type']}: a password login is userpass")
    if auth.get("username") != extension:
        raise AccountTextError(f"username = {auth.get('username', '(missing)')}: the phone logs in with its "
                               f"extension, {extension}")
    if not auth.get("password"):
        raise AccountTextError(f"password = … is missing in [{auth_name}]")
    contacts = aor.get("max_contacts", "0")
    if not contacts.isdigit() or int(contacts) < 1:
        raise AccountTextError(f"max_contacts = {contacts} in the aor: PJSIP refuses every REGISTER to an aor "
                               "without contacts (its default is 0); 1 for one phone")
    _codecs(endpoint)
    return {"extension": extension, "secret": auth["password"], "context": endpoint["context"],
            "name": _display_name(endpoint)}


def account_settings(text: str, config: str) -> dict:
    """Extension, secret, context and display name of the account a student wrote: a ``sip.conf``
    peer, or a ``pjsip.conf`` endpoint + auth + aor."""
    if config not in _ACCOUNT_RULES:
        raise AccountTextError(f"No account lines for {config!r}: sip.conf or pjsip.conf.")
    if not isinstance(text, str) or not text.strip():
        raise AccountTextError(f"The account should be text: the lines of {config}, section headers included.")
    parsed, problems = stanza.parse(text, _ACCOUNT_RULES[config])
    if problems:
        raise AccountTextError(f"Your {config} lines are not valid here: " + "; ".join(
            f"line {n}: {m}" for n, m in problems[:4]))
    blocks = _blocks(parsed)
    return _read_peer(blocks) if config == "sip.conf" else _read_endpoint(blocks)


#: The password of Carol's phone before her account is written: not the one of any account.
UNSET_PASSWORD = "no-account-yet"


def _office(account: dict | None, lab: str) -> dict:
    """The lab with a third host and phone, Carol's: with ``account`` on Asterisk and her phone
    using its password; without it, an account 6002 of the kit's whose password her phone lacks."""
    spec = load_spec(lab)
    network = spec.host(spec.pbx.host).interfaces[0].network
    if account is None:
        endpoint = {"extension": "6002", "name": "Carol", "context": spec.pbx.endpoints[-1].context}
        phone = {"name": CAROL, "host": CAROL, "extension": "6002", "password": UNSET_PASSWORD}
    else:
        endpoint = {"extension": account["extension"], "name": account["name"] or "Carol",
                    "secret": account["secret"], "context": account["context"]}
        phone = {"name": CAROL, "host": CAROL, "extension": account["extension"]}
    return {
        "hosts": [h.model_dump(mode="json", exclude_defaults=True) for h in spec.hosts]
        + [{"name": CAROL, "interfaces": [{"network": network, "address": CAROL_ADDRESS}]}],
        "pbx": {"endpoints": [e.model_dump(mode="json", exclude_defaults=True) | {"context": e.context}
                              for e in spec.pbx.endpoints] + [endpoint]},
        "phones": [p.model_dump(mode="json", exclude_defaults=True) for p in spec.phones] + [phone],
    }


def office_overrides(lab: str = LAB) -> dict:
    """The lab with Carol's host and phone, before the student wrote her account."""
    return _office(None, lab)


def account_overrides(text: str, config: str, lab: str = LAB) -> dict:
    """The lab with Carol's host and phone, and the account the student wrote on Asterisk (her
    phone configured with its password), checked by the lab model."""
    account = account_settings(text, config)
    taken = {e.extension: e.name for e in load_spec(lab).pbx.endpoints}
    if account["extension"] in taken:
        raise AccountTextError(f"[{account['extension']}] is {taken[account['extension']]}'s extension already")
    overrides = _office(account, lab)
    try:
        load_spec(lab, overrides)
    except LabkitError as exc:
        raise AccountTextError(f"Your account does not make a valid lab file: {exc.message}") from None
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

    @classmethod
    def with_carol(cls, name: str, lab: str = LAB, *, track: str | None = None, mode: str | None = None):
        """The lab with Carol's host (192.168.0.13) and softphone, waiting for her account
        (:meth:`add_account`): until then her phone's password is nobody's."""
        return cls.start(name, lab, track=track, mode=mode, overrides=office_overrides(lab),
                         wait_registered=False)

    def add_account(self, sip_conf: str | None = None, pjsip_conf: str | None = None) -> Text:
        """Carol's account as you wrote it — ``sip_conf`` (a peer) on the legacy track,
        ``pjsip_conf`` (endpoint + auth + aor) on the modern one — read as data into the lab file;
        Asterisk is configured again and restarted, and Carol's phone with your password."""
        from labkit import tracks
        config = tracks.get(self.track).sip_config
        text = sip_conf if config == "sip.conf" else pjsip_conf
        overrides = account_overrides(text, config, self.lab_name)
        account = overrides["pbx"]["endpoints"][-1]

        def change():
            # A lab's secrets are drawn once, at its start: the new account's is written in.
            self.lab.credentials.secrets[account["extension"]] = account["secret"]
            self.lab.reconfigure(pbx={"endpoints": overrides["pbx"]["endpoints"]}, phones=overrides["phones"])
            _restart_phone(self.lab, self.lab.spec, CAROL)
            return "applied"
        self._ask("add-account", change, config=config)
        self.overrides = overrides
        return Text(f"{config}: extension {account['extension']} ({account['name']}), context "
                    f"{account['context']}, a password of {len(account['secret'])} characters")

    def qualify_phone(self, extension: str = "6000", seconds: int = 2) -> Text:
        """Asterisk sends the phone of ``extension`` an OPTIONS every ``seconds`` (chan_sip
        ``qualify = yes`` + ``qualifyfreq``, PJSIP the aor's ``qualify_frequency``): the lab file's
        ``qualify`` of that endpoint; Asterisk is configured again and restarted."""
        endpoints = [e.model_dump(mode="json", exclude_defaults=True) | {"context": e.context}
                     | ({"qualify": seconds} if e.extension == extension else {})
                     for e in load_spec(self.lab_name, self.overrides).pbx.endpoints]
        if not any(e["extension"] == extension for e in endpoints):
            raise LabStateError(f"No extension {extension} in this lab.")
        changes = {"pbx": {"endpoints": endpoints}}
        overrides = merge_overrides(copy.deepcopy(self.overrides or {}), changes)
        load_spec(self.lab_name, overrides)

        def change():
            self.lab.reconfigure(**changes)
            return "applied"
        self._ask("qualify-phone", change, extension=extension, seconds=seconds)
        self.overrides = overrides
        from labkit import tracks
        lines = {"sip.conf": f"qualify = yes\nqualifyfreq = {seconds}", "pjsip.conf": f"qualify_frequency = {seconds}"}
        return Text(f"{extension}: {lines[tracks.get(self.track).sip_config]}")

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
            _restart_phone(self.lab, spec, PHONE)
            return "applied"
        self._ask("fix-registration", change, fix=dict(sorted(keys.items())))
        self.overrides = merge_overrides(base, changes)
        return Text("\n".join(f"{FIX_KEYS[k]}: {k} = {v}" for k, v in keys.items()))


def _restart_phone(lab, spec, name: str) -> None:
    """Phone ``name`` rendered again from ``spec`` and restarted (softphones do not follow
    ``Lab.reconfigure``: only the PBX and the sections' services do)."""
    phone, entry = lab.phone(name), spec.phone(name)
    endpoint = spec.endpoint(entry.extension)
    phone.extension, phone.display = endpoint.extension, endpoint.name
    phone.secret = entry.password or lab.credentials.secrets[endpoint.extension]
    phone.user = entry.user or endpoint.extension
    phone.registrar = entry.registrar or str(spec.address_of(spec.pbx.host))
    phone.stop()
    phone.render()
    phone.start()
    phone.wait_ready()
