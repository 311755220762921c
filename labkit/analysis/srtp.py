"""SRTP in a capture: which RTP streams are encrypted, which SDES key opens each, and the audio inside.

SRTP (RFC 3711) encrypts the RTP payload with AES in counter mode and appends an HMAC-SHA1
authentication tag; the RTP header stays in clear text (§3.1).  So a capture still shows every
stream, its sequence numbers and timestamps — loss and jitter are measured exactly as for RTP —
but the payload is noise: close to 8 bits of entropy per byte, where G.711 speech measures 6 to
7 (:func:`entropy`, :func:`looks_encrypted`), and tshark has nothing to decode.

Where the keys are:

* **SDES** (RFC 4568): each side writes its own master key into its SDP,
  ``a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<base64 of key‖salt>[|lifetime][|MKI:length]``
  (grammar §9.1, §9.2).  The key in the SDP a side *sends* protects the RTP that side *sends*
  (offer/answer, §5.1): a two-party call has two keys, and a call through Asterisk four — each
  leg is an offer/answer of its own and Asterisk decrypts and re-encrypts in between.  The SDP
  rides in the SIP message, so over UDP or TCP whoever captures the signalling reads the keys and
  decrypts the media (the reason §8.1 wants the SDP protected); over TLS only whoever
  holds the TLS keys can (:mod:`labkit.analysis.tls`).
* **DTLS-SRTP** (RFC 5764): the SDP says ``UDP/TLS/RTP/SAVP`` and carries a certificate
  fingerprint only; the keys are exported from a DTLS handshake made on the media ports
  themselves (§4.2) and never appear in any capture.  Nothing here can decrypt that.

:func:`parse_crypto` and :func:`parse_key` read keys (a problem is a
:class:`~labkit.errors.CaptureError` that says what to do); :func:`sdes_keys` lists every key of a
SIP table; :func:`srtp_decrypt` finds which streams are SRTP, matches keys to streams (the SDP's
``c=``/``m=`` address:port is the stream's source, call by call, leg by leg), decrypts each with
pylibsrtp — libsrtp, the library of baresip and of Asterisk's res_srtp — and counts what a receiver
would throw away: **authentication failures** (a wrong key, or a packet modified on the way: the
HMAC exists for that, RFC 3711 §4.2) and **replays** (a packet index already received, §3.3.2).
The plaintext RTP it returns goes to :func:`~labkit.analysis.decode_stream` like any capture.

Only the two suites every SDES phone offers are decrypted: ``AES_CM_128_HMAC_SHA1_80`` and
``AES_CM_128_HMAC_SHA1_32`` (RFC 4568 §6.2.1, §6.2.2; a 30-byte key‖salt = a 128-bit master key and
a 112-bit master salt, RFC 3711 §4.1.1 and §4.3).  A master key index (MKI, RFC 3711 §3.1) announced
in the SDP is removed from each packet before libsrtp sees it (it is not authenticated).
"""
from __future__ import annotations

import base64
import binascii
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from labkit.errors import CaptureError

KEY_LEN, SALT_LEN = 16, 14  # RFC 3711 §4.1.1/§4.3: 128-bit master key, 112-bit master salt

#: The suites decrypted here: (pylibsrtp profile, authentication tag bytes), RFC 4568 §6.2.
SUITES = {
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 10),
    "AES_CM_128_HMAC_SHA1_32": (Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 4),
}

#: Registered SDES suites the kit does not decrypt, and what they are.
OTHER_SUITES = {
    "F8_128_HMAC_SHA1_80": "AES in f8 mode (RFC 4568 §6.2.3), which pylibsrtp does not offer",
    "AES_192_CM_HMAC_SHA1_80": "AES-192 counter mode (RFC 6188)",
    "AES_192_CM_HMAC_SHA1_32": "AES-192 counter mode (RFC 6188)",
    "AES_256_CM_HMAC_SHA1_80": "AES-256 counter mode (RFC 6188)",
    "AES_256_CM_HMAC_SHA1_32": "AES-256 counter mode (RFC 6188)",
    "AEAD_AES_128_GCM": "AES-GCM, authenticated encryption (RFC 7714)",
    "AEAD_AES_256_GCM": "AES-GCM, authenticated encryption (RFC 7714)",
}

#: Fewer payload bytes than this (~25 G.711 packets) and a stream's entropy is not judged.
MIN_ENTROPY_BYTES = 4096
#: How far below the entropy of random bytes ciphertext may measure (see :func:`looks_encrypted`).
ENTROPY_MARGIN = 0.1
#: Payload types whose bytes are samples, not compressed frames (RFC 3551): high entropy there
#: means encryption.  Compressed codecs (Opus, G.729 …) look random on their own.
SAMPLE_CODECS = (0, 8, 10, 11)
TRIAL_PACKETS = 16  # packets tried with each candidate key before choosing one

#: Per-packet outcome in :attr:`SrtpResult.rtp` ``srtp_status``.
STATUSES = ["plain", "decrypted", "authentication failure", "replay", "error", "encrypted"]
PLAIN, DECRYPTED, AUTH, REPLAY, ERROR, ENCRYPTED = range(6)

COLUMNS = ["stream", "src", "sport", "dst", "dport", "ssrc", "ssrc_hex", "direction", "call_id",
           "payload_type", "packets", "sdp_proto", "srtp", "evidence", "entropy", "suite", "key",
           "key_source", "decrypted", "auth_failures", "replay_failures", "other_failures",
           "entropy_decrypted", "why"]

