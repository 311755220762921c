"""The two generations of Asterisk a lab can run: every per-track fact, in one place.

The report had to go back from Asterisk 21+ (PJSIP only) to an older Asterisk to keep
chan_sip.  The kit runs both worlds from the same lab file; whatever differs between them
— the image, the SIP channel driver, its configuration file, its CLI commands, how a
registration or a channel shows — is a field of a :class:`Track` here, so that the rest of
labkit asks ``track.sip_config`` instead of testing the track's name.

==========  ==========  ==============  ============  ====================  ==========
track       Asterisk    driver          config        peers                 channel
==========  ==========  ==============  ============  ====================  ==========
``legacy``  16.28       chan_sip        sip.conf      sip show peers        SIP/6000
``modern``  22 LTS      chan_pjsip      pjsip.conf    pjsip show endpoints  PJSIP/6000
==========  ==========  ==============  ============  ====================  ==========
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from labkit.errors import LabStateError

# Modules both tracks load: RTP, the dialplan, bridging, G.711/G.722 and SRTP, and the
# security framework's log channel (res_security_log: the ``security`` file fail2ban reads).
_CORE_MODULES = (
    "res_rtp_asterisk", "res_srtp", "res_timing_timerfd", "pbx_config", "app_dial",
    "app_echo", "app_playback", "bridge_simple", "bridge_native_rtp", "codec_ulaw",
    "codec_alaw", "codec_g722", "format_wav", "format_pcm", "func_callerid", "func_channel",
    "res_security_log",
)
# PJSIP is split into many modules; these are the ones a registrar + calls need
# (res_pjsip_session and its SDP/RTP handling, digest auth, user/IP identification, NAT).
_PJSIP_MODULES = (
    "res_sorcery_config", "res_sorcery_memory", "res_sorcery_astdb", "res_pjproject",
    "res_pjsip", "res_pjsip_session", "res_pjsip_pubsub", "res_pjsip_authenticator_digest",
    "res_pjsip_outbound_authenticator_digest", "res_pjsip_endpoint_identifier_user",
    "res_pjsip_endpoint_identifier_ip", "res_pjsip_endpoint_identifier_anonymous", "res_pjsip_registrar",
    "res_pjsip_outbound_registration",
    "res_pjsip_sdp_rtp", "res_pjsip_nat", "res_pjsip_caller_id", "res_pjsip_logger",
    "res_pjsip_rfc3326", "res_pjsip_dtmf_info", "res_pjsip_acl", "res_pjsip_header_funcs",
    "chan_pjsip",
)
# res_rtp_asterisk of Asterisk 16 links against res_pjproject (ICE support).
_CHAN_SIP_MODULES = ("res_sorcery_config", "res_sorcery_memory", "res_pjproject", "chan_sip")


@dataclass(frozen=True)
class Commands:
    """The CLI commands that show the same thing on each track."""

    peers: str          # the configured SIP users
    contacts: str       # where registered phones are
    channel_stats: str  # RTP statistics of the calls in progress
    reload: str         # re-read the SIP configuration
    registry: str = ""  # the registrations Asterisk makes itself (a trunk's)
    trunk_status: str = ""  # reachability of SIP peers (qualify's OPTIONS)


def _sip_peers(events: list[dict]) -> dict[str, str]:
    """chan_sip's AMI ``SIPpeers``: one PeerEntry per peer, with its address when registered.
    Only peers that register (``host=dynamic``): a trunk's peer has its carrier's address
    without having registered to us."""
    return {e["ObjectName"]: f"{e['IPaddress']}:{e['IPport']}" for e in events
            if e.get("Event") == "PeerEntry" and e.get("Dynamic", "yes") == "yes"
            and e.get("IPaddress") not in (None, "", "-none-", "(null)")}


def _pjsip_contacts(events: list[dict]) -> dict[str, str]:
    """PJSIP's AMI ``PJSIPShowContacts``: one ContactList per contact, its URI holds host:port."""
    out = {}
    for event in events:
        if event.get("Event") == "ContactList":
            match = re.search(r"@([^;>]+)", event.get("Uri", ""))
            out[event.get("Endpoint", "")] = match.group(1) if match else event.get("Uri", "")
    return out


