"""Reading what the audit is given, and running every rule over it."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

import labkit.audit.dialplan as dialplan
import labkit.audit.files as files
import labkit.audit.pjsip as pjsip
import labkit.audit.sip as sip
from labkit.audit.model import SECRET_FIX, SOURCES, Finding, Inputs, sort_key
from labkit.audit.parse import guess_kind, parse
from labkit.errors import AuditError

#: The files a folder is searched for (anything else in it is skipped, with a note).
CONF_NAMES = ("sip.conf", "pjsip.conf", "extensions.conf", "users.conf")
_KINDS = "sip.conf, pjsip.conf or extensions.conf"

Source = str | os.PathLike | tuple[str, str]


def load(items: Iterable[Source]) -> Inputs:
    """Paths (files or folders), ``(name, text)`` pairs, or configuration text itself
    (a string with a newline in it)."""
    inputs = Inputs()
    count = 0
    for item in items:
        count += 1
        if isinstance(item, tuple):
            _add_text(inputs, item[1], item[0])
        elif isinstance(item, str) and "\n" in item:
            _add_text(inputs, item, f"<text {count}>")
        else:
            _add_path(inputs, Path(item), explicit=True)
    if not inputs.confs and not inputs.certs:
        raise AuditError("Nothing to audit: no sip.conf, pjsip.conf, extensions.conf or "
                         "certificate was found in what was given.",
                         hint=f"Pass {_KINDS} files, or a folder holding them "
                              "(e.g. tests/golden/render/legacy-trunk/).")
    return inputs


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _add_path(inputs: Inputs, path: Path, *, explicit: bool, display: str | None = None) -> None:
    display = display or _display(path)
    if not path.exists():
        raise AuditError(f"{display} does not exist.",
                         cause="A typing error in the path, or a file in another folder "
                               "(Asterisk's live files are in /etc/asterisk/).",
                         hint=f"Give the path of a {_KINDS} file or of a folder that holds them.")
    if path.is_dir():
        _add_folder(inputs, path, display)
        return
    if path.suffix in files.CERT_SUFFIXES:
        found = files.read(path, display, None)
        if found is None and explicit:
            raise AuditError(f"{display} holds neither a certificate nor a private key.",
                             hint="Give PEM files (-----BEGIN CERTIFICATE----- …).")
        if found:
            inputs.certs.append(found)
        return
    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise AuditError(f"Cannot read {display}: permission denied.",
                         cause="Asterisk's files are usually readable by root and asterisk only.",
                         hint="Run the audit as root or with sudo, or audit a copy.") from exc
    _add_text(inputs, _decode(data, display), display, path_name=path.name)


def _decode(data: bytes, display: str) -> str:
    if b"\0" in data[:8192]:
        raise AuditError(f"{display} is a binary file, not an Asterisk configuration.",
                         cause="A capture, an archive or a compiled file given by mistake.",
                         hint=f"Give the text files: {_KINDS}.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")   # older configs with accented comments


def _add_text(inputs: Inputs, text: str, display: str, *, path_name: str | None = None) -> None:
    kind = guess_kind(path_name or display, text)
    if kind is None:
        raise AuditError(f"{display} is not a file the audit reads.",
                         cause="Neither its name nor its contents look like " + _KINDS + ".",
                         hint="Name it sip.conf, pjsip.conf or extensions.conf, or pass the "
                              "folder that holds the PBX's files.")
    conf = parse(text, display, kind)
    inputs.confs.append(conf)
    inputs.notes.extend(conf.notes)


def _add_folder(inputs: Inputs, folder: Path, display: str) -> None:
    folder_mode = stat.S_IMODE(folder.stat().st_mode)
    skipped = []
    for path in sorted(folder.iterdir()):
        shown = f"{display}/{path.name}"
        if path.is_dir():
            continue
        if path.name in CONF_NAMES or (path.name.startswith("pjsip") and path.suffix == ".conf"):
            _add_path(inputs, path, explicit=True, display=shown)
        elif path.suffix in files.CERT_SUFFIXES:
            found = files.read(path, shown, folder_mode)
            if found:
                inputs.certs.append(found)
        else:
            skipped.append(path.name)
    if skipped:
        inputs.notes.append(f"{display}: not audited: {', '.join(skipped)}")


def run(inputs: Inputs) -> list[Finding]:
    out: list[Finding] = []
    entries = []
    trunk_names: set[str] = set()
    for conf in inputs.of("sip"):
        out += sip.check(conf)
        entries += sip.entries(conf)
        trunk_names |= sip.trunks(conf)
    for conf in inputs.of("pjsip"):
        out += pjsip.check(conf)
        entries += pjsip.entries(conf)
        trunk_names |= pjsip.trunks(conf)
    out += _reused(inputs)
    known = bool(inputs.of("sip") or inputs.of("pjsip"))
    for conf in inputs.of("extensions"):
        plan = dialplan.load(conf)
        if not known:
            inputs.notes.append(f"{conf.name}: no sip.conf/pjsip.conf given: the contexts "
                                "callers enter and the trunks are unknown; every context is "
                                "treated as entered by an authenticated phone, every Dial to "
                                "user@host as a trunk.")
            entries = [(c, True, "a phone (assumed)", conf, 0) for c in plan.contexts]
        out += dialplan.check(plan, entries, trunk_names if known else None)
    out += files.check(inputs.certs)
    return sorted(out, key=sort_key)


def _reused(inputs: Inputs) -> list[Finding]:
    """The same secret on several peers/auths: one guessed, all taken."""
    users: dict[str, list[tuple[str, str, int]]] = {}
    for conf in inputs.of("sip"):
        for secret, where in sip.reused(conf).items():
            users.setdefault(secret, []).extend((conf.name, s.name, line) for s, line in where)
    for conf in inputs.of("pjsip"):
        for secret, where in pjsip.reused(conf).items():
            users.setdefault(secret, []).extend((conf.name, s.name, line) for s, line in where)
    out = []
    for where in users.values():
        if len(where) < 2:
            continue
        first_file, first_section, first_line = where[0]
        others = ", ".join(f"[{s}] ({f}:{n})" for f, s, n in where[1:])
        out.append(Finding(
            "secret-reused", "high", first_file, first_line, first_section,
            f"the same secret is used by [{first_section}] and {others}",
            "Whoever guesses or reads one account's secret has them all; and the PBX cannot "
            "tell the accounts apart when one is abused.",
            SOURCES["nist63b"], f"one secret per account: {SECRET_FIX}"))
    return out