KEY_COLUMNS = ["frame", "time", "call_id", "message", "src", "sport", "addr", "port", "proto", "tag",
               "suite", "inline", "lifetime", "mki", "error"]


# ----------------------------------------------------------------------------- keys

@dataclass(frozen=True)
class SdesKey:
    """One SRTP master key and salt, as SDES carries it (RFC 4568 §6.1).

    ``suite`` is None for a key given without one (``--srtp-key inline:…``): both AES_CM_128
    suites share the key format, so both are tried.  ``ssrc`` pins the key to one stream.
    ``source`` says where it came from, for reports.
    """
    key: bytes = field(repr=False)
    suite: str | None = None
    tag: int | None = None
    lifetime: int | None = None
    mki: int | None = None
    mki_len: int = 0
    ssrc: int | None = None
    source: str = ""

    @property
    def inline(self) -> str:
        """The key as an SDP writes it: ``inline:`` and the base64 of key‖salt."""
        return "inline:" + base64.b64encode(self.key).decode()

    @property
    def short(self) -> str:
        """The first characters of the key, enough to tell keys apart in a table."""
        return self.inline[:19] + "…"

    def suites(self) -> list[str]:
        return [self.suite] if self.suite else list(SUITES)

    def session(self, suite: str | None = None) -> Session:
        """A fresh libsrtp receiving session for this key.  Its SSRC is a wildcard: libsrtp makes
        the cryptographic context of a stream when its first packet comes (RFC 3711 §3.2.3)."""
        profile = SUITES[suite or self.suites()[0]][0]
        return Session(Policy(key=self.key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))


def _where(text: str, source: str) -> str:
    return f"{source}: " if source else ""


def _check_suite(suite: str, text: str, source: str) -> str:
    name = suite.upper()
    if name in SUITES:
        return name
    where = _where(text, source)
    if name in OTHER_SUITES:
        raise CaptureError(f"{where}crypto-suite {suite} is not one the kit decrypts: only "
                           f"{' and '.join(SUITES)}.",
                           cause=f"{suite} is {OTHER_SUITES[name]}; pylibsrtp is used here with the two "
                                 "AES_CM_128 suites every SDES phone offers (RFC 4568 §6.2)",
                           hint="make the phones offer AES_CM_128_HMAC_SHA1_80 (baresip's srtp module and "
                                "Asterisk's res_srtp offer it first by default), then capture again")
    raise CaptureError(f"{where}{suite!r} is not an SRTP crypto-suite.",
                       cause="a typo, or something else than the suite was copied (RFC 4568 §9.1: "
                             "a=crypto:<tag> <crypto-suite> inline:<key>)",
                       hint=f"the kit decrypts {' and '.join(SUITES)}; copy the suite name from the a=crypto line")


def _decode_key(b64: str, suite: str | None, text: str, source: str) -> bytes:
    where = _where(text, source)
    need = KEY_LEN + SALT_LEN
    clean = b64.strip()
    try:
        if not clean or not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", clean):
            raise binascii.Error("characters outside the base64 alphabet")
        if len(clean) % 4:
            raise binascii.Error(f"{len(clean)} characters, and base64 comes in groups of 4")
        key = base64.b64decode(clean, validate=True)
    except (binascii.Error, ValueError) as e:
        bad = "".join(sorted({c for c in clean if not (c.isalnum() or c in "+/=")}))
        raise CaptureError(f"{where}the SRTP key {clean[:48]!r} is not valid base64"
                           + (f" (it contains {bad!r})" if bad else f" ({e})") + ".",
                           cause="the key was cut or mangled when copied: an SDES key is the base64 of "
                                 f"{need} bytes, {math.ceil(need / 3) * 4} characters after inline: "
                                 "(RFC 4568 §6.1)",
                           hint="copy everything after 'inline:' up to the first '|' or the end of the "
                                "a=crypto line (sip.csv, column sdp_crypto_keys, has it whole)") from e
    if len(key) != need:
        suite_txt = suite or "AES_CM_128_HMAC_SHA1_80/32"
        raise CaptureError(f"{where}the SRTP key decodes to {len(key)} bytes; {suite_txt} needs {need} "
                           f"({KEY_LEN}-byte master key + {SALT_LEN}-byte master salt, RFC 3711 §4.1.1).",
                           cause="part of the key is missing or extra characters were copied with it (an "
                                 "AES-256 or GCM key of another suite has another length)",
                           hint=f"an AES_CM_128 key is {math.ceil(need / 3) * 4} base64 characters; copy it "
                                "again from the a=crypto line of the SDP")
    return key


def _lifetime(text: str, full: str, source: str) -> int:
    m = re.fullmatch(r"(?:2\^(\d{1,2})|(\d{1,20}))", text)
    if not m:
        raise CaptureError(f"{_where(full, source)}key lifetime {text!r} is neither '2^N' nor a number.",
                           hint="RFC 4568 §9.2: inline:<key>|2^31 or inline:<key>|1048576, or no lifetime")
    return 2 ** int(m.group(1)) if m.group(1) else int(m.group(2))


def _mki(text: str, full: str, source: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,38}):(\d{1,3})", text)
    if not m or not 1 <= int(m.group(2)) <= 128:
        raise CaptureError(f"{_where(full, source)}MKI {text!r} is not '<value>:<length in bytes 1-128>'.",
                           hint="RFC 4568 §9.2: inline:<key>|2^20|1:4 means MKI 1 carried in 4 bytes")
    value, length = int(m.group(1)), int(m.group(2))
    if value >= 256 ** length:
        raise CaptureError(f"{_where(full, source)}MKI value {value} does not fit in {length} bytes.",
                           hint="RFC 4568 §9.2: <value>:<length>, the value must fit in length bytes")
    return value, length


