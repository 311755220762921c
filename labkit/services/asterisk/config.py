"""Render Asterisk's configuration for either track from the same lab model.

Templates live in ``configs/asterisk/{common,modern,legacy}/*.j2``; the rendered files are
written to the lab directory (``config/<pbx host>/``), kept after the lab stops, and read
back by notebooks through ``lab.pbx.config("pjsip.conf")``.

The two tracks differ only where Asterisk does:

============  =========================  =============================
track         SIP channel driver          config file / dial string
============  =========================  =============================
legacy (16)   chan_sip                    ``sip.conf``, ``SIP/6000``
modern (22)   chan_pjsip (+ res_pjsip)    ``pjsip.conf``, ``PJSIP/6000``
============  =========================  =============================
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from labkit.spec.model import LabSpec
from labkit import resources

TEMPLATES = resources.templates_dir("asterisk")

# Modules both tracks load: RTP, the dialplan, bridging, G.711/G.722 and SRTP.
_CORE_MODULES = [
    "res_rtp_asterisk", "res_srtp", "res_timing_timerfd", "pbx_config", "app_dial",
    "app_echo", "app_playback", "bridge_simple", "bridge_native_rtp", "codec_ulaw",
    "codec_alaw", "codec_g722", "format_wav", "format_pcm", "func_callerid", "func_channel",
]
# PJSIP is split into many modules; these are the ones a registrar + calls need
# (res_pjsip_session and its SDP/RTP handling, digest auth, user/IP identification, NAT).
_PJSIP_MODULES = [
    "res_sorcery_config", "res_sorcery_memory", "res_sorcery_astdb", "res_pjproject",
    "res_pjsip", "res_pjsip_session", "res_pjsip_pubsub", "res_pjsip_authenticator_digest",
    "res_pjsip_outbound_authenticator_digest", "res_pjsip_endpoint_identifier_user",
    "res_pjsip_endpoint_identifier_ip", "res_pjsip_registrar", "res_pjsip_outbound_registration",
    "res_pjsip_sdp_rtp", "res_pjsip_nat", "res_pjsip_caller_id", "res_pjsip_logger",
    "res_pjsip_rfc3326", "res_pjsip_dtmf_info", "res_pjsip_acl", "res_pjsip_header_funcs",
    "chan_pjsip",
]
MODULES = {
    "modern": _PJSIP_MODULES + _CORE_MODULES,
    # res_rtp_asterisk of Asterisk 16 links against res_pjproject (ICE support).
    "legacy": ["res_sorcery_config", "res_sorcery_memory", "res_pjproject", "chan_sip"] + _CORE_MODULES,
}
CHANNEL_TECH = {"modern": "PJSIP", "legacy": "SIP"}
SIP_CONFIG = {"modern": "pjsip.conf", "legacy": "sip.conf"}
MODULE_DIRS = {
    "modern": "/usr/lib/x86_64-linux-gnu/asterisk/modules",
    "legacy": "/usr/lib/asterisk/modules",
}


@dataclass(frozen=True)
class PbxCredentials:
    """Secrets drawn for one lab run: digest passwords per extension, the AMI login."""

    secrets: dict[str, str]
    ami_user: str
    ami_secret: str


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


def _is_name(address: str | None) -> bool:
    import ipaddress
    if not address:
        return False
    try:
        ipaddress.IPv4Address(address)
        return False
    except ValueError:
        return True


def render_pbx(spec: LabSpec, track: str, credentials: PbxCredentials, out_dir: Path,
               module_dir: str | None = None) -> dict[str, Path]:
    """Write every Asterisk configuration file for ``track`` into ``out_dir``."""
    if track not in MODULES:
        from labkit.errors import LabStateError
        raise LabStateError(f"Unknown track {track!r}.", hint=f"use one of: {', '.join(MODULES)}")
    env = _environment()
    pbx = spec.pbx
    tech = CHANNEL_TECH[track]
    dialplan = {
        context: [env.from_string(line).render(tech=tech) for line in lines]
        for context, lines in pbx.dialplan.items()
    }
    values = dict(
        lab=spec.name, track=track, host=pbx.host, tech=tech,
        module_dir=module_dir or MODULE_DIRS[track], entity_id=entity_id(spec.name),
        transports=pbx.transports, sip_port=pbx.sip_port, codecs=pbx.codecs,
        direct_media=pbx.direct_media, strict_rtp=pbx.strict_rtp,
        rtp_start=pbx.rtp_ports[0], rtp_end=pbx.rtp_ports[1],
        ami_port=pbx.ami_port, ami_user=credentials.ami_user, ami_secret=credentials.ami_secret,
        endpoints=pbx.endpoints, secrets=credentials.secrets, dialplan=dialplan,
        modules=MODULES[track],
        nat=dict(external_address=pbx.nat.external_address,
                 external_address_is_name=_is_name(pbx.nat.external_address),
                 local_nets=[str(n) for n in pbx.nat.local_nets], symmetric=pbx.nat.symmetric),
    )
    templates = {
        "asterisk.conf": "common/asterisk.conf.j2",
        "extensions.conf": "common/extensions.conf.j2",
        "rtp.conf": "common/rtp.conf.j2",
        "manager.conf": "common/manager.conf.j2",
        "logger.conf": "common/logger.conf.j2",
        "modules.conf": f"{track}/modules.conf.j2",
        SIP_CONFIG[track]: f"{track}/{SIP_CONFIG[track]}.j2",
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
