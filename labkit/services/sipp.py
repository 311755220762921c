"""SIPp in a lab host: scripted SIP for what a softphone cannot be made to do.

Scenarios live in ``configs/sipp/`` (``register.xml``: REGISTER, 401 challenge, REGISTER
with digest credentials, 200).  SIPp comes from the modern lab image (3.8, built with TLS;
bookworm's 3.6 has none) and runs in the host's namespace, sandboxed like every daemon, its
pid recorded, until the scenario ends or its deadline passes.

>>> result = lab.sipp("bob", "register", extension="6001")
>>> result.ok, result.messages          # exit status 0, and SIPp's message trace
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from labkit import resources
from labkit.errors import LabStateError
from labkit.services.base import Port, Service, ServiceContext
from labkit.services.processes import log_tail
from labkit.services.sandbox import Sandbox

SCENARIOS = resources.templates_dir("sipp")


@dataclass
class SippResult:
    scenario: str
    exit_status: int | None
    messages: str
    log: str

    @property
    def ok(self) -> bool:
        """SIPp exits 0 when every call of the scenario succeeded."""
        return self.exit_status == 0


def scenario_file(scenario: str) -> Path:
    path = SCENARIOS / f"{scenario}.xml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.xml")))
        raise LabStateError(f"No SIPp scenario {scenario!r}.", hint=f"scenarios: {known}")
    return path


class SippRun(Service):
    """One run of a scenario: one call (``-m 1``), until it ends or its deadline passes."""

    kind = "sipp"

    def __init__(self, context: ServiceContext, *, scenario: str, target: str, address: str,
                 user: str, auth: tuple[str, str] | None = None, local_port: int = 5070,
                 timeout: float = 15.0, transport: str = "udp", keys: dict[str, str] | None = None):
        super().__init__(context, name=f"{context.host}/sipp")
        self.scenario = scenario
        self.scenario_path = scenario_file(scenario)
        self.target = target
        self.address = address
        self.user = user
        self.auth = auth
        self.local_port = local_port
        self.timeout = timeout
        self.transport = transport
        # The scenarios write [contact_params] after the Contact's host:port: over TLS the
        # phone must say so (RFC 3261 §19.1.4), or the registrar would answer over UDP.
        self.keys = {"contact_params": f";transport={transport}" if transport != "udp" else "",
                     **(keys or {})}
        self.out_dir: Path | None = None

    def ports(self) -> list[Port]:
        return [Port("udp" if self.transport == "udp" else "tcp", self.local_port, "SIP (SIPp)")]

    def render(self) -> None:
        self.context.log_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = Path(tempfile.mkdtemp(
            prefix=f"sipp-{self.scenario}-{time.strftime('%H%M%S')}-", dir=self.context.log_dir))

    @property
    def sandbox(self) -> Sandbox:
        tls_ro, tls_rw, env = self.context.tls_binds("sipp") if self.transport == "tls" else ([], [], {})
        return Sandbox(rootfs=self.context.rootfs, hostname=self.context.host,
                       etc_dir=self.context.etc_dir, chdir="/srv/sipp/out", own_pids=False,
                       ro_binds=[(self.scenario_path, "/srv/sipp/scenario.xml"), *tls_ro],
                       binds=[(self.out_dir, "/srv/sipp/out"), *tls_rw], env=env)

    def program(self) -> list[str]:
        # -m 1: one call; -nostdin: no keyboard; -timeout_error: a deadline is a failure;
        # -trace_msg: every message in messages.log.
        argv = ["sipp", self.target, "-sf", "/srv/sipp/scenario.xml", "-s", self.user,
                "-i", self.address, "-p", str(self.local_port), "-m", "1", "-nostdin",
                "-timeout", f"{int(self.timeout)}s", "-timeout_error",
                "-trace_msg", "-message_file", "/srv/sipp/out/messages.log"]
        if self.auth is not None:
            argv += ["-au", self.auth[0], "-ap", self.auth[1]]
        # -t u1/t1/l1: one UDP socket, one TCP or one TLS connection; over TLS the lab CA is
        # trusted (SIPp checks chain and dates, never the server's name).
        argv += ["-t", {"udp": "u1", "tcp": "t1", "tls": "l1"}[self.transport]]
        if self.transport == "tls" and self.context.pki_dir is not None:
            argv += ["-tls_ca", "/srv/pki/ca.crt"]
        for key, value in self.keys.items():
            argv += ["-key", key, value]
        return argv

    @property
    def log_path(self) -> Path:
        return (self.out_dir or self.context.log_dir) / "sipp.out"

    def run(self) -> SippResult:
        """Render, start, wait for the scenario to end (SIPp stops at its -timeout), stop."""
        self.render()
        self.start()
        try:
            self.popen.wait(self.timeout + 5)
        except subprocess.TimeoutExpired:
            pass  # stop() below escalates
        status = self.exit_status()
        self.stop()
        messages = self.out_dir / "messages.log"
        return SippResult(self.scenario, status,
                          messages.read_text(errors="replace") if messages.exists() else "",
                          log_tail(self.log_path, 20))
