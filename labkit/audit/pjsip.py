"""PJSIP (``pjsip.conf``, Asterisk 12+): the rules, and what the dialplan rules need.

PJSIP splits a chan_sip peer into objects (endpoint + aor + auth; identify for a trunk).
How a request finds its endpoint (``endpoint_identifier_order``, default
``ip,username,anonymous``): an ``identify`` matching the source address, else the From
user, else the endpoint named ``anonymous`` if there is one.  An endpoint without ``auth``
is never challenged; reached by user name, that means anyone who knows the name.
"""
from __future__ import annotations

from collections import defaultdict

from labkit.audit.model import (
    GOOD_CIPHERS_PJSIP,
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


def _identified(conf: ConfFile) -> dict[str, Section]:
    """endpoint name → its identify section."""
    return {s.get("endpoint"): s for s in conf.objects("identify") if s.get("endpoint")}


def is_trunk(conf: ConfFile, endpoint: Section) -> bool:
    """An endpoint we send calls to at a fixed place (outbound_auth, or an identify by
    address): a carrier or another PBX."""
    return bool(endpoint.get("outbound_auth")) or endpoint.name in _identified(conf)


def trunks(conf: ConfFile) -> set[str]:
    return {e.name for e in conf.objects("endpoint") if is_trunk(conf, e)}


def entries(conf: ConfFile) -> list[tuple[str, bool, str, ConfFile, int]]:
    """Where calls enter the dialplan: ``(context, authenticated, who, file, line)``."""
    out = []
    identified = _identified(conf)
    for endpoint in conf.objects("endpoint"):
        context = endpoint.get("context", "default")
        line = (endpoint.setting("context") or endpoint).line
        if endpoint.name == "anonymous":
            out.append((context, False, "[anonymous] (any caller PJSIP cannot identify)", conf, line))
        elif not endpoint.get("auth") and endpoint.name not in identified:
            out.append((context, False, f"[{endpoint.name}] (no auth, no identify: anyone "
                        "using its name)", conf, line))
        elif not endpoint.get("auth"):
            # Trusted by source address: the carrier.  Spoofing a UDP source is possible
            # but blind; counted as authenticated, like chan_sip's insecure=invite trunk.
            out.append((context, True, f"[{endpoint.name}] (identified by address)", conf, line))
        else:
            out.append((context, True, f"[{endpoint.name}]", conf, line))
    return out


def check(conf: ConfFile) -> list[Finding]:
    out: list[Finding] = []
    name = conf.name

    def add(rule, severity, where: Section, line, what, why, source, fix):
        out.append(Finding(rule, severity, name, line, where.name, what, why, source, fix))

    identified = _identified(conf)
    endpoints = conf.objects("endpoint")
    for endpoint in endpoints:
        if endpoint.name == "anonymous":
            add("pjsip.anonymous", "high", endpoint, endpoint.line,
                "an endpoint named anonymous accepts calls from anyone",
                "res_pjsip_endpoint_identifier_anonymous gives every request no other endpoint "
                f"matches to [anonymous]: its context ({endpoint.get('context', 'default')!r}) is "
                "open to the whole Internet, with no password.",
                SOURCES["pjsip.conf.sample"] + ', "Anonymous Calls": "It is not recommended to '
                'accept anonymous calls."',
                "delete the [anonymous] endpoint (or give it a context that only plays a message)")
        elif not endpoint.get("auth") and endpoint.name not in identified:
            add("pjsip.no-auth", "high", endpoint, endpoint.line,
                f"endpoint [{endpoint.name}] has no auth and no identify",
                "PJSIP matches it by the user part of From (identify_by=username) and never "
                "challenges: anyone who writes From: <sip:" + endpoint.name + "@…> is this "
                "endpoint.",
                SOURCES["pjsip.conf.sample"] + " (auth, identify_by, endpoint_identifier_order)",
                f"auth = {endpoint.name}-auth   ; and a [{endpoint.name}-auth] type=auth section")

    # -- secrets -------------------------------------------------------------------------------
    owners = _auth_owners(conf)
    clear = 0
    for auth in conf.objects("auth"):
        password = auth.setting("password")
        if password is None:
            continue
        clear += 1
        users = owners.get(auth.name, [])
        names = (auth.name, auth.get("username") or "", *[u.name for u in users],
                 *[callerid_name(u) for u in users])
        weak = secret_weakness(password.value, names=names)
        if weak:
            severity, reason = weak
            add("pjsip.weak-secret", severity, auth, password.line,
                f"[{auth.name}]'s password {reason}",
                "The digest password is all that stands between the Internet and this account; "
                "a brute-forcer tries dictionary words and the user name first, and one captured "
                "REGISTER lets an attacker guess offline.",
                SOURCES["rfc2617"] + "; " + SOURCES["nist63b"], f"password = <{SECRET_FIX}>")
    if clear:
        add("pjsip.secret-in-clear", "low", Section("", 0), 0,
            f"{clear} password(s) written in clear in this file",
            "Anyone who reads the file has them. auth_type = md5 with md5_cred keeps the "
            "password itself out of the file (the hash still logs in to this realm).",
            SOURCES["pjsip.conf.sample"] + " (auth_type=md5, md5_cred)",
            "auth_type = md5\nmd5_cred = <echo -n 'USER:asterisk:PASSWORD' | md5sum>")

    # -- TLS transports --------------------------------------------------------------------------
    for transport in conf.objects("transport"):
        if (transport.get("protocol") or "").lower() not in ("tls", "wss"):
            continue
        method = transport.setting("method")
        if method is not None and method.value.lower() in OLD_TLS_METHODS:
            add("pjsip.tls-version", "high", transport, method.line,
                f"method = {method.value}: this transport speaks "
                f"{OLD_TLS_METHODS[method.value.lower()]} only",
                "In pjproject, method is ONE protocol version, not a minimum: tlsv1 is TLS 1.0 "
                "and nothing else — deprecated (weak handshake hashes, CBC attacks) and refused "
                "by current phones.",
                SOURCES["rfc8996"] + "; " + SOURCES["pjsip.conf.sample"] + " (method)",
                "method = sslv23   ; every version OpenSSL allows: 1.2 and 1.3 on a current system")
        cipher = transport.setting("cipher")
        if cipher is not None and weak_cipher_words(cipher.value):
            add("pjsip.tls-cipher", "high", transport, cipher.line,
                f"cipher = {cipher.value} enables weak or unauthenticated suites "
                f"({', '.join(weak_cipher_words(cipher.value))})",
                "Anonymous (ADH/aNULL) suites have no certificate: a man in the middle reads the "
                "signalling and the SDES keys of SRTP; NULL/RC4/DES suites are broken.",
                SOURCES["rfc9325"], f"cipher = {GOOD_CIPHERS_PJSIP}")
        verify = transport.setting("verify_server")
        if verify is None or is_no(verify.value):
            add("pjsip.tls-noverify", "low", transport, verify.line if verify else transport.line,
                "verify_server is " + ("no" if verify else "not set (default no)"),
                "Connections this transport opens (to a carrier, another PBX) accept any "
                "certificate.",
                SOURCES["pjsip.conf.sample"] + " (verify_server); " + SOURCES["rfc5280"],
                "verify_server = yes   ; with ca_list_file = <the peer's CA>")

    # -- direct media behind NAT -------------------------------------------------------------------
    nat_transport = any(t.get("local_net") or t.get("external_media_address")
                        for t in conf.objects("transport"))
    for endpoint in endpoints:
        if is_trunk(conf, endpoint):
            continue
        direct = endpoint.setting("direct_media")
        nat_flags = [k for k in ("rewrite_contact", "force_rport", "rtp_symmetric")
                     if is_yes(endpoint.get(k))]
        # rewrite_contact alone is also what TLS needs (the kit sets it for that): NAT
        # evidence is rtp_symmetric/force_rport, or a transport with local_net.
        behind = nat_transport or {"force_rport", "rtp_symmetric"} & set(nat_flags)
        if (direct is None or is_yes(direct.value)) and behind:
            add("pjsip.direct-media-nat", "medium", endpoint,
                direct.line if direct else endpoint.line,
                f"[{endpoint.name}] is behind NAT ("
                + (", ".join(nat_flags) or "transport local_net") + ") with direct_media "
                + (f"= {direct.value}" if direct else "unset (default yes)"),
                "Asterisk re-INVITEs both phones to send media to each other: their private "
                "addresses do not reach each other through the boxes (one-way or no audio), and "
                "the media leaves the PBX that enforces SRTP and records.",
                SOURCES["pjsip.conf.sample"] + " (direct_media, default yes)",
                "direct_media = no")
    return out


def _auth_owners(conf: ConfFile) -> dict[str, list[Section]]:
    owners: dict[str, list[Section]] = defaultdict(list)
    for endpoint in conf.objects("endpoint"):
        for key in ("auth", "outbound_auth"):
            for auth in (endpoint.get(key) or "").split(","):
                if auth.strip():
                    owners[auth.strip()].append(endpoint)
    return owners


def reused(conf: ConfFile) -> dict[str, list[tuple[Section, int]]]:
    found: dict[str, list[tuple[Section, int]]] = defaultdict(list)
    for auth in conf.objects("auth"):
        password = auth.setting("password")
        if password is not None and password.value:
            found[password.value].append((auth, password.line))
    return found
