"""The lab model: what a lab file (``configs/labs/*.yaml``) declares, as typed objects.

Vocabulary (used everywhere in labkit, after mininet/ipmininet):

* **network** – one layer-2 segment (a bridge) with an IPv4 subnet;
* **host** – one network namespace with interfaces on networks, an optional gateway,
  optionally forwarding (a router);
* **pbx** – the Asterisk server, on a host, with its transports, endpoints (one per
  extension, with digest credentials) and dialplan contexts;
* **phone** – a SIP user agent (baresip softphone) on a host, bound to one extension.

The shape is checked here (pydantic, unknown keys rejected); the cross-references in
:mod:`labkit.spec.references`; loading a file, with the exact place and line of every
problem, in :mod:`labkit.spec.load`.
"""
from __future__ import annotations

import copy
import ipaddress
import re
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labkit.errors import LabFileError

#: Names become namespace and interface names: short, lowercase, no surprises.
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,11}$"
LAB_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,15}$"


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Segment name, e.g. 'lan'.")
    subnet: ipaddress.IPv4Network = Field(description="IPv4 subnet, e.g. 192.168.0.0/24.")


class Interface(_Strict):
    network: str = Field(description="Name of a network declared under `networks`.")
    address: ipaddress.IPv4Address = Field(description="Address inside the network's subnet.")


class PortForward(_Strict):
    """A DNAT rule of the ISP box (redirection de ports): WAN port(s) → a LAN address."""

    proto: Literal["udp", "tcp"]
    ports: tuple[int, int] | int = Field(description="A port, or [first, last] of a range.")
    to: ipaddress.IPv4Address = Field(description="The LAN host that receives them.")

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, value):
        low, high = (value, value) if isinstance(value, int) else value
        if not (1 <= low <= high <= 65535):
            raise ValueError("ports are 1-65535, and a range is [first, last] with first <= last")
        return value

    @property
    def range(self) -> tuple[int, int]:
        return (self.ports, self.ports) if isinstance(self.ports, int) else tuple(self.ports)


class Nat(_Strict):
    """What makes a router an ISP box: masquerading towards its WAN, forwards, SIP ALG."""

    outside: str = Field(description="The network on the WAN side (the Internet).")
    forwards: list[PortForward] = Field(default=[], description="Port forwards (DNAT).")
    sip_alg: bool = Field(default=False, description="The kernel's SIP helper rewrites SIP/SDP.")


class FirewallRule(_Strict):
    """One service a host's firewall lets in."""

    proto: Literal["udp", "tcp"]
    ports: str = Field(pattern=r"^\d{1,5}(-\d{1,5})?$", description="A port or a range, e.g. '5061' or '10000-20000'.")
    source: str | None = Field(default=None, description="Only from this lab host or address/network "
                                                         "(e.g. the carrier); default: anywhere.")
    rate: str | None = Field(default=None, pattern=r"^\d{1,6}/(second|minute)$",
                             description="At most this many packets per source, e.g. '20/second'.")
    comment: str = Field(default="", pattern=r"^[A-Za-z0-9 ,.()/:'-]{0,60}$", description="What it is for.")


class Firewall(_Strict):
    """A host's own nftables firewall (the VPS's): what comes in, the rest dropped and counted."""

    allow: list[FirewallRule] = Field(default=[])
    policy: Literal["drop", "accept"] = Field(default="drop", description="What happens to everything else.")


