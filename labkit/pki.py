"""A lab PKI: one small certificate authority, good certificates, and deliberately broken ones.

The walkthrough this kit follows made one self-signed certificate valid for ten years
(``openssl x509 -req -days 3655``), put certificate and key in one file, and opened the key
folder with ``chmod 755``.  It worked — because the phones were told not to check anything.
This module does it the way a lab should: a tiny CA that the lab's phones trust, server and
client certificates issued by it, and — on request — each classic mistake as a named variant
so that a student can meet the error on purpose and read what the client says.

Everything is built with the ``cryptography`` package, except the weak certificate (SHA-1):
``cryptography`` refuses to *sign* with SHA-1, so that one is signed by the ``openssl``
command-line tool (see :meth:`LabCA.weak`).

Typical use in a notebook::

    ca = LabCA.create("Home Lab CA")
    server = ca.issue_server(["pbx.home.example"], ["192.0.2.10"])
    files = server.write(lab_dir / "tls", "pbx")        # pbx.crt pbx.key pbx.pem ca.crt …
    describe(server.cert)                               # a dict for a table
    verify(server.cert, ca.cert, "pbx.home.example")    # Verdict(code=0, …) — "OK"
    verify(ca.expired("pbx.home.example").cert, ca.cert, "pbx.home.example").openssl_line
    # 'error 10 at 0 depth lookup: certificate has expired'

The variants and what an OpenSSL client says (``openssl s_client -verify_return_error
-verify_hostname NAME -CAfile ca.crt``; numbers are OpenSSL's ``X509_V_ERR_*``, alerts are
the TLS alert the client sends, RFC 8446 §6.2).  The numbers are the same in OpenSSL 1.1.1
(legacy image), 3.0 (Debian 12 host) and 3.6 (modern image); a few texts differ: 1.1.1 says
"Hostname mismatch" and "self signed certificate", 3.6 says "certificate is not yet valid or
the system clock is incorrect".

=================  ==========================================================  =======
variant            client verdict                                                alert
=================  ==========================================================  =======
good               ``Verify return code: 0 (ok)``                                —
expired            10 certificate has expired                                    45
not_yet_valid      9 certificate is not yet valid                                42
wrong_name         62 hostname mismatch (64 IP address mismatch with an IP)      42
other_ca           20 unable to get local issuer certificate                     48
self_signed        18 self-signed certificate (1.1.1: "self signed certificate") 48
key_mismatch       the *server* refuses to start: "key values mismatch"          —
weak               66 EE certificate key too weak (security level 2);           42
                   68 CA signature digest algorithm too weak (level 1); the
                   server itself refuses to load it ("ee key too small" /
                   "ca md too weak")
ten_year           0 ok — OpenSSL sets no limit on a certificate's lifetime       —
=================  ==========================================================  =======
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from labkit.errors import LabkitError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: One DNS name / address, or several.
Names = str | Sequence[str]

#: Longest lifetime of the lab CA.  The CA/Browser Forum's limits (398 days for a server
#: certificate today, falling to 47 days by 2029, ballot SC-081) bind *public* CAs, whose
#: roots sit in every browser; a lab CA is a private trust anchor that only the lab's
#: phones know.  It still stays short: its key lies unencrypted in a lab directory, and a
#: CA that dies with the course cannot be abused after it.
CA_MAX_DAYS = 365
#: Default lifetime of a server or client certificate (what ACME/Let's Encrypt issues).
LEAF_DEFAULT_DAYS = 90
#: The walkthrough's ``openssl x509 -req -days 3655`` (ten years and five days).
TEN_YEAR_DAYS = 3655
#: Some slack so that a certificate made this second is already valid on a machine whose
#: clock is a little behind (phones without NTP are common).
BACKDATE = dt.timedelta(minutes=5)


class PkiError(LabkitError):
    """A certificate cannot be made, written or read as asked."""


# --------------------------------------------------------------------------------------
# Names and addresses: only reserved ones (a lab must never mint a certificate for a real
# host, and course material must not carry someone's real address).
# --------------------------------------------------------------------------------------
#: RFC 2606 / RFC 6761 reserved names, and RFC 8375's home.arpa.
RESERVED_SUFFIXES = (".test", ".example", ".invalid", ".localhost", ".home.arpa",
                     ".example.com", ".example.net", ".example.org")
RESERVED_NAMES = ("localhost", "example.com", "example.net", "example.org")
#: RFC 5737 documentation ranges (the labs' "Internet"), RFC 1918 private ranges (the
#: labs' LANs), loopback, and their IPv6 counterparts (RFC 3849, RFC 4193).
#: Not ``ipaddress.is_private``: it also says yes to many other ranges.
RESERVED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
    "2001:db8::/32", "fc00::/7", "::1/128"))


def check_name(name: str) -> str:
    """Return ``name`` in lower case if it is a reserved test/example DNS name, else raise."""
    if not isinstance(name, str) or not name:
        raise PkiError(f"Not a DNS name: {name!r}.", hint="Give a name such as 'pbx.home.example'.")
    lowered = name.lower().rstrip(".")
    bare = lowered[2:] if lowered.startswith("*.") else lowered
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        raise PkiError(f"{name!r} is an address, not a name.",
                       hint="Pass addresses separately (the `addresses` argument): they go "
                            "into the subjectAltName as IP entries, not DNS entries.")
    if bare in RESERVED_NAMES or bare.endswith(RESERVED_SUFFIXES):
        return lowered
    raise PkiError(
        f"{name!r} is not a reserved test or example name.",
        cause="Lab certificates are only made for names that can never belong to a real "
              "host (RFC 2606 and RFC 6761), so that nothing made here can impersonate one.",
        hint="Use a name under .test or .example, e.g. 'pbx.home.example' or "
             "'voip.lab.test'.")


def check_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address):
    """Return ``address`` as an ``ipaddress`` object if it is a documentation, private or
    loopback address, else raise."""
    try:
        ip = ipaddress.ip_address(str(address))
    except ValueError:
        raise PkiError(f"Not an IP address: {address!r}.",
                       hint="Give an address such as '192.0.2.10' or '192.168.0.10'.") from None
    if any(ip in net for net in RESERVED_NETWORKS):
        return ip
    raise PkiError(
        f"{address} is a public address.",
        cause="Lab certificates only name documentation (RFC 5737: 192.0.2.0/24, "
              "198.51.100.0/24, 203.0.113.0/24), private (RFC 1918) or loopback addresses.",
        hint="Use the lab's addresses, e.g. 192.0.2.10 (its 'Internet') or 192.168.0.10 "
             "(its LAN).")


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return [str(value)]
    return [str(v) for v in value]


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------
def new_key(key_type: str = "ec", bits: int = 2048) -> PrivateKey:
    """A fresh private key: ``"ec"`` (ECDSA P-256, the default: small, fast, what TLS 1.3
    prefers) or ``"rsa"`` with ``bits`` ≥ 2048 (what old phones understand)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if bits < 2048:
            raise PkiError(f"RSA keys of {bits} bits are too weak for a good certificate.",
                           cause="OpenSSL 3.2+ (and Debian's 1.1.1) refuse RSA below 2048 "
                                 "bits at their default security level 2.",
                           hint="Use bits=2048 or more; for the weak one on purpose, "
                                "use LabCA.weak().")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise PkiError(f"Unknown key type {key_type!r}.", hint="Use 'ec' (ECDSA P-256) or 'rsa'.")


