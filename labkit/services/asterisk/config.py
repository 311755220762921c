"""Render Asterisk's configuration for either track from the same lab model.

Templates live in ``configs/asterisk/{common,modern,legacy}/*.j2``; the rendered files are
written to the lab directory (``config/<pbx host>/``), kept after the lab stops, and read
back by notebooks through ``lab.pbx.config("pjsip.conf")``.  The two tracks differ only
where Asterisk does (:mod:`labkit.tracks`): the SIP driver's file and its modules.
"""
from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import jinja2

import labkit.spec.stanza as stanza
from labkit import resources, tracks
from labkit.addresses import is_host_name
from labkit.services.base import Credentials
from labkit.spec.model import LabSpec, PbxTls, carrier_secret_key
from labkit.tracks import Track

TEMPLATES = resources.templates_dir("asterisk")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
    )


def entity_id(lab: str) -> str:
    """A stable, locally administered MAC-style id per lab (asterisk.conf ``entityid``)."""
    digest = hashlib.sha256(lab.encode()).digest()
    return ":".join(f"{b:02x}" for b in (b"\x02" + digest[:5]))


#: The default cipher list: ECDHE key exchange (forward secrecy) with AEAD ciphers only, as
#: RFC 9325 §4.2 recommends for TLS 1.2 (TLS 1.3's suites are all of that kind).
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: pjproject's method values for one TLS version (pjsip_ssl_method).
_PJSIP_METHODS = {"1.0": "tlsv1", "1.1": "tlsv1_1", "1.2": "tlsv1_2", "1.3": "tlsv1_3"}


def _cipher_names(openssl_list: str) -> str:
    """An OpenSSL cipher string expanded to the comma-separated names PJSIP's ``cipher``
    takes (it does not read OpenSSL's ``+``/``!`` syntax): TLS 1.2 suites only, since TLS
    1.3 suites are not chosen by this list."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers(openssl_list)
    return ",".join(c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2")


def tls_settings(tls: PbxTls) -> dict:
    """What both templates need to render the TLS transport of ``tls``."""
    ciphers = tls.ciphers or DEFAULT_CIPHERS
    versions = sorted(set(tls.versions))
    return dict(
        sip_conf=stanza.parse(tls.sip_conf, stanza.CHAN_SIP_TLS)[0] if tls.sip_conf else None,
        pjsip_conf=stanza.parse(tls.pjsip_conf, stanza.PJSIP_TLS)[0] if tls.pjsip_conf else None,
        port=tls.port, combined=tls.certificate.combined, versions=versions, ciphers=ciphers,
        client_method=tls.client_method, verify_client=tls.verify_client,
        # One version → that exact method; several → "every version the library allows"
        # (pjproject has no minimum: PJSIP_SSLV23_METHOD, SSL_CTX with TLS_method()).
        method=_PJSIP_METHODS[versions[0]] if len(versions) == 1 else "sslv23",
        pjsip_cipher=None if ciphers.upper() == "ALL" else _cipher_names(ciphers))


def trunk_settings(spec: LabSpec, credentials: Credentials) -> dict | None:
    """What both templates need to render ``pbx.trunk`` (None: no trunk).

    The password is the lab file's (a wrong one on purpose) or the carrier account's of this
    run; calls go to the domain unless ``host`` says otherwise; inbound calls are recognised
    by the carrier proxy's address (PJSIP identify, chan_sip's peer address).
    """
    trunk = spec.pbx.trunk
    if trunk is None:
        return None
    password = trunk.password or credentials.secrets[carrier_secret_key(trunk.account)]
    return dict(
        name=trunk.name, line=trunk.account, password=password, domain=trunk.domain,
        host=trunk.host or trunk.domain, proxy=trunk.proxy, registers=trunk.registers,
        qualify=trunk.qualify, qualify_frequency=trunk.qualify_frequency,
        expiration=trunk.expiration, retry_interval=trunk.retry_interval,
        forbidden_retry_interval=trunk.forbidden_retry_interval, codecs=trunk.codecs,
        context=trunk.context, nat=trunk.nat, contact_user=trunk.contact_user or trunk.account,
        identity=trunk.identity, trust_id_outbound=trunk.trust_id_outbound,
        match=str(spec.carrier_address()) if spec.carrier is not None else None)


def render_pbx(spec: LabSpec, track: Track | str, credentials: Credentials, out_dir: Path,
               module_dir: str | None = None) -> dict[str, Path]:
    """Write every Asterisk configuration file for ``track`` into ``out_dir``."""
    track = tracks.get(track)
    env = _environment()
    pbx = spec.pbx
    tech = track.channel_tech
    dialplan = {
        context: [env.from_string(line).render(tech=tech) for line in lines]
        for context, lines in pbx.dialplan.items()
    }
    values = dict(
        lab=spec.name, track=track.name, host=pbx.host, tech=tech,
        module_dir=module_dir or track.module_dir, entity_id=entity_id(spec.name),
        transports=pbx.transports, sip_port=pbx.sip_port, codecs=pbx.codecs,
        direct_media=pbx.direct_media, strict_rtp=pbx.strict_rtp,
        rtp_start=pbx.rtp_ports[0], rtp_end=pbx.rtp_ports[1],
        ami_port=pbx.ami_port, ami_user=credentials.ami_user, ami_secret=credentials.ami_secret,
        endpoints=pbx.endpoints, secrets=credentials.secrets, dialplan=dialplan,
        modules=track.modules,
        tls=tls_settings(pbx.tls) if "tls" in pbx.transports else None,
        media=pbx.media,
        phone_transports={p.extension: p.transport for p in spec.phones},
        trunk=trunk_settings(spec, credentials),
        security=pbx.security,
        nat=dict(external_address=pbx.nat.external_address,
                 external_address_is_name=is_host_name(pbx.nat.external_address),
                 local_nets=[str(n) for n in pbx.nat.local_nets], symmetric=pbx.nat.symmetric),
    )
    templates = {
        "asterisk.conf": "common/asterisk.conf.j2",
        "extensions.conf": "common/extensions.conf.j2",
        "rtp.conf": "common/rtp.conf.j2",
        "manager.conf": "common/manager.conf.j2",
        "logger.conf": "common/logger.conf.j2",
        "modules.conf": f"{track.name}/modules.conf.j2",
        track.sip_config: f"{track.name}/{track.sip_config}.j2",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    # Small fixed files for modules that log an error when their file is missing.
    for static in sorted((TEMPLATES / "common" / "static").glob("*.conf")):
        path = out_dir / static.name
        path.write_text(static.read_text())
        written[static.name] = path
    for name, template in templates.items():
        path = out_dir / name
        path.write_text(env.get_template(template).render(**values))
        written[name] = path
    return written
