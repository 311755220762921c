"""The lab model: what a lab file (``configs/labs/*.yaml``) declares, as typed objects.

Vocabulary (used everywhere in labkit, after mininet/ipmininet):

* **network** – one layer-2 segment (a bridge) with an IPv4 subnet;
* **host** – one network namespace with interfaces on networks, an optional gateway,
  optionally forwarding (a router);
* **pbx** – the Asterisk server, on a host, with its transports, endpoints (one per
  extension, with digest credentials) and dialplan contexts;
* **phone** – a SIP user agent (baresip softphone) on a host, bound to one extension.

Loading validates in two passes, as containerlab and netlab do: the *shape* with pydantic
(unknown keys rejected), then the *references* (a phone's host exists, an address lies in
its network, …).  Every problem is reported with its place (``phones[1].extension``), the
line in the file, and what would be valid.
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from labkit.errors import LabFileError
from labkit import resources

#: Names become namespace and interface names: short, lowercase, no surprises.
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,11}$"
LAB_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,15}$"
TRACKS = ("modern", "legacy")
#: Where ``Lab.load("first-call")`` looks for lab files.
LABS_DIR = resources.labs_dir()


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Segment name, e.g. 'lan'.")
    subnet: ipaddress.IPv4Network = Field(description="IPv4 subnet, e.g. 192.168.0.0/24.")


class Interface(_Strict):
    network: str = Field(description="Name of a network declared under `networks`.")
    address: ipaddress.IPv4Address = Field(description="Address inside the network's subnet.")


class PortForward(_Strict):
    """A DNAT rule of the ISP box (redirection de ports): WAN port(s) → a LAN address."""

    proto: Literal["udp", "tcp"]
    ports: tuple[int, int] | int = Field(description="A port, or [first, last] of a range.")
    to: ipaddress.IPv4Address = Field(description="The LAN host that receives them.")

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, value):
        low, high = (value, value) if isinstance(value, int) else value
        if not (1 <= low <= high <= 65535):
            raise ValueError("ports are 1-65535, and a range is [first, last] with first <= last")
        return value

    @property
    def range(self) -> tuple[int, int]:
        return (self.ports, self.ports) if isinstance(self.ports, int) else tuple(self.ports)


class Nat(_Strict):
    """What makes a router an ISP box: masquerading towards its WAN, forwards, SIP ALG."""

    outside: str = Field(description="The network on the WAN side (the Internet).")
    forwards: list[PortForward] = Field(default=[], description="Port forwards (DNAT).")
    sip_alg: bool = Field(default=False, description="The kernel's SIP helper rewrites SIP/SDP.")


class Host(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Host name, also its namespace suffix.")
    interfaces: list[Interface] = Field(min_length=1)
    gateway: ipaddress.IPv4Address | None = Field(
        default=None, description="Default gateway; must lie in one of the host's networks.")
    forwarding: bool = Field(default=False, description="Route between its networks.")
    nat: Nat | None = Field(default=None, description="Make this host an ISP box doing NAT.")


class Endpoint(_Strict):
    """One extension on the PBX: a chan_sip peer or a PJSIP endpoint+aor+auth."""

    extension: str = Field(pattern=r"^[0-9]{2,8}$", description="Dialable number, e.g. '6000'.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._'-]{0,31}$",
                      description="Display name (caller ID name), e.g. 'Alice'.")
    # No spaces, quotes, ';' or brackets: the secret is written into sip.conf/pjsip.conf.
    secret: str | None = Field(
        default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.~+/=@%!-]+$",
        description="Digest password; a random one is drawn per lab when omitted.")
    context: str = Field(default="work", pattern=r"^[A-Za-z0-9_-]+$")

    @property
    def auth_user(self) -> str:
        """The digest user name: the extension, as in the walkthrough.

        chan_sip names a peer after the user that registers, and the dialplan dials
        ``SIP/${EXTEN}``; keeping user name = extension keeps both tracks alike.
        """
        return self.extension


class PbxNat(_Strict):
    """Asterisk behind NAT: what to announce and how to treat phones behind NAT.

    legacy: ``externip``/``localnet`` in sip.conf [general], ``nat=force_rport,comedia``;
    modern: ``external_media_address``/``external_signaling_address``/``local_net`` on the
    transport, ``rtp_symmetric``/``force_rport``/``rewrite_contact`` on endpoints.
    """

    external_address: str | None = Field(
        default=None, description="Public address (or DDNS name) to announce in SIP and SDP.")
    local_nets: list[ipaddress.IPv4Network] = Field(
        default=[], description="Networks that are not behind the NAT (no rewriting for them).")
    symmetric: bool = Field(
        default=False, description="Answer and send media where packets come from (rport/comedia).")


class Pbx(_Strict):
    host: str = Field(description="The host the Asterisk server runs on.")
    transports: list[Literal["udp", "tcp"]] = Field(default=["udp"], min_length=1)
    sip_port: int = Field(default=5060, ge=1, le=65535)
    ami_port: int = Field(default=5038, ge=1, le=65535)
    rtp_ports: tuple[int, int] = Field(
        default=(10000, 20000), description="RTP port range (rtp.conf), as in the walkthrough.")
    codecs: list[Literal["ulaw", "alaw", "g722"]] = Field(default=["ulaw", "alaw"], min_length=1)
    direct_media: bool = Field(
        default=False, description="Let media flow phone-to-phone (directmedia/direct_media).")
    strict_rtp: bool = Field(default=True, description="Asterisk's strict RTP learning (rtp.conf).")
    nat: PbxNat = Field(default_factory=PbxNat, description="NAT traversal settings.")
    endpoints: list[Endpoint] = Field(min_length=1)
    dialplan: dict[str, list[str]] = Field(
        description="Context name -> lines of extensions.conf; '{{ tech }}' becomes SIP or PJSIP.")

    @field_validator("rtp_ports")
    @classmethod
    def _ordered_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not (1024 <= low < high <= 65535):
            raise ValueError("must be [low, high] with 1024 <= low < high <= 65535")
        return value


class Phone(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    host: str
    extension: str = Field(description="An extension declared under pbx.endpoints.")
    sip_port: int = Field(default=5060, ge=1, le=65535)
    registrar: str | None = Field(
        default=None, description="Where the phone registers (address or name); default: the "
                                  "PBX host's address. A phone outside reaches the box's public address.")


class Dns(_Strict):
    """A DNS server in the lab (dnsmasq), authoritative for the names listed.

    Every lab host then resolves through it: the DDNS scenario updates a record when the
    box's public address changes (the report's fix C: a dynamic address behind a name).
    """

    host: str = Field(description="The host dnsmasq runs on.")
    records: dict[str, ipaddress.IPv4Address] = Field(
        default={}, description="Name → IPv4 address (A records), e.g. voip.home.example.")

    @field_validator("records")
    @classmethod
    def _reserved_names(cls, value):
        for name in value:
            # RFC 2606 / RFC 6761: names for documentation and tests never leak anywhere.
            if not re.fullmatch(r"[a-z0-9.-]+\.(test|example|invalid|localhost)", name):
                raise ValueError(f"{name!r}: use a reserved name ending in .test or .example")
        return value


class LabSpec(_Strict):
    """A whole lab file."""

    name: str = Field(pattern=LAB_NAME_PATTERN)
    description: str = ""
    networks: list[Network] = Field(min_length=1)
    hosts: list[Host] = Field(min_length=1)
    pbx: Pbx
    phones: list[Phone] = Field(default=[])
    dns: Dns | None = Field(default=None, description="A DNS server in the lab (for DDNS).")

    # -- look-ups used by the rest of labkit -------------------------------------------
    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def endpoint(self, extension: str) -> Endpoint:
        return next(e for e in self.pbx.endpoints if e.extension == extension)

    def address_of(self, host: str) -> ipaddress.IPv4Address:
        """The host's first address: the one it uses for SIP."""
        return self.host(host).interfaces[0].address