class Host(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Host name, also its namespace suffix.")
    interfaces: list[Interface] = Field(min_length=1)
    gateway: ipaddress.IPv4Address | None = Field(
        default=None, description="Default gateway; must lie in one of the host's networks.")
    forwarding: bool = Field(default=False, description="Route between its networks.")
    nat: Nat | None = Field(default=None, description="Make this host an ISP box doing NAT.")
    firewall: Firewall | None = Field(default=None, description="Its own firewall (nftables input chain).")


class Endpoint(_Strict):
    """One extension on the PBX: a chan_sip peer or a PJSIP endpoint+aor+auth."""

    extension: str = Field(pattern=r"^[0-9]{2,8}$", description="Dialable number, e.g. '6000'.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._'-]{0,31}$",
                      description="Display name (caller ID name), e.g. 'Alice'.")
    # No spaces, quotes, ';' or brackets: the secret is written into sip.conf/pjsip.conf.
    secret: str | None = Field(
        default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.~+/=@%!-]+$",
        description="Digest password; a random one is drawn per lab when omitted.")
    context: str = Field(default="work", pattern=r"^[A-Za-z0-9_-]+$")
    qualify: int = Field(
        default=0, ge=0, le=3600,
        description="Seconds between the OPTIONS Asterisk sends the registered phone to see that it "
                    "answers (chan_sip qualify=yes + qualifyfreq, PJSIP the aor's qualify_frequency); "
                    "0: none, the phone is not monitored.")

    @property
    def auth_user(self) -> str:
        """The digest user name: the extension, as in the walkthrough.

        chan_sip names a peer after the user that registers, and the dialplan dials
        ``SIP/${EXTEN}``; keeping user name = extension keeps both tracks alike.
        """
        return self.extension


class PbxNat(_Strict):
    """Asterisk behind NAT: what to announce and how to treat phones behind NAT.

    legacy: ``externip``/``localnet`` in sip.conf [general], ``nat=force_rport,comedia``;
    modern: ``external_media_address``/``external_signaling_address``/``local_net`` on the
    transport, ``rtp_symmetric``/``force_rport``/``rewrite_contact`` on endpoints.
    """

    external_address: str | None = Field(
        default=None, description="Public address (or DDNS name) to announce in SIP and SDP.")
    local_nets: list[ipaddress.IPv4Network] = Field(
        default=[], description="Networks that are not behind the NAT (no rewriting for them).")
    symmetric: bool = Field(
        default=False, description="Answer and send media where packets come from (rport/comedia).")


#: The certificates the lab PKI can make for a server (labkit.pki.VARIANTS).
CERTIFICATE_VARIANTS = ("good", "expired", "not_yet_valid", "wrong_name", "other_ca", "self_signed",
                        "key_mismatch", "weak", "ten_year")
#: TLS versions by their RFC numbers (TLS 1.0: RFC 2246 … TLS 1.3: RFC 8446).
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


class TlsCertificate(_Strict):
    """The PBX's certificate, made by the lab's own CA (``labkit.pki``) at each run."""

    variant: Literal[CERTIFICATE_VARIANTS] = Field(
        default="good", description="A good certificate, or one of the classic mistakes on purpose.")
    names: list[str] = Field(
        default=[], description="DNS names in its subjectAltName; default: the names of the lab "
                                "DNS that point at the PBX, else <host>.<lab>.test.")
    owner: Literal["asterisk", "root"] = Field(
        default="asterisk", description="Owner of the key file (the report's chown): Asterisk runs as "
                                        "the unprivileged user asterisk and must be able to read it.")
    key_mode: str = Field(default="0600", pattern=r"^0?[0-7]{3}$",
                          description="Permissions of the key file (the report's chmod), octal.")
    combined: bool = Field(
        default=False, description="Certificate and key in one PEM file (the report's 'same pem'); "
                                   "chan_sip reads both from tlscertfile.")
    key_type: Literal["ec", "rsa"] = Field(
        default="ec", description="ECDSA P-256, or RSA 2048 (an RSA key also allows TLS 1.2's RSA key "
                                  "exchange, which has no forward secrecy).")


