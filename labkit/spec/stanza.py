"""Configuration a student writes: a few lines of ``sip.conf`` or ``pjsip.conf``, as data.

Exercises ask students to write what the report's author wrote — a TLS transport, the lines of
``sip.conf`` ``[general]`` — and the lab then runs with their text.  The text is never
trusted: it is parsed here into ``(section, option, value)`` lines and checked against the
options the exercise allows, before anything of it reaches a rendered file.  In particular:

* no ``#include``/``#tryinclude``/``#exec`` (Asterisk's config parser would include files or
  *run a command* — ``#exec`` is disabled by ``execincludes = no`` but is refused here anyway);
* one option per line, printable characters only, no continuation, bounded length;
* only the sections and options the exercise names, and file paths under the folder the
  exercise gives (the PBX's ``/etc/asterisk/tls``).

Every problem says where it is (line N of the stanza) and what would be valid, like a lab file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINES = 60
MAX_LINE = 200
_SECTION = re.compile(r"^\[([A-Za-z0-9_.-]{1,40})\]$")
_OPTION = re.compile(r"^([a-z][a-z0-9_]{0,40})\s*=>?\s*(.*)$")
_VALUE = re.compile(r"^[A-Za-z0-9 _.,:/@+=!*-]*$")
_UNESCAPED_SEMICOLON = r"(?<!\\);"


@dataclass(frozen=True)
class Rules:
    """What an exercise lets students write."""

    #: option → a short description of what it takes (for the error message).
    options: dict[str, str]
    #: Options whose value is a file path, which must lie under ``file_root``.
    file_options: frozenset[str] = frozenset()
    file_root: str = "/etc/asterisk/tls/"
    #: Sections allowed (None: lines without a section header only, e.g. for [general]).
    sections: bool = False
    #: The characters a value may hold (default: letters, digits and `` _.,:/@+=!*-``).
    value_pattern: re.Pattern | None = None
    #: ``\;`` in a value is an escaped semicolon (Asterisk's config syntax, e.g.
    #: ``outbound_proxy = sip:proxy.example\;lr``), not the start of a comment.
    escaped_semicolons: bool = False


@dataclass
class Stanza:
    """The student's lines, parsed: (section or "", option, value) in their order."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def options(self, section: str = "") -> dict[str, str]:
        return {k: v for s, k, v in self.lines if s == section}

    def sections(self) -> list[str]:
        return list(dict.fromkeys(s for s, _, _ in self.lines if s))

    def text(self) -> str:
        """The stanza as it is written into the configuration (normalised spacing)."""
        out, current = [], None
        for section, option, value in self.lines:
            if section != current and section:
                out.append(f"[{section}]")
            current = section
            out.append(f"{option} = {value}")
        return "\n".join(out) + "\n"


def parse(text: str, rules: Rules) -> tuple[Stanza, list[tuple[int, str]]]:
    """The stanza and its problems as ``(line number, message)``; no problem → usable."""
    stanza, problems = Stanza(), []
    if not isinstance(text, str):
        return stanza, [(0, "the stanza must be text")]
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        problems.append((MAX_LINES + 1, f"at most {MAX_LINES} lines"))
    section = ""
    comment = _UNESCAPED_SEMICOLON if rules.escaped_semicolons else ";"
    value_pattern = rules.value_pattern or _VALUE
    for number, raw in enumerate(lines[:MAX_LINES], 1):
        line = (re.split(comment, raw, maxsplit=1)[0] if rules.escaped_semicolons
                else raw.split(";", 1)[0]).strip()
        if not line:
            continue
        if len(raw) > MAX_LINE or not raw.isprintable():
            problems.append((number, f"one printable line of at most {MAX_LINE} characters"))
            continue
        if line.startswith("#"):
            problems.append((number, "directives (#include, #exec …) are not allowed: write options only"))
            continue
        header = _SECTION.match(line)
        if header:
            if not rules.sections:
                problems.append((number, "no section header here: write the option lines only"))
            section = header.group(1)
            continue
        option = _OPTION.match(line)
        if not option:
            problems.append((number, f"not an option line: {line!r} (write `option = value`)"))
            continue
        name, value = option.group(1), option.group(2).strip()
        if rules.sections and not section:
            problems.append((number, "start with a section header, e.g. [transport-tls]"))
        if name not in rules.options:
            problems.append((number, f"{name!r} is not one of the options of this exercise: "
                                     f"{', '.join(sorted(rules.options))}"))
            continue
        if not value or not value_pattern.match(value):
            allowed = "letters, digits and . , : / @ + = ! * - _" + (" ~ % \\;" if rules.value_pattern else "")
            problems.append((number, f"{name}: a value of {allowed} ({rules.options[name]})"))
            continue
        if name in rules.file_options and (not value.startswith(rules.file_root) or ".." in value):
            problems.append((number, f"{name}: a file under {rules.file_root}"))
            continue
        stanza.lines.append((section, name, value))
    if not stanza.lines and not problems:
        problems.append((1, "the stanza is empty"))
    return stanza, problems