def key_pem(key: PrivateKey) -> bytes:
    """The key in PEM (PKCS#8, unencrypted: daemons read it at start without a pass phrase)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True if ``key`` is the private half of the certificate's public key (what OpenSSL's
    ``SSL_CTX_check_private_key`` checks when a server starts)."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


# --------------------------------------------------------------------------------------
# Issued certificates and their files
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CertFiles:
    """Where :meth:`Issued.write` put things, and which setting each file is for."""

    cert: Path        #: certificate only — PJSIP ``cert_file``, chan_sip ``tlscertfile``
    #: private key only (0600) — PJSIP ``priv_key_file``, chan_sip ``tlsprivatekey``
    key: Path
    #: certificate then key (0600) — baresip ``sip_certificate``, chan_sip's "same pem"
    combined: Path
    chain: Path       #: certificate then its issuer(s) — for servers that send the chain
    ca: Path          #: the lab CA — what clients trust: PJSIP ``ca_list_file``,
                      #: chan_sip ``tlscafile``, baresip ``sip_cafile``, ``openssl -CAfile``


@dataclass(frozen=True)
class Issued:
    """A certificate, its private key and where it comes from."""

    variant: str
    cert: x509.Certificate
    key: PrivateKey
    #: The certificates above this one (its issuing CA); empty for a self-signed one.
    issuer_chain: tuple[x509.Certificate, ...]
    #: The lab CA that clients of the lab trust (not always the issuer: see ``other_ca``).
    trust_anchor: x509.Certificate
    #: What a client will say, in one line (from the variant's docstring table).
    expect: str = ""

    @property
    def key_matches(self) -> bool:
        return key_matches(self.cert, self.key)

    def write(self, directory: str | os.PathLike, stem: str = "server") -> CertFiles:
        """Write ``STEM.crt``, ``STEM.key``, ``STEM.pem`` (combined), ``STEM-chain.crt`` and
        ``ca.crt`` into ``directory``.

        Permissions, and why not the walkthrough's ``chmod 755``: a private key is the
        server's identity; anyone who can read it can impersonate the PBX and decrypt
        recorded RSA-key-exchange sessions.  So the key and the combined file (which holds
        the key too) are written 0600 — readable by their owner only — and the directory is
        0700, so that other local users cannot even list it.  755 on the folder lets every
        user of the machine list it, and with the usual umask the key file inside is 644:
        world-readable.  On a real server the owner would be the daemon's user (``chown
        asterisk:`` with ``mode 0600``, or group ``asterisk`` with 0640/0750); in the lab,
        daemons run as root inside their sandbox, so root ownership is right.  Certificates
        are public (every client receives them) and are 0644.

        An existing directory that other users can enter is refused rather than silently
        tightened (``ssh`` refuses a loose key file the same way): pass a new directory.
        """
        directory = private_directory(directory)
        files = CertFiles(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key",
                          combined=directory / f"{stem}.pem",
                          chain=directory / f"{stem}-chain.crt", ca=directory / "ca.crt")
        _write(files.cert, cert_pem(self.cert), 0o644)
        _write(files.key, key_pem(self.key), 0o600)
        _write(files.combined, cert_pem(self.cert) + key_pem(self.key), 0o600)
        _write(files.chain, cert_pem(self.cert) + b"".join(map(cert_pem, self.issuer_chain)),
               0o644)
        _write(files.ca, cert_pem(self.trust_anchor), 0o644)
        return files


def private_directory(directory: str | os.PathLike) -> Path:
    """Create ``directory`` with mode 0700, or accept it if it already is that private."""
    path = Path(directory)
    try:
        existed = path.exists()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not existed:
            os.chmod(path, 0o700)   # mkdir's mode goes through the umask; be exact
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise PkiError(f"Cannot create the directory {path}: {exc.strerror}.",
                       cause="The parent directory is not writable by this user, or is a file.",
                       hint="Write into the lab directory (or a new directory you own).") from exc
    if mode & 0o077:
        raise PkiError(
            f"{path} is open to other users (mode {mode:04o}); keys are not written there.",
            cause="Private keys must sit in a directory only their owner can enter "
                  "(the walkthrough's `chmod 755` let every local user list it).",
            hint=f"Pass a new directory, or tighten this one: chmod 700 {path}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PkiError(f"Cannot write into {path}.", cause="Its owner is another user.",
                       hint="Write into a directory you own.")
    return path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file with exactly ``mode`` (whatever the umask), replacing any old one."""
    try:
        if path.exists() or path.is_symlink():
            path.unlink()
        # O_EXCL + O_NOFOLLOW: never write a key through a planted symlink.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
    except OSError as exc:
        raise PkiError(f"Cannot write {path}: {exc.strerror}.",
                       hint="Check that the directory is yours and writable.") from exc