class PbxTls(_Strict):
    """SIP over TLS (RFC 3261 §26.2, sips: and transport=tls), on both generations.

    legacy: ``tlsenable``, ``tlsbindaddr``, ``tlscertfile``, ``tlsprivatekey``, ``tlscafile``,
    ``tlscipher``, ``tlsdisablev1``/``tlsdisablev11`` in sip.conf [general];
    modern: a ``protocol=tls`` transport with ``cert_file``, ``priv_key_file``,
    ``ca_list_file``, ``method``, ``cipher``, ``verify_client``.
    """

    port: int = Field(default=5061, ge=1, le=65535)
    certificate: TlsCertificate = Field(default_factory=TlsCertificate)
    versions: list[Literal[TLS_VERSIONS]] = Field(
        default=["1.2", "1.3"], min_length=1,
        description="TLS versions the PBX accepts. RFC 8996 deprecates 1.0 and 1.1. PJSIP's method= is "
                    "one exact version (or every version the library allows): see the rendered file.")
    ciphers: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9+:!@=_.-]+$",
        description="OpenSSL cipher list (tlscipher / cipher); default ECDHE with AES-GCM or ChaCha20 "
                    "(RFC 9325 §4.2). The report's ALL admits ciphers without forward secrecy.")
    client_method: Literal["tlsv1", "sslv3", "sslv2"] | None = Field(
        default=None, description="chan_sip's tlsclientmethod (outgoing connections only; the report's "
                                  "tlsv1). Not rendered on the modern track, which has no equivalent.")
    verify_client: bool = Field(default=False, description="Ask phones for a certificate and check it.")
    keylog: bool = Field(
        default=True, description="Write the TLS session keys of the lab's programs to the lab "
                                  "directory, so that its captures can be decrypted (a lab only).")
    sip_conf: str | None = Field(
        default=None, description="TLS lines for sip.conf [general] as a student wrote them; they "
                                  "replace the kit's on the legacy track (checked, never executed).")
    pjsip_conf: str | None = Field(
        default=None, description="A pjsip.conf TLS transport section as a student wrote it; it "
                                  "replaces the kit's on the modern track (checked, never executed).")


class PbxMedia(_Strict):
    """Encrypted media (SRTP, RFC 3711) and the RTP profile options the report turned on.

    legacy (chan_sip peer): ``encryption=yes`` (SDES keys in the SDP, RFC 4568) or
    ``dtlsenable=yes`` (keys agreed in a DTLS handshake on the media path, RFC 5764), ``avpf``,
    ``force_avp``, ``icesupport``; modern (PJSIP endpoint): ``media_encryption=sdes|dtls``,
    ``media_encryption_optimistic``, ``use_avpf``, ``force_avp``, ``ice_support``.
    """

    encryption: Literal["no", "sdes", "dtls"] = Field(
        default="no", description="SRTP keyed by SDES (a=crypto in the SDP) or by DTLS (DTLS-SRTP).")
    optimistic: bool = Field(
        default=False, description="Offer SRTP but accept plain RTP (PJSIP only; chan_sip's "
                                   "encryption=yes always insists).")
    avpf: bool = Field(default=False, description="The RTP/AVPF profile (RTCP feedback, RFC 4585): the "
                                                  "report's avpf=yes, for WebRTC-style clients.")
    force_avp: bool = Field(default=False, description="Answer with the profile that was offered "
                                                       "(the report's force_avp=yes).")
    ice: bool = Field(default=False, description="ICE candidates in the SDP (the report's icesupport=yes).")


class PbxSecurity(_Strict):
    """How the PBX answers strangers (the report's allowguest/alwaysauthreject).

    chan_sip: ``allowguest`` lets a request from no known peer into ``guest_context``;
    ``alwaysauthreject=no`` answers an unknown user differently from a known one with a wrong
    password (404 vs 401/403), which lets a scanner list the extensions (SIPVicious svwar).
    PJSIP answers every unidentified request with the same challenge by design (its
    "artificial" authentication); a guest is its ``anonymous`` endpoint.
    """

    allow_guest: bool = Field(
        default=False, description="Accept calls from unknown callers into guest_context (chan_sip "
                                   "allowguest, PJSIP anonymous endpoint).")
    always_auth_reject: bool = Field(
        default=True, description="Answer an unknown user like a wrong password (chan_sip "
                                  "alwaysauthreject; PJSIP always does).")
    guest_context: str = Field(default="unauthenticated", pattern=r"^[A-Za-z0-9_-]+$",
                               description="The dialplan context of guests: it must not reach a trunk.")


class Fail2ban(_Strict):
    """fail2ban beside Asterisk: bans an address after too many failed authentications."""

    maxretry: int = Field(default=5, ge=1, le=100, description="Failures within findtime that ban.")
    findtime: int = Field(default=60, ge=1, le=3600, description="Seconds over which failures count.")
    bantime: int = Field(default=60, ge=1, le=86400, description="Seconds a ban lasts.")


