"""fail2ban beside Asterisk: the report's "next step", banning whoever fails to authenticate.

fail2ban (Debian's package, in the tools image) runs in the PBX's namespace and reads
Asterisk's security log (bound read-only): the ``security`` channel of logger.conf, where
res_security_log writes one line per event of Asterisk's security framework, the same on both
SIP stacks — ``SecurityEvent="InvalidPassword"`` (chan_sip) or ``"ChallengeResponseFailed"``
(PJSIP) for a wrong password, ``"InvalidAccountID"`` for a user that does not exist — each with
``RemoteAddress="IPV4/UDP/<address>/<port>"``.  Debian's own ``asterisk`` filter
(/etc/fail2ban/filter.d/asterisk.conf) matches those, as it matches the free-text lines of the
``messages`` log; reading only the security log counts each failure once.  After ``maxretry`` failures within
``findtime`` seconds the address is banned for ``bantime`` seconds with Debian's
``nftables-allports`` action: a set of addresses in its own nftables table of the PBX's
namespace, dropped before anything else.  The polling backend reads the log once a second
(fail2ban's ``sleeptime`` default), which is why a fast attacker gets more than ``maxretry``
tries in before the ban: the notebook measures how many.

>>> lab.fail2ban.banned()        # ['203.0.113.66']
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from labkit import tracks
from labkit.errors import DaemonError
from labkit.services.base import LabContext, Port, Service, ServiceContext
from labkit.services.sandbox import Sandbox
from labkit.spec.model import Fail2ban as Fail2banSpec

JAIL = "asterisk"
SOCKET = "/run/fail2ban/fail2ban.sock"


def render_jail(settings: Fail2banSpec, ports: list[int]) -> str:
    """jail.local: only the asterisk jail, on the log Asterisk writes in the lab."""
    return "\n".join([
        "# jail.local — rendered by labkit: fail2ban for the lab's Asterisk (jail.conf(5)).",
        "[DEFAULT]",
        "# The log is polled once a second: no inotify/systemd in the sandbox.",
        "backend = polling",
        "# Bans are an nftables set in fail2ban's own table, dropping every port (action.d).",
        "banaction = nftables-allports",
        "banaction_allports = nftables-allports",
        "# The lab's loopback only: the phones are not trusted because of their address.",
        "ignoreip = 127.0.0.1/8",
        "",
        f"[{JAIL}]",
        "enabled = true",
        "filter = asterisk",
        "# Asterisk's security log (logger.conf: security => security; res_security_log).",
        "logpath = /var/log/asterisk/security",
        f"port = {','.join(str(p) for p in ports)}",
        f"maxretry = {settings.maxretry}",
        f"findtime = {settings.findtime}",
        f"bantime = {settings.bantime}",
        "",
    ])


FAIL2BAN_LOCAL = "\n".join([
    "# fail2ban.local — rendered by labkit: the server's own files in the sandbox's /run.",
    "[Definition]",
    "loglevel = INFO",
    "logtarget = STDOUT",
    f"socket = {SOCKET}",
    "pidfile = /run/fail2ban/fail2ban.pid",
    "# No database: a lab's bans end with the lab.",
    "dbfile = :memory:",
    "",
])


class Fail2ban(Service):
    """fail2ban-server in the PBX's namespace (``lab.fail2ban``)."""

    kind = "fail2ban"
    needs = ("asterisk",)
    ready_timeout = 20.0

    def __init__(self, context: ServiceContext, *, settings: Fail2banSpec, asterisk_log_dir: Path,
                 ports: list[int]):
        super().__init__(context, name=f"{context.host}/fail2ban")
        self.settings, self.asterisk_log_dir, self.sip_ports = settings, asterisk_log_dir, ports

    def ports(self) -> list[Port]:
        return []  # it listens on no network port (a unix socket in its sandbox)

    @property
    def conf_dir(self) -> Path:
        return self.context.config_dir / "fail2ban"

    def render(self) -> None:
        # The image's /etc/fail2ban (filters, actions) plus the lab's two .local files; the
        # whole folder is bound over /etc/fail2ban (the image is read-only: no file can be
        # added to it in place).
        if self.conf_dir.exists():
            shutil.rmtree(self.conf_dir)
        shutil.copytree(Path(self.context.rootfs) / "etc/fail2ban", self.conf_dir, symlinks=True)
        (self.conf_dir / "jail.local").write_text(render_jail(self.settings, self.sip_ports))
        (self.conf_dir / "fail2ban.local").write_text(FAIL2BAN_LOCAL)
        # Only the asterisk jail: Debian enables sshd in jail.d, which has no place here.
        for extra in (self.conf_dir / "jail.d").glob("*"):
            extra.unlink()
        # The log it watches is Asterisk's own (written as the asterisk user, so never made
        # here): fail2ban starts after Asterisk (needs), once the file exists.

    @property
    def sandbox(self) -> Sandbox:
        return Sandbox(rootfs=self.context.rootfs, hostname=self.context.host, etc_dir=self.context.etc_dir,
                       ro_binds=[(self.conf_dir, "/etc/fail2ban"), (self.asterisk_log_dir, "/var/log/asterisk")])

    def program(self) -> list[str]:
        # -f: foreground; -x: start even if a stale socket exists; it runs as root in the
        # namespace (nft needs CAP_NET_ADMIN there, and only there).
        return ["fail2ban-server", "-f", "-x", "--logtarget", "STDOUT"]

    def client(self, *args: str, timeout: float = 10.0) -> str:
        """``fail2ban-client`` inside the sandbox's mount namespace is out of reach; the socket
        is too: ask through ``nsenter`` into the server's own namespaces."""
        daemon = self.payload()
        if daemon is None:
            raise DaemonError("fail2ban is not running.", hint=f"its log: {self.log_path}")
        result = self.namespace.run(["nsenter", "-t", str(daemon.pid), "-m", "-p", "--",
                                     "fail2ban-client", "-s", SOCKET, *args], check=False, timeout=timeout)
        if result.returncode != 0:
            raise DaemonError(f"fail2ban-client {' '.join(args)} failed: {result.stderr.strip()[-300:]}",
                              hint=f"its log: {self.log_path}")
        return result.stdout

    def ready(self) -> bool:
        try:
            return JAIL in self.client("status", timeout=3)
        except DaemonError:
            return False

    def banned(self) -> list[str]:
        """The addresses the jail bans now."""
        out = self.client("status", JAIL)
        line = next((line for line in out.splitlines() if "Banned IP list:" in line), "")
        return line.split("Banned IP list:", 1)[1].split() if line else []

    def wait_banned(self, address: str, timeout: float = 15.0) -> float:
        """Seconds until ``address`` is banned (a DaemonError if it is not within ``timeout``)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if address in self.banned():
                return time.monotonic() - start
            time.sleep(0.2)
        raise DaemonError(f"{address} was not banned within {timeout:g} s.",
                          hint=f"fail2ban's log: {self.log_path}; "
                               f"Asterisk's security log: {self.asterisk_log_dir / 'security'}")

    def unban(self, address: str) -> None:
        self.client("set", JAIL, "unbanip", address)

    def reconfigure(self, spec) -> None:
        self.settings = spec.pbx.fail2ban or self.settings
        self.render()
        self.stop()
        self.start()
        self.wait_ready()


def provide(lab: LabContext) -> list[Service]:
    """fail2ban beside the lab's Asterisk, when the lab file asks for ``pbx.fail2ban``."""
    pbx = lab.spec.pbx
    if pbx.fail2ban is None:
        return []
    asterisk_logs = lab.service_context(pbx.host, "asterisk", image=None).log_dir
    ports = [pbx.sip_port, *([pbx.tls.port] if "tls" in pbx.transports else [])]
    context = lab.service_context(pbx.host, Fail2ban.kind, image=tracks.TOOLS_IMAGE,
                                  directory=f"{pbx.host}-fail2ban")
    return [Fail2ban(context, settings=pbx.fail2ban, asterisk_log_dir=asterisk_logs, ports=ports)]