# --------------------------------------------------------------------------------------
# The lab CA
# --------------------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labkit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


#: (serverAuth) for servers, (clientAuth) for phones presenting a certificate (mutual TLS).
SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass
class LabCA:
    """The lab's certificate authority: one self-signed CA certificate and its key.

    ``basicConstraints CA:TRUE, pathlen:0`` (it signs server/client certificates, never
    another CA), ``keyUsage keyCertSign, cRLSign`` (both critical), SHA-256, ECDSA P-256 by
    default (or RSA ≥ 2048), valid at most :data:`CA_MAX_DAYS` days.
    """

    cert: x509.Certificate
    key: PrivateKey
    openssl: str = "openssl"   #: the CLI used for the SHA-1 certificate only
    _other: LabCA | None = field(default=None, repr=False)

    # -- making and keeping it ------------------------------------------------------------
    @classmethod
    def create(cls, name: str = "labkit Lab CA", *, key_type: str = "ec", bits: int = 2048,
               days: int = 365, openssl: str = "openssl", key: PrivateKey | None = None) -> LabCA:
        """Make a new lab CA called ``name`` (its subject CN; any text); with ``key``, the CA
        uses that key instead of a new one (a CA that can be made again, with the same key)."""
        if not 1 <= days <= CA_MAX_DAYS:
            raise PkiError(
                f"A lab CA lives 1 to {CA_MAX_DAYS} days, not {days}.",
                cause="A lab CA's key sits unencrypted in a lab directory; the CA/B Forum "
                      "limits are for public CAs, a lab CA simply stays short.",
                hint=f"Use days={CA_MAX_DAYS} or less, and make a new CA for the next course.")
        key = key if key is not None else new_key(key_type, bits)
        now = _now()
        subject = _name(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key, openssl=openssl)

    def write(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``ca.crt`` (0644, give it to clients) and ``ca.key`` (0600, keep it)."""
        directory = private_directory(directory)
        _write(directory / "ca.crt", cert_pem(self.cert), 0o644)
        _write(directory / "ca.key", key_pem(self.key), 0o600)
        return directory / "ca.crt", directory / "ca.key"

    @classmethod
    def load(cls, directory: str | os.PathLike, *, openssl: str = "openssl") -> LabCA:
        """Read a CA written by :meth:`write`."""
        directory = Path(directory)
        cert = load_certificate(directory / "ca.crt")
        key = load_key(directory / "ca.key")
        if not key_matches(cert, key):
            raise PkiError(f"{directory}/ca.key does not belong to {directory}/ca.crt.",
                           hint="Write the CA again with LabCA.create(...).write(dir).")
        return cls(cert=cert, key=key, openssl=openssl)

    # -- issuing --------------------------------------------------------------------------
    def _leaf(self, *, names: Sequence[str], addresses: Sequence[str], usage,
              days: int | None = None,
              not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
              key: PrivateKey | None = None, key_type: str = "ec", bits: int = 2048,
              check_lifetime: bool = True,
              extra_sans: Sequence[x509.GeneralName] = ()) -> tuple[x509.Certificate, PrivateKey]:
        names = [check_name(n) for n in names]
        ips = [check_address(a) for a in addresses]
        if not names and not ips:
            raise PkiError("A certificate needs at least one name or address.",
                           hint="e.g. issue_server('pbx.home.example', ['192.0.2.10'])")
        signer = self
        key = key or new_key(key_type, bits)
        now = _now()
        not_before = not_before or now - BACKDATE
        not_after = not_after or now + dt.timedelta(days=days or LEAF_DEFAULT_DAYS)
        if check_lifetime and not_after > signer.cert.not_valid_after_utc:
            raise PkiError(
                f"The certificate would outlive its CA ({signer.cert.not_valid_after_utc:%F}).",
                cause="Clients reject a chain once its CA has expired (error 10 at depth 1), "
                      "whatever the certificate's own date says.",
                hint="Ask for fewer days, or make a new CA; for the walkthrough's ten-year "
                     "certificate on purpose, use LabCA.ten_year().")
        sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ip) for ip in ips]
        sans += list(extra_sans)
        # RSA keys also do key exchange in TLS 1.2 RSA suites (keyEncipherment); ECDSA keys
        # only sign (digitalSignature).
        rsa_key = isinstance(key, rsa.RSAPrivateKey)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0] if names else str(ips[0])))
            .issuer_name(signer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=rsa_key,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.key.public_key()), critical=False)
            .sign(signer.key, hashes.SHA256())
        )
        return cert, key

    def _issued(self, variant: str, cert, key, *, issuer: LabCA | None = None,
                expect: str = "") -> Issued:
        issuer = issuer or self
        return Issued(variant=variant, cert=cert, key=key, issuer_chain=(issuer.cert,),
                      trust_anchor=self.cert, expect=expect)

    def issue_server(self, names: Names = (), addresses: Names = (),
                     *, days: int = LEAF_DEFAULT_DAYS, key_type: str = "ec",
                     bits: int = 2048) -> Issued:
        """A good server certificate: subjectAltName with the DNS ``names`` and IP
        ``addresses`` clients use to reach the server, extendedKeyUsage serverAuth.

        Clients check the name they *dialled* against the subjectAltName (RFC 6125; the
        subject CN is only a fallback when there are no DNS entries).  A phone registering
        to ``sip:pbx.home.example;transport=tls`` needs ``pbx.home.example`` in it; one
        configured with ``192.0.2.10`` needs the IP entry (chan_sip ignores IP entries).
        """
        cert, key = self._leaf(names=_as_list(names), addresses=_as_list(addresses),
                               usage=SERVER, days=days, key_type=key_type, bits=bits)
        return self._issued("good", cert, key, expect="Verify return code: 0 (ok)")

    def issue_client(self, name: str, *, sip_uris: Names = (),
                     days: int = LEAF_DEFAULT_DAYS, key_type: str = "ec",
                     bits: int = 2048) -> Issued:
        """A client certificate (extendedKeyUsage clientAuth) for a phone doing mutual TLS:
        its DNS ``name`` (e.g. ``alice.home.example``) and optional ``sip:`` URIs
        (``sip:alice@pbx.home.example``) in the subjectAltName.  A server checks it only if
        told to (PJSIP ``verify_client=yes``, chan_sip has no such option)."""
        uris = []
        for uri in _as_list(sip_uris):
            if not uri.startswith(("sip:", "sips:")) or "@" not in uri:
                raise PkiError(f"Not a SIP URI: {uri!r}.", hint="e.g. 'sip:alice@pbx.home.example'")
            check_name(uri.split("@", 1)[1].split(";", 1)[0].split(":", 1)[0])
            uris.append(x509.UniformResourceIdentifier(uri))
        cert, key = self._leaf(names=[name], addresses=[], usage=CLIENT, days=days,
                               key_type=key_type, bits=bits, extra_sans=uris)
        return self._issued("client", cert, key, expect="Verify return code: 0 (ok)")

    # -- the broken ones ------------------------------------------------------------------
    def expired(self, names: Names = (), addresses: Names = ()) -> Issued:
        """A certificate whose ``notAfter`` is 30 days ago (the one nobody renewed).

        Client: ``verify error:num=10:certificate has expired``, then TLS alert 45
        (certificate_expired); ``openssl verify``: ``error 10 at 0 depth lookup``.
        A phone whose clock is years ahead (no NTP) says the same about a good one.
        """
        now = _now()
        cert, key = self._leaf(names=_as_list(names), addresses=_as_list(addresses), usage=SERVER,
                               not_before=now - dt.timedelta(days=120),
                               not_after=now - dt.timedelta(days=30))
        return self._issued("expired", cert, key, expect="10 certificate has expired")

    def not_yet_valid(self, names: Names = (), addresses: Names = ()) -> Issued:
        """A certificate whose ``notBefore`` is tomorrow.

        Client: ``verify error:num=9:certificate is not yet valid``, alert 42
        (bad_certificate).  In real life: a phone whose clock is behind (it booted in
        1970 and has no NTP yet) — check the clock before the certificate.
        """
        now = _now()
        cert, key = self._leaf(names=_as_list(names), addresses=_as_list(addresses), usage=SERVER,
                               not_before=now + dt.timedelta(days=1),
                               not_after=now + dt.timedelta(days=1 + LEAF_DEFAULT_DAYS))
        return self._issued("not_yet_valid", cert, key, expect="9 certificate is not yet valid")

    def wrong_name(self, names: Names = (), addresses: Names = (),
                   *, actual: str = "mail.home.example") -> Issued:
        """A good certificate for another host: its subjectAltName holds only ``actual``,
        not the ``names``/``addresses`` clients dial.

        Client: ``verify error:num=62:hostname mismatch`` (``-verify_ip``: 64 IP address
        mismatch), alert 42 (bad_certificate).  The usual cause: the certificate was made for
        the short name, the IP, or the old hostname, while phones use the DNS name.
        """
        actual = check_name(actual)
        if actual in [check_name(n) for n in _as_list(names)]:
            raise PkiError(f"wrong_name needs a name other than {actual!r}.",
                           hint="Pass actual='some-other-host.home.example'.")
        _ = [check_address(a) for a in _as_list(addresses)]
        cert, key = self._leaf(names=[actual], addresses=[], usage=SERVER)
        return self._issued("wrong_name", cert, key, expect="62 hostname mismatch")

    def other_ca(self, names: Names = (), addresses: Names = ()) -> Issued:
        """A certificate for the right name, signed by *another* CA the clients do not trust.

        Client: ``verify error:num=20:unable to get local issuer certificate``, alert 48
        (unknown_ca).  If the server also sends that other CA's certificate (a "chain"),
        OpenSSL says 19 (self-signed certificate in certificate chain) instead.
        """
        other = self._other_ca()
        cert, key = other._leaf(names=_as_list(names), addresses=_as_list(addresses),
                                usage=SERVER)
        return self._issued("other_ca", cert, key, issuer=other,
                            expect="20 unable to get local issuer certificate")

    def _other_ca(self) -> LabCA:
        if self._other is None:
            self._other = LabCA.create("Some Other CA")
        return self._other

    def self_signed(self, names: Names = (), addresses: Names = (),
                    *, days: int = LEAF_DEFAULT_DAYS) -> Issued:
        """The walkthrough's kind: the certificate signs itself (``openssl req -x509``), RSA
        2048, SHA-256, right name — only trust is missing.

        Client: ``verify error:num=18:self-signed certificate`` (OpenSSL 1.1.1 writes "self
        signed certificate"), alert 48 (unknown_ca).  It works only where the client skips
        verification (chan_sip ``tlsdontverifyserver=yes``, baresip without ``sip_cafile``)
        or pins this very certificate as its CA file.
        """
        names, ips = _as_list(names), _as_list(addresses)
        key = new_key("rsa", 2048)
        me = LabCA(cert=_self_signed_stub(key, names or ips), key=key)
        cert, key = me._leaf(names=names, addresses=ips, usage=SERVER, days=days, key=key,
                             check_lifetime=False)
        return Issued(variant="self_signed", cert=cert, key=key, issuer_chain=(),
                      trust_anchor=self.cert, expect="18 self-signed certificate")

    def key_mismatch(self, names: Names = (), addresses: Names = ()) -> Issued:
        """A good certificate delivered with the wrong key (a key from another certificate,
        the classic mix-up after renewing one file but not the other).

        The *server* notices first: ``openssl s_server`` exits with "X509_check_private_key:
        key values mismatch"; PJSIP and chan_sip refuse the TLS transport and never listen
        on 5061.  No client ever gets to verify anything.  Check it with
        ``openssl x509 -noout -pubkey -in X.crt`` vs ``openssl pkey -pubout -in X.key``.
        """
        cert, _right_key = self._leaf(names=_as_list(names), addresses=_as_list(addresses),
                                      usage=SERVER)
        return self._issued("key_mismatch", cert, new_key("ec"),
                            expect="server: key values mismatch")

    def ten_year(self, names: Names = (), addresses: Names = ()) -> Issued:
        """The walkthrough's ``-days 3655``: a CA-issued certificate valid for ten years.

        OpenSSL says 0 (ok): nothing in TLS limits a certificate's life.  Browsers refuse
        anything over 398 days; phones and PBXs do not.  The risk is elsewhere: one key for
        ten years (leaks, weak by then, no renewal habit), and in practice it dies with its
        CA — here in a year (then: error 10 at depth 1).
        """
        now = _now()
        cert, key = self._leaf(names=_as_list(names), addresses=_as_list(addresses), usage=SERVER,
                               not_after=now + dt.timedelta(days=TEN_YEAR_DAYS),
                               check_lifetime=False)
        return self._issued("ten_year", cert, key, expect="Verify return code: 0 (ok)")

    def weak(self, names: Names = (), addresses: Names = ()) -> Issued:
        """RSA 1024 key, signature with SHA-1: what 2010-era tutorials produced.

        OpenSSL's default security level refuses it at both ends.  The server will not even
        load it: ``SSL_CTX_use_certificate: ee key too small`` at level 2 — the default of
        OpenSSL ≥ 3.2 and of Debian's builds (bullseye's 1.1.1 through its openssl.cnf,
        bookworm's 3.0 as compiled) — or ``ca md too weak`` at level 1.  A client verifying
        it says ``66 EE certificate key too weak`` (level 2) or ``68 CA signature digest
        algorithm too weak`` (level 1), then sends alert 42.  Plain ``openssl verify`` (no
        ``-auth_level``) says OK: it checks no security level.

        How it is made: ``cryptography`` refuses to sign a certificate with SHA-1
        ("Hash algorithm 'sha1' not supported for signatures"), so the lab CA's key is
        handed, in a private temporary directory, to the ``openssl`` CLI:
        ``openssl x509 -req -sha1 -CA ca.crt -CAkey ca.key …`` (works with OpenSSL 1.1.1
        to 3.6).  With the default ECDSA lab CA the signature is ``ecdsa-with-SHA1``; with an
        RSA CA ``sha1WithRSAEncryption``.  The 1024-bit key itself ``cryptography`` makes.
        """
        names = [check_name(n) for n in _as_list(names)]
        ips = [check_address(a) for a in _as_list(addresses)]
        if not names and not ips:
            raise PkiError("A certificate needs at least one name or address.")
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        sans = ",".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(_name(names[0] if names else str(ips[0])))
               .sign(key, hashes.SHA256()))
        extensions = ("basicConstraints=critical,CA:FALSE\n"
                      "keyUsage=critical,digitalSignature,keyEncipherment\n"
                      "extendedKeyUsage=serverAuth\n"
                      f"subjectAltName={sans}\n"
                      "subjectKeyIdentifier=hash\n"
                      "authorityKeyIdentifier=keyid\n")
        serial = hex(x509.random_serial_number())
        with tempfile.TemporaryDirectory(prefix="labkit-pki-") as tmp:   # mode 0700
            tmp = Path(tmp)
            _write(tmp / "ca.crt", cert_pem(self.cert), 0o600)
            _write(tmp / "ca.key", key_pem(self.key), 0o600)
            _write(tmp / "req.csr", csr.public_bytes(serialization.Encoding.PEM), 0o600)
            _write(tmp / "ext.cnf", extensions.encode(), 0o600)
            self._openssl(["x509", "-req", "-in", str(tmp / "req.csr"), "-sha1",
                           "-CA", str(tmp / "ca.crt"), "-CAkey", str(tmp / "ca.key"),
                           "-set_serial", serial, "-days", str(LEAF_DEFAULT_DAYS),
                           "-extfile", str(tmp / "ext.cnf"), "-out", str(tmp / "weak.crt")])
            cert = x509.load_pem_x509_certificate((tmp / "weak.crt").read_bytes())
        return self._issued("weak", cert, key, expect="66 EE certificate key too weak")

    def _openssl(self, args: list[str]) -> str:
        binary = shutil.which(self.openssl)
        if binary is None:
            raise PkiError(f"The openssl command ({self.openssl}) is not installed.",
                           cause="The SHA-1 certificate is signed by the openssl CLI, because "
                                 "the cryptography package refuses SHA-1 signatures.",
                           hint="apt-get install openssl")
        result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise PkiError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}",
                           hint="Try another OpenSSL (LabCA(openssl='/path/to/openssl')).")
        return result.stdout

    # -- by name --------------------------------------------------------------------------
    def variant(self, variant: str, names: Names = (), addresses: Names = ()) -> Issued:
        """The certificate called ``variant`` (see :data:`VARIANTS`) for ``names``."""
        key = variant.replace("-", "_")
        if key not in VARIANTS:
            raise PkiError(f"Unknown certificate variant {variant!r}.",
                           hint="One of: " + ", ".join(VARIANTS))
        if key == "good":
            return self.issue_server(names, addresses)
        return getattr(self, key)(names, addresses)


def _self_signed_stub(key: PrivateKey, names: Sequence[str]) -> x509.Certificate:
    """A throw-away CA-shaped certificate so :meth:`LabCA._leaf` can sign with ``key`` and
    put the leaf's own subject as issuer."""
    first = names[0] if names else "self-signed"
    subject = _name(first.lower())
    now = _now()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))


