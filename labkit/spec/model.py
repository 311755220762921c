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


class Host(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Host name, also its namespace suffix.")
    interfaces: list[Interface] = Field(min_length=1)
    gateway: ipaddress.IPv4Address | None = Field(
        default=None, description="Default gateway; must lie in one of the host's networks.")
    forwarding: bool = Field(default=False, description="Route between its networks.")
    nat: Nat | None = Field(default=None, description="Make this host an ISP box doing NAT.")


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


class Dns(_Strict):
    """A DNS server in the lab (dnsmasq), authoritative for the names listed.

    Every lab host then resolves through it: the DDNS scenario updates a record when the
    box's public address changes (the report's fix C: a dynamic address behind a name).
    """

    host: str = Field(description="The host dnsmasq runs on.")
    records: dict[str, ipaddress.IPv4Address] = Field(
        default={}, description="Name → IPv4 address (A records), e.g. voip.home.example.")

    @field_validator("records")
    @classmethod
    def _reserved_names(cls, value):
        for name in value:
            # RFC 2606 / RFC 6761: names for documentation and tests never leak anywhere.
            if not re.fullmatch(r"[a-z0-9.-]+\.(test|example|invalid|localhost)", name):
                raise ValueError(f"{name!r}: use a reserved name ending in .test or .example")
        return value


class LabSpec(_Strict):
    """A whole lab file."""

    name: str = Field(pattern=LAB_NAME_PATTERN)
    description: str = ""
    networks: list[Network] = Field(min_length=1)
    hosts: list[Host] = Field(min_length=1)
    pbx: Pbx
    phones: list[Phone] = Field(default=[])
    dns: Dns | None = Field(default=None, description="A DNS server in the lab (for DDNS).")

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
    """
    return {e.extension: e.secret or secrets.token_urlsafe(12) for e in spec.pbx.endpoints}


def json_schema() -> dict[str, Any]:
    schema = LabSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "labkit lab file"
    return schema
