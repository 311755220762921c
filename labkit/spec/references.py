"""The cross-references of a lab file that its schema cannot see.

A phone's host exists, an address lies in its network, two listeners do not share a port,
a NAT box has a WAN and a LAN … each problem is a ``(place, message)`` pair, the place
written as in the file (``phones[1].extension``) so that :mod:`labkit.spec.load` can give
its line.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

import jinja2
import jinja2.meta

import labkit.spec.stanza as stanza
from labkit.addresses import is_host_name, parse_ipv4
from labkit.errors import LabFileError
from labkit.spec.dialplan import dialplan_problems
from labkit.spec.model import Host, LabSpec, Network


def check_references(spec: LabSpec) -> list[tuple[str, str]]:
    """The cross-references pydantic cannot see; returns (place, message) pairs."""
    problems: list[tuple[str, str]] = []
    networks = {n.name: n for n in spec.networks}
    hosts = {h.name: h for h in spec.hosts}

    problems += _duplicates("networks", [n.name for n in spec.networks], "name")
    problems += _duplicates("hosts", [h.name for h in spec.hosts], "name")
    problems += _duplicates("phones", [p.name for p in spec.phones], "name")
    # Hosts and networks share one namespace naming scheme (lk-<lab>-<name>).
    for i, host in enumerate(spec.hosts):
        if host.name in IP_LINK_KEYWORDS:
            problems.append((f"hosts[{i}].name", f"{host.name!r} is a keyword of `ip link set` (the "
                             "switch's end of the host's link is named after the host): rename it"))
        if host.name in networks:
            problems.append((f"hosts[{i}].name", f"{host.name!r} is also a network's name; hosts "
                             "and networks each get a namespace named after them: rename one"))
    problems += _duplicates("pbx.endpoints", [e.extension for e in spec.pbx.endpoints], "extension")
    # One registration per extension (max_contacts=1): a second phone would evict the first.
    problems += _duplicates("phones", [p.extension for p in spec.phones], "extension")

    seen_addresses: dict[ipaddress.IPv4Address, str] = {}
    for i, host in enumerate(spec.hosts):
        attached = []
        for j, iface in enumerate(host.interfaces):
            place = f"hosts[{i}].interfaces[{j}]"
            net = networks.get(iface.network)
            if net is None:
                problems.append((f"{place}.network", f"unknown network {iface.network!r}; "
                                 f"declared networks: {', '.join(networks) or 'none'}"))
                continue
            attached.append(net)
            if iface.address not in net.subnet or iface.address in (
                    net.subnet.network_address, net.subnet.broadcast_address):
                problems.append((f"{place}.address", f"{iface.address} is not a host address of "
                                 f"network {net.name!r} ({net.subnet}); use one of "
                                 f"{_first_hosts(net.subnet)}"))
            if iface.address in seen_addresses:
                problems.append((f"{place}.address", f"{iface.address} is already used by "
                                 f"{seen_addresses[iface.address]}"))
            seen_addresses[iface.address] = place
        problems += _duplicates(f"hosts[{i}].interfaces",
                                [iface.network for iface in host.interfaces], "network")
        if host.gateway is not None and attached and not any(
                host.gateway in net.subnet for net in attached):
            problems.append((f"hosts[{i}].gateway", f"{host.gateway} is in none of the host's "
                             f"networks ({', '.join(str(n.subnet) for n in attached)})"))

    for i, host in enumerate(spec.hosts):
        if host.nat is not None:
            problems += nat_problems(f"hosts[{i}].nat", host, networks)
        problems += _firewall_problems(f"hosts[{i}].firewall", host, set(hosts))

    if spec.dns is not None and spec.dns.host not in hosts:
        problems.append(("dns.host", f"unknown host {spec.dns.host!r}; hosts: {', '.join(hosts)}"))

    if spec.pbx.host not in hosts:
        problems.append(("pbx.host", f"unknown host {spec.pbx.host!r}; hosts: {', '.join(hosts)}"))
    extensions = {e.extension for e in spec.pbx.endpoints}
    for context in spec.pbx.dialplan:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", context) or context in RESERVED_CONTEXTS:
            problems.append((f"pbx.dialplan.{context}", "a context name is letters, digits, '_' "
                             f"or '-', and not one of {', '.join(sorted(RESERVED_CONTEXTS))}"))
        for j, line in enumerate(spec.pbx.dialplan[context]):
            problem = _dialplan_line_problem(line)
            if problem:
                problems.append((f"pbx.dialplan.{context}[{j}]", problem))
    for i, endpoint in enumerate(spec.pbx.endpoints):
        if endpoint.context not in spec.pbx.dialplan:
            problems.append((f"pbx.endpoints[{i}].context", f"no dialplan context "
                             f"{endpoint.context!r}; contexts: {', '.join(spec.pbx.dialplan)}"))
    for i, phone in enumerate(spec.phones):
        if phone.host not in hosts:
            problems.append((f"phones[{i}].host", f"unknown host {phone.host!r}; "
                             f"hosts: {', '.join(hosts)}"))
        if phone.extension not in extensions:
            problems.append((f"phones[{i}].extension", f"extension {phone.extension!r} is not "
                             f"declared under pbx.endpoints; declared: {', '.join(sorted(extensions))}"))
        problems += _phone_transport_problems(spec, i, phone)
    problems += _dns_problems(spec, hosts)
    problems += _carrier_problems(spec, hosts, networks)
    problems += _pstn_problems(spec, hosts)
    problems += _trunk_problems(spec, networks)
    problems += dialplan_problems(spec)
    for host in spec.etc_hosts:
        if host not in hosts:
            problems.append((f"etc_hosts.{host}", f"unknown host {host!r}; hosts: {', '.join(hosts)}"))
    problems += _port_collisions(spec)
    problems += _stanza_problems(spec)
    return problems


def _dns_problems(spec: LabSpec, hosts: dict[str, Host]) -> list[tuple[str, str]]:
    """dnsmasq answers a CNAME only when it knows its target; an SRV target is a real host."""
    dns = spec.dns
    if dns is None:
        return []
    problems = []
    for alias, target in dns.cnames.items():
        if target not in dns.records:
            problems.append(("dns.cnames", f"{alias} → {target}: the canonical name needs an A record "
                             "under dns.records (dnsmasq answers a CNAME only for a name it knows)"))
        if alias in dns.records:
            problems.append(("dns.cnames", f"{alias} has an A record too: a name with a CNAME has no "
                             "other record (RFC 1034 §3.6.2)"))
    for i, srv in enumerate(dns.srv):
        if srv.target not in dns.records:
            problems.append((f"dns.srv[{i}].target", f"{srv.target!r} has no A record under dns.records; "
                             "an SRV target is a host name with an address, not an alias (RFC 2782)"))
    srv_names = {srv.name for srv in dns.srv}
    for i, naptr in enumerate(dns.naptr):
        if naptr.flags == "s" and naptr.replacement not in srv_names:
            problems.append((f"dns.naptr[{i}].replacement", f"{naptr.replacement!r} has no SRV record "
                             "under dns.srv (flag 's': the next lookup is an SRV, RFC 3263 §4.1)"))
    return problems


def _carrier_problems(spec: LabSpec, hosts: dict[str, Host],
                      networks: dict[str, Network]) -> list[tuple[str, str]]:
    carrier = spec.carrier
    if carrier is None:
        return []
    problems = []
    for field in ("host", "pstn"):
        name = getattr(carrier, field)
        if name not in hosts:
            problems.append((f"carrier.{field}", f"unknown host {name!r}; hosts: {', '.join(hosts)}"))
    if carrier.pstn == carrier.host:
        problems.append(("carrier.pstn", "the PSTN next hop is another host than the carrier's "
                         "(calls from its address are taken as calls from the public network)"))
    address = carrier.proxy.address
    if address is not None:
        if not any(address in net.subnet for net in networks.values()):
            problems.append(("carrier.proxy.address", f"{address} is outside every network of the lab "
                             f"({', '.join(str(n.subnet) for n in networks.values())}): no host could "
                             "reach the proxy"))
        elif carrier.host in hosts and address not in {i.address for i in hosts[carrier.host].interfaces}:
            problems.append(("carrier.proxy.address", f"{address} is not an address of host "
                             f"{carrier.host!r}, where Kamailio runs and listens"))
    problems += _domain_collisions(spec, hosts)
    lines = [a.line for a in carrier.accounts]
    problems += _duplicates("carrier.accounts", lines, "line")
    seen: dict[str, str] = {line: f"carrier.accounts[{i}].line" for i, line in enumerate(lines)}
    for i, account in enumerate(carrier.accounts):
        for j, alias in enumerate(account.aliases):
            place = f"carrier.accounts[{i}].aliases[{j}]"
            if alias in seen and seen[alias] != place:
                problems.append((place, f"{alias} is already {seen[alias]}: a number belongs to one line"))
            seen.setdefault(alias, place)
    return problems


def _domain_collisions(spec: LabSpec, hosts: dict[str, Host]) -> list[tuple[str, str]]:
    """The SIP domain is a name of its own: not the proxy's, not a lab host's."""
    carrier = spec.carrier
    domain = carrier.domain
    if domain == carrier.proxy.name:
        return [("carrier.domain", f"{domain!r} is also the proxy's name: the carrier's SIP domain and "
                 "its outbound proxy are two names (a REGISTER for the proxy's name gets "
                 "404 Domain not bound); give the domain its own name, e.g. sip.carrier.example")]
    host_names = {f"{h}.{spec.name}.test": h for h in hosts}
    if domain in host_names:
        return [("carrier.domain", f"{domain!r} is the name of lab host {host_names[domain]!r} in every "
                 "host's /etc/hosts: choose a name of the carrier's own")]
    try:
        carrier_address = spec.carrier_address()
    except LabFileError:
        return []  # an unknown carrier host is reported on its own
    owners = {str(i.address): h.name for h in hosts.values() for i in h.interfaces}
    records = spec.dns.records if spec.dns else {}
    if domain in records and records[domain] != carrier_address and str(records[domain]) in owners:
        return [("dns.records", f"{domain} (the carrier's SIP domain) points at "
                 f"{records[domain]}, host {owners[str(records[domain])]!r}: a name cannot be both "
                 f"(the carrier listens on {carrier_address})")]
    return []


def _pstn_problems(spec: LabSpec, hosts: dict[str, Host]) -> list[tuple[str, str]]:
    pstn = spec.pstn
    if pstn is None:
        return []
    problems = []
    if pstn.host not in hosts:
        problems.append(("pstn.host", f"unknown host {pstn.host!r}; hosts: {', '.join(hosts)}"))
    lab_phones = {p.name for p in spec.phones}
    problems += _duplicates("pstn.phones", [p.name for p in pstn.phones], "name")
    problems += _duplicates("pstn.phones", [p.number for p in pstn.phones], "number")
    dids = set()
    if spec.carrier is not None:
        dids = {n for a in spec.carrier.accounts for n in (a.line, *a.aliases)}
    for i, phone in enumerate(pstn.phones):
        if phone.host not in hosts:
            problems.append((f"pstn.phones[{i}].host", f"unknown host {phone.host!r}; "
                             f"hosts: {', '.join(hosts)}"))
        if phone.name in lab_phones:
            problems.append((f"pstn.phones[{i}].name", f"{phone.name!r} is also a phone under phones: "
                             "every phone of a lab has its own name"))
        if "0033" + phone.number[1:] in dids:
            problems.append((f"pstn.phones[{i}].number", f"{phone.number} is a number of the carrier's "
                             "lines: a PSTN subscriber needs a number of its own"))
    return problems


def _firewall_problems(place: str, host: Host, hosts: set[str]) -> list[tuple[str, str]]:
    """A firewall rule's ports are a port or a low-high range; its source a lab host or an address."""
    problems = []
    for j, rule in enumerate(host.firewall.allow if host.firewall else []):
        low, _, high = rule.ports.partition("-")
        if not 1 <= int(low) <= 65535 or (high and not int(low) < int(high) <= 65535):
            problems.append((f"{place}.allow[{j}].ports", f"{rule.ports!r} is not a port (1-65535) or a "
                             "range low-high of ports"))
        if rule.source is not None and rule.source not in hosts and parse_network(rule.source) is None:
            problems.append((f"{place}.allow[{j}].source", f"{rule.source!r} is neither a host of the lab "
                             f"({', '.join(sorted(hosts))}) nor an address or a network"))
    return problems


