"""Asterisk in a lab: render its configuration, run it sandboxed, talk to it (CLI and AMI).

Inside the sandbox (see :mod:`labkit.services.sandbox`):

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

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from labkit import tracks
from labkit.errors import AsteriskError, AsteriskTimeout
from labkit.services.asterisk.ami import AmiClient
from labkit.services.asterisk.config import render_pbx
from labkit.services.asterisk.tls import ImageUser, write_server_files
from labkit.services.base import Credentials, LabContext, Port, Service, ServiceContext
from labkit.services.processes import log_tail
from labkit.services.sandbox import Sandbox
from labkit.spec.model import LabSpec
from labkit.tracks import Track

ASTERISK_CONF = "/etc/asterisk/asterisk.conf"
#: Under the lab's etc directory: one ``hosts`` + ``resolv.conf`` per host (Lab writes them).
HOSTS_BY_HOST = "by-host"


class Asterisk(Service):
    """One Asterisk server of a lab, on either track."""

    kind = "asterisk"
    # Names in its configuration (a DDNS external address) must resolve at boot; a trunk
    # registers at boot, so its carrier must answer already.
    needs = ("dnsmasq", "kamailio")
    ready_timeout = 15.0
    #: The lab file sections its configuration depends on (see Lab.reconfigure): names it
    #: resolves at boot come from the DNS and its host's /etc/hosts.
    sections = ("pbx", "etc_hosts", "dns")

    def __init__(self, context: ServiceContext, *, spec: LabSpec, track: Track | str,
                 credentials: Credentials):
        super().__init__(context)
        self.host = context.host
        self.spec = spec
        self.track = tracks.get(track)
        self.credentials = credentials
        self.config_dir = context.config_dir
        self.state_dir = context.state_dir
        self.log_dir = context.log_dir
        self._ami: AmiClient | None = None

    # -- the declaration ---------------------------------------------------------------
    @property
    def ami_port(self) -> int:
        return self.spec.pbx.ami_port

    def ports(self) -> list[Port]:
        pbx = self.spec.pbx
        ports = [Port(t, pbx.sip_port, f"SIP over {t.upper()}") for t in pbx.transports if t != "tls"]
        if "tls" in pbx.transports:
            ports.append(Port("tcp", pbx.tls.port, "SIP over TLS"))
        return [*ports, Port("tcp", pbx.ami_port, "AMI")]

    @property
    def user(self) -> ImageUser:
        """The unprivileged user Asterisk runs as (asterisk.conf ``runuser``)."""
        return ImageUser.of(self.context.rootfs, "asterisk")

    @property
    def uses_tls(self) -> bool:
        return "tls" in self.spec.pbx.transports

    def render(self) -> None:
        render_pbx(self.spec, self.track, self.credentials, self.config_dir)
        shutil.rmtree(self.config_dir / "tls", ignore_errors=True)  # a new certificate each time
        if self.uses_tls:
            write_server_files(self.context.pki_dir, self.spec.pbx.tls.certificate,
                               self.certificate_names(), self.certificate_addresses(),
                               self.config_dir / "tls", self.user)

    def certificate_names(self) -> list[str]:
        """The DNS names phones may dial: the lab file's, else every lab DNS record that
        points at the PBX, and its name in the lab's hosts file."""
        pbx, spec = self.spec.pbx, self.spec
        if pbx.tls.certificate.names:
            return list(pbx.tls.certificate.names)
        address = spec.address_of(pbx.host)
        names = [n for n, a in (spec.dns.records.items() if spec.dns else ()) if a == address]
        return [*names, f"{pbx.host}.{self.context.lab}.test"]

    def certificate_addresses(self) -> list[str]:
        return [str(i.address) for i in self.spec.host(self.spec.pbx.host).interfaces]

    @property
    def sandbox(self) -> Sandbox:
        tls_ro, tls_rw, env = ([], [], {})
        if self.uses_tls:
            user = self.user
            tls_ro, tls_rw, env = self.context.tls_binds("asterisk", (user.uid, user.gid))
        return Sandbox(rootfs=self.context.rootfs, hostname=self.host, etc_dir=self.etc_dir,
                       ro_binds=[(self.config_dir, "/etc/asterisk"), *tls_ro],
                       binds=[(self.state_dir, "/srv/lab"), (self.log_dir, "/srv/lab/log"), *tls_rw],
                       env=env)

    @property
    def etc_dir(self):
        """Its host's own hosts file when the lab writes one (the lab file's ``etc_hosts``:
        the report's /etc/hosts fix lives in the PBX only), else the lab's."""
        own = self.context.etc_dir / HOSTS_BY_HOST / self.host
        return own if (own / "hosts").is_file() else self.context.etc_dir

    def program(self) -> list[str]:
        # -f: stay in the foreground (we are its parent); -n: no colours in logs;
        # -q -m: quiet console (the log file is where messages go).
        return ["asterisk", "-f", "-n", "-q", "-m", "-C", ASTERISK_CONF]

    @property
    def log_path(self) -> Path:
        return self.log_dir / "asterisk.out"

    def start(self) -> None:
        # Asterisk drops to the user asterisk (runuser): its state and logs must be its own.
        user = self.user
        for directory in (self.state_dir, *(self.state_dir / s for s in ("db", "keys", "spool", "run")),
                          self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, user.uid, user.gid)
        super().start()

    def reconfigure(self, spec: LabSpec) -> None:
        """Render the configuration of ``spec`` (same secrets) and restart.

        A restart rather than a reload: PJSIP transports (where external addresses live)
        are not reloadable by default, and a restart is the same on both tracks.
        Registrations survive in Asterisk's astdb.
        """
        self.spec = spec
        self.render()
        self.stop()
        self.start()
        self.wait_ready()

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
                                cause=self.track.wrong_command_cause(command),
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
        return self.track.sip_config

    #: Log lines that say why TLS does not work (both generations' wording).
    TLS_TROUBLE = ("priv_key_file", "cert_file", "TLS/SSL error", "SSL_ERROR_SSL", "key values mismatch",
                   "ee key too small", "ca md too weak", "Problem setting up ssl connection",
                   "Unable to set up ssl connection")

    def tls_problems(self, lines: int = 400) -> list[str]:
        """What Asterisk's log says about its TLS transport (certificate, key, handshakes)."""
        return [line for line in self.log(lines).splitlines()
                if any(mark in line for mark in self.TLS_TROUBLE)]

    def tls_listens(self) -> bool:
        """Whether something accepts TLS connections on the PBX's TLS port (``ss -ltn``)."""
        out = self.namespace.run(["ss", "-Hltn", f"sport = :{self.spec.pbx.tls.port}"], check=False).stdout
        return "LISTEN" in out

    def log(self, lines: int = 40) -> str:
        """The end of Asterisk's ``messages`` log."""
        return log_tail(self.log_dir / "messages", lines)

    def channel_stats(self) -> list[dict]:
        """RTP packets received and sent per channel of the calls in progress.

        Legacy: ``sip show channelstats`` (one row per peer); modern: ``pjsip show
        channelstats`` (one row per channel).  Each row: channel, rx/tx packets, lost, jitter.
        """
        return self.track.parse_channel_stats(self.cli(self.track.commands.channel_stats))

    def registered(self) -> dict[str, str]:
        """Extension → contact address for every registered endpoint, via AMI
        (``SIPpeers`` on chan_sip, ``PJSIPShowContacts`` on PJSIP)."""
        try:
            events = self.ami.action(self.track.registrations_action)
        except AsteriskError as exc:
            if "No Contacts found" in exc.message:  # PJSIP answers an empty list with an error
                return {}
            raise
        return self.track.parse_registrations(events)

    # -- the trunk (pbx.trunk) -------------------------------------------------------------
    def trunk_registrations(self) -> dict[str, str]:
        """Every registration Asterisk makes (the trunk's) → its state, as the CLI shows it:
        ``sip show registry`` (``proxy.carrier.example:5060`` → ``Registered``) or ``pjsip
        show registrations`` (``carrier-reg`` → ``Registered``, ``Rejected``, ``Unregistered``)."""
        return self.track.parse_registry(self.cli(self.track.commands.registry))

    def trunk_state(self) -> str | None:
        """The state of the trunk's registration (None: Asterisk lists none)."""
        states = self.trunk_registrations()
        return next(iter(states.values()), None)

    def wait_trunk(self, state: str = "Registered", timeout: float = 10.0) -> str | None:
        """Wait until the trunk's registration is in ``state``; return the last state seen
        (so a caller can assert on it: it differs from ``state`` after the timeout)."""
        deadline = time.monotonic() + timeout
        seen = self.trunk_state()
        while seen != state and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = self.trunk_state()
        return seen

    def trunk_status(self) -> str | None:
        """Whether the carrier answers the trunk's OPTIONS (qualify): ``Avail`` / ``OK (2 ms)``
        when it does, ``Unavail`` / ``UNREACHABLE`` when not, None when not qualified."""
        trunk = self.spec.pbx.trunk
        if trunk is None:
            return None
        return self.track.parse_trunk_status(self.cli(self.track.commands.trunk_status)).get(trunk.name)

    def trunk_reachable(self) -> bool:
        return (self.trunk_status() or "").startswith(self.track.reachable)


def provide(lab: LabContext) -> list[Service]:
    """The lab's Asterisk (one per lab file's ``pbx``), from the track's image."""
    pbx_host = lab.spec.pbx.host
    return [Asterisk(lab.service_context(pbx_host, Asterisk.kind, image=lab.track.image),
                     spec=lab.spec, track=lab.track, credentials=lab.credentials)]
