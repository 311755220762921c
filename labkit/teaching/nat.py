"""NAT fixes a student writes (notebook 02a): the box's port forwards and Asterisk's NAT lines.

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
from typing import Any

from labkit.errors import LabkitError, LabStateError
from labkit.spec import load_spec, merge_overrides, stanza
from labkit.spec.load import YamlTextError, yaml_text
from labkit.teaching.faults import pick as pick_for_student

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


# -- the diagnosis lab: a NAT fault per student ----------------------------------------------------
#: What each fault of the diagnosis lab is, as the report's students could have made it (the
#: lab: ``home-pbx``; every fault leaves the other settings right, so that one thing is wrong).
#: Measured on both tracks: each leaves its own trace on the Internet side.
NAT_FAULTS: dict[str, str] = {
    # A typo in the forward's last octet: 5060/udp goes to Alice's phone, whose baresip
    # answers Bob's REGISTER itself, "501 Not Implemented" (a phone is not a registrar).
    "sip-forward-to-phone": "the box forwards 5060/udp to Alice's phone, not to the PBX",
    # Forwards right, no externip/external_*_address: the report's one-way audio (§3).
    "private-address-announced": "Asterisk announces its private address (no NAT lines)",
    # The address before the ISP moved the box (DDNS, §5): Bob's RTP and his ACK (sent to the
    # Contact of the 200 OK) go to an address nobody answers at, so Asterisk retransmits its
    # 200 OK (RFC 3261 §13.3.1.4) and Alice hears nothing.
    "wrong-public-address": "Asterisk announces a public address that is not the box's",
}
STALE_PUBLIC_ADDRESS = "203.0.113.2"


def pick_nat_fault(student: str | None = None) -> tuple[int, str]:
    """(number from 1, name) of the NAT fault for a student id (``LABKIT_STUDENT`` by default)."""
    return pick_for_student("nat", NAT_FAULTS, student)


def nat_fault_overrides(fault: str, lab: str = HOME_LAB, box: str = BOX) -> dict:
    """Lab-file overrides that make ``fault`` (a name of :data:`NAT_FAULTS`) on ``lab``."""
    spec = load_spec(lab)
    pbx = str(spec.address_of(spec.pbx.host))
    outside = spec.host(box).nat.outside
    public = next(str(i.address) for i in spec.host(box).interfaces if i.network == outside)
    lan = next(str(n.subnet) for n in spec.networks if n.name == spec.host(spec.pbx.host).interfaces[0].network)
    right = {"external_address": public, "local_nets": [lan]}
    forwards = walkthrough_forwards(pbx)
    if fault == "sip-forward-to-phone":
        phone = str(spec.address_of(next(p.host for p in spec.phones if p.registrar is None)))
        forwards[0]["to"] = phone
        nat: dict | None = right
    elif fault == "private-address-announced":
        nat = None
    elif fault == "wrong-public-address":
        nat = dict(right, external_address=STALE_PUBLIC_ADDRESS)
    else:
        raise NatTextError(f"{fault!r} is not one of the faults: {', '.join(NAT_FAULTS)}")
    overrides = box_forward_overrides(forwards, lab, box)
    return merge_overrides(overrides, {"pbx": {"nat": nat}}) if nat else overrides


def nat_fix_overrides(text: str, fault: str, lab: str = HOME_LAB, box: str = BOX) -> dict:
    """The student's fix over their fault, as lab-file overrides.  The fix is one of what the
    notebook taught: the box's forwards (a YAML list, as in exercise 2: it replaces the box's
    forwards) or Asterisk's NAT lines (``[general]`` of sip.conf or a pjsip.conf transport, as in
    exercise 4: they replace the PBX's NAT settings).  Either syntax of the NAT lines fixes
    either track: they are read into the lab file's ``pbx.nat``, which both tracks render."""
    overrides = nat_fault_overrides(fault, lab, box)
    kind, value = read_fix(text)
    if kind == "forwards":
        return merge_overrides(overrides, box_forward_overrides(value, lab, box))
    overrides.setdefault("pbx", {})["nat"] = value
    return overrides


def read_fix(text: str) -> tuple[str, Any]:
    """``("forwards", rules)`` or ``("nat", pbx.nat settings)`` from a fix's text: lines under a
    ``[section]`` header are Asterisk's NAT lines (``[general]``: sip.conf; any other: a
    pjsip.conf transport), anything else the box's forwards."""
    if not isinstance(text, str) or not text.strip():
        raise NatTextError("The fix should be text: the box's forwards (as in exercise 2) or Asterisk's "
                           "NAT lines (as in exercise 4).")
    header = re.search(r"^\s*\[([^\]]+)\]", text, re.M)
    if header is None:
        return "forwards", forward_rules(text)
    config = "sip.conf" if header.group(1).strip() == "general" else "pjsip.conf"
    return "nat", nat_settings(text, config)