def _key_params(params: str, suite: str | None, tag: int | None, text: str, source: str,
                ssrc: int | None = None) -> list[SdesKey]:
    """``inline:KEY|lifetime|MKI:len`` (several joined by ';', RFC 4568 §9.1) → keys."""
    keys = []
    for param in params.split(";"):
        param = param.strip()
        method, sep, info = param.partition(":")
        if not sep or method.lower() != "inline":
            raise CaptureError(f"{_where(text, source)}{param[:40]!r} is not an inline: key.",
                               cause="SDES carries the key in the SDP after 'inline:' (RFC 4568 §6.1); "
                                     "another key method cannot be read from a capture",
                               hint="give the value that follows 'inline:' in the a=crypto line, e.g. "
                                    "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz")
        parts = info.split("|")
        key = _decode_key(parts[0], suite, text, source)
        lifetime, mki, mki_len = None, None, 0
        for extra in parts[1:]:
            if ":" in extra:
                mki, mki_len = _mki(extra.strip(), text, source)
            else:
                lifetime = _lifetime(extra.strip(), text, source)
        keys.append(SdesKey(key, suite, tag, lifetime, mki, mki_len, ssrc, source))
    return keys


_CRYPTO = re.compile(r"^\s*(?:a=)?(?:crypto:)?\s*(\d{1,9})\s+(\S+)\s+(\S+)(?:\s+.*)?$", re.I)


def parse_crypto(attr: str, source: str = "") -> list[SdesKey]:
    """The keys of one ``a=crypto`` attribute (RFC 4568 §9.1):
    ``a=crypto:<tag> <crypto-suite> inline:<key‖salt base64>[|lifetime][|MKI:length]``.

    ``attr`` may start with ``a=crypto:``, ``crypto:`` or directly with the tag.  One key per
    ``inline:`` key parameter (several only with distinct MKIs).  Raises
    :class:`~labkit.errors.CaptureError` for an unsupported suite, malformed base64, a key that is
    not 30 bytes, or a malformed lifetime or MKI.
    """
    m = _CRYPTO.match(attr or "")
    if not m:
        raise CaptureError(f"{_where(attr, source)}{(attr or '')[:60]!r} is not an a=crypto attribute.",
                           hint="RFC 4568 §9.1: a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<40 base64 characters>")
    tag, suite, params = int(m.group(1)), m.group(2), m.group(3)
    suite = _check_suite(suite, attr, source)
    return _key_params(params, suite, tag, attr, source)


_SSRC = re.compile(r"^\s*(0x[0-9a-fA-F]{1,16}|\d{1,20})\s*=\s*(.+)$")


def parse_key(text: str, source: str = "--srtp-key") -> SdesKey:
    """A key a person typed (``labkit replay --srtp-key``), in any of these forms::

        inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz          (suite not said: both tried)
        WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4
        AES_CM_128_HMAC_SHA1_32 inline:WVNfX19z…                  (or a whole a=crypto line)
        0x1234ABCD=inline:WVNfX19z…                                (pinned to that SSRC)

    Raises :class:`~labkit.errors.CaptureError` like :func:`parse_crypto`.
    """
    raw = (text or "").strip()
    ssrc = None
    m = _SSRC.match(raw)
    if m:
        ssrc = int(m.group(1), 0)
        if ssrc >= 2**32:
            raise CaptureError(f"{source}: SSRC {m.group(1)} is larger than 32 bits.",
                               hint="give the SSRC as streams.csv shows it (ssrc_hex, e.g. 0x000A11CE)")
        raw = m.group(2).strip()
        source = f"{source} {m.group(1)}="
    if not raw:
        raise CaptureError(f"{source}: no key given.", hint="--srtp-key inline:<40 base64 characters>")
    if _CRYPTO.match(raw):
        keys = parse_crypto(raw, source)
    else:
        words = raw.split()
        suite = None
        if len(words) == 2:
            suite = _check_suite(words[0], raw, source)
            raw = words[1]
        elif len(words) > 2:
            raise CaptureError(f"{source}: {raw[:60]!r} is not a key.",
                               hint="inline:<key>, or '<suite> inline:<key>', or a whole a=crypto line")
        params = raw if raw.lower().startswith("inline:") else "inline:" + raw
        keys = _key_params(params, suite, None, text, source)
    if len(keys) != 1:
        raise CaptureError(f"{source}: {len(keys)} keys in one value.", hint="give each key with its own --srtp-key")
    k = keys[0]
    return SdesKey(k.key, k.suite, k.tag, k.lifetime, k.mki, k.mki_len, ssrc, source)


def _message(r) -> str:
    """"INVITE", "200 OK": the SIP message an SDP came in."""
    if r.is_request:
        return str(r.method)
    if pd.isna(r.status_code):
        return "?"
    return f"{int(r.status_code)} {r.reason or ''}".strip()


