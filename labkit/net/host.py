"""A lab host as seen from Python: its namespace and how to run things in it."""
from __future__ import annotations

import ipaddress
import subprocess

from labkit.net.netns import Namespace
from labkit.spec.model import Host as HostSpec


class Host:
    """One host of a running lab (``lab.host("pbx")``)."""

    def __init__(self, spec: HostSpec, namespace: Namespace):
        self.spec = spec
        self.name = spec.name
        self.namespace = namespace

    @property
    def address(self) -> ipaddress.IPv4Address:
        """Its first address: the one it uses for SIP."""
        return self.spec.interfaces[0].address

    def run(self, argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a host command (from the machine, e.g. ``ping``, ``ss``) in this host's namespace."""
        return self.namespace.run(argv, check=check, timeout=timeout)

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address}>"