# ---------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------

def find_lab_file(name_or_path: str | Path) -> Path:
    """A lab name (``first-call``) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path = candidate
    else:
        path = LABS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in LABS_DIR.glob("*.yaml"))) or "none"
        raise LabFileError(
            f"No lab file {path}.",
            cause="the lab name is misspelt, or the path is wrong",
            hint=f"use one of the labs shipped in {LABS_DIR}: {known}; or give a path to a .yaml file",
        )
    return path


def load_spec(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> LabSpec:
    """Read, parse and validate a lab file; raise LabFileError listing every problem.

    ``overrides`` is merged into the file's data before validation (nested dicts merge,
    other values replace), e.g. ``{"pbx": {"direct_media": True}}`` for a notebook's
    variant of a lab.
    """
    path = find_lab_file(name_or_path)
    text = path.read_text(encoding="utf-8")
    if overrides:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
        text = yaml.safe_dump(merge_overrides(data, overrides), sort_keys=False)
    return parse_spec(text, source=str(path))


def merge_overrides(base: Any, extra: Any) -> Any:
    """Nested dicts merge key by key; any other value in ``extra`` replaces the base's."""
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: merge_overrides(base.get(k), v) for k, v in extra.items()}}
    return extra


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses repeated keys (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in the same mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_spec(text: str, source: str = "<lab>") -> LabSpec:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LabFileError(
            f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}.",
            cause="a missing colon, a bad indentation or an unclosed quote or bracket",
            hint="check the line shown (and the one above it); indent with spaces, not tabs",
        ) from None
    if not isinstance(data, dict):
        raise LabFileError(
            f"{source}: a lab file must be a mapping (name:, networks:, hosts:, pbx:, phones:).",
            hint="start from configs/labs/first-call.yaml",
        )
    try:
        spec = LabSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(_loc(err["loc"]), _describe(err)) for err in exc.errors()]
        raise _problems_error(source, problems, root) from None
    problems = check_references(spec)
    if problems:
        raise _problems_error(source, problems, root)
    return spec


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
    problems += _port_collisions(spec)
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