def sdes_keys(sip: pd.DataFrame | None) -> pd.DataFrame:
    """Every SDES key in the SDP of a SIP table (column ``sdp_crypto_keys``), one row each.

    Columns: ``frame``, ``time``, ``call_id``, ``message`` (INVITE, 200 …), ``src``/``sport``
    (who sent the SIP message), ``addr``/``port`` (the SDP's ``c=``/``m=``: where that side
    receives — and, with symmetric RTP, sends from), ``proto`` (RTP/SAVP …), ``tag``, ``suite``,
    ``inline`` (the key as written), ``lifetime``, ``mki`` and ``error`` (why the key cannot be
    used, e.g. an unsupported suite; empty when it can).  The key in a side's SDP protects what
    that side sends (RFC 4568 §5.1).
    """
    rows = []
    if sip is None or sip.empty or "sdp_crypto_keys" not in sip:
        return pd.DataFrame(columns=KEY_COLUMNS)
    s = sip[sip["has_sdp"].astype(bool) & (sip["sdp_crypto_keys"].fillna("") != "")]
    for r in s.itertuples():
        msg = _message(r)
        for attr in str(r.sdp_crypto_keys).split(", "):
            m = _CRYPTO.match(attr)
            row = {"frame": int(r.frame), "time": float(r.time), "call_id": r.call_id, "message": msg,
                   "src": str(r.src), "sport": int(r.sport) if pd.notna(r.sport) else None,
                   "addr": str(r.sdp_c_addr or r.src),
                   "port": int(r.sdp_m_port) if pd.notna(r.sdp_m_port) else None, "proto": r.sdp_m_proto,
                   "tag": int(m.group(1)) if m else None, "suite": m.group(2) if m else "",
                   "inline": m.group(3) if m else attr, "lifetime": None, "mki": "", "error": ""}
            try:
                k = parse_crypto(attr, f"SDP of frame {int(r.frame)}")[0]
                row.update(lifetime=k.lifetime, mki=f"{k.mki}:{k.mki_len}" if k.mki_len else "")
            except CaptureError as e:
                row["error"] = e.message
            rows.append(row)
    return pd.DataFrame(rows, columns=KEY_COLUMNS)


# ----------------------------------------------------------------------------- measures

def entropy(data: bytes | np.ndarray) -> float:
    """Shannon entropy of a byte string in bits per byte (0 to 8), from its byte histogram.

    Ciphertext is indistinguishable from random bytes (~8); G.711 audio is not (6–7): that is
    how an SRTP stream shows itself without any key.  NaN for no bytes.
    """
    b = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if len(b) == 0:
        return float("nan")
    c = np.bincount(b, minlength=256)
    p = c[c > 0] / len(b)
    return max(0.0, float(-(p * np.log2(p)).sum()))  # one repeated byte (silence): 0, not -0


def random_entropy(n: int) -> float:
    """What :func:`entropy` gives, on average, for ``n`` random bytes: 8 − 255 / (2 n ln 2) bits/byte
    (the plug-in estimate falls short of 8 by the Miller–Madow bias; 7.82 for 1 KiB, 7.99 for a
    second of G.711 SRTP)."""
    return 8.0 - 255.0 / (2.0 * n * math.log(2)) if n > 0 else float("nan")


def looks_encrypted(h: float, n: int) -> bool:
    """True when ``n`` payload bytes of entropy ``h`` are as random as ciphertext (AES-CM output is
    indistinguishable from random, RFC 3711 §4.1.1): at least :data:`MIN_ENTROPY_BYTES` bytes and
    ``h`` within :data:`ENTROPY_MARGIN` of :func:`random_entropy`.  G.711 never gets there: speech
    and tones measure 6–7 bits/byte and even loud Laplacian noise, the worst case, stays under 7.7.
    Compressed codecs are another matter (see :data:`SAMPLE_CODECS`)."""
    return n >= MIN_ENTROPY_BYTES and h == h and h >= random_entropy(n) - ENTROPY_MARGIN


def _header_len(pkt: bytes) -> int:
    """RTP header length (RFC 3550 §5.1, §5.3.1): 12 + CSRCs + extension."""
    n = 12 + 4 * (pkt[0] & 0x0F)
    if pkt[0] & 0x10 and len(pkt) >= n + 4:
        n += 4 + 4 * ((pkt[n + 2] << 8) | pkt[n + 3])
    return n


def _payload(plain: bytes) -> bytes:
    """The media of a plaintext RTP packet: after the header, before the padding."""
    h = _header_len(plain)
    pad = plain[-1] if plain[0] & 0x20 and len(plain) > h else 0
    return plain[h:len(plain) - pad]


# ----------------------------------------------------------------------------- where the keys are

@dataclass
class _Sdp:
    frame: int
    time: float
    call_id: str
    message: str
    addr: str
    port: int
    proto: str
    keys: list
    errors: list