class Pbx(_Strict):
    host: str = Field(description="The host the Asterisk server runs on.")
    transports: list[Literal["udp", "tcp", "tls"]] = Field(default=["udp"], min_length=1)
    sip_port: int = Field(default=5060, ge=1, le=65535)
    ami_port: int = Field(default=5038, ge=1, le=65535)
    rtp_ports: tuple[int, int] = Field(
        default=(10000, 20000), description="RTP port range (rtp.conf), as in the walkthrough.")
    codecs: list[Literal["ulaw", "alaw", "g722"]] = Field(default=["ulaw", "alaw"], min_length=1)
    direct_media: bool = Field(
        default=False, description="Let media flow phone-to-phone (directmedia/direct_media).")
    strict_rtp: bool = Field(default=True, description="Asterisk's strict RTP learning (rtp.conf).")
    nat: PbxNat = Field(default_factory=PbxNat, description="NAT traversal settings.")
    tls: PbxTls = Field(default_factory=PbxTls, description="SIP over TLS, when transports has tls.")
    media: PbxMedia = Field(default_factory=PbxMedia, description="Media encryption (SRTP) and RTP profile.")
    trunk: Trunk | None = Field(default=None, description="A SIP trunk to the lab's carrier.")
    security: PbxSecurity = Field(default_factory=PbxSecurity, description="Guests and answers to unknown users.")
    fail2ban: Fail2ban | None = Field(default=None, description="Ban attackers found in Asterisk's log "
                                                                "(fail2ban, nftables).")
    endpoints: list[Endpoint] = Field(min_length=1)
    dialplan: dict[str, list[str]] = Field(
        description="Context name -> lines of extensions.conf; '{{ tech }}' becomes SIP or PJSIP.")

    @field_validator("rtp_ports")
    @classmethod
    def _ordered_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not (1024 <= low < high <= 65535):
            raise ValueError("must be [low, high] with 1024 <= low < high <= 65535")
        return value


class Phone(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    host: str
    extension: str = Field(description="An extension declared under pbx.endpoints.")
    sip_port: int = Field(default=5060, ge=1, le=65535)
    user: str | None = Field(
        default=None, pattern=r"^[0-9]{2,8}$",
        description="The user name it registers with (its address of record and digest login); "
                    "default: its extension. Another one is an account Asterisk may not know.")
    password: str | None = Field(
        default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.~+/=@%!-]+$",
        description="The password it answers a challenge with; default: its endpoint's secret of the "
                    "run. Another one is a phone whose password differs from Asterisk's.")
    registrar: str | None = Field(
        default=None, description="Where the phone registers (address or name); default: the "
                                  "PBX host's address. A phone outside reaches the box's public address.")
    transport: Literal["udp", "tcp", "tls"] = Field(
        default="udp", description="How it reaches the registrar (the account's ;transport=).")
    verify_server: bool = Field(
        default=True, description="Over TLS: check the PBX's certificate against the lab CA (and its "
                                  "name, when the registrar is a name).")
    media_encryption: Literal["none", "srtp", "srtp-mand", "srtp-mandf", "dtls_srtp"] = Field(
        default="none", description="baresip's mediaenc: srtp offers SRTP but takes RTP (RTP/AVP with "
                                    "a=crypto), srtp-mand insists (RTP/SAVP), srtp-mandf insists "
                                    "(RTP/SAVPF), dtls_srtp keys the SRTP over DTLS.")


#: RFC 2606 / RFC 6761: names for documentation and tests never leak anywhere.  SRV and
#: NAPTR owner names start with ``_service._proto.`` labels (RFC 2782).
RESERVED_NAME = r"(_[a-z0-9-]+\.)*[a-z0-9][a-z0-9.-]*\.(test|example|invalid|localhost)"


def _reserved(name: str) -> str:
    if not re.fullmatch(RESERVED_NAME, name):
        raise ValueError(f"{name!r}: use a reserved name ending in .test or .example")
    return name


class SrvRecord(_Strict):
    """An SRV record (RFC 2782): where the SIP service of a domain runs (RFC 3263 §4.2)."""

    name: str = Field(description="Owner name, e.g. _sip._udp.sip.carrier.example.")
    target: str = Field(description="The host that serves it: a name with an A record, not a CNAME "
                                    "(RFC 2782).")
    port: int = Field(default=5060, ge=1, le=65535)
    priority: int = Field(default=10, ge=0, le=65535)
    weight: int = Field(default=10, ge=0, le=65535)

    @field_validator("name", "target")
    @classmethod
    def _reserved_names(cls, value):
        return _reserved(value)


