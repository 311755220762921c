"""NAT fixes a student writes (notebook 02): the box's port forwards and Asterisk's NAT lines.

The report's students fixed NAT by hand: a forward rule per row of their port table on the box's
admin page, then ``externip``/``localnet``/``nat`` in ``sip.conf`` and a reload.  Here the
student writes the same two things and the lab runs them — as data, never as configuration
handed over as written:

* **forwards** (:func:`forward_rules`): the lab file's ``nat.forwards`` of the box as YAML text,
  one ``{proto, ports, to}`` per rule, validated by the lab model (protocol, port or range, an
  address of the box's LAN, no overlap) — :func:`forward_overrides` puts them on the box of a
  lab file;
* **Asterisk's NAT lines** (:func:`nat_settings`): ``sip.conf``'s ``[general]`` lines
  (``externip``/``externaddr``/``externhost``, ``localnet``, ``nat``) or ``pjsip.conf``'s
  transport (``external_media_address``, ``external_signaling_address``, ``local_net``), parsed
  by :mod:`labkit.spec.stanza` against the options this exercise allows and read into the lab
  file's ``pbx.nat`` — what the kit then renders for the track (sip.conf.j2 / pjsip.conf.j2).

What the text cannot say in the lab model (two different external addresses on PJSIP's
transport, a ``localnet`` that is not a network) is refused with the line and the reason.
"""
from __future__ import annotations

import ipaddress
import re

from labkit.errors import LabkitError, LabStateError
from labkit.spec import load_spec, stanza
from labkit.spec.load import YamlTextError, yaml_text

HOME_LAB = "home-pbx"
BOX = "box"
#: What a student may write in sip.conf's [general] for NAT (chan_sip's sample sip.conf).
CHAN_SIP_NAT = stanza.Rules(options={
    "externip": "the public address to announce", "externaddr": "the public address (newer name of externip)",
    "externhost": "a DNS name of the public address", "externrefresh": "seconds between lookups of externhost",
    "localnet": "a network inside the NAT: 192.168.0.0/255.255.255.0 or 192.168.0.0/24",
    "nat": "no, force_rport, comedia (comma separated), yes"}, sections=True)
#: What a student may write in pjsip.conf's transport for NAT (pjsip.conf.sample, type=transport).
PJSIP_NAT = stanza.Rules(options={
    "type": "transport", "protocol": "udp", "bind": "0.0.0.0 or 0.0.0.0:5060",
    "external_media_address": "the public address (or name) in SDP",
    "external_signaling_address": "the public address (or name) in SIP headers",
    "local_net": "a network inside the NAT, e.g. 192.168.0.0/24"}, sections=True)
_NAT_VALUES = {"no", "yes", "force_rport", "comedia", "auto_force_rport", "auto_comedia", "never", "route"}


class NatTextError(LabStateError):
    """A student's forwards or NAT lines that cannot be read as this exercise's settings."""


# -- the box's forwards --------------------------------------------------------------------------
def forward_rules(text: str) -> list[dict]:
    """The box's port forwards from YAML text: a list of ``{proto, ports, to}`` (``ports`` a
    number or ``[first, last]``); also accepted under a ``forwards:`` key."""
    if not isinstance(text, str) or not text.strip():
        raise NatTextError("The forwards should be text: the lines you wrote, one {proto, ports, to} per rule.")
    try:
        data = yaml_text(text)
    except YamlTextError as exc:
        raise NatTextError(f"Your forwards are {exc}") from None
    if isinstance(data, dict) and set(data) == {"forwards"}:
        data = data["forwards"]
    if not isinstance(data, list) or not all(isinstance(rule, dict) for rule in data):
        raise NatTextError("Your forwards should be a list, one rule per line: "
                           "- {proto: udp, ports: 5060, to: ADDRESS}")
    for number, rule in enumerate(data, 1):
        unknown = sorted(set(map(str, rule)) - {"proto", "ports", "to"})
        if unknown:
            raise NatTextError(f"rule {number}: {', '.join(unknown)} is not a key of a forward (proto, ports, to)")
    return data


def forward_overrides(text: str, lab: str = HOME_LAB, box: str = BOX) -> dict:
    """Lab-file overrides giving ``box`` the forwards the text describes (checked by the lab model)."""
    return box_forward_overrides(forward_rules(text), lab, box)


def box_forward_overrides(rules: list[dict], lab: str = HOME_LAB, box: str = BOX) -> dict:
    """Lab-file overrides giving ``box`` these forwards, checked by the lab model."""
    hosts = [h.model_dump(mode="json", exclude_none=True) for h in load_spec(lab).hosts]
    for host in hosts:
        if host["name"] == box:
            host["nat"]["forwards"] = rules
    overrides = {"hosts": hosts}
    try:
        load_spec(lab, overrides)  # refuses a bad rule with its place (hosts[0].nat.forwards[1].to)
    except LabkitError as exc:
        raise NatTextError("Your forwards do not fit the box: " + "; ".join(_rule_problems(exc.message))) from None
    return overrides


def _rule_problems(message: str) -> list[str]:
    """The lab model's problems with the forwards, named by rule (``rule 2: proto …``)."""
    found = re.findall(r"hosts\[\d+\]\.nat\.forwards\[(\d+)\](?:\.(\w+))?[^:]*: (.*)", message)
    return [f"rule {int(n) + 1}{' ' + key if key else ''}: {text}" for n, key, text in found] or [message]