class _KeyBook:
    """The SDP of a capture by media address: which keys protect what leaves an address."""

    def __init__(self, sip: pd.DataFrame | None):
        self.by_addr: dict[tuple[str, int], list[_Sdp]] = {}
        self.by_call: dict[str, list[_Sdp]] = {}
        if sip is None or sip.empty or "has_sdp" not in sip:
            return
        s = sip[sip["has_sdp"].astype(bool) & sip["sdp_m_port"].notna() & (sip["sdp_m_port"] != 0)]
        for r in s.sort_values("frame").itertuples():
            keys, errors = [], []
            msg = _message(r)
            text = getattr(r, "sdp_crypto_keys", "") or ""
            for attr in (text.split(", ") if text else []):
                m = _CRYPTO.match(attr)
                tag = f"a=crypto:{m.group(1)}" if m else "a=crypto"
                try:
                    keys += parse_crypto(attr, f"SDP of frame {int(r.frame)} ({msg}, {tag})")
                except CaptureError as e:
                    errors.append(e.message)
            e = _Sdp(int(r.frame), float(r.time), str(r.call_id), msg, str(r.sdp_c_addr or r.src),
                     int(r.sdp_m_port), str(r.sdp_m_proto or ""), keys, errors)
            self.by_addr.setdefault((e.addr, e.port), []).append(e)
            self.by_call.setdefault(e.call_id, []).append(e)

    def sender_sdp(self, src: str, sport: int, dst: str, dport: int, t: float) -> list[_Sdp]:
        """The SDP the sender of a stream sent, most likely first.

        First the SDP announcing the stream's source address:port (symmetric RTP: a phone sends
        from the port it receives on), latest before the stream started first; then, when the
        source is not announced anywhere (NAT, asymmetric RTP), the other side's SDP of the calls
        that announced the destination.
        """
        own = self.by_addr.get((src, int(sport)), [])
        before = [e for e in own if e.time <= t + 1.0][::-1]
        out = before + [e for e in own if e.time > t + 1.0]
        for e in self.by_addr.get((dst, int(dport)), [])[::-1]:
            out += [x for x in self.by_call.get(e.call_id, [])[::-1]
                    if (x.addr, x.port) != (dst, int(dport)) and x not in out]
        return out

    def receiver_sdp(self, dst: str, dport: int, t: float) -> list[_Sdp]:
        own = self.by_addr.get((dst, int(dport)), [])
        return [e for e in own if e.time <= t + 1.0][::-1] + [e for e in own if e.time > t + 1.0]


def _dtls_flows(pcap) -> set[tuple[str, int, str, int]]:
    """UDP flows that carry DTLS records (RFC 5764 §5.1.2 / RFC 7983: first byte 20–63, then
    the DTLS version 0xFEFF or 0xFEFD): where DTLS-SRTP negotiated its keys."""
    from labkit.analysis.pcapfile import AddressBook, ScanResult, scan_udp
    book = AddressBook()

    def extract(u) -> dict:
        b, pay, plen = u.buf, u.pay, u.paylen
        last = len(b) - 1
        b0 = b[np.minimum(pay, last)]
        b1 = b[np.minimum(pay + 1, last)]
        b2 = b[np.minimum(pay + 2, last)]
        i = np.flatnonzero((plen >= 13) & (b0 >= 20) & (b0 <= 63) & (b1 == 0xFE) & ((b2 == 0xFF) | (b2 == 0xFD)))
        return {"src": book.encode(u.src_hi[i], u.src_lo[i]), "dst": book.encode(u.dst_hi[i], u.dst_lo[i]),
                "sport": u.sport[i].astype(np.int64), "dport": u.dport[i].astype(np.int64)}
    cols, _ = scan_udp(pcap, extract, ScanResult(os.fspath(pcap)))
    if not cols or len(cols["src"]) == 0:
        return set()
    labels = book.labels()
    flows = set(zip(cols["src"].tolist(), cols["sport"].tolist(), cols["dst"].tolist(), cols["dport"].tolist()))
    out = set()
    for s, sp, d, dp in flows:
        out |= {(labels[s], sp, labels[d], dp), (labels[d], dp, labels[s], sp)}
    return out


# ----------------------------------------------------------------------------- decryption

def _strip_mki(pkt: bytes, key: SdesKey, tag_len: int) -> bytes | None:
    """Remove the MKI (between the encrypted part and the tag, RFC 3711 §3.1); None when the
    packet names another master key."""
    n = key.mki_len
    if len(pkt) < 12 + n + tag_len:
        return None
    mki = pkt[-(n + tag_len):-tag_len]
    if int.from_bytes(mki, "big") != key.mki:
        return None
    return pkt[:-(n + tag_len)] + pkt[-tag_len:]


def _trial(packets: list[bytes], key: SdesKey) -> str | None:
    """The suite under which ``key`` authenticates one of the first packets, or None."""
    for suite in key.suites():
        tag_len = SUITES[suite][1]
        sess = key.session(suite)
        for pkt in packets[:TRIAL_PACKETS]:
            if key.mki_len:
                pkt = _strip_mki(pkt, key, tag_len)
                if pkt is None:
                    continue
            try:
                sess.unprotect(pkt)
                return suite
            except SrtpError:
                continue
    return None


def _decrypt(packets: list[bytes], key: SdesKey, suite: str) -> tuple[np.ndarray, list]:
    """Every packet through one libsrtp session in arrival order, as the receiver did."""
    status = np.full(len(packets), ERROR, dtype=np.int8)
    plain: list = [None] * len(packets)
    sess, tag_len = key.session(suite), SUITES[suite][1]
    for k, pkt in enumerate(packets):
        if key.mki_len:
            pkt = _strip_mki(pkt, key, tag_len)
            if pkt is None:
                continue
        try:
            out = sess.unprotect(pkt)
            plain[k] = out[12:] if not out[0] & 0x3F else _payload(out)  # no padding, extension, CSRC
            status[k] = DECRYPTED
        except SrtpError as e:
            msg = str(e)
            status[k] = AUTH if msg.startswith("authentication") else REPLAY if msg.startswith("replay") else ERROR
        except (ValueError, IndexError):  # longer than libsrtp's buffer, or empty
            status[k] = ERROR
    return status, plain


@dataclass
class SrtpResult:
    """What :func:`srtp_decrypt` found.

    ``streams``: one row per RTP stream (see :func:`srtp_decrypt`).  ``rtp``: every packet of the
    input with ``payload`` in clear text where it was decrypted, and ``srtp_status`` ("plain",
    "decrypted", "authentication failure", "replay", "error", or "encrypted" when no key was
    tried).  ``keys``: the SDES keys of the SIP table (:func:`sdes_keys`).
    """
    streams: pd.DataFrame
    rtp: pd.DataFrame
    keys: pd.DataFrame

    @property
    def plain_rtp(self) -> pd.DataFrame:
        """The packets a receiver would play: plain RTP as captured and the decrypted SRTP (what
        :func:`~labkit.analysis.decode_stream` and :func:`~labkit.analysis.to_wav` want)."""
        return self.rtp[self.rtp["srtp_status"].isin(["plain", "decrypted"])]