def parse_network(text: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return None


def _trunk_problems(spec: LabSpec, networks: dict[str, Network]) -> list[tuple[str, str]]:
    trunk = spec.pbx.trunk
    if trunk is None:
        return []
    problems = []
    if spec.carrier is None:
        problems.append(("pbx.trunk.account", "a trunk registers with an account of the lab's carrier, "
                         "and the lab has no carrier: declare a carrier: section with this account"))
    elif trunk.account not in {a.line for a in spec.carrier.accounts}:
        lines = ", ".join(a.line for a in spec.carrier.accounts)
        problems.append(("pbx.trunk.account", f"the carrier has no account {trunk.account!r}: a trunk "
                         f"registers and calls with one of the carrier's lines ({lines})"))
    if trunk.context not in spec.pbx.dialplan:
        problems.append(("pbx.trunk.context", f"no dialplan context {trunk.context!r} for calls from the "
                         f"carrier; contexts: {', '.join(spec.pbx.dialplan)}"))
    proxy = parse_ipv4(trunk.proxy)
    if proxy is not None and not any(proxy in net.subnet for net in networks.values()):
        problems.append(("pbx.trunk.proxy", f"{proxy} is outside every network of the lab "
                         f"({', '.join(str(n.subnet) for n in networks.values())}): the PBX could not "
                         "reach it"))
    return problems


def _stanza_problems(spec: LabSpec) -> list[tuple[str, str]]:
    """A student's TLS lines are data: only the options of the exercise, no directives."""
    problems = []
    for field_name, rules in (("sip_conf", stanza.CHAN_SIP_TLS), ("pjsip_conf", stanza.PJSIP_TLS)):
        text = getattr(spec.pbx.tls, field_name)
        if text is not None:
            problems += stanza.describe_problems(f"pbx.tls.{field_name}", stanza.parse(text, rules)[1])
    return problems


def _phone_transport_problems(spec: LabSpec, index: int, phone) -> list[tuple[str, str]]:
    """A phone speaks a transport the PBX offers, and finds its registrar by name through DNS."""
    problems = []
    if phone.transport not in spec.pbx.transports:
        problems.append((f"phones[{index}].transport", f"the PBX offers {', '.join(spec.pbx.transports)}, "
                         f"not {phone.transport}: add it to pbx.transports"))
    registrar = phone.registrar
    if registrar and is_host_name(registrar) and (spec.dns is None or registrar not in spec.dns.records):
        # baresip (libre) resolves names with its own DNS client: /etc/hosts is not read.
        problems.append((f"phones[{index}].registrar", f"{registrar!r} is a name: the phone resolves it "
                         "through DNS only, so the lab needs a dns: section with a record for it"))
    return problems


def nat_problems(place: str, host: Host, networks: dict[str, Network]) -> list[tuple[str, str]]:
    """An ISP box needs a WAN and a LAN; forwards go to the LAN and must not overlap."""
    nat = host.nat
    attached = [iface.network for iface in host.interfaces]
    problems = []
    if nat.outside not in attached:
        problems.append((f"{place}.outside", f"a NAT box needs a WAN: {nat.outside!r} is not one of "
                         f"its networks ({', '.join(attached)}); name the network facing the Internet"))
    inside = [networks[n] for n in attached if n != nat.outside and n in networks]
    if not inside:
        problems.append((place, "a NAT box needs a LAN too: give the host a second interface"))
    if not host.forwarding:
        problems.append((f"{place.rsplit('.', 1)[0]}.forwarding", "a NAT box routes: set forwarding: true"))
    for j, forward in enumerate(nat.forwards):
        if inside and not any(forward.to in net.subnet for net in inside):
            problems.append((f"{place}.forwards[{j}].to", f"{forward.to} is not on the box's LAN "
                             f"({', '.join(str(n.subnet) for n in inside)}); a port forward leads "
                             "to a host inside"))
        low, high = forward.range
        for k, other in enumerate(nat.forwards[:j]):
            other_low, other_high = other.range
            if other.proto == forward.proto and low <= other_high and other_low <= high:
                problems.append((f"{place}.forwards[{j}].ports", f"{forward.proto} {low}-{high} "
                                 f"overlaps forwards[{k}] ({other_low}-{other_high}); a WAN port "
                                 "can lead to one LAN host only"))
    return problems


RESERVED_CONTEXTS = {"general", "globals"}
#: Words `ip link set NAME …` reads as options rather than as an interface name (ip-link(8)).
IP_LINK_KEYWORDS = {"up", "down", "carrier", "arp", "dynamic", "multicast", "allmulticast", "promisc",
                    "trailers", "txqueuelen", "txqlen", "name", "alias", "qdisc", "mtu", "address",
                    "broadcast", "brd", "peer", "netns", "vf", "master", "nomaster", "addrgenmode",
                    "protodown", "type", "dev", "group", "xdp", "link", "help"}


def _dialplan_line_problem(line: str) -> str | None:
    """A dialplan line is one line of extensions.conf; ``{{ tech }}`` is its only variable."""
    if "\n" in line or "\r" in line:
        return "one line of extensions.conf per list item (no line breaks)"
    try:
        variables = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(line))
    except jinja2.TemplateSyntaxError as exc:
        return f"template error: {exc.message}; the only placeholder is {{{{ tech }}}}"
    unknown = variables - {"tech"}
    if unknown:
        return (f"unknown placeholder {', '.join(sorted(unknown))}; the only one is {{{{ tech }}}} "
                "(SIP or PJSIP). Asterisk variables are written ${EXTEN}")
    return None


