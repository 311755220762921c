"""The ISP box (la box): a lab host that masquerades its LAN behind one public address.

Its rules are one nftables ruleset in the box's own namespace, replaced atomically
(``nft -f``) on every change, after which connection tracking is flushed: otherwise
existing entries keep sending packets the old way (conntrack(8): entries outlive rule changes).

* **masquerade**: everything leaving by the WAN interface takes the box's public address
  (source NAT), as a home router does;
* **port forwards** (redirection de ports): destination NAT from WAN ports to a LAN host —
  the report's 5060/udp, 10000-20000/udp, 5061/tcp;
* **SIP ALG**: the kernel's SIP connection-tracking helper (``nf_conntrack_sip`` with
  ``nf_nat_sip``), attached to SIP packets on port 5060; it rewrites private addresses in
  Via, Contact and the SDP (``o=``, ``c=``, ``m=``) and opens the RTP ports it sees.

Everything is switchable while the lab runs: ``box.set_forwards(…)``, ``box.set_sip_alg(True)``,
``box.set_public_address(…)`` (a new address from the ISP: the DDNS scenario).
"""
from __future__ import annotations

import ipaddress

from labkit.errors import LabFileError, NetworkError
from labkit.net.host import Host
from labkit.net.netns import Namespace
from labkit.spec.model import Host as HostSpec
from labkit.spec.model import Nat, Network, PortForward
from labkit.spec.references import nat_problems
from labkit.state import LabRecord

TABLE = "labkit_box"


