"""The SIP trunk to the carrier (notebook 05): what a notebook asks a ``trunk-office`` lab.

:class:`TrunkSession` is a base class of :class:`labkit.teaching.session.Session`: every
method goes through the session's one ordered log (``self._ask``), so that it reads the same
live and in replay.

* the carrier's **welcome letter** (:data:`LETTER`): the line, its password, the SIP domain and
  the outbound proxy — two names.  Every session of the notebook runs the carrier with the
  letter's password (:func:`letter_overrides`), so that a trunk written from the letter
  registers in any fresh lab, the grader's included;
* **DNS** as the PBX sees it (:meth:`~TrunkSession.dig`, from the PBX's namespace);
* the trunk's **state** (:meth:`~TrunkSession.trunk`: ``sip show registry`` / ``pjsip show
  registrations`` once it reached a state), its configuration (:meth:`~TrunkSession.trunk_config`),
  the carrier's registrations, qualify, the carrier's restart;
* the report's **mistakes** as the lab file's variants (:meth:`~TrunkSession.switch`), with
  Asterisk's log since the switch (:meth:`~TrunkSession.trunk_log`) and the capture's PBX ↔
  carrier exchange since then (:meth:`~TrunkSession.exchange`, :meth:`~TrunkSession.raw`: the
  full text of one message as it crossed the wire);
* a **call to a PSTN number** (:meth:`~TrunkSession.call_number`), judged from both ends;
* the student's own trunk (:meth:`~TrunkSession.configure_trunk`): ``sip.conf`` or ``pjsip.conf``
  text, parsed against :data:`labkit.spec.stanza.CHAN_SIP_TRUNK` / ``PJSIP_TRUNK` and read into
  the lab file's ``pbx.trunk`` (:func:`trunk_settings`): the lab renders the trunk from what the
  text says (domain, proxy, login, password, where calls go, codecs, qualify …); what the lab
  model cannot vary is checked against the letter and refused with the reason;
* a **diagnosis** lab (:meth:`~TrunkSession.trunk_diagnosis`): a registration fault picked per
  student (:data:`TRUNK_FAULTS`), to be named and fixed with lab-file lines of ``pbx.trunk``.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from labkit import tracks
from labkit.errors import LabStateError
from labkit.spec import load_spec, merge_overrides, stanza
from labkit.spec.load import YamlTextError, yaml_text
from labkit.teaching.display import Text
from labkit.teaching.faults import DEFAULT_STUDENT  # noqa: F401  (re-exported: nb05 grades with it)
from labkit.teaching.faults import pick as pick_for_student

#: The carrier's welcome letter (fictional: ARCEP keeps 01 99 00 xx xx for fiction).
LETTER = {
    "line": "0033199001234",
    "number": "01 99 00 12 34",
    "password": "Qv7-tundra-58",
    "domain": "sip.carrier.example",
    "proxy": "proxy.carrier.example",
    "codecs": "G.711 A-law (alaw), G.711 µ-law (ulaw)",
}
#: Where calls go in the lab (Carol's mobile, fictional 06 39 98 xx xx).
PSTN_NUMBER = "0639980001"

#: The registration faults a diagnosis lab may hide: name → the lab-file change that makes
#: it (each leaves the trunk unregistered on both tracks, with its own trace on the wire).
TRUNK_FAULTS: dict[str, dict] = {
    "no-dns-for-domain": {"dns": {"records": {"sip.carrier.example": None}, "naptr": [], "srv": []},
                            "pbx": {"trunk": {"proxy": None}}},
    "registering-on-proxy": {"pbx": {"trunk": {"domain": "proxy.carrier.example"}}},
    "bad-password": {"pbx": {"trunk": {"password": "Qv7-tundra-85"}}},
}
#: The ``pbx.trunk`` keys a diagnosis fix may set.
FIX_KEYS = ("account", "password", "domain", "proxy", "host")


def letter_overrides(variant: str | None = None, lab: str = "trunk-office") -> dict:
    """The carrier account with the letter's password (and its alias), as lab-file overrides;
    with ``variant``, that variant of the lab file on top (the lab started as that mistake)."""
    out = {"carrier": {"accounts": [{"line": LETTER["line"], "aliases": ["0033199001235"],
                                     "password": LETTER["password"]}]}}
    return merge_overrides(out, load_spec(lab).variant(variant)) if variant else out


def pick_trunk_fault(student: str | None = None) -> tuple[int, str]:
    """(number from 1, name) of the trunk fault for a student id (``LABKIT_STUDENT`` by default)."""
    return pick_for_student("trunk", TRUNK_FAULTS, student)


def fault_overrides(fault: str) -> dict:
    return merge_overrides(letter_overrides(), copy.deepcopy(TRUNK_FAULTS[fault]))


# ------------------------------------------------------------------ the student's trunk as data
class TrunkTextError(LabStateError):
    """A trunk text that cannot be read into the lab file (the message lists why)."""


@dataclass
class TrunkReading:
    """What a trunk text says, as the lab file's ``pbx.trunk`` (``settings``), and what in it
    contradicts the letter in a way the lab cannot run (``problems``)."""

    settings: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def overrides(self) -> dict:
        return {"pbx": {"trunk": dict(self.settings)}}

    def _settle(self, settings: dict) -> TrunkReading:
        self.settings = settings
        return self


def trunk_settings(text: str, config: str, *, carrier_addresses: tuple[str, ...] = ("203.0.113.10",),
                   name: str = "carrier") -> TrunkReading:
    """Read a trunk written for ``config`` (``sip.conf`` or ``pjsip.conf``) into the lab file's
    ``pbx.trunk``.  Raises :class:`TrunkTextError` when the text is not valid configuration of
    the exercise (unknown option, ``#include`` …); returns the reading otherwise, whose
    ``problems`` say what contradicts itself or the letter beyond what the lab can run."""
    rules = stanza.CHAN_SIP_TRUNK if config == "sip.conf" else stanza.PJSIP_TRUNK
    if not isinstance(text, str):
        raise TrunkTextError(f"The trunk should be text (the lines you wrote), not {type(text).__name__}.")
    parsed, problems = stanza.parse(text, rules)
    if problems:
        raise TrunkTextError("Your trunk is not valid here: " + "; ".join(
            f"line {n}: {m}" for n, m in problems[:4]))
    blocks = _blocks(parsed)
    if config == "sip.conf":
        return _read_chan_sip(blocks, name)
    return _read_pjsip(blocks, name, carrier_addresses)


def _blocks(parsed: stanza.Stanza) -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(option, value)…]) per section as written: a new block at each header change,
    or when ``type`` comes again (PJSIP's aor and endpoint may share a name)."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for section, option, value in parsed.lines:
        if not out or out[-1][0] != section or (option == "type" and any(o == "type" for o, _ in out[-1][1])):
            out.append((section, []))
        out[-1][1].append((option, value))
    return out


def _one(options: list[tuple[str, str]], key: str) -> str | None:
    found = [v for k, v in options if k == key]
    return found[-1].strip() if found else None


def _codecs(values: list[str]) -> tuple[list[str], list[str]]:
    known, bad = [], []
    for value in values:
        for codec in (c.strip().lower() for c in value.split(",")):
            if codec in ("alaw", "ulaw", "g722"):
                if codec not in known:
                    known.append(codec)
            elif codec and codec != "all":
                bad.append(codec)
    return known, bad


_REGISTER = re.compile(
    r"^(?:(?P<peer>[\w-]+)\?)?(?:(?P<transport>udp|tcp|tls)://)?(?P<left>[^@]+(?:@[^:@/]+)?(?::[^:@]*(?::[^@]*)?)?)"
    r"@(?P<host>[^:/~@]+)(?::(?P<port>\d+))?(?:/(?P<contact>[^~]+))?(?:~(?P<expiry>\d+))?$")


def parse_register(value: str) -> dict[str, str | None]:
    """chan_sip's ``register =>`` value, field by field (sip.conf.sample's syntax:
    ``[peer?][transport://]user[@domain][:secret[:authuser]]@host[:port][/contact][~expiry]``)."""
    found = _REGISTER.match(value.strip())
    if not found:
        raise TrunkTextError(f"register => {value}: not user[@domain]:secret[:authuser]@host[/contact][~expiry]")
    left = found.group("left")
    user_part, _, rest = left.partition(":")
    secret, _, authuser = rest.partition(":")
    user, _, domain = user_part.partition("@")
    return {"user": user, "domain": domain or None, "secret": secret or None, "authuser": authuser or None,
            "host": found.group("host"), "port": found.group("port"), "contact": found.group("contact"),
            "expiry": found.group("expiry"), "transport": found.group("transport")}


def _read_chan_sip(blocks, name: str) -> TrunkReading:
    reading = TrunkReading()
    problems = reading.problems
    registers = [v for section, options in blocks for k, v in options if k == "register"]
    misplaced = [s for s, options in blocks if s != "general" and any(k == "register" for k, _ in options)]
    if misplaced:
        problems.append(f"register => belongs in [general], not in [{misplaced[0]}]")
    peers = [options for section, options in blocks if section == name]
    if not peers:
        raise TrunkTextError(f"No [{name}] section: the dialplan dials NUMBER@{name}, so the peer is [{name}].")
    peer = [item for options in peers for item in options]
    if not registers:
        problems.append("no register => line: the carrier would not know where to send calls for the line")
        reg = {"user": _one(peer, "defaultuser") or _one(peer, "fromuser"), "domain": _one(peer, "fromdomain"),
               "secret": _one(peer, "secret"), "authuser": None, "host": _one(peer, "outboundproxy"),
               "contact": None, "expiry": None}
    else:
        reg = parse_register(registers[-1])
    account = reg["user"]
    domain = reg["domain"] or reg["host"]
    secret = reg["secret"]
    if not account or not secret:
        raise TrunkTextError("register => needs the line and its password: line@domain:password:line@proxy/line")
    settings: dict[str, Any] = {"account": account, "password": secret, "domain": domain}
    settings["proxy"] = reg["host"] if reg["host"] and reg["host"] != domain else None
    if reg["authuser"] and reg["authuser"] != account:
        problems.append(f"register =>: the digest login ({reg['authuser']}) differs from the line ({account}); "
                        "the letter's login is the line")
    if reg["contact"] not in (None, account):
        problems.append(f"register =>: /{reg['contact']} — the contact must be the line ({account}): "
                        "the carrier sends its calls to that user, the from-carrier context answers it")
    kind = _one(peer, "type")
    if kind not in ("peer", "friend"):
        problems.append(f"[{name}] type = {kind or '(missing)'}: a trunk is a peer")
    host = _one(peer, "host")
    if not host or host == "dynamic":
        problems.append(f"[{name}] host = {host or '(missing)'}: where calls are addressed (NUMBER@host)")
    else:
        settings["host"] = None if host == domain else host
    proxy = _one(peer, "outboundproxy")
    if proxy != settings["proxy"]:
        problems.append(f"[{name}] outboundproxy = {proxy or '(missing)'} but register => sends to "
                        f"{reg['host']}: the letter has one outbound proxy for both")
    for option, wanted in (("fromdomain", domain), ("fromuser", account)):
        value = _one(peer, option)
        if value != wanted:
            problems.append(f"[{name}] {option} = {value or '(missing)'}: the carrier checks From, "
                            f"which must be the line's ({wanted})")
    login = _one(peer, "defaultuser") or _one(peer, "username") or _one(peer, "authuser")
    if login != account:
        problems.append(f"[{name}] defaultuser = {login or '(missing)'}: the login the carrier's 407 asks for "
                        f"is the line ({account})")
    if _one(peer, "secret") != secret:
        problems.append(f"[{name}] secret differs from the password in register =>: one account, one password")
    insecure = _one(peer, "insecure") or ""
    if "invite" not in insecure:
        problems.append(f"[{name}] insecure = {insecure or '(missing)'}: without invite, Asterisk would "
                        "challenge the carrier's calls, which it cannot answer")
    qualify = (_one(peer, "qualify") or "no").lower()
    settings["qualify"] = qualify not in ("no", "false", "0")
    if _one(peer, "qualifyfreq"):
        settings["qualify_frequency"] = _int(_one(peer, "qualifyfreq"), "qualifyfreq", problems)
    context = _one(peer, "context")
    if context:
        settings["context"] = context
    codecs, bad = _codecs([v for k, v in peer if k == "allow"])
    if bad:
        problems.append(f"[{name}] allow = {', '.join(bad)}: the letter offers alaw and ulaw")
    if codecs:
        settings["codecs"] = codecs
    nat = (_one(peer, "nat") or "no").lower()
    settings["nat"] = nat not in ("no", "never")
    if reg["expiry"]:
        settings["expiration"] = _int(reg["expiry"], "~expiry", problems)
    return reading._settle(settings)


def _read_pjsip(blocks, name: str, carrier_addresses: tuple[str, ...]) -> TrunkReading:
    reading = TrunkReading()
    problems = reading.problems
    by_type: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {}
    for section, options in blocks:
        by_type.setdefault(_one(options, "type") or "(no type)", []).append((section, options))
    if "(no type)" in by_type:
        raise TrunkTextError(f"[{by_type['(no type)'][0][0]}] has no type = …: auth, registration, aor, "
                             "endpoint or identify")
    missing = [t for t in ("auth", "registration", "aor", "endpoint", "identify") if t not in by_type]
    if "registration" in missing or "auth" in missing:
        raise TrunkTextError(f"No {' and no '.join(t for t in ('auth', 'registration') if t in missing)} section: "
                             "the trunk registers with the line's login and password")
    problems += [f"no {t} section" for t in missing]
    auths = {section: options for section, options in by_type["auth"]}
    _, registration = by_type["registration"][0]
    server, client = _one(registration, "server_uri"), _one(registration, "client_uri")
    domain = _uri_host(server)
    account, client_host = _uri_user(client), _uri_host(client)
    if not domain or not account:
        raise TrunkTextError("registration: server_uri = sip:DOMAIN and client_uri = sip:LINE@DOMAIN are needed")
    auth_name = _one(registration, "outbound_auth")
    auth = auths.get(auth_name or "")
    if auth is None:
        raise TrunkTextError(f"registration: outbound_auth = {auth_name or '(missing)'} names no auth section "
                             f"({', '.join(auths)})")
    password = _one(auth, "password")
    if not password:
        raise TrunkTextError(f"[{auth_name}] has no password")
    settings: dict[str, Any] = {"account": account, "password": password, "domain": domain}
    if client_host != domain:
        problems.append(f"registration: client_uri's domain ({client_host}) differs from server_uri's ({domain})")
    if _one(auth, "username") != account:
        problems.append(f"[{auth_name}] username = {_one(auth, 'username') or '(missing)'}: the letter's login "
                        f"is the line ({account})")
    contact_user = _one(registration, "contact_user")
    if contact_user not in (None, account):
        problems.append(f"registration: contact_user = {contact_user}: the carrier sends calls for the line "
                        f"to that user; from-carrier answers {account}")
    proxy = _one(registration, "outbound_proxy")
    settings["proxy"] = _proxy(proxy, "registration", problems)
    if settings["proxy"] == domain:
        settings["proxy"] = None
    for key in ("expiration", "retry_interval", "forbidden_retry_interval"):
        if _one(registration, key) is not None:
            settings[key] = _int(_one(registration, key), key, problems)
    endpoints = {section: options for section, options in by_type.get("endpoint", [])}
    endpoint = endpoints.get(name)
    if endpoint is None:
        raise TrunkTextError(f"No endpoint [{name}]: the dialplan dials NUMBER@{name}.")
    aor_name = _one(endpoint, "aors")
    aors = {section: options for section, options in by_type.get("aor", [])}
    aor = aors.get(aor_name or "")
    if aor is None:
        problems.append(f"[{name}] aors = {aor_name or '(missing)'} names no aor section: calls would go nowhere")
    else:
        target = _uri_host(_one(aor, "contact"))
        if not target:
            problems.append(f"aor [{aor_name}]: contact = sip:HOST says where calls are addressed")
        else:
            settings["host"] = None if target == domain else target
        frequency = _one(aor, "qualify_frequency")
        settings["qualify"] = bool(frequency) and frequency != "0"
        if settings["qualify"]:
            settings["qualify_frequency"] = _int(frequency, "qualify_frequency", problems)
    if _one(endpoint, "outbound_auth") != auth_name:
        problems.append(f"[{name}] outbound_auth = {_one(endpoint, 'outbound_auth') or '(missing)'}: the "
                        f"carrier's 407 on INVITE is answered with the line's auth ({auth_name})")
    if _proxy(_one(endpoint, "outbound_proxy"), name, []) != _proxy(proxy, "registration", []):
        problems.append(f"[{name}] outbound_proxy differs from the registration's: calls go through the "
                        "same outbound proxy")
    for option, wanted in (("from_domain", domain), ("from_user", account)):
        value = _one(endpoint, option)
        if value != wanted:
            problems.append(f"[{name}] {option} = {value or '(missing)'}: the carrier checks From, which "
                            f"must be the line's ({wanted})")
    context = _one(endpoint, "context")
    if context:
        settings["context"] = context
    codecs, bad = _codecs([v for k, v in endpoint if k == "allow"])
    if bad:
        problems.append(f"[{name}] allow = {', '.join(bad)}: the letter offers alaw and ulaw")
    if codecs:
        settings["codecs"] = codecs
    settings["nat"] = (_one(endpoint, "rtp_symmetric") or "no").lower() in ("yes", "true")
    for _, identify in by_type.get("identify", []):
        if _one(identify, "endpoint") != name:
            problems.append(f"identify: endpoint = {_one(identify, 'endpoint') or '(missing)'}: calls from the "
                            f"carrier must reach [{name}]")
        matches = [m.strip().split("/")[0] for m in (_one(identify, "match") or "").split(",") if m.strip()]
        if not set(matches) & {*carrier_addresses, LETTER["proxy"]}:
            problems.append(f"identify: match = {', '.join(matches) or '(missing)'}: the carrier's calls come "
                            f"from {carrier_addresses[0]} ({LETTER['proxy']})")
    return reading._settle(settings)


def _int(value: str, what: str, problems: list[str]) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        problems.append(f"{what} = {value}: a number of seconds")
        return None


def _uri_host(uri: str | None) -> str | None:
    if not uri:
        return None
    found = re.match(r"^sips?:(?:[^@]+@)?([^:;\\>]+)", uri.strip())
    return found.group(1).lower() if found else None


def _uri_user(uri: str | None) -> str | None:
    found = re.match(r"^sips?:([^@]+)@", (uri or "").strip())
    return found.group(1) if found else None


def _proxy(value: str | None, where: str, problems: list[str]) -> str | None:
    """The outbound proxy's host; without ``;lr`` PJSIP routes strictly (RFC 3261 §12.2.1.1:
    the proxy's URI becomes the Request-URI), which the carrier answers like a REGISTER to
    the proxy's name."""
    if not value:
        return None
    host = _uri_host(value)
    if host is None:
        problems.append(f"{where}: outbound_proxy = {value}: sip:HOST\\;lr")
    elif "\\;lr" not in value:
        problems.append(f"{where}: outbound_proxy = {value} lacks \\;lr: without loose routing the proxy's "
                        "URI replaces the Request-URI (strict routing, RFC 3261 §12.2.1.1)")
    return host


def fix_settings(text: str) -> dict:
    """A diagnosis fix: lab-file lines of ``pbx.trunk`` (YAML ``password: …``) as a mapping of
    the keys a fix may set (:data:`FIX_KEYS`)."""
    if not isinstance(text, str):
        raise TrunkTextError(f"The fix should be text (lab-file lines), not {type(text).__name__}.")
    try:
        data = yaml_text(text)
    except YamlTextError as exc:
        raise TrunkTextError(f"The fix is {exc}.", hint="e.g. 'password: …' on a line") from None
    if not isinstance(data, dict) or not data:
        raise TrunkTextError("The fix must be lab-file lines of pbx.trunk, e.g. 'domain: …'.")
    bad = [str(k) for k in data if k not in FIX_KEYS]
    if bad:
        raise TrunkTextError(f"{', '.join(bad)}: not a key of this fix (allowed: {', '.join(FIX_KEYS)}).")
    wrong = [str(k) for k, v in data.items() if v is not None and not isinstance(v, str)]
    if wrong:
        raise TrunkTextError(f"{', '.join(wrong)}: write the value as text (quote numbers: '0033…').")
    return data


# ------------------------------------------------------------------ the session's operations
#: The trunk's states after which nothing more happens by itself (``trunk(wait="settled")``).
SETTLED = ("Registered", "Rejected", "No Authentication", "Failed")
#: Lines of Asterisk's log that say something about the trunk's registration.
_TRUNK_LOG = re.compile(r"getaddrinfo|sip_xmit|res_pjsip_outbound_registration|register|Registration|"
                        r"No response received|Fatal response|Temporary response|Forbidden|"
                        r"Domain not bound|Wrong login|resolve", re.I)
_LOG_LEVEL = re.compile(r"^(?:\[[\d\-: .]+\]\s*)?(WARNING|NOTICE|ERROR)\[\d+\]\s*(?:[\w-]+:\s*)?")
_LOG_NOISE = ("Remote UNIX", "Registered application", "Manager registered", "Registered custom",
              "Registered translator", "Registered bridge", "registered action")


def trunk_log_lines(text: str, limit: int = 8) -> list[str]:
    """The warnings and notices of an Asterisk log about the trunk's registration, without
    their timestamps and thread numbers (the last ``limit``, each once)."""
    out: list[str] = []
    for line in text.splitlines():
        level = _LOG_LEVEL.match(line)
        if not level or not _TRUNK_LOG.search(line) or any(n in line for n in _LOG_NOISE):
            continue
        short = f"{level.group(1)} {line[level.end():].strip()}"
        if short not in out:
            out.append(short)
    return out[-limit:]


class TrunkSession:
    """The trunk operations of a notebook's session (a base class of ``Session``)."""

    # -- the letter, the configuration ------------------------------------------------------
    def welcome_letter(self) -> Text:
        """The carrier's welcome letter: what an operator gives with a new SIP line."""
        rows = [("Your number", f"{LETTER['number']} (the line: {LETTER['line']})"),
                ("Login", LETTER["line"]), ("Password", LETTER["password"]),
                ("SIP domain (registrar)", LETTER["domain"]), ("Outbound proxy", LETTER["proxy"]),
                ("Codecs", LETTER["codecs"]), ("Transport", "UDP, port 5060")]
        width = max(len(k) for k, _ in rows)
        return Text("Carrier Example — your SIP line\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows))

    def trunk_config(self) -> Text:
        """The trunk's lines of the SIP configuration Asterisk runs (comments left out)."""
        config = tracks.get(self.track).sip_config
        text = self._ask("config", lambda: self.lab.pbx.config(config), file=config)
        return Text(trunk_lines(text, config, self.spec.pbx.trunk.name if self.spec.pbx.trunk else "carrier"))

    def dig(self, name: str, rtype: str = "A") -> Text:
        """``dig NAME RTYPE`` from the PBX's namespace, asking the lab's DNS server (the
        answer section, as the report's ``nslookup`` showed it)."""
        def ask():
            server = str(self.spec.address_of(self.spec.dns.host))
            done = self.lab.host(self.spec.pbx.host).run(
                ["dig", "+noall", "+answer", "+comments", "+time=1", "+tries=1", f"@{server}", name, rtype],
                check=False, timeout=8)
            keep = [line for line in done.stdout.splitlines()
                    if line and not line.startswith(";") or "status:" in line]
            return "\n".join(" ".join(line.split()) if line.startswith(";") else line for line in keep)
        out = self._ask("dig", ask, name=name, rtype=rtype)
        return Text(f"$ dig {name} {rtype}\n" + (out.strip() or "(no answer)"))

    def trunk(self, wait: str | None = "Registered", timeout: float = 6.0) -> Text:
        """The trunk's registration as Asterisk lists it (``sip show registry`` / ``pjsip show
        registrations``), once it is in state ``wait`` (``"settled"``: any final state, see
        :data:`SETTLED`) or after ``timeout`` seconds."""
        command = tracks.get(self.track).commands.registry

        def ask():
            if wait == "settled":
                deadline = time.monotonic() + timeout
                while self.lab.pbx.trunk_state() not in SETTLED and time.monotonic() < deadline:
                    time.sleep(0.1)
            elif wait:
                self.lab.pbx.wait_trunk(wait, timeout=timeout)
            return self.lab.pbx.cli(command)
        out = self._ask("trunk", ask, wait=wait)
        return Text(f"> {command}\n" + _registry_lines(out))

    def trunk_state(self) -> str | None:
        """The state of the last :meth:`trunk` answer (``Registered``, ``Rejected`` …)."""
        done = self.recorder.results("trunk")
        return _registry_state(done[-1]) if done else None

    def carrier_registrations(self) -> pd.DataFrame:
        """The carrier's view: each line registered with it and the Contact it will send calls to."""
        data = self._ask("carrier-registrations", lambda: self.lab.carrier.registrations())
        rows = [(line, contact) for line, contacts in sorted(data.items()) for contact in contacts]
        return pd.DataFrame(rows, columns=["line", "contact"])

    def qualify(self, timeout: float = 4.0) -> Text:
        """Whether the carrier answers the trunk's OPTIONS (``sip show peers`` / ``pjsip show
        contacts``: the trunk's line), once it does or after ``timeout`` seconds."""
        command = tracks.get(self.track).commands.trunk_status
        name = self.spec.pbx.trunk.name

        def ask():
            deadline = time.monotonic() + timeout
            while not self.lab.pbx.trunk_reachable() and time.monotonic() < deadline:
                time.sleep(0.2)
            return self.lab.pbx.cli(command)
        out = self._ask("qualify", ask, stored=_no_addresses)
        lines = [line.rstrip() for line in out.splitlines()
                 if re.match(rf"^\s*(Contact:\s+)?{re.escape(name)}[/ ]", line) or "Name/username" in line
                 or "<Aor/ContactUri" in line]
        return Text(f"> {command}\n" + "\n".join(lines))

    def restart_carrier(self) -> Text:
        """Restart the carrier's Kamailio (a new process): how long until it answered again."""
        def restart():
            before = self.lab.carrier.process_record.pid
            seconds = self.lab.carrier.restart()
            return {"seconds": round(seconds, 2), "new_process": self.lab.carrier.process_record.pid != before}
        done = self._ask("restart-carrier", restart)
        return Text(f"Kamailio restarted ({'a new process' if done['new_process'] else 'same process'}), "
                    f"answering again after {done['seconds']:.2f} s")

    # -- the report's mistakes --------------------------------------------------------------
    def switch(self, variant: str | None, wait: str | None = None, timeout: float = 6.0) -> Text:
        """Run the lab as one of its file's variants (one of the report's mistakes; ``None``:
        as the file says), marked ``variant`` (or ``fixed``) for :meth:`exchange` and
        :meth:`trunk_log`; then the trunk as :meth:`trunk` shows it."""
        spec = load_spec(self.lab_name)
        if variant is not None:
            spec.variant(variant)  # refuses an unknown name, in both modes
        label = _fresh(variant or "fixed", self.marks())
        self.mark(label)

        def change():
            self._log_marks["pbx"] = _size(self.lab.pbx.log_dir / "messages")
            self.lab.switch(variant)
            return spec.variants[variant].description if variant else "as the lab file says"
        described = self._ask("switch", change, variant=variant)
        return Text(f"{' '.join(str(described).split())}\n\n{self.trunk(wait, timeout)}")

    def retry_after_forbidden(self, seconds: int = 1) -> Text:
        """Set the retry after a 403 (PJSIP ``forbidden_retry_interval``, chan_sip
        ``register_retry_403``) and ``retry_interval`` to ``seconds``; Asterisk restarts."""
        self.mark(_fresh("retry", self.marks()))

        def change():
            self._log_marks["pbx"] = _size(self.lab.pbx.log_dir / "messages")
            self.lab.reconfigure(pbx={"trunk": {"forbidden_retry_interval": seconds, "retry_interval": seconds}})
            time.sleep(3 * seconds + 0.5)
            return self.lab.pbx.cli(tracks.get(self.track).commands.registry)
        out = self._ask("retry-403", change, seconds=seconds)
        return Text(_registry_lines(out))

    def trunk_log(self) -> Text:
        """What Asterisk logged about the trunk's registration since the last switch (its
        warnings and notices, timestamps left out)."""
        def read():
            return trunk_log_lines(_read_from(self.lab.pbx.log_dir / "messages", self._log_marks.get("pbx", 0)))
        lines = self._ask("trunk-log", read)
        return Text("\n".join(lines) or "(nothing about the trunk)")

    def exchange(self, since: str | None = None, *, columns: tuple[str, ...] = (
            "time", "src", "dst", "method", "status_code", "reason", "cseq_method", "request_uri")) -> pd.DataFrame:
        """The SIP messages between the PBX and the carrier in the capture, from the mark
        ``since`` (a switch's label) to the next mark; times from the first message shown."""
        sip = self.trunk_messages(since)
        out = sip[list(columns)].copy()
        if len(out):
            out["time"] = (out.time - out.time.iloc[0]).round(3)
        return out.reset_index(drop=True)

    def trunk_messages(self, since: str | None = None) -> pd.DataFrame:
        """The rows of the capture's SIP table between the PBX and the carrier (see :meth:`exchange`)."""
        self._capture_so_far()
        until = self._read_time()
        sip = self.table("sip")
        ends = {self.address(self.spec.pbx.host), self.address(self.spec.carrier.host)}
        sip = sip[sip.src.isin(ends) & sip.dst.isin(ends) & (sip.time <= until)]
        if since is not None:
            start, stop = _window(self.marks(), since)
            sip = sip[(sip.time >= start) & (sip.time < stop)]
        return sip.sort_values("frame")

    def raw(self, what: str | int, *, since: str | None = None, index: int = 0) -> Text:
        """The full text of one SIP message between the PBX and the carrier, as it crossed the
        wire: the ``index``-th (from 0) request ``what`` ("REGISTER") or response ``what`` (401)
        after the mark ``since``."""
        sip = self.trunk_messages(since)
        if isinstance(what, int) or str(what).isdigit():
            rows = sip[sip.status_code == int(what)]
        else:
            rows = sip[sip.method == str(what).upper()]
        if len(rows) <= index:
            raise LabStateError(f"No SIP message {what} number {index} between the PBX and the carrier"
                                + (f" after the mark {since!r}" if since else "") + ".",
                                hint="exchange(since=…) lists what is there")
        return Text(udp_payload(self.pcap, int(rows.frame.iloc[index])))

    def _read_time(self) -> float:
        """When the capture is read (live: now; replay: as recorded), so that replay shows
        what the capture held at that cell, not the steps after it."""
        try:
            return float(self._ask("capture-read", time.time))
        except LabStateError:
            if self.mode == "replay":  # recorded before reads were timed: the whole capture
                return float("inf")
            raise

    def _capture_so_far(self) -> None:
        """Live: the session's capture files hold everything captured until now, and the lab
        goes on capturing — the running part is stopped, appended to the parts before it
        (``mergecap -a``) and a new part starts.  (A session's capture otherwise stops the
        first time it is read; this notebook reads it after every step.)"""
        if self.mode != "live" or self.lab is None:
            return
        running = [c for c in self.lab.captures if any(d.running() for d in c.dumpcaps)]
        if not running:
            return
        part = running[-1].stop()
        number = getattr(self, "_capture_parts", 0) + 1
        self._capture_parts = number
        mergecap = shutil.which("mergecap")
        for place in self.places:
            whole = self.lab.captures_dir / f"{self.name}-so-far-{place}.pcap"
            sources = [whole, part.files[place]] if whole.exists() else [part.files[place]]
            joined = whole.with_name(whole.stem + "-next.pcap")
            subprocess.run([mergecap, "-F", "pcap", "-a", "-w", str(joined), *map(str, sources)],
                           check=True, capture_output=True, timeout=60)
            joined.replace(whole)
            self._pcaps[place] = whole
            if self.recording:
                shutil.copyfile(whole, self._recorded_pcap(place))
        self._tables.clear()
        self.lab.capture(*self.places, name=f"{self.name}-part{number}").start()

    # -- calls ------------------------------------------------------------------------------
    def call_number(self, caller: str = "alice", number: str = PSTN_NUMBER, callee: str = "carol",
                    seconds: float = 2.0) -> pd.DataFrame:
        """``caller`` dials a PSTN ``number`` through the trunk, ``callee`` answers; both speak.
        One row per listener: what it received, its correlation with what the other said, and
        (the caller) whether the exchange's announcement was heard before the answer (early media)."""
        self.mark(_fresh("call", self.marks()))

        def converse():
            from labkit.analysis import correlate, read_wav
            from labkit.lab.conversation import HEARD
            talk = self.lab.talk(caller, number, callee, seconds=seconds)
            summary = talk.summary()
            announcement, _ = read_wav(self.lab.pstn.announcement_file)
            heard = talk.heard.get(caller)
            early = float(correlate(heard[:len(announcement) + 8000], announcement)) if heard is not None else 0.0
            summary[caller]["early_media_heard"] = early >= HEARD
            summary[callee]["early_media_heard"] = None
            return {"established": talk.established, "error": talk.error, "heard": summary}
        result = self._ask("call-number", converse, caller=caller, number=number, callee=callee, seconds=seconds)
        table = pd.DataFrame(result["heard"]).T.rename_axis("listener")
        table.attrs["established"] = result["established"]
        return table

    # -- the student's own trunk ------------------------------------------------------------
    def configure_trunk(self, sip_conf: str | None = None, pjsip_conf: str | None = None, *,
                        wait: str | None = "Registered", timeout: float = 8.0) -> Text:
        """Your trunk — the ``sip.conf`` (``[general]`` with ``register =>``, and the peer) or
        the ``pjsip.conf`` sections (auth, registration, aor, endpoint, identify) of this track —
        read into the lab file's ``pbx.trunk`` and run: Asterisk restarts with the trunk the
        text describes.  A text that contradicts itself or the letter is refused with the reason.
        Returns what was read and the trunk's registration."""
        config = tracks.get(self.track).sip_config
        text = sip_conf if config == "sip.conf" else pjsip_conf
        if text is None:
            raise TrunkTextError(f"No trunk for {config} (this track's file): "
                                 f"configure_trunk({config.replace('.', '_')}=…)")
        reading = trunk_settings(text, config, carrier_addresses=(self.address(self.spec.carrier.host),))
        if reading.problems:
            raise TrunkTextError("Your trunk cannot run as written: " + "; ".join(reading.problems))
        self.mark("yours")
        settings = reading.settings

        def change():
            self._log_marks["pbx"] = _size(self.lab.pbx.log_dir / "messages")
            self.lab.reconfigure(pbx={"trunk": settings})
            return "applied"
        self._ask("configure-trunk", change, trunk=dict(sorted(settings.items())))
        shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "password")
        return Text(f"read from your text: {shown}, password=(yours)\n\n{self.trunk(wait, timeout)}")

    @classmethod
    def trunk_diagnosis(cls, name: str, lab: str = "trunk-office", *, student: str | None = None,
                        track: str | None = None, mode: str | None = None,
                        capture: tuple[str, ...] = ("internet",)):
        """A trunk lab with one registration fault of :data:`TRUNK_FAULTS`, picked from the
        student's id (``LABKIT_STUDENT``): the recording is ``<name>-<number>``."""
        number, fault = pick_trunk_fault(student)
        return cls.start(f"{name}-{number}", lab, track=track, mode=mode, capture=capture,
                         overrides=fault_overrides(fault))

    def fix_trunk(self, text: str, wait: str | None = "Registered", timeout: float = 8.0) -> Text:
        """A fix as lab-file lines of ``pbx.trunk`` (YAML: ``domain: …``), applied over the
        lab's fault; then the trunk's registration."""
        fix = fix_settings(text)
        self.mark("fix")

        def change():
            self._log_marks["pbx"] = _size(self.lab.pbx.log_dir / "messages")
            self.lab.reconfigure(pbx={"trunk": fix})
            return "applied"
        self._ask("fix-trunk", change, fix=dict(sorted(fix.items())))
        return self.trunk(wait, timeout)


def trunk_lines(text: str, config: str, name: str = "carrier") -> str:
    """The trunk's part of a rendered ``sip.conf``/``pjsip.conf``, comment lines dropped: the
    ``register =>`` line (and the retry settings) of [general], and the trunk's sections."""
    out: list[str] = []
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            continue
        header = re.match(r"^\[([^\]]+)\]", stripped)
        if header:
            section = header.group(1)
            if section == name or section.startswith(f"{name}-"):
                out += ["", stripped] if out else [stripped]
            continue
        if config == "sip.conf" and section == "general" and stripped.split()[0] in (
                "register", "registertimeout", "registerattempts"):
            if not out:
                out.append("[general]")
            out.append(stripped)
        elif section is not None and (section == name or section.startswith(f"{name}-")):
            out.append(stripped)
    return "\n".join(out)


def udp_payload(pcap, frame: int) -> str:
    """The UDP payload of one frame as text (a SIP message as it crossed the wire)."""
    from labkit.teaching.session import _tshark
    out = _tshark(["-Y", f"frame.number == {int(frame)}", "-T", "fields", "-e", "udp.payload"], pcap)
    data = bytes.fromhex(out.strip().replace(":", "")) if out.strip() else b""
    return data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n") + "\n"


def _registry_lines(out: str) -> str:
    keep = [line.rstrip() for line in out.splitlines() if line.strip() and not set(line.strip()) <= {"="}]
    return "\n".join(keep)


def _registry_state(out: str) -> str | None:
    for state in ("Registered", "Rejected", "No Authentication", "Unregistered", "Request Sent",
                  "Auth. Sent", "Unregistered", "Failed"):
        if re.search(rf"\s{re.escape(state)}\s", f" {out} "):
            return state
    return None


def _no_addresses(text: str) -> str:
    return re.sub(r"0x[0-9a-f]{6,}", "0x…", re.sub(r"\(\d+ ms\)", "(… ms)", text))


def _fresh(label: str, marks: dict) -> str:
    """``label``, or ``label-2``, ``label-3`` … when the session already has that mark."""
    n, out = 1, label
    while out in marks:
        n += 1
        out = f"{label}-{n}"
    return out


def _window(marks: dict[str, float], since: str) -> tuple[float, float]:
    if since not in marks:
        raise LabStateError(f"No mark {since!r} in this session.", hint=f"marks: {', '.join(marks) or 'none'}")
    start = marks[since]
    later = [t for t in marks.values() if t > start]
    return start, min(later) if later else float("inf")


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
