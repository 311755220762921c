"""SIPVicious from an attacker's host: the scans a public SIP server meets within minutes.

``svmap`` finds SIP servers on a range of addresses (an OPTIONS to each), ``svwar`` lists the
extensions of one server (a REGISTER per candidate: a server that answers an unknown user
differently from a known one — chan_sip's ``alwaysauthreject=no`` — gives them away), and
``svcrack`` tries passwords for one extension.  They come from Debian's ``sipvicious`` package
in the tools image and run in the attacker host's namespace, sandboxed like every daemon, with
bounds the kit enforces whatever the caller asks: at most :data:`MAX_TARGETS` extensions or
passwords, a deadline of at most :data:`MAX_SECONDS`, and only addresses of the lab's own
networks (the namespaces have no route out anyway).

>>> scan = lab.attack("attacker", "svwar", extensions="5990-6010")
>>> scan.found          # [{'extension': '6000', 'authentication': 'reqauth'}, ...]
"""
from __future__ import annotations

import ipaddress
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import LabStateError
from labkit.services.base import Port, Service, ServiceContext
from labkit.services.processes import log_tail
from labkit.services.sandbox import Sandbox

TOOLS = ("svmap", "svwar", "svcrack")
#: The most extensions (svwar) or passwords (svcrack) one run may try.
MAX_TARGETS = 1000
#: The longest one run may last, seconds.
MAX_SECONDS = 120.0
#: svwar/svcrack/svmap print their findings as a table: "| 6000 | reqauth |".
_ROW = re.compile(r"^\|\s*(?P<a>[^|]+?)\s*\|\s*(?P<b>[^|]*?)\s*\|(?:\s*(?P<c>[^|]*?)\s*\|)?\s*$")


@dataclass
class AttackResult:
    tool: str
    exit_status: int | None
    #: One dict per row of the tool's result table (the header row excluded).
    found: list[dict] = field(default_factory=list)
    output: str = field(default="", repr=False)
    seconds: float = 0.0

    @property
    def refused_to_enumerate(self) -> bool:
        """svwar's sanity check: the server answered a random user like a real one."""
        return "authentication request for an unknown extension" in self.output or (
            "Could not" in self.output and not self.found)


def parse_table(output: str) -> list[dict]:
    """The rows of a SIPVicious result table, keyed by its header's words (lower case)."""
    rows = [m.groups() for line in output.splitlines() if (m := _ROW.match(line.strip()))]
    if not rows:
        return []
    header = [h.strip().lower().replace(" ", "_") for h in rows[0] if h is not None]
    return [dict(zip(header, (v for v in row if v is not None))) for row in rows[1:]
            if not set("".join(v or "" for v in row)) <= set("=-+ ")]


def _count(ranges: str) -> int:
    """How many numbers ``"5990-6010,7000"`` names (svwar's -e syntax)."""
    total = 0
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise LabStateError(f"{ranges!r} is not a range of extensions.", hint="e.g. '5990-6010,7000'")
        total += (int(high) - int(low) + 1) if high else 1
    return total