#: Every certificate this module can make on purpose: "good" and the broken ones.
VARIANTS = ("good", "expired", "not_yet_valid", "wrong_name", "other_ca", "self_signed",
            "key_mismatch", "weak", "ten_year")


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def load_certificate(source: x509.Certificate | bytes | str | os.PathLike) -> x509.Certificate:
    """A certificate from an object, PEM bytes or a PEM/DER file (the first one in it)."""
    if isinstance(source, x509.Certificate):
        return source
    data = source if isinstance(source, bytes) else _read(Path(source))
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"Not a certificate: {source if not isinstance(source, bytes) else 'data'}"
                       f" ({exc}).", hint="Give a PEM file starting with "
                                          "'-----BEGIN CERTIFICATE-----'.") from exc


def load_certificates(source) -> list[x509.Certificate]:
    """All certificates of a CA/chain file (or a list of certificates)."""
    if isinstance(source, x509.Certificate):
        return [source]
    if isinstance(source, (list, tuple)):
        return [c for item in source for c in load_certificates(item)]
    data = source if isinstance(source, bytes) else _read(Path(source))
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"No certificate in {source!r}: {exc}.") from exc


def load_key(source: bytes | str | os.PathLike) -> PrivateKey:
    """A private key from PEM bytes or a file (also the key part of a combined PEM)."""
    data = source if isinstance(source, bytes) else _read(Path(source))
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"Cannot read a private key from {source!r}: {exc}.",
                       cause="Encrypted keys need a pass phrase, which daemons cannot type.",
                       hint="Use an unencrypted PEM key (openssl pkey -in K -out K2).") from exc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"Cannot read {path}: {exc.strerror}.",
                       cause="Missing, or not readable by this user (keys are 0600).",
                       hint="Check the path and its permissions (ls -l).") from exc