class NaptrRecord(_Strict):
    """A NAPTR record (RFC 3403): which transports a SIP domain offers (RFC 3263 §4.1)."""

    name: str = Field(description="The SIP domain, e.g. sip.carrier.example.")
    order: int = Field(default=10, ge=0, le=65535)
    preference: int = Field(default=10, ge=0, le=65535)
    flags: Literal["s", "a", "u", ""] = Field(default="s", description="'s': the replacement is an SRV name.")
    service: Literal["SIP+D2U", "SIP+D2T", "SIPS+D2T"] = Field(
        default="SIP+D2U", description="SIP over UDP, TCP, or TLS over TCP (RFC 3263 §4.1).")
    replacement: str = Field(description="The SRV owner name, e.g. _sip._udp.sip.carrier.example.")

    @field_validator("name", "replacement")
    @classmethod
    def _reserved_names(cls, value):
        return _reserved(value)


class Dns(_Strict):
    """A DNS server in the lab (dnsmasq), authoritative for the names listed.

    Every lab host then resolves through it: the DDNS scenario updates a record when the
    box's public address changes (the report's fix C: a dynamic address behind a name); the
    trunk labs publish a carrier's names (the proxy behind a CNAME, as the report's
    nslookup showed; the SIP domain with NAPTR and SRV records, as RFC 3263 intends — or
    not at all, as the report met it).  A name of the reserved zones (.example, .test) that
    is not listed gets NXDOMAIN.
    """

    host: str = Field(description="The host dnsmasq runs on.")
    records: dict[str, ipaddress.IPv4Address] = Field(
        default={}, description="Name → IPv4 address (A records), e.g. voip.home.example.")
    cnames: dict[str, str] = Field(
        default={}, description="Alias → canonical name (CNAME records); the canonical name needs "
                                "an A record here.")
    srv: list[SrvRecord] = Field(default=[], description="SRV records (RFC 2782).")
    naptr: list[NaptrRecord] = Field(default=[], description="NAPTR records (RFC 3403).")

    @field_validator("records", "cnames")
    @classmethod
    def _reserved_names(cls, value):
        for name, target in value.items():
            _reserved(name)
            if isinstance(target, str):
                _reserved(target)
        return value


# -- the carrier (issue 12: an OVH-style SIP trunk) ----------------------------------------

#: ARCEP reserves blocks of the French numbering plan for works of fiction (films, books,
#: labs): 01 99 00, 02 61 91, 03 53 01, 04 65 71, 05 36 49, 06 39 98, 10,000 numbers each
#: (décision n° 2018-0881 establishing the national numbering plan, annex 1; that annex was
#: replaced by décision n° 2022-1583).  Lab numbers come from these blocks only, so no real
#: subscriber is ever called from a lab.
FICTIONAL_BLOCKS = ("199 00", "261 91", "353 01", "465 71", "536 49", "639 98")
_FICTION = "|".join(b.replace(" ", "") for b in FICTIONAL_BLOCKS)
#: A line or alias in the carrier's international form without '+': 0033 + 9 digits.
CARRIER_NUMBER = rf"^0033({_FICTION})[0-9]{{4}}$"
#: A PSTN subscriber's number in national form: 0 + 9 digits.
NATIONAL_NUMBER = rf"^0({_FICTION})[0-9]{{4}}$"
_NUMBER_HINT = ("a fictional number (ARCEP blocks 01 99 00, 02 61 91, 03 53 01, 04 65 71, 05 36 49, "
                "06 39 98)")
#: Characters a trunk password may hold: it is written into sip.conf's register => line
#: (':' and '@' separate its fields, ';' starts a comment) and into Kamailio's config.
PASSWORD_PATTERN = r"^[A-Za-z0-9_.~+=%!-]+$"