def _load(pcap_or_rtp, sip, tls_keylog, tls_rsa_key, tls_ports):
    if isinstance(pcap_or_rtp, pd.DataFrame):
        rtp = pcap_or_rtp
        if "packet" not in rtp:
            raise CaptureError("These RTP rows carry no whole packets, so SRTP cannot be decrypted "
                               "(the authentication tag is not in 'payload').",
                               hint="read them with rtp_packets(pcap, sip=sip, with_packet=True), or pass the "
                                    "capture path")
        return rtp, sip, None
    from labkit.analysis.rtp import rtp_packets
    from labkit.analysis.sip import sip_messages
    pcap = os.fspath(pcap_or_rtp)
    if sip is None:
        sip = sip_messages(pcap, tls_keylog=tls_keylog, tls_rsa_key=tls_rsa_key, tls_ports=tls_ports)
    return rtp_packets(pcap, sip=sip, with_payload=True, with_packet=True), sip, pcap


def _as_keys(keys) -> list[SdesKey]:
    if keys is None:
        return []
    if isinstance(keys, str | SdesKey):
        keys = [keys]
    return [k if isinstance(k, SdesKey) else parse_key(k) for k in keys]


def srtp_decrypt(pcap_or_rtp, sip: pd.DataFrame | None = None, keys=None, *, pcap=None,
                 tls_hidden: bool = False, tls_keylog=None, tls_rsa_key=None, tls_ports=()) -> SrtpResult:
    """Find the SRTP streams of a capture, decrypt those a key opens, and say why for the others.

    ``pcap_or_rtp``: a capture path, or the table of :func:`~labkit.analysis.rtp_packets` read with
    ``with_packet=True``.  ``sip``: the SIP table whose SDP gives the keys (made from the capture
    when a path is given).  ``keys``: keys given by hand (strings for :func:`parse_key` or
    :class:`SdesKey`): one pinned to an SSRC is used for that stream only and before anything
    else; the others are tried on every stream no SDP key opens.  ``pcap``: the capture path when
    a table is given (used to look for DTLS handshakes); ``tls_hidden``: SIP over TLS was not
    decrypted (said in the reason); ``tls_*``: to decrypt the SIP (:mod:`labkit.analysis.tls`).

    A stream is SRTP when its SDP says ``RTP/SAVP``/``RTP/SAVPF`` (or DTLS-SRTP's
    ``UDP/TLS/RTP/SAVP``), when a key authenticates it, or — with no SDP — when its G.711
    payload is as random as ciphertext (:func:`looks_encrypted`).  For each one a key is
    chosen by trying the candidates on the first packets (an offer may carry several); the whole
    stream then goes through one libsrtp session in arrival order, like the receiver.

    ``streams`` columns: ``stream`` (the number :func:`~labkit.analysis.rtp_streams` gives it),
    ``src``, ``sport``, ``dst``, ``dport``, ``ssrc``, ``ssrc_hex``, ``direction``, ``call_id``,
    ``payload_type``, ``packets``, ``sdp_proto`` (as the SDP announced it), ``srtp``,
    ``evidence`` (why it is taken for SRTP), ``entropy`` (bits/byte of the captured payloads),
    ``suite``, ``key`` (its first characters), ``key_source``, ``decrypted``, ``auth_failures``,
    ``replay_failures``, ``other_failures`` (too short, or the MKI of another key),
    ``entropy_decrypted`` and ``why``.  Raises :class:`~labkit.errors.CaptureError` for a bad
    capture or a bad key given by hand (a bad key in the capture's SDP is a reason, not an error).
    """
    given = _as_keys(keys)
    rtp, sip, path = _load(pcap_or_rtp, sip, tls_keylog, tls_rsa_key, tls_ports)
    pcap = pcap if pcap is not None else path
    key_table = sdes_keys(sip)
    if rtp is None or len(rtp) == 0:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
        out = rtp.drop(columns=["packet"], errors="ignore").copy() if rtp is not None else pd.DataFrame()
        out["srtp_status"] = pd.Categorical([], categories=STATUSES)
        return SrtpResult(empty, out, key_table)
    from labkit.analysis.sip import MediaMap
    from labkit.analysis.streams import stream_ids
    book, media = _KeyBook(sip), MediaMap(sip)
    pinned = {k.ssrc: k for k in given if k.ssrc is not None}
    loose = [k for k in given if k.ssrc is None]
    rtp = rtp.sort_values("frame", kind="stable") if not rtp["frame"].is_monotonic_increasing else rtp
    sid = stream_ids(rtp)
    packets = rtp["packet"].tolist()
    payloads = rtp["payload"].tolist() if "payload" in rtp else [p[_header_len(p):] for p in packets]
    status = np.full(len(rtp), PLAIN, dtype=np.int8)
    t_all = rtp["time"].to_numpy(np.float64)
    pt_all = rtp["payload_type"].to_numpy(np.int64)
    order = np.argsort(sid, kind="stable")
    bounds = np.flatnonzero(np.diff(sid[order])) + 1
    dtls = None
    rows = []
    for grp in np.split(order, bounds):
        i0 = int(grp[0])
        src, sport = str(rtp["src"].iat[i0]), int(rtp["sport"].iat[i0])
        dst, dport = str(rtp["dst"].iat[i0]), int(rtp["dport"].iat[i0])
        ssrc, t0 = int(rtp["ssrc"].iat[i0]), float(t_all[i0])
        pts, counts = np.unique(pt_all[grp], return_counts=True)
        pt = int(pts[np.argmax(counts)])
        idx = grp.tolist()
        pk = [packets[i] for i in idx]
        h = entropy(b"".join(payloads[i] for i in idx))
        nbytes = sum(len(payloads[i]) for i in idx)
        call = media.lookup(dst, dport, t0) or media.lookup(src, sport, t0)
        sender = book.sender_sdp(src, sport, dst, dport, t0)
        announced = (sender[:1] or book.receiver_sdp(dst, dport, t0)[:1])
        proto = announced[0].proto if announced else ""
        says_srtp = "SAVP" in proto.upper()
        says_dtls = "TLS" in proto.upper() or "DTLS" in proto.upper()
        random_like = looks_encrypted(h, nbytes) and pt in SAMPLE_CODECS
        # candidate keys, most likely first
        sdp_keys = [k for e in sender for k in e.keys]
        sdp_errors = [err for e in sender for err in e.errors]
        if ssrc in pinned:
            cands = [pinned[ssrc]]
        else:
            cands = sdp_keys + loose
        key = suite = None
        worked = False
        # try keys where SRTP is possible: announced, random-looking, unannounced, pinned, or an
        # a=crypto in an RTP/AVP SDP (best-effort SRTP: baresip mediaenc=srtp, Asterisk optimistic)
        if cands and (says_srtp or random_like or not announced or ssrc in pinned or sdp_keys):
            for k in cands:
                suite = _trial(pk, k)
                if suite:
                    key, worked = k, True
                    break
            if not worked:
                key = cands[0]
                suite = key.suites()[0]
        srtp = says_srtp or random_like or worked
        evidence = ""
        if says_srtp:
            evidence = f"SDP: {proto}" + (" with a=crypto" if sdp_keys or sdp_errors else "")
        elif worked and key in sdp_keys:
            evidence = f"a=crypto in an {proto} SDP (best-effort SRTP), authenticated with its key"
        elif worked:
            evidence = "authenticated with the key"
        elif random_like:
            evidence = f"payload entropy {h:.3f} bits/byte"
        st = np.full(len(idx), PLAIN, dtype=np.int8)
        plain = None
        if srtp and key is not None:
            st, plain = _decrypt(pk, key, suite)
        elif srtp:
            st[:] = ENCRYPTED
        dec = int((st == DECRYPTED).sum())
        auth, rep, oth = int((st == AUTH).sum()), int((st == REPLAY).sum()), int((st == ERROR).sum())
        if plain is not None:
            for j, i in enumerate(idx):
                if plain[j] is not None:
                    payloads[i] = plain[j]
        status[grp] = st
        h_dec = entropy(b"".join(plain[j] for j in range(len(idx)) if plain[j] is not None)) if dec else float("nan")
        # why
        if not srtp:
            if announced:
                why = f"plain RTP ({proto or 'RTP/AVP'} in the SDP)"
                if sdp_keys:
                    why += "; the a=crypto key offered does not authenticate it: SRTP offered, not used"
            elif nbytes >= MIN_ENTROPY_BYTES and pt in SAMPLE_CODECS:
                why = f"plain RTP (payload entropy {h:.3f} bits/byte)"
            elif looks_encrypted(h, nbytes):
                why = (f"cannot tell: payload entropy {h:.3f} bits/byte, but payload type {pt} may be a "
                       f"compressed codec, which looks random too (give a key to try)")
            else:
                why = "plain RTP (no SDP, too few bytes to judge)"
        elif dec:
            src_txt = key.source or "the key given"
            why = f"decrypted with the key from {src_txt}" if key.source.startswith("SDP") else \
                f"decrypted with {src_txt}"
            bad = []
            if auth:
                bad.append(f"{auth} authentication failure{'s' if auth != 1 else ''} (packets modified or "
                           f"corrupted: rejected)")
            if rep:
                bad.append(f"{rep} replayed packet{'s' if rep != 1 else ''} rejected")
            if oth:
                bad.append(f"{oth} unreadable")
            if bad:
                why = f"{why}; {dec} of {len(idx)} packets, {', '.join(bad)}"
        elif key is not None and plain is not None:
            why = f"wrong key: {auth} authentication failure{'s' if auth != 1 else ''}"
            if says_srtp and nbytes >= MIN_ENTROPY_BYTES and pt in SAMPLE_CODECS and not looks_encrypted(h, nbytes):
                why += (f" — yet the payload looks like plain G.711 (entropy {h:.3f} bits/byte): the sender "
                        f"did not encrypt although the SDP says {proto}")
            elif key.source.startswith("SDP"):
                why += f" with the key from {key.source}"
            else:
                why += f" with {key.source or 'the key given'}"
            if oth:
                why += f", {oth} unreadable"
        else:
            if dtls is None:
                dtls = _dtls_flows(pcap) if pcap is not None and not says_dtls else set()
            if says_dtls or (src, sport, dst, dport) in dtls:
                why = "DTLS-SRTP: keys negotiated in DTLS, never in the SDP"
                if not says_dtls:
                    evidence = (evidence + "; " if evidence else "") + "DTLS handshake on the same ports"
            elif sdp_errors:
                why = f"the key in the SDP cannot be used: {sdp_errors[0]}"
            elif says_srtp and sender:
                why = f"{proto} in the SDP but no a=crypto key: the keys were not exchanged by SDES"
            elif tls_hidden:
                why = ("no key in any readable SDP — the signalling is inside TLS that was not decrypted "
                       "(--tls-keylog), or give the key with --srtp-key")
            else:
                why = "no key in any readable SDP — signalling over TLS? (give the key with --srtp-key)"
        rows.append({
            "stream": int(sid[i0]), "src": src, "sport": sport, "dst": dst, "dport": dport, "ssrc": ssrc,
            "ssrc_hex": f"0x{ssrc:08X}", "direction": f"{src}:{sport} → {dst}:{dport}",
            "call_id": call[0] if call else None, "payload_type": pt, "packets": len(idx), "sdp_proto": proto,
            "srtp": bool(srtp), "evidence": evidence, "entropy": round(h, 3) if h == h else h,
            "suite": suite if key is not None and plain is not None else "",
            "key": key.short if key is not None and plain is not None else "",
            "key_source": key.source if key is not None and plain is not None else "",
            "decrypted": dec, "auth_failures": auth, "replay_failures": rep, "other_failures": oth,
            "entropy_decrypted": round(h_dec, 3) if h_dec == h_dec else h_dec, "why": why})
    streams = pd.DataFrame(rows, columns=COLUMNS).sort_values("stream").reset_index(drop=True)
    out = rtp.drop(columns=["packet"]).copy()
    out["payload"] = payloads
    out["payload_len"] = np.fromiter((len(p) for p in payloads), dtype=np.int32, count=len(payloads))
    out["srtp_status"] = pd.Categorical.from_codes(status, categories=STATUSES)
    return SrtpResult(streams, out, key_table)


