"""Asterisk in a lab: render its configuration, run it sandboxed, talk to it (CLI and AMI).

Inside the sandbox (see :mod:`labkit.daemons`):

==================  ===========================================  ==========
path                what                                           mode
==================  ===========================================  ==========
``/``               the track's image (Asterisk 22 or 16)           read-only
``/etc/asterisk``   the rendered configuration (``config/<host>``)  read-only
``/etc/hosts``      the lab's hosts file                             read-only
``/srv/lab``        state: astdb, keys, spool, control socket       read-write
``/srv/lab/log``    logs, kept in ``logs/<host>/``                   read-write
==================  ===========================================  ==========

Readiness is ``core waitfullybooted`` answering (the Asterisk testsuite's test), not a
sleep; stopping is ``core stop gracefully``, then SIGTERM, then SIGKILL.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from labkit.services.asterisk.ami import AmiClient
from labkit.services.base import Daemon, Sandbox, log_tail
from labkit.errors import AsteriskError, AsteriskTimeout, DaemonError
from labkit.net.netns import Namespace
from labkit.services.asterisk.config import SIP_CONFIG, PbxCredentials
from labkit.state import LabRecord

ASTERISK_CONF = "/etc/asterisk/asterisk.conf"


class Asterisk(Daemon):
    """One Asterisk server of a lab."""

    ready_timeout = 15.0

    def __init__(self, *, host: str, track: str, namespace: Namespace, rootfs: Path,
                 config_dir: Path, state_dir: Path, log_dir: Path, etc_dir: Path,
                 credentials: PbxCredentials, ami_port: int, record: LabRecord):
        self.host = host
        self.track = track
        self.config_dir = config_dir
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.credentials = credentials
        self.ami_port = ami_port
        self._ami: AmiClient | None = None
        for sub in ("db", "keys", "spool", "run"):
            (state_dir / sub).mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        sandbox = Sandbox(
            rootfs=rootfs, hostname=host, etc_dir=etc_dir,
            ro_binds=[(config_dir, "/etc/asterisk")],
            binds=[(state_dir, "/srv/lab"), (log_dir, "/srv/lab/log")],
        )
        # -f: stay in the foreground (we are its parent); -n: no colours in logs;
        # -q -m: quiet console (the log file is where messages go).
        command = ["asterisk", "-f", "-n", "-q", "-m", "-C", ASTERISK_CONF]
        super().__init__(f"{host}/asterisk", namespace, sandbox, command,
                         log_dir / "asterisk.out", record)

    # -- lifecycle hooks ---------------------------------------------------------------
    def ready(self) -> bool:
        # Blocks inside Asterisk until boot completes, so one probe usually suffices.
        result = self._remote("core waitfullybooted", timeout=self.ready_timeout, check=False)
        return result.returncode == 0 and "fully booted" in result.stdout.lower()

    def request_stop(self) -> None:
        self.close_ami()
        self._remote("core stop gracefully", timeout=3, check=False)

    def stop(self) -> None:
        self.close_ami()
        super().stop()

    # -- talking to it -------------------------------------------------------------------
    def cli(self, command: str, timeout: float = 15.0) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output.

        >>> lab.pbx.cli("pjsip show endpoints")
        """
        result = self._remote(command, timeout=timeout)
        out = result.stdout
        if re.search(r"^No such command '", out, re.MULTILINE):
            raise AsteriskError(f"Asterisk does not know the command {command!r}.",
                                cause=_wrong_track_cause(command, self.track),
                                hint="`core show help` lists the commands")
        return out

    def _remote(self, command: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        """``asterisk -rx`` through the control socket, in a sandbox of the same image.

        The remote console needs no network: it talks over ``asterisk.ctl`` in the state
        dir, so it runs outside the namespace (faster, and works while the network is
        being changed).
        """
        argv = self.sandbox.argv(["asterisk", "-C", ASTERISK_CONF, "-rx", command])
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AsteriskTimeout(f"Asterisk did not answer {command!r} within {timeout:g} s.",
                                hint=f"read {self.log_dir / 'messages'}") from None
        if check and result.returncode != 0:
            raise AsteriskError(
                f"Cannot reach Asterisk on {self.host} for {command!r}: "
                f"{(result.stderr or result.stdout).strip()}",
                cause="Asterisk is not running (it may have crashed)",
                hint=f"`labkit status`; its log: {self.log_dir / 'messages'}")
        return result

    @property
    def ami(self) -> AmiClient:
        """The AMI session (connected on first use, closed when the lab stops)."""
        if self._ami is None:
            self._ami = AmiClient(self.namespace, self.ami_port, self.credentials.ami_user,
                                  self.credentials.ami_secret).connect()
        return self._ami

    def close_ami(self) -> None:
        if self._ami is not None:
            self._ami.close()
            self._ami = None

    def config(self, name: str) -> str:
        """A rendered configuration file, e.g. ``config("pjsip.conf")``."""
        path = self.config_dir / name
        if not path.is_file():
            available = ", ".join(sorted(p.name for p in self.config_dir.iterdir()))
            raise AsteriskError(f"No rendered file {name} for this PBX.",
                                hint=f"available: {available}")
        return path.read_text()

    @property
    def sip_config_name(self) -> str:
        return SIP_CONFIG[self.track]

    def log(self, lines: int = 40) -> str:
        """The end of Asterisk's ``messages`` log."""
        return log_tail(self.log_dir / "messages", lines)

    def channel_stats(self) -> list[dict]:
        """RTP packets received and sent per channel of the calls in progress.

        Legacy: ``sip show channelstats`` (one row per peer); modern: ``pjsip show
        channelstats`` (one row per channel).  Each row: channel, rx/tx packets, lost, jitter.
        """
        command = "sip show channelstats" if self.track == "legacy" else "pjsip show channelstats"
        return parse_channel_stats(self.cli(command), self.track)

    # -- registrations, both tracks ----------------------------------------------------
    def registered(self) -> dict[str, str]:
        """Extension → contact address for every registered endpoint, via AMI.

        Legacy: ``SIPpeers`` (chan_sip); modern: ``PJSIPShowContacts``.
        """
        if self.track == "legacy":
            events = self.ami.action("SIPpeers")
            return {e["ObjectName"]: f"{e['IPaddress']}:{e['IPport']}" for e in events
                    if e.get("Event") == "PeerEntry" and e.get("IPaddress") not in (None, "", "-none-", "(null)")}
        events = self.ami.action("PJSIPShowContacts")
        out = {}
        for event in events:
            if event.get("Event") == "ContactList":
                match = re.search(r"@([^;>]+)", event.get("Uri", ""))
                out[event.get("Endpoint", "")] = match.group(1) if match else event.get("Uri", "")
        return out


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


def parse_channel_stats(text: str, track: str) -> list[dict]:
    """Rows of Asterisk's RTP statistics per channel: packets and losses each way."""
    pattern = _SIP_STATS if track == "legacy" else _PJSIP_STATS
    rows = []
    for match in pattern.finditer(text):
        row = match.groupdict()
        for key in ("rx_packets", "rx_lost", "tx_packets", "tx_lost"):
            row[key] = int(row[key])
        for key in ("rx_jitter", "tx_jitter"):
            row[key] = float(row[key])
        rows.append(row)
    return rows


def _wrong_track_cause(command: str, track: str) -> str | None:
    if track == "modern" and command.startswith("sip "):
        return "this is the modern track (PJSIP): chan_sip's `sip …` commands are `pjsip …` here"
    if track == "legacy" and command.startswith("pjsip "):
        return "this is the legacy track (chan_sip): use `sip show peers` and friends"
    return None


def require_running(pbx: Asterisk | None) -> Asterisk:
    if pbx is None or not pbx.running():
        raise DaemonError("The lab's Asterisk is not running.", hint="`labkit up LAB` first")
    return pbx