def describe_problems(where: str, problems: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """Problems as lab-file places: ``pbx.tls.pjsip_conf (stanza line 3)``."""
    return [(f"{where} (stanza line {n})", message) for n, message in problems]


# -- the TLS exercises -------------------------------------------------------------------------

_TLS_FILE = "a file under /etc/asterisk/tls/"
#: chan_sip's TLS options in sip.conf [general] (Asterisk 16's sip.conf.sample, tcptls.c).
CHAN_SIP_TLS = Rules(options={
    "tlsenable": "yes or no", "tlsbindaddr": "address:port, e.g. 0.0.0.0:5061",
    "tlscertfile": _TLS_FILE, "tlsprivatekey": _TLS_FILE, "tlscafile": _TLS_FILE,
    "tlscipher": "an OpenSSL cipher list", "tlsclientmethod": "tlsv1, sslv3 or sslv2",
    "tlsdisablev1": "yes or no", "tlsdisablev11": "yes or no", "tlsdisablev12": "yes or no",
    "tlsdontverifyserver": "yes or no", "tlsservercipherorder": "yes or no",
    "transport": "udp, tcp, tls, comma separated"},
    file_options=frozenset({"tlscertfile", "tlsprivatekey", "tlscafile"}))
#: PJSIP's transport options that a TLS transport uses (Asterisk 22's pjsip.conf.sample).
PJSIP_TLS = Rules(options={
    "type": "transport", "protocol": "tls (or udp, tcp)", "bind": "address:port, e.g. 0.0.0.0:5061",
    "cert_file": _TLS_FILE, "priv_key_file": _TLS_FILE, "ca_list_file": _TLS_FILE,
    "method": "tlsv1, tlsv1_1, tlsv1_2, tlsv1_3 or sslv23", "cipher": "cipher names, comma separated",
    "verify_client": "yes or no", "verify_server": "yes or no", "require_client_cert": "yes or no",
    "allow_reload": "yes or no"},
    file_options=frozenset({"cert_file", "priv_key_file", "ca_list_file"}), sections=True)


# -- the trunk exercise (notebook 05) ----------------------------------------------------------

#: A trunk's values: also ``~`` (chan_sip's register => …~expiry), ``%`` (passwords) and the
#: escaped semicolon of PJSIP's ``outbound_proxy = sip:…\;lr``.
TRUNK_VALUE = re.compile(r"^(?:[A-Za-z0-9 _.,:/@+=!*~%-]|\\;)*$")
_YES_NO = "yes or no"
#: chan_sip's trunk: ``register =>`` in [general] and the peer (Asterisk 16's sip.conf.sample).
CHAN_SIP_TRUNK = Rules(options={
    "register": "[peer?]user[@domain][:secret[:authuser]]@host[:port][/contact][~expiry]",
    "registertimeout": "seconds", "registerattempts": "a number (0 = for ever)",
    "register_retry_403": _YES_NO,
    "type": "peer (or friend)", "host": "a host name or address", "outboundproxy": "a host name",
    "fromdomain": "a domain", "fromuser": "a user name", "defaultuser": "a user name",
    "username": "a user name", "authuser": "a user name", "secret": "a password",
    "insecure": "invite, port, comma separated", "qualify": "yes, no or milliseconds",
    "qualifyfreq": "seconds", "nat": "no, force_rport, comedia, comma separated",
    "context": "a dialplan context", "disallow": "all", "allow": "a codec: alaw, ulaw, g722",
    "directmedia": _YES_NO, "sendrpid": "pai or yes", "trustrpid": _YES_NO, "dtmfmode": "rfc2833",
    "canreinvite": _YES_NO},
    sections=True, value_pattern=TRUNK_VALUE, escaped_semicolons=True)
#: PJSIP's trunk objects (Asterisk 22's pjsip.conf.sample): auth, registration, aor,
#: endpoint, identify.
PJSIP_TRUNK = Rules(options={
    "type": "auth, registration, aor, endpoint or identify", "auth_type": "userpass",
    "username": "a user name", "password": "a password", "realm": "a realm",
    "server_uri": "sip:domain", "client_uri": "sip:user@domain", "contact_user": "a user name",
    "outbound_auth": "the auth section's name", "outbound_proxy": "sip:host\\;lr",
    "transport": "a transport section's name", "expiration": "seconds", "retry_interval": "seconds",
    "forbidden_retry_interval": "seconds", "fatal_retry_interval": "seconds",
    "max_retries": "a number", "max_random_initial_delay": "seconds", "line": _YES_NO,
    "endpoint": "the endpoint's name", "contact": "sip:host", "qualify_frequency": "seconds",
    "context": "a dialplan context", "disallow": "all", "allow": "codecs: alaw,ulaw,g722",
    "aors": "the aor's name", "from_domain": "a domain", "from_user": "a user name",
    "direct_media": _YES_NO, "send_pai": _YES_NO, "rtp_symmetric": _YES_NO, "force_rport": _YES_NO,
    "rewrite_contact": _YES_NO, "match": "an address or host name", "dtmf_mode": "rfc4733"},
    sections=True, value_pattern=TRUNK_VALUE, escaped_semicolons=True)
