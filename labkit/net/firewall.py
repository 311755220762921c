"""A host's own firewall (the VPS's): nftables in its namespace, only what the chain needs.

The report's last line — "secure your server (fail2ban + SIP firewall)" — made concrete: an
``input`` chain whose policy drops, that accepts the replies to what the host sent itself
(``ct state established,related``), loopback, ping, and one rule per service the lab file
allows (a protocol, a port or a range, optionally a source and a rate per source), each with
a counter, and a last counted drop.  The whole ruleset is replaced atomically (``nft -f``);
``counters()`` reads what each rule matched (``nft -j list table``), so a notebook can show
what the firewall dropped during an attack and that the phones' traffic still passed.
Rate limits use an nftables *meter* keyed by source address (nft(8), "METERS"): one scanner
sending too fast is cut off without slowing the others.
"""
from __future__ import annotations

import json

from labkit.errors import NetworkError
from labkit.net.netns import Namespace
from labkit.spec.model import Firewall

TABLE = "labkit_firewall"


def render_ruleset(firewall: Firewall, sources: dict[str, str]) -> str:
    """The nftables ruleset of ``firewall``; ``sources`` maps host names to their addresses."""
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{",
             "    chain input {",
             f"        type filter hook input priority filter; policy {firewall.policy};",
             '        ct state established,related accept comment "replies to what this host sent"',
             '        iif "lo" accept',
             '        icmp type echo-request accept comment "ping"']
    for index, rule in enumerate(firewall.allow):
        match = [f"{rule.proto} dport {rule.ports}"]
        if rule.source is not None:
            match.insert(0, f"ip saddr {sources.get(rule.source, rule.source)}")
        if rule.rate is not None:
            # One meter per rule: each source address gets its own token bucket.
            match.append(f"meter rule{index} {{ ip saddr limit rate {rule.rate} }}")
        comment = rule.comment or f"{rule.proto} {rule.ports}"
        lines.append(f'        {" ".join(match)} counter accept comment "{comment}"')
    lines += ['        counter drop comment "everything else"' if firewall.policy == "drop"
              else '        counter comment "everything else"',
              "    }", "}"]
    return "\n".join(lines) + "\n"


class HostFirewall:
    """The firewall of one running host (``lab.firewall("vps")``)."""

    def __init__(self, host: str, namespace: Namespace, firewall: Firewall, sources: dict[str, str]):
        self.host, self.namespace, self.firewall, self.sources = host, namespace, firewall, sources

    def ruleset(self) -> str:
        return render_ruleset(self.firewall, self.sources)

    def apply(self) -> None:
        result = self.namespace.run(["nft", "-f", "-"], check=False, input=self.ruleset())
        if result.returncode != 0:
            raise NetworkError(f"The firewall of {self.host} was refused by nftables: {result.stderr.strip()}",
                               hint="check the host's firewall: section of the lab file; the rules are in "
                                    "lab.firewall(host).ruleset()")

    def remove(self) -> None:
        self.namespace.run(["nft", "delete", "table", "inet", TABLE], check=False)

    def rules(self) -> str:
        """The rules in force, as the kernel lists them, counters included."""
        return self.namespace.run(["nft", "list", "table", "inet", TABLE]).stdout

    def counters(self) -> dict[str, dict[str, int]]:
        """``{comment: {"packets": n, "bytes": n}}`` for each counted rule of the input chain."""
        out = self.namespace.run(["nft", "-j", "list", "table", "inet", TABLE]).stdout
        found = {}
        for item in json.loads(out).get("nftables", []):
            rule = item.get("rule")
            if not rule or rule.get("chain") != "input":
                continue
            counter = next((e["counter"] for e in rule.get("expr", []) if "counter" in e), None)
            if counter is not None:
                found[rule.get("comment", f"rule {rule.get('handle')}")] = {
                    "packets": int(counter["packets"]), "bytes": int(counter["bytes"])}
        return found