# --------------------------------------------------------------------------------------
# Describing
# --------------------------------------------------------------------------------------
#: OpenSSL's names for signature algorithms (``openssl x509 -text`` shows these).
_SIG_NAMES = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ecdsa-with-SHA1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SignatureAlgorithmOID.RSA_WITH_MD5: "md5WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "sha1WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "sha384WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "sha512WithRSAEncryption",
    SignatureAlgorithmOID.RSASSA_PSS: "rsassaPss",
    SignatureAlgorithmOID.ED25519: "ED25519",
    SignatureAlgorithmOID.ED448: "ED448",
}
#: The digest inside each signature algorithm, read from the OID: ``cryptography`` will not
#: even hand out the hash object of some old ones.
_SIG_DIGEST = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "SHA1", SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA1",
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "SHA256",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "SHA384",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "SHA512",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "SHA512",
}
_EKU_NAMES = {SERVER: "serverAuth", CLIENT: "clientAuth"}


def key_description(public_key) -> tuple[str, int]:
    """("RSA", 2048) or ("EC P-256", 256) or ("Ed25519", 256)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        nist = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {nist.get(public_key.curve.name, public_key.curve.name)}", public_key.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(public_key).__name__, 0


def _fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _rfc4514(name: x509.Name) -> str:
    return name.rfc4514_string()


def describe(certificate, *, at: dt.datetime | None = None) -> dict:
    """A certificate as a flat dict for a notebook table: who, for what, until when, how.

    Keys: subject, issuer, self_signed, is_ca, san_dns, san_ip, san_uri, key_usage,
    extended_key_usage, not_before, not_after, days_total, days_left, valid_now,
    key_type, key_bits, signature_algorithm, serial, sha256_fingerprint (as
    ``openssl x509 -noout -fingerprint -sha256`` prints it).
    """
    cert = load_certificate(certificate)
    at = at or _now()
    ext = {e.oid: e.value for e in cert.extensions}
    san = ext.get(x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    basic = ext.get(x509.oid.ExtensionOID.BASIC_CONSTRAINTS)
    ku = ext.get(x509.oid.ExtensionOID.KEY_USAGE)
    eku = ext.get(x509.oid.ExtensionOID.EXTENDED_KEY_USAGE)
    key_type, key_bits = key_description(cert.public_key())
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    usages = []
    if ku is not None:
        for attr in ("digital_signature", "key_encipherment", "key_cert_sign", "crl_sign"):
            if getattr(ku, attr):
                usages.append(attr)
    return {
        "subject": _rfc4514(cert.subject),
        "issuer": _rfc4514(cert.issuer),
        "self_signed": cert.subject == cert.issuer and _signed_by(cert, cert),
        "is_ca": bool(basic and basic.ca),
        "san_dns": san.get_values_for_type(x509.DNSName) if san else [],
        "san_ip": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] if san else [],
        "san_uri": san.get_values_for_type(x509.UniformResourceIdentifier) if san else [],
        "key_usage": usages,
        "extended_key_usage": [_EKU_NAMES.get(o, o.dotted_string) for o in eku] if eku else [],
        "not_before": nb.isoformat(),
        "not_after": na.isoformat(),
        "days_total": round((na - nb).total_seconds() / 86400, 1),
        "days_left": round((na - at).total_seconds() / 86400, 1),
        "valid_now": nb <= at <= na,
        "key_type": key_type,
        "key_bits": key_bits,
        "signature_algorithm": _SIG_NAMES.get(cert.signature_algorithm_oid,
                                              cert.signature_algorithm_oid.dotted_string),
        "serial": f"{cert.serial_number:X}",
        "sha256_fingerprint": _fingerprint(cert),
    }


# --------------------------------------------------------------------------------------
# Verifying like a client
# --------------------------------------------------------------------------------------
#: OpenSSL's verify error numbers (``X509_V_ERR_*``) and texts (3.x) a student will meet.
OPENSSL_ERRORS = {
    0: "ok",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    26: "unsupported certificate purpose",
    62: "hostname mismatch",
    64: "IP address mismatch",
    66: "EE certificate key too weak",
    67: "CA certificate key too weak",
    68: "CA signature digest algorithm too weak",
}
#: The TLS alert an OpenSSL client sends for each (ssl/statem's ssl_x509err2alert).
TLS_ALERTS = {7: 51, 9: 42, 10: 45, 18: 48, 19: 48, 20: 48, 26: 43, 62: 42, 64: 42,
              66: 42, 67: 42, 68: 42}
ALERT_NAMES = {42: "bad_certificate", 43: "unsupported_certificate", 45: "certificate_expired",
               48: "unknown_ca", 51: "decrypt_error"}
#: Short names for the reasons (stable keys for checks and tables).
REASONS = {0: "ok", 7: "bad_signature", 9: "not_yet_valid", 10: "expired", 18: "self_signed",
           19: "self_signed_in_chain", 20: "unknown_ca", 26: "wrong_purpose",
           62: "hostname_mismatch", 64: "ip_mismatch", 66: "weak_key", 67: "weak_ca_key",
           68: "weak_digest"}
#: OpenSSL security levels → minimum security bits (SSL_CTX_set_security_level(3)).
_LEVEL_BITS = {0: 0, 1: 80, 2: 112, 3: 128, 4: 192, 5: 256}
#: Security bits of signature digests, as OpenSSL 3 counts them (SHA-1 is 63: collisions).
_DIGEST_BITS = {"MD5": 39, "SHA1": 63, "SHA224": 112, "SHA256": 128, "SHA384": 192,
                "SHA512": 256}


@dataclass(frozen=True)
class Verdict:
    """What an OpenSSL client concludes about a certificate (``openssl s_client`` /
    ``openssl verify`` style), and what a strict (browser-like) verifier adds."""

    code: int                 #: X509_V_ERR number; 0 = OK
    depth: int = 0            #: 0 = the server's certificate, 1 = its CA
    detail: str = ""          #: why, in words
    #: What ``cryptography``'s WebPKI verifier (strict, browser rules) said; "" = accepted.
    strict_error: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def reason(self) -> str:
        return REASONS.get(self.code, f"error_{self.code}")

    @property
    def message(self) -> str:
        return OPENSSL_ERRORS.get(self.code, "unknown error")

    @property
    def alert(self) -> int | None:
        """The TLS alert an OpenSSL client sends when it gives up (None if it does not)."""
        return TLS_ALERTS.get(self.code)

    @property
    def openssl_line(self) -> str:
        """The line ``openssl verify`` prints: ``OK`` or ``error N at D depth lookup: …``."""
        if self.ok:
            return "OK"
        return f"error {self.code} at {self.depth} depth lookup: {self.message}"

    def as_dict(self) -> dict:
        return {"ok": self.ok, "code": self.code, "reason": self.reason,
                "message": self.message, "depth": self.depth, "alert": self.alert,
                "detail": self.detail, "strict_error": self.strict_error,
                "warnings": list(self.warnings)}


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key made ``cert``'s signature (names are not enough)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass  # SHA-1 and friends: cryptography will not check those here — do it by hand
    public = issuer.public_key()
    digest = {"SHA1": hashes.SHA1(), "SHA256": hashes.SHA256(), "SHA384": hashes.SHA384(),
              "SHA512": hashes.SHA512(), "MD5": hashes.MD5()}.get(
        _SIG_DIGEST.get(cert.signature_algorithm_oid, ""))
    if digest is None:
        return False
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), digest)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(digest))
        else:
            return False
        return True
    except (InvalidSignature, UnsupportedAlgorithm):
        return False


def _security_bits(public_key) -> int:
    """OpenSSL's EVP_PKEY_get_security_bits, for the key types the lab makes."""
    if isinstance(public_key, rsa.RSAPublicKey):
        size = public_key.key_size
        for limit, bits in ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80)):
            if size >= limit:
                return bits
        return 0
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.key_size // 2
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return 128
    if isinstance(public_key, ed448.Ed448PublicKey):
        return 224
    return 0