class CarrierAccount(_Strict):
    """One line sold by the carrier: its number is also its SIP login (as at OVH)."""

    line: str = Field(pattern=CARRIER_NUMBER,
                      description=f"The line's number and login, 0033 form, {_NUMBER_HINT}, "
                                  "e.g. '0033199001234'.")
    password: str | None = Field(
        default=None, min_length=8, max_length=64, pattern=PASSWORD_PATTERN,
        description="Its SIP password; a random one is drawn per lab run when omitted.")
    aliases: list[str] = Field(
        default=[], description="Other numbers attached to the line (0033 form): they ring it, and it "
                                "may present them as caller ID.")

    @field_validator("aliases")
    @classmethod
    def _fictional_aliases(cls, value):
        for number in value:
            if not re.fullmatch(CARRIER_NUMBER, number):
                raise ValueError(f"{number!r}: an alias is {_NUMBER_HINT} in 0033 form, "
                                 "e.g. '0033199001235'")
        return value


class CarrierProxy(_Strict):
    """The carrier's outbound proxy, as its welcome letter names it."""

    name: str = Field(description="Its host name, e.g. proxy.carrier.example (not the SIP domain).")
    address: ipaddress.IPv4Address | None = Field(
        default=None, description="The address Kamailio listens on; default: the carrier host's first.")

    @field_validator("name")
    @classmethod
    def _reserved_name(cls, value):
        return _reserved(value)


class Carrier(_Strict):
    """An OVH-style SIP trunk operator: Kamailio as outbound proxy and registrar.

    Its rules are the report's: REGISTER for the SIP domain only (else ``404 Domain not
    bound``), digest ``401`` then ``200`` (``403 Wrong login or password``), ``407`` on
    INVITE, ``400 Wrong domain`` when the Request-URI's host is not the domain; calls go on
    to the PSTN next hop, and calls from it reach the registered line of the dialled number.
    """

    host: str = Field(description="The host Kamailio runs on.")
    domain: str = Field(description="The SIP domain of its lines (registrar, From, Request-URI), "
                                    "e.g. sip.carrier.example: not the proxy's name.")
    proxy: CarrierProxy
    caller_id: Literal["replace", "reject"] = Field(
        default="replace", description="A caller ID that is neither the line nor one of its aliases "
                                       "is replaced by the line, or refused (403 Caller ID not allowed).")
    keep_registrations: bool = Field(
        default=True, description="Keep registrations across a restart (in a db_text table), as an "
                                  "operator's database does; false keeps them in memory only.")
    pstn: str = Field(description="The host calls go on to (the PSTN stand-in); calls from its "
                                  "address are calls to the carrier's numbers.")
    pstn_port: int = Field(default=5060, ge=1, le=65535)
    inbound_uri: Literal["contact", "international", "national", "e164"] = Field(
        default="contact",
        description="How a call for a line's number is addressed to the PBX (carriers differ): to the "
                    "registered Contact as it is (its user part is the PBX's contact user), or to the "
                    "dialled number in 0033 form, national form (0X…) or E.164 (+33…) at the Contact's "
                    "address.")
    accounts: list[CarrierAccount] = Field(min_length=1)

    @field_validator("domain")
    @classmethod
    def _reserved_domain(cls, value):
        return _reserved(value)


