"""chan_sip (``sip.conf``, Asterisk ≤ 20): the rules, and what the dialplan rules need.

Defaults matter here more than anywhere: a setting the file does not mention is what
Asterisk 16's ``sip.conf.sample`` says its default is, and two defaults are dangerous:
``allowguest`` (default yes: an INVITE from nobody lands in ``[general]``'s context) and
``directmedia`` (default yes: Asterisk asks the phones to send media to each other).
"""
from __future__ import annotations

from collections import defaultdict

from labkit.audit.model import (
    GOOD_CIPHERS_OPENSSL,
    OLD_TLS_METHODS,
    SECRET_FIX,
    SOURCES,
    Finding,
    callerid_name,
    is_no,
    is_yes,
    secret_weakness,
    weak_cipher_words,
)
from labkit.audit.parse import ConfFile, Section

#: chan_sip's context for calls it cannot match to a peer (sip.conf.sample: "Defaults to
#: 'default'").
DEFAULT_CONTEXT = "default"
_NAT_ON = ("yes", "force_rport", "comedia", "route", "auto_force_rport", "auto_comedia")


def general(conf: ConfFile) -> Section:
    return conf.section("general") or Section("general", 0)


def peers(conf: ConfFile) -> list[Section]:
    """Every peer/user/friend (not [general], not templates, not [authentication])."""
    return [s for s in conf.objects() if s.name.lower() not in ("general", "authentication", "")
            and (s.type in ("friend", "peer", "user") or s.get("host") or s.get("secret"))]


def is_trunk(peer: Section) -> bool:
    """A peer at a fixed address (``host=`` a name or address, not ``dynamic``): a carrier
    or another PBX, not a phone that registers."""
    host = (peer.get("host") or "dynamic").lower()
    return host != "dynamic"


def trunks(conf: ConfFile) -> set[str]:
    return {p.name for p in peers(conf) if is_trunk(p)}


def guests_allowed(conf: ConfFile) -> bool:
    value = general(conf).get("allowguest")
    return value is None or is_yes(value)     # default yes (sip.conf.sample, l. 127)


def entries(conf: ConfFile) -> list[tuple[str, bool, str, ConfFile, int]]:
    """Where calls enter the dialplan: ``(context, authenticated, who, file, line)``."""
    gen = general(conf)
    out = []
    if guests_allowed(conf):
        setting = gen.setting("context")
        out.append((gen.get("context", DEFAULT_CONTEXT), False,
                    "guests (allowguest is yes: any caller, no password)", conf,
                    setting.line if setting else gen.line))
    for peer in peers(conf):
        context = peer.get("context") or gen.get("context", DEFAULT_CONTEXT)
        line = (peer.setting("context") or peer).line
        if "invite" in (peer.get("insecure") or "").lower():
            out.append((context, False, f"[{peer.name}] (insecure=invite: no password asked)",
                        conf, line))
        else:
            out.append((context, True, f"[{peer.name}]", conf, line))
    return out