def _names_match(cert: x509.Certificate, hostname: str) -> bool:
    """OpenSSL's X509_check_host: DNS subjectAltNames (a ``*`` may replace the whole left
    label); the subject CN only when the certificate has no DNS subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    host = hostname.lower().rstrip(".")
    for name in names:
        name = str(name).lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:] \
                and name.count(".") >= 2:
            return True
    return False


def _ip_matches(cert: x509.Certificate, ip) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return ip in san.get_values_for_type(x509.IPAddress)


def _find_issuer(cert: x509.Certificate, candidates: Sequence[x509.Certificate]):
    for ca in candidates:
        if _signed_by(cert, ca):
            return ca
    return None


def verify(certificate, trusted, hostname: str | None = None, *,
           intermediates: Sequence = (), at: dt.datetime | None = None,
           security_level: int = 2, purpose: str = "server") -> Verdict:
    """Verify ``certificate`` against the CA(s) ``trusted`` for ``hostname`` like an OpenSSL
    client (``openssl s_client -CAfile trusted -verify_hostname hostname
    -verify_return_error``, or ``-verify_ip`` when ``hostname`` is an address).

    The chain is validated by ``cryptography.x509.verification`` (a strict, WebPKI
    verifier).  When it refuses, the reason is found again the way OpenSSL looks for it,
    in OpenSSL's order (chain → purpose → security level → name → signatures and dates),
    so that the verdict carries the number a student sees in ``openssl`` and in Asterisk's
    log.  ``security_level`` is the client's OpenSSL security level (2: the default of
    OpenSSL ≥ 3.2 and of Debian's 1.1.1 and 3.0 builds; 1: upstream OpenSSL 1.1.1–3.1).
    ``purpose`` is "server" or "client" (mutual TLS: then ``hostname`` is not checked).
    """
    v = verification
    cert = load_certificate(certificate)
    anchors = load_certificates(trusted)
    middle = load_certificates(list(intermediates)) if intermediates else []
    at = at or _now()
    if purpose not in ("server", "client"):
        raise PkiError(f"Unknown purpose {purpose!r}.", hint="Use 'server' or 'client'.")
    if security_level not in _LEVEL_BITS:
        raise PkiError(f"OpenSSL security levels are 0 to 5, not {security_level}.")
    subject = None
    ip = None
    if purpose == "server":
        if not hostname:
            raise PkiError("A server certificate is verified for a name.",
                           hint="Pass the name the client dials, e.g. 'pbx.home.example'.")
        try:
            ip = ipaddress.ip_address(hostname)
            subject = v.IPAddress(ip)
        except ValueError:
            subject = v.DNSName(hostname)

    # 1. The strict verifier.
    strict_error = ""
    try:
        builder = v.PolicyBuilder().store(v.Store(anchors)).time(at)
        if purpose == "server":
            builder.build_server_verifier(subject).verify(cert, middle)
        else:
            builder.build_client_verifier().verify(cert, middle)
    except v.VerificationError as exc:
        strict_error = str(exc)
    warnings = []
    lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    if lifetime > 398:
        warnings.append(f"valid for {lifetime} days: browsers refuse more than 398, and "
                        "one key for that long is one key to leak.")

    def verdict(code: int, depth: int = 0, detail: str = "") -> Verdict:
        return Verdict(code=code, depth=depth, detail=detail, strict_error=strict_error,
                       warnings=tuple(warnings))

    # 2. OpenSSL's order.  Build the chain: leaf → intermediates → a trusted CA.
    chain = [cert]
    while True:
        top = chain[-1]
        anchor = _find_issuer(top, anchors)
        if anchor is not None:
            if anchor is not top:
                chain.append(anchor)
            break
        if any(top.public_bytes(serialization.Encoding.DER)
               == a.public_bytes(serialization.Encoding.DER) for a in anchors):
            break  # the certificate itself is trusted (pinned)
        upper = _find_issuer(top, [m for m in middle if m not in chain])
        if upper is not None:
            chain.append(upper)
            continue
        depth = len(chain) - 1
        if top.subject == top.issuer and _signed_by(top, top):
            code = 18 if depth == 0 else 19
            return verdict(code, depth, "the certificate signed itself and is not in the "
                                        "trusted CA file" if depth == 0 else
                           "the chain ends in a self-signed CA that is not trusted")
        return verdict(20, depth, f"its issuer ({_rfc4514(top.issuer)}) is not in the "
                                  "trusted CA file")

    # Purpose (s_client checks it; plain `openssl verify` only with -purpose).
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        wanted = SERVER if purpose == "server" else CLIENT
        if wanted not in eku:
            return verdict(26, 0, f"extendedKeyUsage lacks {_EKU_NAMES[wanted]}")
    except x509.ExtensionNotFound:
        pass

    # Security level: each key, then each signature except the trust anchor's own.
    need = _LEVEL_BITS[security_level]
    for depth, item in enumerate(chain):
        bits = _security_bits(item.public_key())
        if bits < need:
            kind, size = key_description(item.public_key())
            return verdict(66 if depth == 0 else 67, depth,
                           f"{kind} {size} bits = {bits} security bits < {need} "
                           f"(security level {security_level})")
        if depth < len(chain) - 1:
            digest = _SIG_DIGEST.get(item.signature_algorithm_oid, "")
            dbits = _DIGEST_BITS.get(digest, 128)
            if dbits < need:
                return verdict(68, depth, f"signed with {digest} = {dbits} security bits < "
                                          f"{need} (security level {security_level})")

    # The name the client dialled.
    if purpose == "server":
        if ip is not None and not _ip_matches(cert, ip):
            return verdict(64, 0, f"{hostname} is not among the IP subjectAltNames")
        if ip is None and not _names_match(cert, hostname):
            return verdict(62, 0, f"{hostname} is not among the DNS subjectAltNames "
                                  f"({', '.join(describe(cert)['san_dns']) or 'none'})")

    # Dates, from the CA down (OpenSSL's internal_verify walks the chain top-down).
    for depth in range(len(chain) - 1, -1, -1):
        item = chain[depth]
        if at < item.not_valid_before_utc:
            return verdict(9, depth, f"valid from {item.not_valid_before_utc:%F %T} UTC")
        if at > item.not_valid_after_utc:
            return verdict(10, depth, f"expired on {item.not_valid_after_utc:%F %T} UTC")

    if strict_error:
        warnings.append("OpenSSL accepts it, a strict WebPKI verifier does not: "
                        + strict_error)
    return verdict(0)