def _dialplan_line_problem(line: str) -> str | None:
    """A dialplan line is one line of extensions.conf; ``{{ tech }}`` is its only variable."""
    import jinja2
    import jinja2.meta

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
    claims = [(pbx.host, t, pbx.sip_port, "pbx.sip_port") for t in pbx.transports]
    claims.append((pbx.host, "tcp", pbx.ami_port, "pbx.ami_port"))
    low, high = pbx.rtp_ports
    for i, phone in enumerate(spec.phones):
        claims.append((phone.host, "udp", phone.sip_port, f"phones[{i}].sip_port"))
        if phone.host == pbx.host and low <= phone.sip_port <= high:
            problems.append((f"phones[{i}].sip_port", f"port {phone.sip_port} is inside the "
                             f"PBX's RTP range {low}-{high} on the same host"))
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


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; see configs/lab.schema.json for valid keys)"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{err['msg'].lower()} (got {err.get('input')!r})"
    if kind == "value_error":
        return f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
    if kind == "string_type" and isinstance(err.get("input"), int):
        return f"must be text: write it in quotes, \"{err['input']}\""
    if kind == "string_pattern_mismatch":
        return (f"{err.get('input')!r} does not match the pattern "
                f"{err.get('ctx', {}).get('pattern')}")
    return f"{err['msg']} (got {err.get('input')!r})"


def _line_of(root: yaml.Node | None, place: str) -> int | None:
    """Follow a place such as ``phones[1].extension`` in the YAML node tree to its line."""
    node = root
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", place):
        if node is None:
            return None
        if token.startswith("["):
            index = int(token[1:-1])
            if isinstance(node, yaml.SequenceNode) and index < len(node.value):
                node = node.value[index]
            else:
                return node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == token]
            if not match:
                return node.start_mark.line + 1
            key, node = match[0]
            if node is None:
                return key.start_mark.line + 1
        else:
            return node.start_mark.line + 1
    return node.start_mark.line + 1 if node is not None else None


def _problems_error(source: str, problems: list[tuple[str, str]], root: yaml.Node | None):
    lines = []
    for place, message in problems:
        line = _line_of(root, place)
        where = f" (line {line})" if line else ""
        lines.append(f"  - {place}{where}: {message}")
    count = len(problems)
    return LabFileError(
        f"{source}: {count} problem{'s' if count > 1 else ''} in the lab file:\n" + "\n".join(lines),
        hint="fix each place listed; `labkit schema` prints every valid key",
    )


# ---------------------------------------------------------------------------------------
# Secrets and schema
# ---------------------------------------------------------------------------------------

def draw_secrets(spec: LabSpec) -> dict[str, str]:
    """Digest passwords per extension: the lab file's, else a fresh random one.

    The walkthrough used ``secret=test``; a lab that runs on a student's laptop should not
    teach that habit, so omitted secrets are 16 random URL-safe characters per lab run.
    """
    return {e.extension: e.secret or secrets.token_urlsafe(12) for e in spec.pbx.endpoints}


def json_schema() -> dict[str, Any]:
    schema = LabSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "labkit lab file"
    return schema
