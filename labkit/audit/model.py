"""What the audit finds, what it reads, and the checks both SIP stacks share.

A :class:`Finding` is one weak setting: how bad (``severity``), where (``file:line`` and
section), what, why — with the document that says so — and the exact line that fixes it.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from labkit.audit.parse import ConfFile, Section

#: Most severe first.  high: exploitable from the Internet as written (toll fraud, a
#: guessable password, a key anyone can read); medium: a weakness an attacker needs one
#: more step for, or that breaks security under common conditions; low: hygiene.
SEVERITIES = ("high", "medium", "low")

#: The documents the findings cite, by short name.  The Asterisk samples are the files
#: shipped with the lab images (Asterisk 16: /usr/share/asterisk/conf/samples/).
SOURCES = {
    "sip.conf.sample": "Asterisk 16 sip.conf.sample",
    "pjsip.conf.sample": "Asterisk 22 pjsip.conf.sample",
    "extensions.conf.sample": "Asterisk 16 extensions.conf.sample, [public]",
    "rfc8996": "RFC 8996 (TLS 1.0 and 1.1 deprecated)",
    "rfc9325": "RFC 9325 §4.1-4.2 (TLS recommendations: no NULL/anonymous/RC4/3DES/export "
               "suites; prefer AEAD with forward secrecy)",
    "rfc5280": "RFC 5280 §4.1.2.5 (validity) and §6.1 (path validation)",
    "cabf": "CA/Browser Forum Baseline Requirements §6.3.2 (server certificates: 398 days at most)",
    "rfc2617": "RFC 3261 §22.4 / RFC 2617 (digest: one captured challenge and answer lets an "
               "attacker try passwords offline, at GPU speed)",
    "nist63b": "NIST SP 800-63B §5.1.1.2 (reject dictionary words, repetitive or "
               "context-specific passwords such as the user name)",
    "fraud": "CFCA Global Telecom Fraud Loss Survey (PBX hacking and International Revenue "
             "Share Fraud among the largest losses)",
    "posix": "the file's mode (ls -l): other users of the machine can read it",
}


@dataclass(frozen=True)
class Finding:
    rule: str           #: stable id, e.g. ``sip.weak-secret``
    severity: str       #: high, medium or low
    file: str
    line: int           #: 0 when the finding is about a missing setting of a file
    section: str        #: the section (context) or "" for a file-level finding
    what: str
    why: str
    source: str         #: the document that says so (a value of SOURCES, or more)
    fix: str            #: the exact line (or command) that fixes it

    @property
    def where(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file
        return f"{place} [{self.section}]" if self.section else place

    def as_dict(self) -> dict:
        return asdict(self) | {"where": self.where}


def sort_key(finding: Finding):
    return (SEVERITIES.index(finding.severity), finding.file, finding.line, finding.rule,
            finding.section)


@dataclass
class CertFile:
    """A certificate or key file found in a folder the audit was given."""

    name: str            #: display name
    path: str
    mode: int            #: permission bits
    kind: str            #: "certificate", "key" or "combined" (certificate + key)
    pem: bytes = b""
    folder_mode: int | None = None


@dataclass
class Inputs:
    """Everything one audit reads (the rules cross-check files: the dialplan needs to know
    which context guests land in, which peers are trunks…)."""

    confs: list[ConfFile] = field(default_factory=list)
    certs: list[CertFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[ConfFile]:
        return [c for c in self.confs if c.kind == kind]


# -- secrets --------------------------------------------------------------------------------
#: Words that make a password guessable.  Short on purpose: svcrack and sipvicious' lists
#: start with these; anything built from them falls to a dictionary with rules.
COMMON_WORDS = ("test", "secret", "password", "passwd", "pass", "admin", "asterisk", "sip",
                "voip", "phone", "welcome", "letmein", "qwerty", "azerty", "changeme",
                "default", "user", "guest", "motdepasse", "1234", "0000", "1111", "abc")
#: A secret of fewer characters is weak whatever it is made of (16 random URL-safe
#: characters, what the kit draws, are 96 bits).
MIN_LENGTH = 12


def secret_weakness(secret: str, *, names: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """``(severity, reason)`` if ``secret`` is weak, else None.

    ``names`` are what an attacker knows already: the peer's name, its user name,
    extension, caller-ID name.  The ranking is about *offline* guessing: a digest
    exchange captured once (or a REGISTER answered by a brute-forcer) is enough.
    """
    lowered = secret.lower()
    if not secret:
        return "high", "is empty: no password at all"
    known = {n.lower() for n in names if n and len(n) >= 2}
    if lowered in known:
        return "high", "is the user's own name or number"
    if lowered in COMMON_WORDS or (lowered.isdigit() and len(secret) < MIN_LENGTH):
        return "high", f"is a dictionary word or a short number ({len(secret)} characters)"
    if len(secret) < 8:
        return "high", f"has only {len(secret)} characters"
    parts = {w for w in COMMON_WORDS + tuple(known) if w in lowered}
    parts = sorted((w for w in parts if not any(w != o and w in o for o in parts)),
                   key=lowered.index)   # "password", not also "pass"
    # A word inside a long random string costs the attacker nothing but saves them nothing
    # either: what counts is what is left once the guessable words are taken out (a drawn
    # 16-character token contains "sip" or "abc" about once in a thousand draws).
    rest = re.sub("|".join(map(re.escape, parts)), "", secret, flags=re.IGNORECASE) \
        if parts else secret
    if parts and _bits(rest) < 60:
        return "medium", "is built from guessable words (" + ", ".join(parts) + ")"
    if len(secret) < MIN_LENGTH:
        return "medium", f"has {len(secret)} characters (fewer than {MIN_LENGTH})"
    if _bits(secret) < 60:
        return "medium", f"has little variety (about {_bits(secret)} bits)"
    return None


def _bits(secret: str) -> int:
    """A rough upper bound of the secret's entropy: length x log2(alphabet used)."""
    alphabet = (26 if re.search("[a-z]", secret) else 0) + (26 if re.search("[A-Z]", secret)
                                                            else 0) \
        + (10 if re.search("[0-9]", secret) else 0) + (32 if re.search("[^A-Za-z0-9]", secret)
                                                       else 0)
    distinct = len(set(secret))
    return int(min(len(secret), distinct * 2) * math.log2(max(alphabet, 2)))


