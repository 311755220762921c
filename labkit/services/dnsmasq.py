"""A DNS server in the lab: dnsmasq, answering for the lab's names only.

It plays the DDNS provider of the report's fix C: the box's public address may change
(an ISP's dynamic address); the box's DDNS client then updates the name, and whoever uses
the *name* (a phone's registrar, Asterisk's ``externhost``/external address) recovers.
dnsmasq takes the records from a hosts-format file it re-reads on SIGHUP, which is what
:meth:`DnsServer.update` does — an update the way router firmwares drive dnsmasq, rather
than RFC 2136 dynamic update, which dnsmasq does not implement.

For the trunk labs it also plays the carrier's DNS: a CNAME in front of the proxy's name
(as the report's ``nslookup`` showed), and for a SIP domain the NAPTR → SRV → A chain of
RFC 3263 §4 — or nothing at all, which is how the report met it.  Names of the reserved
zones it does not know get NXDOMAIN (``--local``), never a forwarded query.  CNAME, SRV and
NAPTR records are command-line options: changing them restarts dnsmasq
(:meth:`DnsServer.reconfigure`), which takes milliseconds.
"""
from __future__ import annotations

import signal
import time

from labkit import tracks
from labkit.errors import DaemonError
from labkit.services.base import LabContext, Port, Service, ServiceContext
from labkit.services.sandbox import Sandbox
from labkit.spec.model import LabSpec

#: The zones the lab's DNS server answers for by itself (RFC 2606, RFC 6761).
LOCAL_ZONES = ("example", "test", "invalid")


class DnsServer(Service):
    """dnsmasq on the lab's DNS host, authoritative for the lab file's ``dns.records``."""

    kind = "dnsmasq"
    ready_timeout = 5.0
    #: The lab file sections its configuration is made from (see Lab.reconfigure).
    sections = ("dns",)

    def __init__(self, context: ServiceContext, *, address: str, records: dict[str, str],
                 cnames: dict[str, str] | None = None, srv: list[dict] | None = None,
                 naptr: list[dict] | None = None):
        super().__init__(context)
        self.address = address
        self.initial_records = records
        self.cnames = dict(cnames or {})
        self.srv = list(srv or [])
        self.naptr = list(naptr or [])
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
                f"--local=/{'/'.join(LOCAL_ZONES)}/",
                f"--listen-address={self.address}", "--bind-interfaces", "--log-queries",
                "--log-facility=-", "--user=root", "--group=root", *self.record_options()]

    def record_options(self) -> list[str]:
        """dnsmasq(8)'s --cname, --srv-host and --naptr-record options for the lab's records."""
        options = [f"--cname={alias},{target}" for alias, target in sorted(self.cnames.items())]
        options += [f"--srv-host={r['name']},{r['target']},{r['port']},{r['priority']},{r['weight']}"
                    for r in self.srv]
        # <name>,<order>,<preference>,<flags>,<service>,<regexp>,<replacement>: no regexp here.
        options += [f"--naptr-record={r['name']},{r['order']},{r['preference']},{r['flags']},"
                    f"{r['service']},,{r['replacement']}" for r in self.naptr]
        return options

    def reconfigure(self, spec: LabSpec) -> None:
        """Serve the records of ``spec``'s ``dns:`` section (a restart: see the module doc)."""
        settings = dns_settings(spec)
        self.initial_records = settings.pop("records")
        self.cnames, self.srv, self.naptr = settings["cnames"], settings["srv"], settings["naptr"]
        self.render()
        self.stop()
        self.start()
        self.wait_ready()

    def ready(self) -> bool:
        return self._dig("ready.labkit.test").returncode == 0

    def request_stop(self) -> None:
        # dnsmasq exits at once on SIGTERM (dnsmasq(8)): no need to wait for the stop timeout.
        daemon = self.payload()
        if daemon is not None:
            daemon.terminate()

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
        """Ask the lab's DNS server for ``name``'s A record, as a lab host would (the
        address at the end of a CNAME chain)."""
        result = self._dig(name)
        lines = [line for line in result.stdout.split() if line and line[0].isdigit()]
        return lines[-1] if result.returncode == 0 and lines else None

    def lookup(self, name: str, rtype: str = "A") -> list[str]:
        """The answers to one query (``dig +short``), e.g. ``lookup("sip.carrier.example",
        "NAPTR")``; empty for NXDOMAIN or no data."""
        result = self._dig(name, rtype)
        return [line for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []

    def _dig(self, name: str, rtype: str = "A"):
        return self.namespace.run(["dig", "+short", "+time=1", "+tries=1", f"@{self.address}",
                                   name, rtype], check=False, timeout=5)


def dns_settings(spec: LabSpec) -> dict:
    """The records of a lab file's ``dns:`` section, as :class:`DnsServer` takes them."""
    dns = spec.dns
    return dict(records={name: str(addr) for name, addr in dns.records.items()},
                cnames=dict(dns.cnames), srv=[r.model_dump() for r in dns.srv],
                naptr=[r.model_dump() for r in dns.naptr])


def provide(lab: LabContext) -> list[Service]:
    """The lab's DNS server, when the lab file declares ``dns:``."""
    dns = lab.spec.dns
    if dns is None:
        return []
    return [DnsServer(lab.service_context(dns.host, DnsServer.kind, image=tracks.TOOLS_IMAGE),
                      address=str(lab.spec.address_of(dns.host)), **dns_settings(lab.spec))]