def srtp_streams(pcap_or_rtp, sip: pd.DataFrame | None = None, keys=None, **kw) -> pd.DataFrame:
    """The streams table of :func:`srtp_decrypt` (which streams are SRTP, decrypted or why not)."""
    return srtp_decrypt(pcap_or_rtp, sip, keys, **kw).streams


# ----------------------------------------------------------------------------- words for a report

def _span(values: pd.Series) -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.3f}" if round(lo, 3) == round(hi, 3) else f"{lo:.3f}–{hi:.3f}"


def summary(streams: pd.DataFrame, pcap: str = "FILE", *, keys_given: int = 0, sip: pd.DataFrame | None = None,
            wavs: dict | None = None) -> list[str]:
    """Sentences about the SRTP of a capture for ``report.md`` and the terminal (same conventions
    as :func:`labkit.analysis.tls.summary`: two leading spaces detail the line before, ``$ ``
    starts a command).  Empty when no stream is SRTP and no key was given."""
    if streams is None or streams.empty:
        return [f"SRTP: {keys_given} key{'s' if keys_given != 1 else ''} given but the capture has no RTP stream."] \
            if keys_given else []
    s = streams[streams["srtp"].astype(bool)]
    if s.empty and not keys_given:
        return []
    wavs = wavs or {}
    n, k = len(streams), len(s)
    dec = s[s["decrypted"] > 0]
    plural = lambda x, w: f"{x} {w}{'s' if x != 1 else ''}"
    lines = [f"SRTP: {k} of {plural(n, 'RTP stream')} encrypted, {len(dec)} decrypted."]
    plain = streams[~streams["srtp"].astype(bool)]
    if len(s) and len(plain):
        ents = plain["entropy"].dropna()
        if len(ents):
            lines.append(f"  payload entropy: SRTP {_span(s['entropy'])} bits/byte, plain RTP {_span(ents)} "
                         f"(random bytes: 8)")
    elif len(s):
        lines.append(f"  payload entropy of the SRTP: {_span(s['entropy'])} bits/byte (random bytes: 8, "
                     f"G.711 speech: 6 to 7)")
    for r in s.itertuples():
        wav = f" -> {wavs[r.stream]}" if r.stream in wavs else ""
        lines.append(f"  stream {r.stream} {r.direction} (SSRC {r.ssrc_hex}): {r.why}{wav}")
    from_sdp = dec[dec["key_source"].astype(str).str.startswith("SDP")]
    if len(from_sdp):
        transports = set()
        if sip is not None and len(sip):
            frames = {int(m.group(1)) for m in (re.match(r"SDP of frame (\d+)", x) for x in from_sdp["key_source"])
                      if m}
            transports = set(sip.loc[sip["frame"].isin(frames), "transport"].astype(str))
        how = "/".join(sorted(transports)) or "the signalling"
        if transports <= {"TLS"} and transports:
            lines.append("The keys were in SDP inside TLS, read here with the TLS keys: whoever holds those "
                         "decrypts the media too.")
        else:
            lines.append(f"The keys were read in clear text from the SDP ({how}): anyone who captures the "
                         f"signalling decrypts the media. SDES is only as private as the signalling: SIP over "
                         f"TLS, or DTLS-SRTP (RFC 5764), keeps the keys off the wire.")
    missing = s[(s["decrypted"] == 0) & (s["key"] == "")]
    if len(missing) and not missing["why"].str.startswith("DTLS").all():
        lines += ["To decrypt a stream whose key is not in the capture, give it (from the a=crypto line of an "
                  "SDP you can read, e.g. the phone's log):",
                  f"$ labkit replay {pcap} --srtp-key inline:KEY",
                  f"$ labkit replay {pcap} --srtp-key {missing['ssrc_hex'].iloc[0]}=inline:KEY   (that stream only)"]
    return lines
