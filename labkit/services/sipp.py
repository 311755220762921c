"""SIPp in a lab host: scripted SIP for what a softphone cannot be made to do.

Scenarios live in ``configs/sipp/`` (``register.xml``: REGISTER, 401 challenge, REGISTER
with digest credentials, 200).  SIPp comes from the modern lab image (3.8, built with TLS;
bookworm's 3.6 has none) and runs in the host's namespace, sandboxed like every daemon, its
pid recorded, until the scenario ends or its deadline passes.

>>> result = run_scenario(lab, "bob", "register", extension="6001")
>>> result.ok, result.messages          # exit status 0, and SIPp's message trace
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import images
from labkit.services.base import Daemon, Sandbox, log_tail
from labkit.errors import LabStateError
from labkit import resources

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

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


def run_scenario(lab: "Lab", host: str, scenario: str, *, extension: str, secret: str | None = None,
                 target: str | None = None, local_port: int = 5070, timeout: float = 15.0) -> SippResult:
    """Run one call of ``configs/sipp/<scenario>.xml`` from ``host`` against the PBX.

    ``secret`` defaults to the extension's secret in this lab run (pass a wrong one to see
    the registrar refuse it).
    """
    path = SCENARIOS / f"{scenario}.xml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.xml")))
        raise LabStateError(f"No SIPp scenario {scenario!r}.", hint=f"scenarios: {known}")
    secret = secret if secret is not None else lab.credentials.secrets[extension]
    address = str(lab.spec.address_of(host))
    target = target or f"{lab.spec.address_of(lab.spec.pbx.host)}:{lab.spec.pbx.sip_port}"
    (lab.logs_dir / host).mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix=f"sipp-{scenario}-{time.strftime('%H%M%S')}-",
                                    dir=lab.logs_dir / host))
    sandbox = Sandbox(rootfs=images.ensure_image("modern", build=False, progress=False),
                      hostname=host, etc_dir=lab.etc_dir, chdir="/srv/sipp/out", own_pids=False,
                      ro_binds=[(path, "/srv/sipp/scenario.xml")], binds=[(out_dir, "/srv/sipp/out")])
    # -m 1: one call; -nostdin: no keyboard; -timeout_error: a deadline is a failure;
    # -trace_msg: every message in <scenario>_<pid>_messages.log.
    program = ["sipp", target, "-sf", "/srv/sipp/scenario.xml", "-s", extension,
               "-au", extension, "-ap", secret, "-i", address, "-p", str(local_port),
               "-m", "1", "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error",
               "-trace_msg", "-message_file", "/srv/sipp/out/messages.log"]
    daemon = Daemon(f"{host}/sipp", lab.namespace(host), sandbox, program, out_dir / "sipp.out", lab.record)
    daemon.start()
    daemon.popen.wait(timeout + 5)  # SIPp stops itself at its -timeout
    status = daemon.exit_status()
    daemon.stop()
    messages = out_dir / "messages.log"
    return SippResult(scenario, status, messages.read_text(errors="replace") if messages.exists() else "",
                      log_tail(out_dir / "sipp.out", 20))