# `pjsip show registrations` (modern): "carrier-reg/sip:sip.carrier.example  carrier-auth  Registered (exp. 590s)"
_PJSIP_REGISTRY = re.compile(r"^\s*(?P<name>[^/\s<=]+)/(?P<uri>sips?:\S+)\s+(?P<auth>\S+)\s+(?P<state>[A-Z][a-z]+)",
                             re.MULTILINE)
# `sip show registry` (legacy): "proxy.carrier.example:5060  N  003319900123  585 Registered  <time>";
# the state may be several words (Request Sent, No Authentication), the user is cut at 12 characters.
_SIP_REGISTRY = re.compile(r"^(?P<name>\S+:\d+)\s+[YN]\s+(?P<user>\S+)\s+(?P<refresh>\d+)\s+"
                           r"(?P<state>\S+(?: \S+)*?)(?:\s{2,}.*)?$", re.MULTILINE)


def _registry(pattern: re.Pattern) -> Callable[[str], dict[str, str]]:
    return lambda text: {m["name"]: m["state"] for m in pattern.finditer(text)}


# `pjsip show contacts` (modern): "Contact:  carrier/sip:sip.carrier.example  5d4e…  Avail  1.234"
_PJSIP_CONTACT = re.compile(r"^\s*Contact:\s+(?P<name>[^/\s]+)/\S+\s+\S+\s+(?P<status>[A-Z][A-Za-z]+)",
                            re.MULTILINE)
# `sip show peers` (legacy): "carrier/0033199001234  203.0.113.10  …  5060  OK (2 ms)"
_SIP_PEER = re.compile(r"^(?P<name>[^/\s]+)(?:/\S+)?\s+\S+.*?\s(?P<status>OK \(\d+ ms\)|UNREACHABLE|"
                       r"UNKNOWN|LAGGED \(\d+ ms\)|Unmonitored)\s*", re.MULTILINE)


def _peer_status(pattern: re.Pattern) -> Callable[[str], dict[str, str]]:
    return lambda text: {m["name"]: m["status"] for m in pattern.finditer(text)}


# `pjsip show channelstats` (modern): BridgeId ChannelId UpTime Codec, then receive and
# transmit Count Lost Pct Jitter, then RTT.
_PJSIP_STATS = re.compile(
    r"^\s*\S+\s+(?P<channel>\S+)\s+\d\d:\d\d:\d\d\s+(?P<codec>\S+)\s+(?P<rx_packets>\d+)\s+"
    r"(?P<rx_lost>\d+)\s+\d+\s+(?P<rx_jitter>[\d.]+)\s+(?P<tx_packets>\d+)\s+(?P<tx_lost>\d+)\s+"
    r"\d+\s+(?P<tx_jitter>[\d.]+)", re.MULTILINE)
# `sip show channelstats` (legacy): Peer CallID Duration, Recv: Pack Lost (%) Jitter,
# Send: Pack Lost (%) Jitter.
_SIP_STATS = re.compile(
    r"^(?P<channel>\S+)\s+\S+\s+\d\d:\d\d:\d\d\s+(?P<rx_packets>\d+)\s+(?P<rx_lost>\d+)\s+"
    r"\(\s*[\d.]+%\)\s+(?P<rx_jitter>[\d.]+)\s+(?P<tx_packets>\d+)\s+(?P<tx_lost>\d+)\s+"
    r"\(\s*[\d.]+%\)\s+(?P<tx_jitter>[\d.]+)", re.MULTILINE)