class SipviciousRun(Service):
    """One run of one SIPVicious tool from a lab host, until it ends or its deadline passes."""

    kind = "sipvicious"

    def __init__(self, context: ServiceContext, *, tool: str, target: str, networks: list[str],
                 extensions: str | None = None, extension: str | None = None,
                 passwords: list[str] | None = None, port: int = 5060, method: str = "REGISTER",
                 timeout: float = 30.0, local_port: int = 5065):
        super().__init__(context, name=f"{context.host}/{tool}")
        if tool not in TOOLS:
            raise LabStateError(f"No SIPVicious tool {tool!r}.", hint=f"tools: {', '.join(TOOLS)}")
        self.tool, self.target, self.port, self.method = tool, target, port, method
        self.extensions, self.extension, self.passwords = extensions, extension, passwords or []
        self.timeout = min(float(timeout), MAX_SECONDS)
        self.local_port = local_port
        self._check_bounds(networks)
        self.out_dir: Path | None = None

    def _check_bounds(self, networks: list[str]) -> None:
        # Attack traffic stays in the lab: only addresses of its own networks are targets.
        try:
            targets = ipaddress.ip_network(self.target, strict=False)
        except ValueError as exc:
            raise LabStateError(f"{self.target!r} is not an address or a network.",
                                hint="an address of the lab, e.g. the PBX's") from exc
        lab_nets = [ipaddress.ip_network(n) for n in networks]
        if not any(targets.subnet_of(n) for n in lab_nets if n.version == targets.version):
            raise LabStateError(f"{self.target} is not in the lab's networks ({', '.join(networks)}).",
                                hint="attacks only aim at the lab's own hosts")
        if self.tool == "svwar" and _count(self.extensions or "") > MAX_TARGETS:
            raise LabStateError(f"svwar would try more than {MAX_TARGETS} extensions.",
                                hint="a narrower range: the lab's extensions are few")
        if self.tool == "svcrack":
            if not self.extension or len(self.passwords) > MAX_TARGETS or not self.passwords:
                raise LabStateError(f"svcrack needs one extension and 1 to {MAX_TARGETS} passwords.",
                                    hint="e.g. extension='6000', passwords=['1234', 'test', …]")
        if self.tool == "svmap" and targets.num_addresses > 256:
            raise LabStateError("svmap would scan more than 256 addresses.", hint="a /24 at most")

    def ports(self) -> list[Port]:
        return [Port("udp", self.local_port, f"SIP ({self.tool})")]

    def render(self) -> None:
        self.context.log_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = Path(tempfile.mkdtemp(prefix=f"{self.tool}-{time.strftime('%H%M%S')}-",
                                             dir=self.context.log_dir))
        if self.tool == "svcrack":
            (self.out_dir / "passwords.txt").write_text("\n".join(self.passwords) + "\n")

    @property
    def sandbox(self) -> Sandbox:
        return Sandbox(rootfs=self.context.rootfs, hostname=self.context.host,
                       etc_dir=self.context.etc_dir, chdir="/srv/attack", own_pids=False,
                       binds=[(self.out_dir, "/srv/attack")], env={"HOME": "/srv/attack"})

    def _binary(self) -> str:
        # Debian's 0.3.4 names them sipvicious_svwar …; 0.3.3 (bookworm) plain svwar.
        rootfs = Path(self.context.rootfs)
        name = f"sipvicious_{self.tool}"
        return name if (rootfs / "usr/bin" / name).exists() else self.tool

    def program(self) -> list[str]:
        if self.tool == "svmap":  # svmap has no --maximumtime: the kit's deadline bounds it
            return [self._binary(), "-P", str(self.local_port), "-p", str(self.port), self.target]
        common = ["-P", str(self.local_port), "--maximumtime", str(int(self.timeout))]
        if self.tool == "svwar":
            return [self._binary(), *common, "-m", self.method, "-e", self.extensions or "",
                    "-p", str(self.port), self.target]
        return [self._binary(), *common, "-u", self.extension, "-d", "/srv/attack/passwords.txt",
                "-p", str(self.port), self.target]

    @property
    def log_path(self) -> Path:
        return (self.out_dir or self.context.log_dir) / f"{self.tool}.out"

    def run(self) -> AttackResult:
        """Render, start, wait for the tool to end (or its deadline), stop; its findings."""
        self.render()
        started = time.monotonic()
        self.start()
        try:
            self.popen.wait(self.timeout + 5)
        except subprocess.TimeoutExpired:
            pass  # stop() below escalates: the deadline is the kit's, not the tool's
        status = self.exit_status()
        self.stop()
        output = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return AttackResult(self.tool, status, parse_table(output), output or log_tail(self.log_path, 40),
                            round(time.monotonic() - started, 2))