class PstnPhone(_Strict):
    """A subscriber of the public network: a softphone with a fictional public number."""

    name: str = Field(pattern=NAME_PATTERN)
    host: str
    number: str = Field(pattern=NATIONAL_NUMBER,
                        description=f"Its number, national form, {_NUMBER_HINT}, e.g. '0639980001'.")
    display: str = Field(default="PSTN", pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._'-]{0,31}$")


class Pstn(_Strict):
    """The public network behind the carrier: a second Asterisk (an exchange) and its phones.

    A call for one of its numbers is answered the way a mobile network does: ``183 Session
    Progress`` with early media (an announcement), then ``180 Ringing``, then the phone.  Its
    phones dial the carrier's numbers (the trunk's DIDs) through the carrier.
    """

    host: str = Field(description="The host of the exchange (Asterisk 22, whatever the track).")
    early_media: bool = Field(default=True, description="Answer 183 with an announcement before ringing.")
    announcement: str = Field(
        default="Please hold, your call is being connected.", max_length=200,
        pattern=r"^[A-Za-z0-9 ,.'?!-]+$", description="What the early media says (spoken by espeak-ng).")
    phones: list[PstnPhone] = Field(default=[])


class Trunk(_Strict):
    """The PBX's SIP trunk to the carrier, rendered for both generations.

    legacy (sip.conf): ``register => line@domain:secret:line@proxy/line`` and a peer with
    ``host``, ``outboundproxy``, ``fromdomain``, ``fromuser``, ``defaultuser``, ``secret``,
    ``insecure=invite,port``, ``qualify``, ``nat``, codecs; modern (pjsip.conf): registration
    + auth + aor + endpoint + identify, with ``outbound_proxy``, ``server_uri``,
    ``client_uri``, ``contact_user``, ``from_domain``, ``from_user``.
    """

    name: str = Field(default="carrier", pattern=r"^[a-z][a-z0-9-]{0,19}$",
                      description="Peer/endpoint name: the dialplan dials {{ tech }}/NUMBER@<name>.")
    account: str = Field(description="The carrier line this trunk uses (its login), e.g. '0033199001234'.")
    password: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=PASSWORD_PATTERN,
        description="Default: the carrier account's password of this run; set a wrong one on purpose.")
    domain: str = Field(description="The registrar's SIP domain as the PBX writes it (REGISTER's "
                                    "Request-URI and To, From's host).")
    host: str | None = Field(
        default=None, description="Where calls are addressed (the Request-URI's host, chan_sip's host=); "
                                  "default: the domain.")
    proxy: str | None = Field(
        default=None, description="The outbound proxy (a name or an address); none: requests go to the "
                                  "domain itself, which must then resolve.")
    # `register` in the file; the attribute has another name (pydantic's BaseModel has a register).
    registers: bool = Field(default=True, alias="register",
                            description="Register the line (register => / registration).")
    qualify: bool = Field(default=True, description="Send OPTIONS to the carrier (chan_sip qualify, "
                                                    "PJSIP qualify_frequency).")
    qualify_frequency: int = Field(default=60, ge=1, le=3600, description="Seconds between OPTIONS.")
    expiration: int = Field(default=600, ge=60, le=3600, description="Registration lifetime asked, seconds.")
    retry_interval: int = Field(default=20, ge=1, le=3600,
                                description="Seconds before a failed registration is tried again.")
    forbidden_retry_interval: int | None = Field(
        default=None, ge=0, le=3600,
        description="PJSIP: seconds before retrying after a 403; unset = Asterisk's default 0 = never.")
    codecs: list[Literal["ulaw", "alaw", "g722"]] = Field(default=["alaw", "ulaw"], min_length=1)
    context: str = Field(default="from-carrier", pattern=r"^[A-Za-z0-9_-]+$",
                         description="Dialplan context of calls from the carrier.")
    contact_user: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9+]{1,32}$",
        description="The user part of the Contact the trunk registers (register => …/contact, PJSIP "
                    "contact_user): the extension a carrier that calls the Contact reaches. Default: the "
                    "line; 's' is what chan_sip and PJSIP use when none is given.")
    identity: Literal["pai", "rpid", "none"] = Field(
        default="pai",
        description="How the caller ID goes out besides From: P-Asserted-Identity (RFC 3325; chan_sip "
                    "sendrpid=pai, PJSIP send_pai), Remote-Party-ID (sendrpid=yes, send_rpid) or nothing.")
    trust_id_outbound: bool = Field(
        default=False,
        description="For a withheld caller ID, send the real identity with Privacy: id (RFC 3325 §7), so "
                    "the carrier can check the number and hide it (trust_id_outbound on both tracks; "
                    "otherwise chan_sip sends an anonymous P-Asserted-Identity and PJSIP none).")
    nat: bool = Field(default=False, description="The PBX is behind NAT: rport and symmetric RTP "
                                                 "(nat=force_rport,comedia / rtp_symmetric, rewrite_contact).")

    @field_validator("domain", "host")
    @classmethod
    def _names(cls, value):
        if value is None:
            return value
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", value):
            raise ValueError(f"{value!r} is not a host name")
        return value


class Variant(_Strict):
    """A named variant of a lab: overrides merged into the file (``None`` removes a key)."""

    description: str = ""
    overrides: dict[str, Any] = Field(description="Merged into the lab file like Lab.load(overrides=…).")