@dataclass(frozen=True)
class Track:
    """One Asterisk generation and everything that differs with it."""

    name: str
    #: The lab image (root filesystem) its Asterisk runs from; see :mod:`labkit.images`.
    image: str
    #: What a person reads: "Asterisk 22 with PJSIP (pjsip.conf)".
    generation: str
    asterisk_version: str
    sip_driver: str
    #: The channel technology in dial strings and channel names (``PJSIP/6000``).
    channel_tech: str
    sip_config: str
    #: Where the image's Debian package puts Asterisk's modules.
    module_dir: str
    modules: tuple[str, ...]
    commands: Commands
    #: The AMI action listing registrations, and how to read its events.
    registrations_action: str
    parse_registrations: Callable[[list[dict]], dict[str, str]] = field(compare=False)
    channel_stats_pattern: re.Pattern = field(compare=False)
    #: The prefix of this track's SIP CLI commands, and the other track's.
    cli_prefix: str = ""
    other_cli_prefix: str = ""
    #: How to read ``commands.registry`` (registration → state, e.g. "Registered") and
    #: ``commands.trunk_status`` (peer → "Avail" / "OK (2 ms)" / "Unavail" / "UNREACHABLE").
    parse_registry: Callable[[str], dict[str, str]] = field(default=lambda text: {}, compare=False)
    parse_trunk_status: Callable[[str], dict[str, str]] = field(default=lambda text: {}, compare=False)
    #: The words its trunk-status command uses for a peer that answers OPTIONS.
    reachable: tuple[str, ...] = ()

    def parse_channel_stats(self, text: str) -> list[dict]:
        """Rows of Asterisk's RTP statistics per channel: packets and losses each way."""
        rows = []
        for match in self.channel_stats_pattern.finditer(text):
            row = match.groupdict()
            for key in ("rx_packets", "rx_lost", "tx_packets", "tx_lost"):
                row[key] = int(row[key])
            for key in ("rx_jitter", "tx_jitter"):
                row[key] = float(row[key])
            rows.append(row)
        return rows

    def wrong_command_cause(self, command: str) -> str | None:
        """Why a CLI command is unknown, when it belongs to the other generation."""
        if command.startswith(self.other_cli_prefix):
            return (f"this is the {self.name} track ({self.sip_driver}): its SIP commands start "
                    f"with `{self.cli_prefix}`, e.g. `{self.commands.peers}`")
        return None

    def __str__(self) -> str:
        return self.name


MODERN = Track(
    name="modern", image="modern",
    generation="Asterisk 22 with PJSIP (pjsip.conf)", asterisk_version="22",
    sip_driver="chan_pjsip", channel_tech="PJSIP", sip_config="pjsip.conf",
    module_dir="/usr/lib/x86_64-linux-gnu/asterisk/modules",
    modules=_PJSIP_MODULES + _CORE_MODULES,
    commands=Commands(peers="pjsip show endpoints", contacts="pjsip show contacts",
                      channel_stats="pjsip show channelstats", reload="pjsip reload",
                      registry="pjsip show registrations", trunk_status="pjsip show contacts"),
    registrations_action="PJSIPShowContacts", parse_registrations=_pjsip_contacts,
    channel_stats_pattern=_PJSIP_STATS, cli_prefix="pjsip ", other_cli_prefix="sip ",
    parse_registry=_registry(_PJSIP_REGISTRY), parse_trunk_status=_peer_status(_PJSIP_CONTACT),
    reachable=("Avail",),
)

LEGACY = Track(
    name="legacy", image="legacy",
    generation="Asterisk 16 with chan_sip (sip.conf)", asterisk_version="16",
    sip_driver="chan_sip", channel_tech="SIP", sip_config="sip.conf",
    module_dir="/usr/lib/asterisk/modules",
    modules=_CHAN_SIP_MODULES + _CORE_MODULES,
    commands=Commands(peers="sip show peers", contacts="sip show peers",
                      channel_stats="sip show channelstats", reload="sip reload",
                      registry="sip show registry", trunk_status="sip show peers"),
    registrations_action="SIPpeers", parse_registrations=_sip_peers,
    channel_stats_pattern=_SIP_STATS, cli_prefix="sip ", other_cli_prefix="pjsip ",
    parse_registry=_registry(_SIP_REGISTRY), parse_trunk_status=_peer_status(_SIP_PEER),
    reachable=("OK",),
)

#: Every track, the default first.
TRACKS: dict[str, Track] = {track.name: track for track in (MODERN, LEGACY)}
NAMES: tuple[str, ...] = tuple(TRACKS)
DEFAULT = MODERN
#: Softphones, SIPp, the lab DNS server and the carrier always run from this image: it
#: has the newest baresip and a SIPp built with TLS, whichever Asterisk the track runs.
TOOLS_IMAGE = MODERN.image


def get(track: str | Track) -> Track:
    """The :class:`Track` named ``track``; the one place an unknown name is refused."""
    if isinstance(track, Track):
        return track
    try:
        return TRACKS[track]
    except (KeyError, TypeError):
        raise LabStateError(f"Unknown track {track!r}.",
                            cause="a track is one of the two Asterisk generations",
                            hint=f"use one of: {', '.join(NAMES)}") from None
