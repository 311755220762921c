"""TLS in a capture: the sessions tshark sees, and the keys that make the SIP inside readable.

SIP over TLS (RFC 3261 §26.3.1, port 5061) hides every header and the SDP: a capture shows
only TLS records.  Three ways exist to read it again, and this module gives each to tshark:

* **a key log** (``keylog=PATH``) — the NSS key log format that OpenSSL's
  ``SSL_CTX_set_keylog_callback``, ``SSLKEYLOGFILE`` and the kit's ``keylog.so`` write: one
  line per secret, ``LABEL <client random> <secret>`` (TLS 1.2: ``CLIENT_RANDOM`` with the
  master secret; TLS 1.3: the ``*_TRAFFIC_SECRET*`` lines of RFC 8446 §7.1).  tshark reads
  it through the ``tls.keylog_file`` preference (``-o tls.keylog_file:PATH``, tshark(1)
  ``-o``, wireshark "TLS" preferences).  Either end's key log decrypts its own connections;
  the server's decrypts all of them.
* **secrets embedded in the capture** — ``editcap --inject-secrets tls,KEYS in.pcapng
  out.pcapng`` (editcap(1)) stores the key log in a pcapng Decryption Secrets Block (DSB,
  pcapng spec §4.7, secrets type ``0x544c534b`` "TLSK").  tshark uses it with no option at
  all: the capture is self-contained.
* **the server's RSA private key** (``rsa_key=PATH``) — ``-o 'uat:rsa_keys:"PATH",""'``
  (the "RSA keys" table of the TLS preferences).  It only works for TLS ≤ 1.2 sessions with
  *RSA key exchange* (``TLS_RSA_WITH_…`` suites), where the client encrypts the premaster
  secret with the server's public key (RFC 5246 §7.4.7.1).  With ECDHE/DHE the key only
  signs an ephemeral Diffie-Hellman share (RFC 8422 §2, RFC 5246 §7.4.3) and TLS 1.3 has
  no RSA key exchange at all (RFC 8446 §1.2): the server key cannot decrypt those — forward
  secrecy.

:func:`tls_sessions` makes one row per TLS session (per TCP connection carrying TLS) from
``tshark -T fields`` output (the ``tls.record.*`` and ``tls.handshake.*`` fields of tshark
4.0, see ``tshark -G fields``), says whether it was decrypted, and why or why not.
"""
from __future__ import annotations

import functools
import mmap
import os
import re
import struct
import subprocess
from dataclasses import dataclass, field

import pandas as pd

from labkit.analysis.pcapfile import open_capture, warn_all
from labkit.analysis.tshark import AGG, fields_frame, tshark_path
from labkit.errors import CaptureError

SIP_TLS_PORT = 5061  # RFC 3261 §19.1.2 ("sips" default port); tshark's sip.tls.port preference