def _port_collisions(spec: LabSpec) -> list[tuple[str, str]]:
    """Two listeners on the same host, transport and port cannot both bind."""
    owners: dict[tuple[str, str, int], str] = {}
    problems = []
    pbx = spec.pbx
    claims = [(pbx.host, t, pbx.sip_port, "pbx.sip_port") for t in pbx.transports if t != "tls"]
    if "tls" in pbx.transports:
        claims.append((pbx.host, "tcp", pbx.tls.port, "pbx.tls.port"))
    claims.append((pbx.host, "tcp", pbx.ami_port, "pbx.ami_port"))
    low, high = pbx.rtp_ports
    for i, phone in enumerate(spec.phones):
        claims.append((phone.host, "udp", phone.sip_port, f"phones[{i}].sip_port"))
        if phone.host == pbx.host and low <= phone.sip_port <= high:
            problems.append((f"phones[{i}].sip_port", f"port {phone.sip_port} is inside the "
                             f"PBX's RTP range {low}-{high} on the same host"))
    if spec.carrier is not None:
        claims.append((spec.carrier.host, "udp", 5060, "carrier"))
    if spec.pstn is not None:
        claims += [(spec.pstn.host, "udp", 5060, "pstn"), (spec.pstn.host, "tcp", 5038, "pstn")]
        claims += [(p.host, "udp", 5060, f"pstn.phones[{i}]") for i, p in enumerate(spec.pstn.phones)]
    for host, transport, port, place in claims:
        key = (host, transport, port)
        if key in owners:
            problems.append((place, f"{transport} port {port} on host {host!r} is already "
                             f"taken by {owners[key]}; choose another port"))
        else:
            owners[key] = place
    return problems


def _duplicates(prefix: str, values: list[Any], field: str) -> list[tuple[str, str]]:
    first: dict[Any, int] = {}
    out = []
    for i, value in enumerate(values):
        if value in first:
            out.append((f"{prefix}[{i}].{field}", f"duplicate {field} {value!r} "
                        f"(also at {prefix}[{first[value]}]); each must be unique"))
        else:
            first[value] = i
    return out


def _first_hosts(subnet: ipaddress.IPv4Network) -> str:
    if subnet.prefixlen >= 31:
        return "nothing: a lab network needs a prefix of /30 or shorter (e.g. /24)"
    return f"{subnet.network_address + 1} … {subnet.broadcast_address - 1}"


