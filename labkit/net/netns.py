"""The network engine: namespaces, veth links, bridges, addresses, routes, forwarding.

Each lab host is one network namespace ``lk-<lab>-<host>``; each lab network is a bridge
``br0`` in its own namespace ``lk-<lab>-<network>`` (a switch), so nothing is ever created
in the machine's own namespace: veth ends are made directly inside the namespaces
(``ip -n NS link add … peer … netns OTHER``: nothing appears in the root namespace, even for
a moment), and deleting a namespace deletes its links.

Interface names inside a host are ``eth0``, ``eth1``… in the order of the lab file; the
switch side of each link is named after the host.  A router host (``forwarding: true``)
gets ``net.ipv4.ip_forward=1``; a later NAT box adds its nftables/iptables rules in its own
namespace through :meth:`Namespace.run`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import EnvironmentProblem, NetworkError

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


def _ip_binary() -> str:
    path = shutil.which("ip")
    if path is None:
        raise EnvironmentProblem("The `ip` command (iproute2) is missing.",
                                 hint="apt-get install iproute2")
    return path


def ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip [-n NS] ARGS``; on failure raise NetworkError with ip's own message."""
    argv = [_ip_binary()] + (["-n", namespace] if namespace else []) + list(args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise NetworkError(
            f"`{' '.join(argv[1:])}` failed: {result.stderr.strip() or result.stdout.strip()}",
            cause=_likely_cause(result.stderr),
            hint="run `labkit doctor`; if a previous lab crashed, `labkit clean`",
        )
    return result


def _likely_cause(stderr: str) -> str | None:
    if "File exists" in stderr:
        return "a namespace or link with this name already exists (a lab left over?)"
    if "Operation not permitted" in stderr:
        return "labs need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    return None


@dataclass(frozen=True)
class Namespace:
    """One network namespace, known by name (a bind mount under /run/netns)."""

    name: str

    def exists(self) -> bool:
        return (NETNS_DIR / self.name).exists()

    def create(self) -> None:
        if self.exists():
            raise NetworkError(
                f"Network namespace {self.name} already exists.",
                cause="a lab with the same name is running, or crashed without cleaning up",
                hint="`labkit status` shows running labs; `labkit clean` removes leftovers",
            )
        ip("netns", "add", self.name)
        # Labs are IPv4, like the walkthrough.  IPv6 on would add router solicitations and
        # MLD reports to every capture, and made PJSIP wait ~6 s at boot for a usable
        # IPv6 source address.  The setting is per namespace (net.ipv6.conf.* is netns-local).
        self.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        self.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        ip("link", "set", "lo", "up", namespace=self.name)

    def delete(self) -> None:
        if self.exists():
            ip("netns", "delete", self.name, check=False)

    def pids(self) -> list[int]:
        """Every process whose network namespace is this one."""
        out = ip("netns", "pids", self.name, check=False).stdout
        return [int(tok) for tok in out.split() if tok.isdigit()]

    def exec_argv(self, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` inside this namespace (``ip netns exec`` execs it)."""
        return [_ip_binary(), "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(self.exec_argv(argv), capture_output=True, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise NetworkError(f"`{' '.join(argv)}` in namespace {self.name} failed: "
                               f"{(result.stderr or result.stdout).strip()}")
        return result

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket that lives in this namespace, usable from any thread of this process.

        ``setns(2)`` applies to the calling thread only, and a socket keeps the namespace
        it was created in; so a short-lived thread enters the namespace, creates the socket
        and returns it.  This is how the host's Python talks to a lab daemon (AMI, baresip's
        ctrl_tcp) without any link into the machine's own namespace.
        """
        result: dict[str, object] = {}

        def make() -> None:
            try:
                fd = os.open(NETNS_DIR / self.name, os.O_RDONLY)
                try:
                    if _libc().setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                finally:
                    os.close(fd)
                result["sock"] = socket.socket(family, kind)
            except OSError as exc:
                result["error"] = exc

        thread = threading.Thread(target=make, name=f"setns-{self.name}")
        thread.start()
        thread.join()
        if "error" in result:
            raise NetworkError(f"Cannot open a socket in namespace {self.name}: {result['error']}",
                               hint="is the lab still running? `labkit status`")
        return result["sock"]  # type: ignore[return-value]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def add_veth(a: Namespace, a_name: str, b: Namespace, b_name: str) -> None:
    """A veth pair with one end in each namespace, both made in place."""
    ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name,
       namespace=a.name)


def add_bridge(ns: Namespace, name: str = "br0") -> None:
    ip("link", "add", name, "type", "bridge", namespace=ns.name)
    # Forward at once: a lab bridge has no loops, so spanning tree's 15 s learning
    # delay would only make the first packets vanish.
    ip("link", "set", name, "type", "bridge", "forward_delay", "0", "stp_state", "0",
       namespace=ns.name)
    ip("link", "set", name, "up", namespace=ns.name)


def attach_to_bridge(ns: Namespace, port: str, bridge: str = "br0") -> None:
    ip("link", "set", port, "master", bridge, namespace=ns.name)
    ip("link", "set", port, "up", namespace=ns.name)


def set_address(ns: Namespace, ifname: str, cidr: str) -> None:
    ip("addr", "add", cidr, "dev", ifname, namespace=ns.name)
    ip("link", "set", ifname, "up", namespace=ns.name)


def add_default_route(ns: Namespace, gateway: str | None, ifname: str) -> None:
    """A default route, via the gateway if there is one, else straight out of ``ifname``.

    Without any default route some softphones (baresip, linphone) pick 127.0.0.1 as their
    own address and announce it in Contact and SDP (seen with both).
    """
    if gateway:
        ip("route", "add", "default", "via", gateway, namespace=ns.name)
    else:
        ip("route", "add", "default", "dev", ifname, namespace=ns.name)


def existing_namespaces() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())