# NSS key log labels (https://firefox-source-docs.mozilla.org/security/nss/legacy/key_log_format/,
# RFC 8446 §7.1 for the TLS 1.3 secrets); PMS_CLIENT_RANDOM is Wireshark's own extension.
KEYLOG_LABELS = frozenset({
    "CLIENT_RANDOM", "RSA", "PMS_CLIENT_RANDOM", "CLIENT_EARLY_TRAFFIC_SECRET",
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0", "EARLY_EXPORTER_SECRET", "EXPORTER_SECRET"})
_KEYLOG_LINE = re.compile(r"^([A-Z_0-9]+) ([0-9A-Fa-f]+) ([0-9A-Fa-f]+)$")

DSB_BLOCK = 0x0000000A    # pcapng Decryption Secrets Block
DSB_TLS = 0x544C534B      # "TLSK": the secrets are an NSS key log

COLUMNS = ["session", "client", "client_port", "server", "server_port", "first_frame", "start_rel",
           "version", "cipher_suite", "key_exchange", "forward_secrecy", "sni", "records_c2s", "records_s2c",
           "app_bytes_c2s", "app_bytes_s2c", "alerts", "inner_protocol", "client_random", "in_keylog",
           "decrypted", "why"]

_VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}


# ----------------------------------------------------------------------------- key material

@dataclass(frozen=True)
class KeyLog:
    """What a key log holds: where it comes from, its valid lines per label, the client
    randoms it has secrets for (lower-case hex), and how many lines were not key log lines."""
    source: str
    lines: int
    labels: dict = field(default_factory=dict)
    client_randoms: frozenset = frozenset()
    bad_lines: int = 0

    @property
    def kinds(self) -> str:
        """Which TLS versions the lines are for, as a student reads it."""
        v = []
        if self.labels.get("CLIENT_RANDOM") or self.labels.get("RSA") or self.labels.get("PMS_CLIENT_RANDOM"):
            v.append("TLS 1.2")
        if any(k.endswith("TRAFFIC_SECRET_0") or "HANDSHAKE" in k for k in self.labels):
            v.append("TLS 1.3")
        return " and ".join(v) or "no usable"


def parse_keylog(text: str, source: str) -> KeyLog:
    """Count the NSS key log lines of ``text`` (comments ``#`` and blank lines skipped)."""
    labels: dict[str, int] = {}
    randoms = set()
    good = bad = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _KEYLOG_LINE.match(line)
        if m and m.group(1) in KEYLOG_LABELS:
            good += 1
            labels[m.group(1)] = labels.get(m.group(1), 0) + 1
            if m.group(1) != "RSA":  # "RSA <first 8 bytes of the encrypted premaster> <premaster>"
                randoms.add(m.group(2).lower())
        else:
            bad += 1
    return KeyLog(source, good, labels, frozenset(randoms), bad)


def read_keylog(path) -> KeyLog:
    """Check that ``path`` is an NSS key log and return what it holds.

    tshark itself says nothing about a key log it cannot use (no warning, no exit code): it
    just decrypts nothing.  So a missing, empty or wrong file is refused here, with the likely
    mix-up named.
    """
    path = os.fspath(path)
    what = "the TLS key log"
    if not os.path.exists(path):
        raise CaptureError(f"{what} {path} does not exist.",
                           cause="a wrong path, or the program never wrote one (SSLKEYLOGFILE unset, "
                                 "keylog.so not preloaded)",
                           hint="give the file named by SSLKEYLOGFILE when the phone or the PBX ran "
                                "(e.g. runs/<lab>/keys/keys.asterisk)")
    if os.path.isdir(path):
        raise CaptureError(f"{what} {path} is a directory.", hint="name the key log file inside it")
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError as e:
        raise CaptureError(f"{what} {path} cannot be read: {e.strerror}.",
                           cause="key logs are written with mode 0600 by the user the program ran as",
                           hint=f"read it as that user or root, or copy it: sudo cp {path} . && "
                                f"sudo chown $USER {os.path.basename(path)}") from e
    if not data.strip():
        raise CaptureError(f"{what} {path} is empty: it holds no secret.",
                           cause="no TLS connection was made while it was being written, or the program "
                                 "has its own key log callback (then SSLKEYLOGFILE is ignored)",
                           hint="make the TLS connection (register the phone) with SSLKEYLOGFILE set, "
                                "then replay the capture of that run")
    head = data[:4]
    if head in (b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1"):
        raise CaptureError(f"{what} {path} is a capture file, not a key log.",
                           hint="give the capture as FILE and the key log after --tls-keylog")
    text = data.decode("utf-8", "replace")
    if "-----BEGIN" in text:
        raise CaptureError(f"{what} {path} is a PEM file (a certificate or a private key), not a key log.",
                           cause="a key log holds per-session secrets (CLIENT_RANDOM … lines); a "
                                 "server's private key is something else",
                           hint="a TLS 1.2 server key with RSA key exchange goes to --tls-rsa-key "
                                "(tls_rsa_key=); for ECDHE and TLS 1.3 only a key log decrypts")
    log = parse_keylog(text, path)
    if log.lines == 0:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
        raise CaptureError(f"{what} {path} is not a key log: none of its lines looks like "
                           f"'CLIENT_RANDOM <64 hex> <96 hex>' (first line: {first[:60]!r}).",
                           cause="another file was given (a SIP log, a certificate, a config file)",
                           hint="the NSS key log format: one 'LABEL CLIENT_RANDOM SECRET' line per "
                                "secret, as written through SSLKEYLOGFILE or the kit's keylog.so")
    return log


def embedded_secrets(pcap) -> KeyLog | None:
    """The TLS key log embedded in a pcapng by ``editcap --inject-secrets`` (DSB blocks),
    or None.  Only block headers are read (mmap), so this is cheap even on a big file."""
    path = os.fspath(pcap)
    f, fmt, _ = open_capture(path)
    with f:
        if fmt != "pcapng":
            return None  # classic pcap has no place for secrets
        size = os.fstat(f.fileno()).st_size
        if size < 12:
            return None
        chunks = []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            p, endian = 0, "<"
            while p + 12 <= size:
                if m[p:p + 4] == b"\x0a\x0d\x0d\x0a":
                    endian = "<" if m[p + 8:p + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                btype, blen = struct.unpack_from(endian + "II", m, p)
                if blen < 12 or blen % 4 or p + blen > size:
                    break  # damaged or cut: what came before is all there is
                if btype == DSB_BLOCK and blen >= 20:
                    stype, slen = struct.unpack_from(endian + "II", m, p + 8)
                    if stype == DSB_TLS:
                        chunks.append(bytes(m[p + 16:p + 16 + min(slen, blen - 20)]))
                p += blen
    if not chunks:
        return None
    return parse_keylog(b"\n".join(chunks).decode("utf-8", "replace"), "embedded in the capture (pcapng DSB)")


# DER encodings of the algorithm OIDs of a PKCS#8 PrivateKeyInfo (RFC 5208 §5)
_OID_RSA = bytes.fromhex("06092a864886f70d010101")     # 1.2.840.113549.1.1.1 rsaEncryption
_OID_EC = bytes.fromhex("06072a8648ce3d0201")           # 1.2.840.10045.2.1 id-ecPublicKey
_OID_ED = (bytes.fromhex("06032b6570"), bytes.fromhex("06032b6571"))  # Ed25519, Ed448 (RFC 8410)


def check_rsa_key(path) -> str:
    """Check that ``path`` is an unencrypted PEM RSA private key (what tshark's "RSA keys"
    table loads); return it as an absolute path.  An EC key is refused with the lesson: an
    ECDSA certificate means ECDHE, which no server key can decrypt."""
    path = os.path.abspath(os.fspath(path))
    what = "the server's RSA key"
    if not os.path.isfile(path):
        raise CaptureError(f"{what} {path} does not exist." if not os.path.exists(path)
                           else f"{what} {path} is not a file.",
                           hint="give the server's private key file (e.g. tlsprivatekey= of sip.conf, "
                                "priv_key_file= of pjsip.conf)")
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise CaptureError(f"{what} {path} cannot be read: {e.strerror}.",
                           cause="a private key is mode 0600, readable by its owner only (as it should)",
                           hint="run as root or as the key's owner") from e
    text = data.decode("ascii", "replace")
    m = re.search(r"-----BEGIN ((?:RSA |EC |ENCRYPTED |OPENSSH )?PRIVATE KEY)-----(.*?)-----END", text, re.S)
    if not m:
        raise CaptureError(f"{what} {path} holds no PEM private key.",
                           cause="a certificate, a key log or a PKCS#12 file was given",
                           hint="give the PEM key ('-----BEGIN PRIVATE KEY-----'); from a .p12: "
                                "openssl pkcs12 -in server.p12 -nocerts -nodes -out server.key")
    kind = m.group(1)
    algo = "RSA" if kind == "RSA PRIVATE KEY" else "EC" if kind == "EC PRIVATE KEY" else ""
    if kind in ("ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY"):
        raise CaptureError(f"{what} {path} is {'password-protected' if 'ENC' in kind else 'an OpenSSH key'}: "
                           "tshark reads unencrypted PEM keys only.",
                           hint=f"openssl pkey -in {path} -out server-plain.key (keep it private)")
    if not algo:
        import base64
        try:
            der = base64.b64decode("".join(m.group(2).split()), validate=False)
        except ValueError:
            der = b""
        algo = ("RSA" if _OID_RSA in der[:40] else "EC" if _OID_EC in der[:40]
                else "EdDSA" if any(o in der[:20] for o in _OID_ED) else "")
    if algo != "RSA":
        raise CaptureError(f"{what} {path} is an {algo or 'unknown'} key, not an RSA key.",
                           cause="only RSA key exchange (TLS_RSA_WITH_… suites, TLS ≤ 1.2) carries the "
                                 "premaster secret encrypted with the server's key; a server with an "
                                 f"{algo or 'non-RSA'} certificate always uses (EC)DHE, which its key cannot "
                                 "decrypt (forward secrecy)",
                           hint="decrypt with a key log instead: --tls-keylog KEYS / tls_keylog=")
    if '"' in path or "\\" in path:
        raise CaptureError(f"{what} path {path!r} contains a quote or a backslash, which tshark's "
                           "RSA keys table cannot take.", hint="copy the key to a plain file name")
    return path


@dataclass(frozen=True)
class TlsKeys:
    """Everything given to tshark to decrypt TLS, already checked."""
    keylog: KeyLog | None = None      # from a file given by the caller
    keylog_path: str | None = None
    rsa_key: str | None = None
    ports: tuple = ()                 # extra TCP ports carrying TLS (and SIP inside)

    def tshark_args(self) -> tuple[list[str], list[str]]:
        """(decode_as, extra options) for :func:`labkit.analysis.tshark.fields_frame`.

        On a port other than 5061, tshark's TCP heuristic finds TLS by itself (``-d
        tcp.port==P,tls`` forces it when the handshake is missing), but it does not know
        that SIP runs inside: SIP registers only 5061 (``sip.tls.port``), hence ``-d
        tls.port==P,sip``.
        """
        decode, extra = [], []
        for p in self.ports:
            if int(p) != SIP_TLS_PORT:
                decode += [f"tcp.port=={int(p)},tls", f"tls.port=={int(p)},sip"]
        if self.keylog_path:
            extra += ["-o", f"tls.keylog_file:{self.keylog_path}"]
        if self.rsa_key:
            extra += ["-o", f'uat:rsa_keys:"{self.rsa_key}",""']
        return decode, extra

    @property
    def given(self) -> bool:
        return bool(self.keylog_path or self.rsa_key)


def tls_keys(keylog=None, rsa_key=None, ports=()) -> TlsKeys:
    """Check the key material a caller gave (see :func:`read_keylog`, :func:`check_rsa_key`)."""
    log = read_keylog(keylog) if keylog is not None else None
    return TlsKeys(log, os.path.abspath(os.fspath(keylog)) if keylog is not None else None,
                   check_rsa_key(rsa_key) if rsa_key is not None else None,
                   tuple(int(p) for p in ports))


# ----------------------------------------------------------------------------- tshark names

@functools.lru_cache(maxsize=1)
def _value_names() -> dict[str, dict[int, str]]:
    """tshark's own names for cipher suites, groups and alerts (``tshark -G values``), so a
    suite reads ``TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`` (the IANA name) and not 0xc02c."""
    want = {"tls.handshake.ciphersuite", "tls.handshake.extensions_key_share_group", "tls.alert_message.desc"}
    out: dict[str, dict[int, str]] = {k: {} for k in want}
    try:
        text = subprocess.run([tshark_path(), "-G", "values"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError, CaptureError):
        return out
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "V" and parts[1] in want:
            try:
                out[parts[1]][int(parts[2], 0)] = parts[3]
            except ValueError:
                continue
    return out


def _name(kind: str, value: int) -> str:
    return _value_names()[kind].get(value, f"0x{value:04x}")


def key_exchange(cipher_suite: str, group: str = "") -> str:
    """The key exchange of a suite, from its IANA name (RFC 5246 App. A.5, RFC 8422 §6):
    ``TLS_RSA_WITH_…`` → RSA, ``TLS_ECDHE_ECDSA_WITH_…`` → ECDHE, ``TLS_DHE_RSA_WITH_…`` → DHE.
    TLS 1.3 suites (``TLS_AES_256_GCM_SHA384``, RFC 8446 §B.4) name no key exchange: it is
    always (EC)DHE (or PSK), read from the key_share group (``x25519`` → ECDHE, ``ffdhe*`` → DHE).
    """
    if not cipher_suite or cipher_suite.startswith("0x"):
        return ""
    if "_WITH_" not in cipher_suite:
        if not group:
            return "(EC)DHE"
        return "DHE" if group.lower().startswith("ffdhe") else "ECDHE"
    kx = cipher_suite.removeprefix("TLS_").removeprefix("SSL_").split("_WITH_")[0]
    for prefix, name in (("ECDHE", "ECDHE"), ("DHE", "DHE"), ("ECDH_", "ECDH"), ("DH_", "DH"),
                         ("RSA_PSK", "RSA_PSK"), ("RSA", "RSA"), ("PSK", "PSK"), ("SRP", "SRP")):
        if kx.startswith(prefix):
            return name
    return kx


def _ints(cell: str) -> list[int]:
    out = []
    for x in cell.replace(AGG, ",").split(","):
        x = x.strip()
        if x:
            try:
                out.append(int(x, 0))
            except ValueError:
                continue
    return out


def _strs(cell: str) -> list[str]:
    return [x for x in cell.replace(AGG, ",").split(",") if x]


# ----------------------------------------------------------------------------- sessions

FIELDS = ["frame.number", "frame.time_relative", "tcp.stream", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
          "tcp.srcport", "tcp.dstport", "frame.protocols", "tls.record.content_type", "tls.record.opaque_type",
          "tls.record.length", "tls.handshake.type", "tls.handshake.version",
          "tls.handshake.extensions.supported_version", "tls.handshake.ciphersuite",
          "tls.handshake.extensions_server_name", "tls.handshake.random",
          "tls.handshake.extensions_key_share_group", "tls.alert_message.desc"]


def empty_sessions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def tls_sessions(pcap, keylog=None, rsa_key=None, *, tls_ports=(), timeout: float = 300.0) -> pd.DataFrame:
    """One row per TLS session (TCP connection carrying TLS) of ``pcap``.

    Columns: ``session`` (tshark's ``tcp.stream``), ``client``/``client_port`` (who sent the
    ClientHello), ``server``/``server_port``, ``first_frame``, ``start_rel`` (s from the
    first packet), ``version`` (from the ServerHello: its supported_versions extension for
    TLS 1.3, RFC 8446 §4.2.1, else its version field), ``cipher_suite`` (IANA name chosen in
    the ServerHello), ``key_exchange`` (from the suite, see :func:`key_exchange`),
    ``forward_secrecy``, ``sni`` (server_name of the ClientHello, RFC 6066 §3; empty when the
    client connected by address), ``records_c2s``/``records_s2c`` (TLS records each way),
    ``app_bytes_c2s``/``app_bytes_s2c`` (bytes of records whose type *on the wire* is
    application_data — in TLS 1.3 that includes the encrypted handshake, whose outer type is
    always 23, RFC 8446 §5.2), ``alerts`` (alert descriptions tshark could read: plaintext
    ones, or decrypted), ``inner_protocol`` (what tshark found inside, e.g. ``sip``),
    ``client_random`` (hex, the key a key log is indexed by), ``in_keylog`` (the key log or the
    embedded secrets have a line for it), ``decrypted`` and ``why``.

    ``decrypted`` means tshark showed the Finished message (handshake type 20): it is the
    first message protected by the negotiated keys in both TLS 1.2 (RFC 5246 §7.4.9) and 1.3
    (RFC 8446 §4.4.4), so tshark can only show it once it holds the keys.

    ``keylog``/``rsa_key``: see the module docstring; secrets embedded in a pcapng are
    always used.  ``tls_ports``: TCP ports to decode as TLS besides tshark's detection.
    ``df.attrs``: ``warnings``, ``keylog`` and ``embedded`` (:class:`KeyLog` or None),
    ``rsa_key``.  Raises :class:`~labkit.errors.CaptureError` for an unreadable capture, key
    log or key.
    """
    f, _fmt, _ = open_capture(pcap)
    f.close()
    keys = tls_keys(keylog, rsa_key, tls_ports)
    embedded = embedded_secrets(pcap)
    decode, extra = keys.tshark_args()
    raw, warnings = fields_frame(pcap, FIELDS, display_filter="tls", decode_as=decode, extra=extra,
                                 timeout=timeout, stderr_warnings=keys.given)
    warn_all(warnings)
    out = _sessions(raw, keys, embedded)
    out.attrs.update(warnings=warnings, keylog=keys.keylog, embedded=embedded, rsa_key=keys.rsa_key)
    return out


def _sessions(raw: pd.DataFrame, keys: TlsKeys, embedded: KeyLog | None) -> pd.DataFrame:
    if raw.empty:
        return empty_sessions()
    randoms = set()
    for log in (keys.keylog, embedded):
        if log is not None:
            randoms |= log.client_randoms
    rows = []
    raw = raw.assign(**{"tcp.stream": raw["tcp.stream"].str.split(AGG).str[0]})
    for stream, g in raw.groupby("tcp.stream", sort=False):
        if not stream.isdigit():
            continue
        s = {"session": int(stream), "first_frame": int(g["frame.number"].iloc[0]),
             "start_rel": float(g["frame.time_relative"].iloc[0] or "nan")}
        hs_types = [_ints(c) for c in g["tls.handshake.type"]]
        first = lambda col, g=g: g[col].str.split(AGG).str[0]  # the outer header when tunnelled
        src = first("ip.src").where(first("ip.src") != "", first("ipv6.src"))
        dst = first("ip.dst").where(first("ip.dst") != "", first("ipv6.dst"))
        sport = pd.to_numeric(first("tcp.srcport"), errors="coerce").fillna(0).astype(int)
        dport = pd.to_numeric(first("tcp.dstport"), errors="coerce").fillna(0).astype(int)
        ch = [i for i, t in enumerate(hs_types) if 1 in t]
        sh = [i for i, t in enumerate(hs_types) if 2 in t]
        # the client sent the ClientHello; without a handshake, the server has the lower port
        i = ch[0] if ch else sh[0] if sh else 0
        sender, receiver = (src.iloc[i], int(sport.iloc[i])), (dst.iloc[i], int(dport.iloc[i]))
        client_sent = bool(ch) or (not sh and sender[1] > receiver[1])
        client, server = (sender, receiver) if client_sent else (receiver, sender)
        s.update(client=client[0], client_port=int(client[1]), server=server[0], server_port=int(server[1]))
        version = cipher = group = sni = crandom = ""
        if ch:
            row = g.iloc[ch[0]]
            sni = _strs(row["tls.handshake.extensions_server_name"])[:1]
            sni = sni[0] if sni else ""
            crandom = (row["tls.handshake.random"].split(AGG)[0].split(",")[0]).replace(":", "").lower()
        if sh:
            row = g.iloc[sh[0]]
            sv, hv = _ints(row["tls.handshake.extensions.supported_version"]), _ints(row["tls.handshake.version"])
            v = sv[0] if sv else (hv[0] if hv else 0)
            version = _VERSIONS.get(v, f"0x{v:04x}" if v else "")
            cs = _ints(row["tls.handshake.ciphersuite"])
            cipher = _name("tls.handshake.ciphersuite", cs[0]) if cs else ""
            grp = _ints(row["tls.handshake.extensions_key_share_group"])
            group = _name("tls.handshake.extensions_key_share_group", grp[0]) if grp else ""
        kx = key_exchange(cipher, group)
        c2s = ((src == client[0]) & (sport == client[1])).to_numpy()
        rec = {True: 0, False: 0}
        app = {True: 0, False: 0}
        for k, (ct, op, ln) in enumerate(zip(g["tls.record.content_type"], g["tls.record.opaque_type"],
                                             g["tls.record.length"])):
            lengths, opaque, types = _ints(ln), _ints(op), _ints(ct)
            n, no = len(lengths), len(opaque)
            # TLS 1.3 encrypted records have an outer (opaque) type, always 23 (RFC 8446 §5.2);
            # tshark lists content_type only for plaintext records, or the inner type once
            # decrypted.  Plaintext records (ClientHello, ServerHello, CCS) come first.
            outer = types[:n - no] + [23] * no
            rec[bool(c2s[k])] += n
            app[bool(c2s[k])] += sum(ln_ for t, ln_ in zip(outer, lengths) if t == 23)
        alerts = []
        for c in g["tls.alert_message.desc"]:
            for a in _ints(c):
                name = _name("tls.alert_message.desc", a)
                if name not in alerts:
                    alerts.append(name if not name.startswith("0x") else str(a))
        inner = []
        for p in g["frame.protocols"]:
            after = p.split(":tls:", 1)[1].split(":")[0] if ":tls:" in p else ""
            if after and not after.startswith(("x509", "pkcs", "pkix")) and after not in inner:
                inner.append(after)
        decrypted = any(20 in t for t in hs_types)
        s.update(version=version, cipher_suite=cipher, key_exchange=kx,
                 forward_secrecy=kx in ("ECDHE", "DHE", "(EC)DHE"), sni=sni,
                 records_c2s=rec[True], records_s2c=rec[False], app_bytes_c2s=app[True], app_bytes_s2c=app[False],
                 alerts=", ".join(alerts), inner_protocol=":".join(inner), client_random=crandom,
                 in_keylog=bool(crandom) and crandom in randoms, decrypted=decrypted)
        s["why"] = _why(s, keys, embedded, handshake=bool(ch), server_hello=bool(sh))
        rows.append(s)
    if not rows:
        return empty_sessions()
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("first_frame").reset_index(drop=True)


def _why(s: dict, keys: TlsKeys, embedded: KeyLog | None, *, handshake: bool, server_hello: bool) -> str:
    """Why a session was, or was not, decrypted — one sentence, the lesson first."""
    kx, logs = s["key_exchange"], keys.keylog is not None or embedded is not None
    in_file = keys.keylog is not None and s["client_random"] in keys.keylog.client_randoms
    in_dsb = embedded is not None and s["client_random"] in embedded.client_randoms
    source = "the key log" if in_file else "the secrets embedded in the capture" if in_dsb else ""
    if s["decrypted"]:
        if source:
            return f"decrypted with {source}"
        if keys.rsa_key and kx == "RSA":
            return "RSA key exchange decrypted with the server key"
        return "decrypted with keys from tshark's own preferences"
    if not handshake:
        return "handshake not in the capture: no key can be matched to the session (capture from the start)"
    if not server_hello:
        alert = f" (alert: {s['alerts']})" if s["alerts"] else ""
        return f"the handshake did not complete{alert}: nothing was encrypted with session keys"
    if s["in_keylog"]:
        return "the key log has this session's client random but its secrets do not decrypt it"
    if keys.rsa_key:
        if kx == "RSA":
            return "RSA key exchange, but the key given is not this server's key"
        return f"{kx or 'this key exchange'}: the server key cannot decrypt it (forward secrecy)"
    if logs:
        which = "the key log" if keys.keylog is not None else "the embedded secrets"
        return f"{which} has no secrets for this session (its client random is not in it)"
    if kx == "RSA":
        return "no key log (RSA key exchange: the server's private key would decrypt it too)"
    return "no key log"


# ----------------------------------------------------------------------------- words for a report

def ports_text(sessions: pd.DataFrame) -> str:
    """"5061 (2 sessions), 5062 (1 session)" — the server ports."""
    parts = []
    for port, n in sessions["server_port"].value_counts(sort=False).sort_index().items():
        parts.append(f"{port} ({n} session{'s' if n != 1 else ''})")
    return ", ".join(parts)


def summary(sessions: pd.DataFrame, pcap: str = "FILE", *, sip_rows: int = 0) -> list[str]:
    """Sentences about the TLS of a capture for ``report.md`` and the terminal: how many
    sessions and records on which ports, how many decrypted with what, and — when some are
    not — that the SIP inside is unreadable and exactly how to decrypt it.  Lines starting
    with two spaces detail the previous one; lines starting with ``$ `` are commands."""
    if sessions is None or sessions.empty:
        return []
    n = len(sessions)
    recs = int(sessions["records_c2s"].sum() + sessions["records_s2c"].sum())
    dec = int(sessions["decrypted"].sum())
    log, emb, rsa = (sessions.attrs.get(k) for k in ("keylog", "embedded", "rsa_key"))
    plural = lambda k, word: f"{k} {word}{'s' if k != 1 else ''}"
    many = sessions["server_port"].nunique() > 1
    lines = [f"TLS: {plural(n, 'session')}, {recs} records, server port{'s' if many else ''} "
             f"{ports_text(sessions)}."]
    means = []
    if log is not None:
        means.append(f"this key log ({os.path.basename(log.source)}: {plural(log.lines, 'line')}, {log.kinds})")
    if emb is not None:
        means.append(f"the secrets embedded in the capture ({plural(emb.lines, 'key log line')})")
    if rsa:
        means.append(f"the server key {os.path.basename(rsa)}")
    if means:
        lines.append(f"{dec} of {n} TLS sessions decrypted with {' and '.join(means)}.")
    else:
        lines.append(f"{dec} of {n} TLS sessions decrypted (no key log given, no secrets embedded in the capture).")
    if dec:
        lines.append(f"The SIP inside the decrypted session{'s' if dec != 1 else ''} is analysed like plain SIP "
                     f"({plural(sip_rows, 'SIP message')} with transport TLS in sip.csv).")
    if dec < n:
        which = (f"the other {plural(n - dec, 'session')}" if dec and n - dec > 1 else "the other session" if dec
                 else f"the {plural(n, 'session')}" if n > 1 else "the session")
        lines.append(f"The SIP inside {which} is NOT readable: the capture shows only encrypted TLS records there. "
                     f"Why, per session:")
        for why, k in sessions.loc[~sessions["decrypted"].astype(bool), "why"].value_counts().items():
            lines.append(f"  {k} × {why}")
        stem, ext = os.path.splitext(pcap)
        keyed = f"{stem}.with-keys.pcapng"
        lines += ["To decrypt, give the key log written during that run by the PBX or a phone "
                  "(SSLKEYLOGFILE, keylog.so; the server's decrypts every connection to it):",
                  f"$ labkit replay {pcap} --tls-keylog KEYS",
                  "or embed it in the capture once (the result needs no option, anywhere):",
                  f"$ editcap --inject-secrets tls,KEYS {pcap} {keyed}"]
        if not rsa and (sessions["key_exchange"] == "RSA").any():
            lines += ["A TLS 1.2 session with RSA key exchange also opens with the server's private key:",
                      f"$ labkit replay {pcap} --tls-rsa-key SERVER.key"]
    return lines


def to_markdown(lines: list[str]) -> list[str]:
    """:func:`summary` lines as Markdown: bullets, details nested, commands as code."""
    out = []
    for x in lines:
        if x.startswith("$ "):
            out.append(f"  - `{x[2:]}`")
        elif x.startswith("  "):
            out.append(f"  - {x.strip()}")
        else:
            out.append(f"- {x}")
    return out


def to_text(lines: list[str], indent: str = "  ") -> list[str]:
    """:func:`summary` lines for a terminal: commands indented like a shell example."""
    return [f"{indent}    {x[2:]}" if x.startswith("$ ") else f"{indent}{x}" for x in lines]