class LabSpec(_Strict):
    """A whole lab file."""

    name: str = Field(pattern=LAB_NAME_PATTERN)
    description: str = ""
    networks: list[Network] = Field(min_length=1)
    hosts: list[Host] = Field(min_length=1)
    pbx: Pbx
    phones: list[Phone] = Field(default=[])
    dns: Dns | None = Field(default=None, description="A DNS server in the lab (for DDNS).")
    carrier: Carrier | None = Field(default=None, description="A SIP trunk operator (Kamailio).")
    pstn: Pstn | None = Field(default=None, description="The public network behind the carrier.")
    etc_hosts: dict[str, dict[str, ipaddress.IPv4Address]] = Field(
        default={}, description="Host → extra /etc/hosts entries (name → address) in that host only: "
                                "the report's fix for a SIP domain that does not resolve.")
    variants: dict[str, Variant] = Field(
        default={}, description="Named variants of this lab (each a set of overrides), e.g. one per "
                                "mistake a notebook makes on purpose.")

    # -- look-ups used by the rest of labkit -------------------------------------------
    def host(self, name: str) -> Host:
        return _lookup(self.name, "host", name, {h.name: h for h in self.hosts})

    def network(self, name: str) -> Network:
        return _lookup(self.name, "network", name, {n.name: n for n in self.networks})

    def endpoint(self, extension: str) -> Endpoint:
        return _lookup(self.name, "extension", extension,
                       {e.extension: e for e in self.pbx.endpoints})

    def phone(self, name: str) -> Phone:
        return _lookup(self.name, "phone", name, {p.name: p for p in self.phones})

    def address_of(self, host: str) -> ipaddress.IPv4Address:
        """The host's first address: the one it uses for SIP."""
        return self.host(host).interfaces[0].address

    def carrier_address(self) -> ipaddress.IPv4Address:
        """The address the carrier's proxy listens on (and the lab DNS gives for its name)."""
        carrier = self.carrier
        return carrier.proxy.address or self.address_of(carrier.host)

    def carrier_account(self, line: str) -> CarrierAccount:
        accounts = self.carrier.accounts if self.carrier else []
        return _lookup(self.name, "carrier account", line, {a.line: a for a in accounts})

    def variant(self, name: str) -> dict[str, Any]:
        """The overrides of the variant ``name`` (a fresh copy, for Lab.load/reconfigure)."""
        return copy.deepcopy(_lookup(self.name, "variant", name, self.variants).overrides)


def _lookup(lab: str, kind: str, name: str, known: dict[str, Any]) -> Any:
    """One declared object by name, or an error naming the ones that exist."""
    try:
        return known[name]
    except (KeyError, TypeError):
        raise LabFileError(f"Lab {lab} declares no {kind} {name!r}.",
                           cause="a misspelt name, or a name from another lab file",
                           hint=f"{kind}s of this lab: {', '.join(map(str, known)) or 'none'}") from None


def draw_secrets(spec: LabSpec) -> dict[str, str]:
    """Digest passwords per extension: the lab file's, else a fresh random one.

    The walkthrough used ``secret=test``; a lab that runs on a student's laptop should not
    teach that habit, so omitted secrets are 16 random URL-safe characters per lab run.
    A carrier's lines and the PSTN's phones get theirs too, under ``carrier/<line>`` and
    ``pstn/<number>`` (no extension has a '/').
    """
    drawn = {e.extension: e.secret or secrets.token_urlsafe(12) for e in spec.pbx.endpoints}
    if spec.carrier is not None:
        drawn.update({carrier_secret_key(a.line): a.password or secrets.token_urlsafe(12)
                      for a in spec.carrier.accounts})
    if spec.pstn is not None:
        drawn.update({pstn_secret_key(p.number): secrets.token_urlsafe(12) for p in spec.pstn.phones})
    return drawn


def carrier_secret_key(line: str) -> str:
    """Where a carrier line's password of this run is kept in the run's secrets."""
    return f"carrier/{line}"


def pstn_secret_key(number: str) -> str:
    return f"pstn/{number}"


def json_schema() -> dict[str, Any]:
    schema = LabSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "labkit lab file"
    return schema
