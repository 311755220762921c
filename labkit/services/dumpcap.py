"""dumpcap writing one capture file in one lab namespace.

A host tool rather than a sandboxed daemon: it must see the namespace's interfaces as they
are.  As ipmininet's ``NetworkCapture`` does, it is confirmed running before the caller's
traffic starts (dumpcap has written the file header) and stopped with SIGINT, so that it
flushes and closes a complete file (dumpcap(1)).  Groups of captures are
:class:`labkit.lab.capture.Capture`.
"""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

from labkit.errors import EnvironmentProblem
from labkit.services.base import Service, ServiceContext

PCAP_HEADER_SIZE = 24


class Dumpcap(Service):
    """One dumpcap: ``interface`` (``any`` on a host, ``br0`` on a network) into ``path``."""

    kind = "dumpcap"
    ready_timeout = 5.0

    def __init__(self, context: ServiceContext, *, path: Path, interface: str,
                 capture_filter: str | None = None):
        super().__init__(context, name=f"{context.host}/dumpcap")
        self.path = path
        self.interface = interface
        self.capture_filter = capture_filter

    def program(self) -> list[str]:
        dumpcap = shutil.which("dumpcap")
        if dumpcap is None:
            raise EnvironmentProblem("dumpcap is missing: captures need it.",
                                     hint="apt-get install wireshark-common tshark")
        # -P: classic pcap, the format every tool reads; -q: no packet counter on stderr.
        program = [dumpcap, "-q", "-i", self.interface, "-P", "-w", str(self.path)]
        if self.capture_filter:
            program += ["-f", self.capture_filter]
        return program

    @property
    def log_path(self) -> Path:
        return self.context.log_dir / f"{self.path.stem}.log"

    def ready(self) -> bool:
        return self.path.exists() and self.path.stat().st_size >= PCAP_HEADER_SIZE

    def request_stop(self) -> None:
        daemon = self.payload()
        if daemon is not None:
            daemon.send_signal(signal.SIGINT)
