"""The host's side of a student network: nothing from it reaches the machine or leaves through it.

An ``--internal`` podman network gives its containers no route out and its bridge no address,
but a student holds ``NET_ADMIN`` in their container (the labs need it): ``ip route add default
dev eth0`` is enough to send packets to the bridge, and Linux, a weak-host system, accepts a
packet for any of its addresses on any interface and answers ARP for them there (``arp_ignore``
0) — the machine's services (SSH, the hub's own ports) would be one route away.  So each student
network gets an nftables table of its own in the host's namespace (family ``inet``: IPv4 and
IPv6, link-local included) that drops whatever comes in from the network's bridge to the host
(hook ``input``) or would be routed through it (hook ``forward``).  The labs are not affected:
they run in namespaces inside each container, behind the container's own interface.
"""
from __future__ import annotations

import re
import shutil
import subprocess

from labkit.errors import EnvironmentProblem, LabkitError

PREFIX = "labkit_class_"


class FirewallError(LabkitError):
    """nft refused the classroom's rules."""


def table_name(network: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", network)


def rules(network: str, bridge: str) -> str:
    """The nft script of one student network's table."""
    return f"""\
table inet {table_name(network)} {{
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        iifname "{bridge}" counter drop comment "a student container to the machine"
    }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "{bridge}" counter drop comment "a student container out through the machine"
        oifname "{bridge}" counter drop comment "anything routed into a student network"
    }}
}}
"""


def _nft(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("nft") is None:
        raise EnvironmentProblem("nft not found: the classroom keeps students' containers off the machine with "
                                 "nftables.", hint="apt-get install nftables")
    proc = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise FirewallError(f"nft {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def close(network: str, bridge: str) -> None:
    """Install (or replace) the table that closes ``network``'s bridge to the machine."""
    remove(network)
    _nft("-f", "-", stdin=rules(network, bridge))


def remove(network: str) -> bool:
    """Delete the network's table; True if there was one."""
    return drop_table(table_name(network))


def drop_table(table: str) -> bool:
    """Delete one of the classroom's tables by its name; True if it was there."""
    return _nft("delete", "table", "inet", table, check=False).returncode == 0


def tables() -> list[str]:
    """The classroom's tables present on the machine."""
    listed = _nft("list", "tables", "inet", check=False).stdout
    return [name for name in re.findall(r"^table inet (\S+)$", listed, re.M) if name.startswith(PREFIX)]


def dropped(network: str) -> int:
    """Packets the network's table dropped so far (all its rules)."""
    listed = _nft("list", "table", "inet", table_name(network), check=False).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", listed))
