"""A DNS server in the lab: dnsmasq, answering for the lab's names only.

It plays the DDNS provider of the report's fix C: the box's public address may change
(an ISP's dynamic address); the box's DDNS client then updates the name, and whoever uses
the *name* (a phone's registrar, Asterisk's ``externhost``/external address) recovers.
dnsmasq takes the records from a hosts-format file it re-reads on SIGHUP, which is what
:meth:`DnsServer.update` does — an update the way router firmwares drive dnsmasq, rather
than RFC 2136 dynamic update, which dnsmasq does not implement.
"""
from __future__ import annotations

import signal
import time

from labkit import tracks
from labkit.errors import DaemonError
from labkit.services.base import LabContext, Port, Service, ServiceContext
from labkit.services.sandbox import Sandbox


class DnsServer(Service):
    """dnsmasq on the lab's DNS host, authoritative for the lab file's ``dns.records``."""

    kind = "dnsmasq"
    ready_timeout = 5.0

    def __init__(self, context: ServiceContext, *, address: str, records: dict[str, str]):
        super().__init__(context)
        self.address = address
        self.initial_records = records
        self.records_file = context.state_dir / "records"

    def ports(self) -> list[Port]:
        return [Port("udp", 53, "DNS"), Port("tcp", 53, "DNS")]

    def render(self) -> None:
        self.records_file.parent.mkdir(parents=True, exist_ok=True)
        self.write_records(self.initial_records)

    @property
    def sandbox(self) -> Sandbox:
        return Sandbox(rootfs=self.context.rootfs, hostname=self.context.host,
                       etc_dir=self.context.etc_dir, binds=[(self.records_file.parent, "/srv/dns")])

    def program(self) -> list[str]:
        # Only the names of the records file (--no-hosts, --no-resolv: never asks upstream),
        # re-read on SIGHUP; TTL 0 so that a DDNS update is seen at once.
        return ["dnsmasq", "--keep-in-foreground", "--no-daemon", "--no-resolv", "--no-hosts",
                "--no-poll", "--addn-hosts=/srv/dns/records", "--local-ttl=0",
                f"--listen-address={self.address}", "--bind-interfaces", "--log-queries",
                "--log-facility=-", "--user=root", "--group=root"]

    def ready(self) -> bool:
        return self._dig("ready.labkit.test").returncode == 0

    def records(self) -> dict[str, str]:
        out = {}
        for line in self.records_file.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                address, name = line.split()[:2]
                out[name] = address
        return out

    def write_records(self, records: dict[str, str]) -> None:
        lines = ["# labkit lab DNS: one A record per line (hosts format)"]
        lines += [f"{address} {name}" for name, address in sorted(records.items())]
        self.records_file.write_text("\n".join(lines) + "\n")

    def update(self, name: str, address: str) -> None:
        """The DDNS update: ``name`` now points at ``address`` (answered at once, TTL 0)."""
        records = self.records()
        records[name] = address
        self.write_records(records)
        daemon = self.payload()
        if daemon is None:
            raise DaemonError("The lab's DNS server is not running.")
        daemon.send_signal(signal.SIGHUP)  # dnsmasq re-reads --addn-hosts files
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if self.resolve(name) == address:
                return
            time.sleep(0.05)
        raise DaemonError(f"dnsmasq did not pick up {name} → {address}.", hint=f"its log: {self.log_path}")

    def resolve(self, name: str) -> str | None:
        """Ask the lab's DNS server for ``name``'s A record, as a lab host would."""
        result = self._dig(name)
        lines = [line for line in result.stdout.split() if line]
        return lines[0] if result.returncode == 0 and lines else None

    def _dig(self, name: str):
        return self.namespace.run(["dig", "+short", "+time=1", "+tries=1", f"@{self.address}",
                                   name, "A"], check=False, timeout=5)


def provide(lab: LabContext) -> list[Service]:
    """The lab's DNS server, when the lab file declares ``dns:``."""
    dns = lab.spec.dns
    if dns is None:
        return []
    return [DnsServer(lab.service_context(dns.host, DnsServer.kind, image=tracks.TOOLS_IMAGE),
                      address=str(lab.spec.address_of(dns.host)),
                      records={name: str(addr) for name, addr in dns.records.items()})]