def render_ruleset(nat: Nat, wan_if: str, lan_nets: list[ipaddress.IPv4Network],
                   public_address: str) -> str:
    """The box's nftables ruleset for the given NAT settings and public address."""
    lines = ["flush ruleset", "", f"table ip {TABLE} {{"]
    if nat.sip_alg:
        lines += ['    ct helper sip {', '        type "sip" protocol udp', '        l3proto ip', '    }', ""]
    lines += [
        "    # Port forwards (DNAT): what arrives on the public address goes to a LAN host.",
        "    chain prerouting {",
        "        type nat hook prerouting priority dstnat; policy accept;",
    ]
    for forward in nat.forwards:
        low, high = forward.range
        ports = str(low) if low == high else f"{low}-{high}"
        lines.append(f'        iifname "{wan_if}" ip daddr {public_address} {forward.proto} dport {ports} '
                     f'dnat to {forward.to}')
    lines += [
        "    }",
        "",
        "    # Masquerade: the LAN leaves with the box's public address (source NAT).",
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
        f'        oifname "{wan_if}" ip saddr {{ {", ".join(str(n) for n in lan_nets)} }} masquerade',
        "    }",
    ]
    if nat.sip_alg:
        lines += [
            "",
            "    # SIP ALG: hand SIP on port 5060 to the kernel's SIP helper, which rewrites",
            "    # addresses in SIP headers and SDP and expects the RTP flows they announce.",
            "    chain sip_alg {",
            "        type filter hook prerouting priority filter; policy accept;",
            '        udp dport 5060 ct helper set "sip"',
            '        udp sport 5060 ct helper set "sip"',
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class NatBox(Host):
    """The running box of a lab, as ``lab.host("box")`` returns it.

    ``networks`` are the lab's networks by name; ``record`` keeps the box's current settings
    (so that another process attaching to the lab sees them); ``wan_neighbours`` are the
    namespaces of the hosts on its WAN, told to forget the old address when it changes.
    """

    def __init__(self, spec: HostSpec, namespace: Namespace, *, networks: dict[str, Network],
                 record: LabRecord, wan_neighbours: list[Namespace]):
        super().__init__(spec, namespace)
        self.networks = networks
        self.record = record
        self.wan_neighbours = wan_neighbours
        saved = record.info.get("boxes", {}).get(self.name)
        self.nat = Nat.model_validate(saved) if saved else spec.nat
        attached = [iface.network for iface in spec.interfaces]
        self.wan_if = f"eth{attached.index(self.nat.outside)}"
        self.lan_nets = [networks[n].subnet for n in attached if n != self.nat.outside]

    @property
    def public_address(self) -> str:
        out = self.namespace.run(["ip", "-4", "-o", "addr", "show", "dev", self.wan_if]).stdout
        return out.split()[3].split("/")[0]

    # -- reading ------------------------------------------------------------------------------
    def ruleset(self) -> str:
        return render_ruleset(self.nat, self.wan_if, self.lan_nets, self.public_address)

    def rules(self) -> str:
        """The rules in force, as the kernel lists them (``nft list ruleset``)."""
        return self.namespace.run(["nft", "list", "ruleset"]).stdout

    def conntrack(self) -> str:
        """The box's connection-tracking table (what NAT remembers)."""
        return self.namespace.run(["conntrack", "-L"], check=False).stdout

    # -- changing (each change: new ruleset, conntrack flushed) ----------------------------------
    def apply(self) -> None:
        result = self.namespace.run(["nft", "-f", "-"], check=False, input=self.ruleset())
        if result.returncode != 0:
            raise NetworkError(f"The box's rules were refused by nftables: {result.stderr.strip()}",
                               hint="`labkit doctor` checks nft; the rules are in box.ruleset()")
        self.flush_conntrack()
        self.record.info.setdefault("boxes", {})[self.name] = self.nat.model_dump(mode="json")
        self.record.save()

    def flush_conntrack(self) -> None:
        # Without this, a flow that already has an entry (a phone's REGISTER every few
        # seconds) keeps its old translation and the new rules seem to do nothing.
        self.namespace.run(["conntrack", "-F"], check=False)

    def _replace(self, **changes) -> None:
        data = {**self.nat.model_dump(), **changes}
        try:
            nat = Nat.model_validate(data)
        except Exception as exc:
            raise LabFileError(f"Invalid box settings: {exc}") from None
        # The same checks as a lab file: forwards inside the LAN, no overlap.
        problems = nat_problems(f"hosts[{self.name}].nat", self.spec.model_copy(update={"nat": nat}),
                                self.networks)
        if problems:
            raise LabFileError("Invalid box settings:\n" + "\n".join(f"  - {p}: {m}" for p, m in problems),
                               hint="forwards lead to a LAN address and must not overlap")
        self.nat = nat
        self.apply()

    def set_forwards(self, forwards: list[PortForward | dict]) -> None:
        """Replace the port forwards, e.g. ``[{"proto": "udp", "ports": 5060, "to": "192.168.0.10"}]``."""
        self._replace(forwards=[f if isinstance(f, PortForward) else PortForward.model_validate(f)
                                for f in forwards])

    def forward_walkthrough_ports(self, to: str) -> None:
        """The report's forwards: 5060/udp, 10000-20000/udp and 5061/tcp to ``to``."""
        self.set_forwards([{"proto": "udp", "ports": 5060, "to": to},
                           {"proto": "udp", "ports": [10000, 20000], "to": to},
                           {"proto": "tcp", "ports": 5061, "to": to}])

    def set_sip_alg(self, enabled: bool) -> None:
        self._replace(sip_alg=enabled)

    def set_public_address(self, address: str) -> str:
        """The ISP hands the box a new public address (the old one stops working).

        Returns the old address.  Hosts on the Internet that knew the old one — a phone
        registered to it — lose the box until something (DDNS) tells them the new one.
        """
        old = self.public_address
        network = self.networks[self.nat.outside]
        new = ipaddress.IPv4Address(address)
        if new not in network.subnet:
            raise LabFileError(f"{address} is not in the WAN network {network.subnet}.")
        prefix = network.subnet.prefixlen
        # Delete first: removing a primary address also removes secondaries of its subnet.
        self.namespace.run(["ip", "addr", "del", f"{old}/{prefix}", "dev", self.wan_if])
        self.namespace.run(["ip", "addr", "add", f"{new}/{prefix}", "dev", self.wan_if])
        gateway = self.spec.gateway
        if gateway is not None:
            self.namespace.run(["ip", "route", "replace", "default", "via", str(gateway)])
        # The ISP now routes the old address elsewhere: hosts on the WAN forget the box's
        # link-layer address for it (else their cached ARP entry would still lead there).
        for neighbour in self.wan_neighbours:
            neighbour.run(["ip", "neigh", "flush", "all"], check=False)
        self.apply()  # port forwards follow the new public address
        return old

    def __repr__(self) -> str:
        return f"<NatBox {self.name} wan={self.wan_if} forwards={len(self.nat.forwards)} alg={self.nat.sip_alg}>"