def walkthrough_forwards(to: str) -> list[dict]:
    """The report's port table as forwards: 5060/udp, 10000-20000/udp, 5061/tcp to ``to``."""
    return [{"proto": "udp", "ports": 5060, "to": to}, {"proto": "udp", "ports": [10000, 20000], "to": to},
            {"proto": "tcp", "ports": 5061, "to": to}]


# -- Asterisk's NAT lines --------------------------------------------------------------------------
def nat_settings(text: str, config: str) -> dict:
    """The lab file's ``pbx.nat`` (external_address, local_nets, symmetric) from the NAT lines of
    ``sip.conf`` ([general]) or ``pjsip.conf`` (the transport) a student wrote."""
    if config not in ("sip.conf", "pjsip.conf"):
        raise NatTextError(f"No NAT lines for {config!r}.", hint="sip.conf or pjsip.conf")
    if not isinstance(text, str):
        raise NatTextError(f"The NAT lines should be text, not {type(text).__name__}.")
    parsed, problems = stanza.parse(text, CHAN_SIP_NAT if config == "sip.conf" else PJSIP_NAT)
    header = "[general]" if config == "sip.conf" else "[transport-udp]"
    problems = [(n, f"start with the section header {header}" if m.startswith("start with a section") else m)
                for n, m in problems]
    if problems:
        raise NatTextError(f"Your {config} lines are not valid here: " + "; ".join(
            f"line {n}: {m}" for n, m in problems[:4]))
    return _read_chan_sip(parsed) if config == "sip.conf" else _read_pjsip(parsed)


def _read_chan_sip(parsed: stanza.Stanza) -> dict:
    sections = parsed.sections()
    if sections != ["general"]:
        raise NatTextError("chan_sip reads externip, localnet and nat in [general]: "
                           f"write them under [general] (found {', '.join(f'[{s}]' for s in sections)})")
    lines = [(k, v) for _, k, v in parsed.lines]
    external = [v for k, v in lines if k in ("externip", "externaddr", "externhost")]
    if len(set(external)) > 1:
        raise NatTextError(f"two public addresses ({', '.join(dict.fromkeys(external))}): Asterisk announces one")
    nat = [part.strip() for k, v in lines if k == "nat" for part in v.split(",")]
    unknown = [n for n in nat if n not in _NAT_VALUES]
    if unknown:
        raise NatTextError(f"nat = {unknown[0]}: chan_sip knows no, force_rport, comedia, auto_force_rport, "
                           "auto_comedia (yes is the older force_rport,comedia)")
    symmetric = "yes" in nat or {"force_rport", "comedia"} <= set(nat)
    return {"external_address": external[0] if external else None,
            "local_nets": [_network(v, "localnet") for k, v in lines if k == "localnet"],
            "symmetric": symmetric}


def _read_pjsip(parsed: stanza.Stanza) -> dict:
    sections = parsed.sections()
    if len(sections) != 1:
        raise NatTextError("write one transport section, e.g. [transport-udp], with its NAT options "
                           f"(found {len(sections)} sections)")
    options = [(k, v) for _, k, v in parsed.lines]
    kind = [v for k, v in options if k == "type"]
    if kind and kind[-1] != "transport":
        raise NatTextError(f"type = {kind[-1]}: these options belong to a transport (type = transport)")
    media = {v for k, v in options if k == "external_media_address"}
    signalling = {v for k, v in options if k == "external_signaling_address"}
    if len(media) > 1 or len(signalling) > 1:
        raise NatTextError("one external_media_address and one external_signaling_address")
    if media and signalling and media != signalling:
        raise NatTextError(f"external_media_address ({min(media)}) and external_signaling_address "
                           f"({min(signalling)}) differ: behind one box both are its public address")
    external = (media or signalling or {None}).pop()
    return {"external_address": external,
            "local_nets": [_network(v, "local_net") for k, v in options if k == "local_net"],
            "symmetric": False}


def _network(value: str, option: str) -> str:
    """``192.168.0.0/255.255.255.0`` or ``/24`` → ``192.168.0.0/24`` (a network, host bits zero)."""
    try:
        return str(ipaddress.IPv4Network(value.strip(), strict=True))
    except ValueError:
        raise NatTextError(f"{option} = {value}: not a network (an address with host bits zero and a mask, "
                           "e.g. 192.168.0.0/24)") from None


def nat_overrides(text: str, config: str, lab: str = HOME_LAB, box: str = BOX) -> dict:
    """Lab-file overrides: the report's forwards on ``box`` (fix A) and the PBX's NAT settings
    from the student's lines (fix B), checked by the lab model."""
    settings = nat_settings(text, config)
    spec = load_spec(lab)
    pbx_address = str(spec.address_of(spec.pbx.host))
    hosts = [h.model_dump(mode="json", exclude_none=True) for h in spec.hosts]
    for host in hosts:
        if host["name"] == box:
            host["nat"]["forwards"] = walkthrough_forwards(pbx_address)
    overrides = {"hosts": hosts, "pbx": {"nat": settings}}
    try:
        load_spec(lab, overrides)
    except LabkitError as exc:
        raise NatTextError(f"Your NAT settings do not fit the lab: {exc.message}") from None
    return overrides


def nat_lines(config_text: str) -> str:
    """The NAT lines of a rendered sip.conf/pjsip.conf (what the student's text became)."""
    keep = re.compile(r"^(extern|localnet|local_net|nat |rtp_symmetric|force_rport|rewrite_contact)")
    return "\n".join(dict.fromkeys(line for line in config_text.splitlines() if keep.match(line)))
