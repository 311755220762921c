"""Certificates and private keys in a folder: lifetime, self-signature, key size, modes.

The walkthrough made its certificate with ``openssl x509 -req -days 3655 -signkey``: one
self-signed certificate for ten years, and opened the folder with ``chmod 755``.  The
checks below say what each of those costs.
"""
from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from labkit.audit.model import SOURCES, CertFile, Finding
from labkit.errors import AuditError

#: CA/Browser Forum Baseline Requirements §6.3.2: a server certificate issued since
#: 2020-09-01 lives at most 398 days (ballot SC-081 lowers this to 47 days by 2029).
MAX_LEAF_DAYS = 398
#: Suffixes of files the audit looks at in a certificate folder.
CERT_SUFFIXES = (".crt", ".pem", ".cer", ".key")


def read(path: Path, display: str, folder_mode: int | None) -> CertFile | None:
    """Classify one file of a certificate folder; None if it holds neither."""
    try:
        data = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
    except PermissionError as exc:
        raise AuditError(
            f"Cannot read {display}: permission denied.",
            cause="The file belongs to another user (a private key is usually readable by "
                  "root or the asterisk user only — as it should be).",
            hint="Run the audit as that user (sudo -u asterisk labkit audit …) or as root; "
                 "do not loosen the key's mode to audit it.") from exc
    except OSError as exc:
        raise AuditError(f"Cannot read {display}: {exc.strerror}.",
                         hint="Check the path.") from exc
    has_cert = b"-----BEGIN CERTIFICATE-----" in data
    has_key = b"PRIVATE KEY-----" in data
    if not (has_cert or has_key):
        if path.suffix == ".key":
            raise AuditError(
                f"{display} is named like a private key but holds no PEM key.",
                cause="A DER (binary) key, an encrypted container, or not a key at all.",
                hint=f"Convert it to PEM (openssl pkey -in {path.name} -out key.pem) or remove "
                     "it from the folder.")
        return None
    kind = "combined" if has_cert and has_key else "certificate" if has_cert else "key"
    return CertFile(display, str(path), mode, kind, data, folder_mode)


def check(files: list[CertFile], *, now: dt.datetime | None = None) -> list[Finding]:
    from cryptography import x509

    from labkit.pki import describe
    now = now or dt.datetime.now(dt.UTC)
    out: list[Finding] = []
    folders_done: set[str] = set()
    seen_certs: set[str] = set()
    for item in files:
        folder = str(Path(item.name).parent)
        if item.kind in ("key", "combined"):
            if item.mode & 0o004:
                out.append(Finding(
                    "files.key-readable", "high", item.name, 0, "",
                    f"private key readable by every user of the machine (mode {item.mode:04o})",
                    "Whoever reads the key can impersonate the PBX to every phone, and decrypt "
                    "recorded sessions that used RSA key exchange.",
                    SOURCES["posix"], f"chmod 600 {item.path}   ; owner asterisk (or root)"))
            elif item.mode & 0o040:
                out.append(Finding(
                    "files.key-readable", "low", item.name, 0, "",
                    f"private key readable by its group (mode {item.mode:04o})",
                    "Fine if the group is asterisk's own; any other member of the group can read "
                    "the server's identity.",
                    SOURCES["posix"], f"chmod 600 {item.path}"))
            if item.folder_mode is not None and item.folder_mode & 0o005 and folder not in folders_done:
                folders_done.add(folder)
                out.append(Finding(
                    "files.key-folder-open", "low", folder, 0, "",
                    f"the folder holding private keys is open to other users "
                    f"(mode {item.folder_mode:04o}, the walkthrough's chmod 755)",
                    "Others can list it and open any file whose own mode allows it: one key "
                    "written with the usual umask (0644) is then world-readable.",
                    SOURCES["posix"], f"chmod 700 {Path(item.path).parent}"))
        if item.kind not in ("certificate", "combined"):
            continue
        try:
            certs = x509.load_pem_x509_certificates(item.pem)
        except ValueError as exc:
            raise AuditError(f"{item.name} holds a certificate block that does not parse.",
                             cause=str(exc),
                             hint=f"Check it with: openssl x509 -in {item.path} -noout -text"
                             ) from exc
        cert = certs[0]
        info = describe(cert, at=now)
        # The same certificate in .crt, .pem (with the key) and -chain.crt: report it once.
        if info["sha256_fingerprint"] in seen_certs:
            continue
        seen_certs.add(info["sha256_fingerprint"])
        days = int(info["days_total"])
        subject = info["subject"]
        if not info["valid_now"] and cert.not_valid_after_utc < now:
            out.append(Finding(
                "files.cert-expired", "high", item.name, 0, "",
                f"certificate {subject} expired on {cert.not_valid_after_utc.date()}",
                "Phones that verify refuse the TLS connection (certificate_expired alert); "
                "phones that do not verify would accept anyone's.",
                SOURCES["rfc5280"], "issue a new certificate (labkit.pki.LabCA.issue_server)"))
        elif not info["valid_now"]:
            out.append(Finding(
                "files.cert-not-yet-valid", "medium", item.name, 0, "",
                f"certificate {subject} is valid only from {cert.not_valid_before_utc.date()}",
                "Clients refuse it until then: a clock problem, or a certificate made elsewhere.",
                SOURCES["rfc5280"], "check the clocks (NTP), or reissue"))
        if not info["is_ca"] and days > MAX_LEAF_DAYS:
            out.append(Finding(
                "files.cert-lifetime", "medium", item.name, 0, "",
                f"server certificate {subject} is valid for {days} days (more than "
                f"{MAX_LEAF_DAYS})",
                "A stolen key stays usable for the certificate's whole life, and nobody "
                "practises renewing; public CAs may not issue beyond 398 days.",
                SOURCES["cabf"], "openssl x509 -req -days 90 …   (or ACME: renewed every 60 days)"))
        if info["self_signed"] and not info["is_ca"]:
            out.append(Finding(
                "files.cert-self-signed", "medium", item.name, 0, "",
                f"certificate {subject} is self-signed",
                "A phone can verify it only by trusting this very certificate; in practice "
                "phones are told not to verify, and then any man in the middle is accepted.",
                SOURCES["rfc5280"],
                "issue it from a CA the phones trust (labkit.pki.LabCA.issue_server), "
                "and give the phones ca.crt"))
        bits = info["key_bits"]
        if (info["key_type"].upper().startswith("RSA") and bits < 2048) or \
                info["signature_algorithm"].upper().replace("-", "").startswith(("SHA1", "MD5")):
            out.append(Finding(
                "files.cert-weak", "high", item.name, 0, "",
                f"certificate {subject}: {info['key_type']} {bits} bits, "
                f"{info['signature_algorithm']}",
                "OpenSSL at security level 2 (Debian's default) refuses keys under 2048 bits and "
                "SHA-1 signatures: clients fail, or accept a forgeable certificate if lowered.",
                SOURCES["rfc9325"], "a new key: openssl genpkey -algorithm EC -pkeyopt "
                "ec_paramgen_curve:P-256, signed with SHA-256"))
    return out