def callerid_name(section: Section) -> str:
    """"Alice" from ``callerid = "Alice" <6000>``."""
    match = re.match(r'\s*"?([^"<]*)"?', section.get("callerid") or "")
    return match.group(1).strip() if match else ""


SECRET_FIX = "a random secret of 16 or more characters, e.g. `openssl rand -base64 12`"


# -- TLS ------------------------------------------------------------------------------------
#: Protocol settings that mean TLS 1.0 / 1.1 or SSL (chan_sip tlsclientmethod, pjsip method).
OLD_TLS_METHODS = {"tlsv1": "TLS 1.0", "tlsv1_0": "TLS 1.0", "tlsv1_1": "TLS 1.1",
                   "sslv3": "SSL 3.0", "sslv2": "SSL 2.0"}
#: OpenSSL cipher-string words that bring in suites RFC 9325 §4.1 forbids.  ``ALL`` is
#: every suite OpenSSL has, anonymous (aNULL: no server authentication at all) included.
_BAD_CIPHER_WORDS = ("ALL", "COMPLEMENTOFALL", "NULL", "ANULL", "ENULL", "ADH", "AECDH",
                     "EXP", "EXPORT", "RC4", "DES", "3DES", "MD5", "LOW", "SSLV3")


def weak_cipher_words(cipher: str) -> list[str]:
    """The parts of an OpenSSL cipher string (``:`` or ``,`` separated) that enable weak or
    unauthenticated suites; ``!aNULL``-style exclusions are not counted."""
    bad = []
    for word in re.split(r"[:,\s]+", cipher):
        if not word or word[0] in "!-":
            continue
        pieces = [p.upper() for p in re.split(r"[+-]", word.lstrip("+"))]
        if any(p in _BAD_CIPHER_WORDS for p in pieces) or word.upper().startswith(("ADH-", "AECDH-", "EXP-")) \
                or any(p in ("RC4", "DES", "MD5", "NULL") for p in word.upper().split("-")):
            bad.append(word)
    return bad


GOOD_CIPHERS_OPENSSL = "ECDHE+AESGCM:ECDHE+CHACHA20"
GOOD_CIPHERS_PJSIP = ("ECDHE-ECDSA-AES128-GCM-SHA256,ECDHE-RSA-AES128-GCM-SHA256,"
                      "ECDHE-ECDSA-CHACHA20-POLY1305,ECDHE-RSA-CHACHA20-POLY1305")


def is_yes(value: str | None) -> bool:
    """Asterisk's ast_true(): yes, true, y, t, 1, on."""
    return (value or "").strip().lower() in ("yes", "true", "y", "t", "1", "on")


def is_no(value: str | None) -> bool:
    """Asterisk's ast_false(): no, false, n, f, 0, off."""
    return (value or "").strip().lower() in ("no", "false", "n", "f", "0", "off")
