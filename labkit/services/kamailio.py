"""The carrier: Kamailio as an OVH-style SIP trunk operator's outbound proxy and registrar.

It renders ``configs/kamailio/carrier.cfg.j2`` from the lab file's ``carrier:`` section
(domain, proxy, caller-ID policy, accounts, the PSTN next hop) and runs Kamailio from the
tools image in the carrier host's namespace:

==================  ============================================  ==========
path                what                                            mode
==================  ============================================  ==========
``/``               the tools image (Debian's kamailio 6.x)          read-only
``/srv/conf``       the rendered ``kamailio.cfg`` (``config/<host>``)  read-only
``/srv/state``      run dir, control socket, db_text registrations   read-write
==================  ============================================  ==========

Lifecycle (:mod:`labkit.services.base`): the configuration is checked with ``kamailio -c``
when it is rendered — a broken file is a :class:`~labkit.errors.DaemonError` naming its
line, before anything starts; ``kamailio -DD -E`` stays in the foreground (it still forks
its workers) and logs to stderr; it is ready when an ``OPTIONS`` to its address is answered
``200 Keepalive`` (the readiness probe of the scratch prototype, no kamctl, no database);
it stops on SIGTERM to its main process (the sandbox's only child), by pid, never by name.
"""
from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import jinja2

from labkit import resources, tracks
from labkit.errors import DaemonError
from labkit.services.base import LabContext, Port, Service, ServiceContext
from labkit.services.processes import log_tail, send_signal
from labkit.services.sandbox import Sandbox
from labkit.spec.model import LabSpec, carrier_secret_key

TEMPLATES = resources.templates_dir("kamailio")
CONFIG_NAME = "kamailio.cfg"
CONF_IN_SANDBOX = "/srv/conf/" + CONFIG_NAME
STATE_IN_SANDBOX = "/srv/state"
CTL_SOCKET = f"unix:{STATE_IN_SANDBOX}/kamailio_ctl"
#: db_text's table definitions, shipped by Debian's kamailio package.
DBTEXT_TABLES = "usr/share/kamailio/dbtext/kamailio"


def carrier_values(spec: LabSpec, passwords: dict[str, str]) -> dict:
    """The template's variables for the lab file's carrier (``passwords``: line → password)."""
    carrier = spec.carrier
    return dict(
        domain=carrier.domain, listen_ip=str(spec.carrier_address()), listen_port=5060,
        proxy_name=carrier.proxy.name,
        rundir=f"{STATE_IN_SANDBOX}/run", pstn_ip=str(spec.address_of(carrier.pstn)),
        pstn_port=carrier.pstn_port, cli_policy=carrier.caller_id, inbound_uri=carrier.inbound_uri,
        accounts=[{"line": a.line, "password": passwords[a.line], "aliases": list(a.aliases)}
                  for a in carrier.accounts],
        ctl_socket=CTL_SOCKET, db_dir=f"{STATE_IN_SANDBOX}/db" if carrier.keep_registrations else "",
        # INFO: every REGISTER and INVITE decision is logged with its reason (see the template).
        log_level=2, children=1)