def check(conf: ConfFile) -> list[Finding]:
    out: list[Finding] = []
    gen = general(conf)
    name = conf.name

    def add(rule, severity, where: Section, line, what, why, source, fix):
        out.append(Finding(rule, severity, name, line, where.name, what, why, source, fix))

    # -- guests and enumeration ----------------------------------------------------------
    guest = gen.setting("allowguest")
    if guest is None or is_yes(guest.value):
        add("sip.allowguest", "high", gen, guest.line if guest else gen.line,
            "allowguest is " + ("yes" if guest else "not set, and its default is yes"),
            "An INVITE from any address, with no password, is accepted and runs the dialplan of "
            f"[general]'s context ({gen.get('context', DEFAULT_CONTEXT)!r}); SIP scanners find "
            "a public server within minutes and try to call out through it.",
            SOURCES["sip.conf.sample"] + ', l. 127: "Allow or reject guest calls (default is yes)"',
            "allowguest = no")
    reject = gen.setting("alwaysauthreject")
    if reject is not None and is_no(reject.value):
        add("sip.alwaysauthreject", "medium", gen, reject.line, "alwaysauthreject is no",
            "A REGISTER or INVITE for a user that does not exist gets a different answer "
            "(404 / 403 at once) from one that exists (401 with a challenge): svwar lists your "
            "extensions, then svcrack guesses only their passwords.",
            SOURCES["sip.conf.sample"] + ", alwaysauthreject (\"set to 'yes' by default\")",
            "alwaysauthreject = yes")

    # -- secrets -----------------------------------------------------------------------------
    clear = 0
    for peer in peers(conf):
        secret = peer.setting("secret")
        if secret is None:
            if peer.setting("md5secret") is None and not is_trunk(peer) \
                    and "invite" not in (peer.get("insecure") or ""):
                add("sip.no-secret", "high", peer, peer.line, f"[{peer.name}] has no secret",
                    "A peer without secret or md5secret is never challenged: anyone sending "
                    f"From: {peer.name} (or registering as it) is this peer.",
                    SOURCES["sip.conf.sample"] + " (secret, md5secret)",
                    f"secret = <{SECRET_FIX}>")
            continue
        clear += 1
        names = (peer.name, peer.get("username") or "", peer.get("defaultuser") or "",
                 peer.get("fromuser") or "", callerid_name(peer))
        weak = secret_weakness(secret.value, names=names)
        if weak:
            severity, reason = weak
            add("sip.weak-secret", severity, peer, secret.line,
                f"[{peer.name}]'s secret {reason}",
                "The digest password is all that stands between the Internet and this account; "
                "svcrack tries dictionary words and the user name first, and one captured "
                "REGISTER lets an attacker guess offline.",
                SOURCES["rfc2617"] + "; " + SOURCES["nist63b"], f"secret = <{SECRET_FIX}>")
    if clear:
        add("sip.secret-in-clear", "low", gen, 0,
            f"{clear} password(s) written in clear in this file",
            "Anyone who reads the file (a backup, a paste in a forum, a report) has them. "
            "md5secret keeps the password itself out of the file — the hash still logs in to "
            "this realm, so the file must stay private either way.",
            SOURCES["sip.conf.sample"] + " (md5secret = MD5 of user:realm:secret)",
            "md5secret = <echo -n 'USER:asterisk:SECRET' | md5sum>   ; and chmod 640 sip.conf")

    # -- TLS ---------------------------------------------------------------------------------
    method = gen.setting("tlsclientmethod")
    if method is not None and method.value.lower() in OLD_TLS_METHODS:
        add("sip.tls-version", "high", gen, method.line,
            f"tlsclientmethod = {method.value}: outgoing TLS connections use "
            f"{OLD_TLS_METHODS[method.value.lower()]} only",
            "TLS 1.0 and 1.1 are deprecated: weak hashes (MD5/SHA-1 in the handshake), CBC "
            "attacks (BEAST), no AEAD; modern servers refuse them. Left unset, chan_sip "
            "negotiates the highest version both sides have (sslv23).",
            SOURCES["rfc8996"] + "; " + SOURCES["sip.conf.sample"] + " (tlsclientmethod)",
            "delete the tlsclientmethod line (default sslv23: the best version both sides have)")
    if is_yes(gen.get("tlsenable")):
        off = [k for k in ("tlsdisablev1", "tlsdisablev11") if not is_yes(gen.get(k))]
        if off:
            add("sip.tls-old-versions", "medium", gen, (gen.setting("tlsenable")).line,
                "the TLS server does not switch off " + " and ".join(
                    {"tlsdisablev1": "TLS 1.0", "tlsdisablev11": "TLS 1.1"}[k] for k in off),
                "chan_sip then accepts every version its OpenSSL allows; only the system's "
                "OpenSSL policy (Debian: MinProtocol = TLSv1.2) stands in the way, and a "
                "different build or image changes that silently.",
                SOURCES["rfc8996"],
                "\n".join(f"{k} = yes" for k in off))
    cipher = gen.setting("tlscipher")
    if cipher is not None and weak_cipher_words(cipher.value):
        add("sip.tls-cipher", "high", gen, cipher.line,
            f"tlscipher = {cipher.value} enables weak or unauthenticated suites "
            f"({', '.join(weak_cipher_words(cipher.value))})",
            "OpenSSL's ALL includes anonymous (aNULL) key exchanges — no certificate, so a man "
            "in the middle reads the SDES keys of SRTP — and, depending on the build, RC4, "
            "3DES and suites without forward secrecy.",
            SOURCES["rfc9325"], f"tlscipher = {GOOD_CIPHERS_OPENSSL}")
    dont = gen.setting("tlsdontverifyserver")
    if dont is not None and is_yes(dont.value):
        add("sip.tls-noverify", "medium", gen, dont.line, "tlsdontverifyserver = yes",
            "Outgoing TLS connections (to a carrier, another PBX) accept any certificate: "
            "a man in the middle is not detected.",
            SOURCES["rfc5280"] + "; " + SOURCES["sip.conf.sample"] + " (tlsdontverifyserver)",
            "tlsdontverifyserver = no   ; and tlscafile = <the peer's CA>")

    # -- per peer: insecure, direct media behind NAT -------------------------------------------
    behind_nat = any(gen.get(k) for k in ("externip", "externaddr", "externhost", "localnet"))
    for peer in peers(conf):
        insecure = peer.setting("insecure")
        if insecure is not None and "invite" in insecure.value.lower() and not is_trunk(peer):
            add("sip.insecure-invite", "high", peer, insecure.line,
                f"[{peer.name}] is a phone (host=dynamic) with insecure = {insecure.value}",
                "insecure=invite skips the password on INVITE; it is meant for a carrier at a "
                "fixed address. On a registering phone, any device behind the same public "
                "address (or spoofing it) calls as this phone, at its rights.",
                SOURCES["sip.conf.sample"] + " (insecure=invite: \"Do not require "
                "authentication of incoming INVITEs\")",
                "delete the insecure line (phones always authenticate)")
        if is_trunk(peer):
            continue
        nat = (peer.get("nat") or gen.get("nat") or "").lower()
        nat_on = any(v.strip() in _NAT_ON for v in nat.split(","))
        direct = peer.setting("directmedia") or gen.setting("directmedia")
        direct_on = direct is None or (direct.value.lower() not in ("no", "nonat", "outgoing")
                                       and not is_no(direct.value))
        if direct_on and (nat_on or behind_nat):
            line = direct.line if direct else peer.line
            add("sip.directmedia-nat", "medium", peer, line,
                f"[{peer.name}] is behind NAT ({'nat=' + nat if nat_on else 'localnet/externip set'}) "
                "with directmedia " + (f"= {direct.value}" if direct else "unset (default yes)"),
                "Asterisk re-INVITEs the two phones to send media to each other: their private "
                "addresses do not reach each other through the boxes (one-way or no audio), and "
                "the media no longer passes the PBX that enforces SRTP and records.",
                SOURCES["sip.conf.sample"] + " (directmedia: \"does not really work well ... "
                "behind a NAT\"; default yes)",
                "directmedia = no")
    return out


def reused(conf: ConfFile) -> dict[str, list[tuple[Section, int]]]:
    """secret → the peers that use it (for the shared reuse rule)."""
    found: dict[str, list[tuple[Section, int]]] = defaultdict(list)
    for peer in peers(conf):
        secret = peer.setting("secret")
        if secret is not None and secret.value:
            found[secret.value].append((peer, secret.line))
    return found