def render_carrier(spec: LabSpec, passwords: dict[str, str]) -> str:
    """The carrier's ``kamailio.cfg`` (StrictUndefined: a missing variable is an error)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("carrier.cfg.j2").render(**carrier_values(spec, passwords))


def options_request(target: str, address: str, port: int, tag: str) -> bytes:
    """A minimal OPTIONS (RFC 3261 §11) from ``address:port`` to ``sip:target``."""
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    return (f"OPTIONS sip:{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {address}:{port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{address}>;tag={tag}\r\n"
            f"To: <sip:{target}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@labkit\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "User-Agent: labkit readiness probe\r\n"
            "Content-Length: 0\r\n\r\n").encode()


class Kamailio(Service):
    """The carrier's Kamailio on the lab file's ``carrier.host``."""

    kind = "kamailio"
    ready_timeout = 5.0
    #: The lab file sections its configuration is made from (see Lab.reconfigure).
    sections = ("carrier",)

    def __init__(self, context: ServiceContext, *, spec: LabSpec, passwords: dict[str, str]):
        super().__init__(context)
        self.spec = spec
        self.passwords = passwords
        self.config_dir = context.config_dir
        self.state_dir = context.state_dir

    # -- the declaration ---------------------------------------------------------------
    @property
    def address(self) -> str:
        return str(self.spec.carrier_address())

    @property
    def domain(self) -> str:
        return self.spec.carrier.domain

    def ports(self) -> list[Port]:
        return [Port("udp", 5060, "SIP (the carrier's proxy)")]

    @property
    def config_path(self) -> Path:
        return self.config_dir / CONFIG_NAME

    def render(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_carrier(self.spec, self.passwords))
        for sub in ("run", "db"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.spec.carrier.keep_registrations:
            # The db_text tables: kept if they exist (registrations survive a restart).
            for table in ("version", "location"):
                target = self.state_dir / "db" / table
                if not target.exists():
                    shutil.copyfile(self.context.rootfs / DBTEXT_TABLES / table, target)
        self.check_config()

    def check_config(self) -> None:
        """``kamailio -c``: parse the file and load its modules, without starting; a failure
        is reported with the line of the rendered file Kamailio names."""
        argv = self.sandbox.argv(["kamailio", "-c", "-f", CONF_IN_SANDBOX])
        result = subprocess.run(self.namespace.exec_argv(argv), capture_output=True, text=True,
                                timeout=20)
        output = result.stdout + result.stderr
        if result.returncode == 0 and "config file ok" in output:
            return
        raise config_error(output, self.config_path)

    @property
    def sandbox(self) -> Sandbox:
        return Sandbox(rootfs=self.context.rootfs, hostname=self.context.host,
                       etc_dir=self.context.etc_dir,
                       ro_binds=[(self.config_dir, "/srv/conf")],
                       binds=[(self.state_dir, STATE_IN_SANDBOX)])

    def program(self) -> list[str]:
        # -DD: no daemonising, but its worker processes are still forked; -E: log to stderr.
        return ["kamailio", "-DD", "-E", "-f", CONF_IN_SANDBOX]

    # -- lifecycle hooks ---------------------------------------------------------------
    def ready(self) -> bool:
        return (self.probe(timeout=0.2) or "").startswith("SIP/2.0 200")

    def request_stop(self) -> None:
        # SIGTERM to the main process: it tells its workers and exits (exit_timeout=3 in the
        # config bounds a worker that does not).  The main process is the sandbox's child.
        daemon = self.payload()
        if daemon is not None:
            send_signal(daemon, signal.SIGTERM)

    def reconfigure(self, spec: LabSpec) -> None:
        """Render ``spec``'s carrier and restart (registrations are kept if it keeps them)."""
        self.spec = spec
        self.render()
        self.restart()

    def restart(self) -> float:
        """Stop and start again (a new main pid); returns the seconds until it answered."""
        self.stop()
        started = time.monotonic()
        self.start()
        self.wait_ready()
        return time.monotonic() - started

    # -- talking to it -------------------------------------------------------------------
    def probe(self, target: str | None = None, timeout: float = 1.0) -> str | None:
        """Send one OPTIONS from the carrier's own namespace; the status line of the answer
        (``SIP/2.0 200 Keepalive``), or None when nothing answered within ``timeout``."""
        sock = self.namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, 0))
            port = sock.getsockname()[1]
            sock.settimeout(timeout)
            sock.sendto(options_request(target or self.address, self.address, port, uuid.uuid4().hex[:8]),
                        (self.address, 5060))
            data = sock.recv(65535)
            return data.split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError:  # timeout, or nothing bound yet (ICMP port unreachable)
            return None
        finally:
            sock.close()

    def kamcmd(self, *command: str, timeout: float = 5.0) -> str:
        """A ``kamcmd`` RPC over the control socket, e.g. ``kamcmd("ul.dump", "brief")``."""
        argv = self.sandbox.argv(["kamcmd", "-s", CTL_SOCKET, *command])
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise DaemonError(f"kamcmd {' '.join(command)} failed: {(result.stderr or result.stdout).strip()}",
                              hint=f"is the carrier running? its log: {self.log_path}")
        return result.stdout

    def registrations(self) -> dict[str, list[str]]:
        """Line → the contacts the carrier holds for it (its location table)."""
        out: dict[str, list[str]] = {}
        aor = None
        for line in self.kamcmd("ul.dump").splitlines():
            match = re.match(r"\s*AoR:\s*(\S+)", line)
            if match:
                aor = match.group(1).split("@", 1)[0]
                out.setdefault(aor, [])
                continue
            match = re.match(r"\s*Address:\s*(\S+)", line)
            if match and aor is not None:
                out[aor].append(match.group(1))
        return out

    def log(self, lines: int = 40) -> str:
        """The end of Kamailio's log (its stderr): each decision with its reason."""
        return log_tail(self.log_path, lines)


def config_error(output: str, config: Path) -> DaemonError:
    """What ``kamailio -c`` said, with the line it names and that line's text."""
    # Kamailio's own words: "parse error in config file F, line N, column C: syntax error",
    # or the first ERROR a module's fixup logged.
    errors = [m.group(1).strip() for m in re.finditer(r"(parse error in config file .*|ERROR: .*)", output)]
    match = re.search(r"line (\d+)(?:, column (\d+))?", output)
    where, text = "", ""
    if match:
        number = int(match.group(1))
        lines = config.read_text().splitlines() if config.is_file() else []
        text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        where = f" at line {number}" + (f": {text!r}" if text else "")
    detail = errors[0] if errors else output.strip()[-300:]
    return DaemonError(
        f"Kamailio refuses its configuration {config}{where}.",
        cause=f"kamailio -c says: {detail}",
        hint="the file is rendered from configs/kamailio/carrier.cfg.j2 and the lab file's carrier "
             "section: fix the template or the value that produced that line")


def provide(lab: LabContext) -> list[Service]:
    """The carrier's Kamailio, when the lab file declares ``carrier:``."""
    carrier = lab.spec.carrier
    if carrier is None:
        return []
    passwords = {a.line: lab.credentials.secrets[carrier_secret_key(a.line)] for a in carrier.accounts}
    return [Kamailio(lab.service_context(carrier.host, Kamailio.kind, image=tracks.TOOLS_IMAGE),
                     spec=lab.spec, passwords=passwords)]
