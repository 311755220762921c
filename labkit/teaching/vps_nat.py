"""The VPS's NAT diagnosis (notebook 02b, §6): a ``vps-pbx`` lab with one fault per student.

Asterisk on a public VPS, Alice and Bob at home behind one ISP box — where the report's server
ended up.  The right setup is the one notebook 02b builds: Asterisk's symmetric handling
(``nat=force_rport,comedia`` / ``rtp_symmetric``, ``force_rport``, ``rewrite_contact``), media
anchored on Asterisk, the box's SIP ALG off, and the VPS's firewall open to SIP (5060/udp)
and to Asterisk's RTP range (rtp.conf, 10000-20000/udp).  Each fault of :data:`VPS_FAULTS`
changes one of these; every one breaks the call Bob (6001) → Alice (6000) on both tracks, each
with its own trace on the wire.

:class:`VpsNatSession` is a base class of :class:`labkit.teaching.session.Session`:

* :meth:`~VpsNatSession.vps_diagnosis` starts the lab with the student's fault
  (:func:`pick_vps_fault`, salted ``vps-nat``), captured at home and on the Internet;
* :meth:`~VpsNatSession.fix_vps` applies the student's fix: lab-file lines (YAML), one key of
  :data:`VPS_FIX_KEYS` a line, each read into its one place in the lab file
  (:func:`read_vps_fix`) and checked by the lab model.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from labkit.errors import LabkitError, LabStateError
from labkit.spec import load_spec, merge_overrides
from labkit.teaching.display import Text
from labkit.teaching.faults import pick as pick_for_student
from labkit.teaching.faults import read_fix_lines
from labkit.teaching.nat import NatTextError

LAB = "vps-pbx"
BOX, VPS = "box", "vps"

#: The VPS's firewall rules of the right setup: SIP, and the RTP range of Asterisk's rtp.conf
#: (the lab file's pbx.rtp_ports, the walkthrough's 10000-20000).
SIP_RULE = {"proto": "udp", "ports": "5060", "comment": "SIP"}
RTP_RULE = {"proto": "udp", "ports": "10000-20000", "comment": "RTP (rtp.conf)"}

#: The faults a diagnosis lab may hide: name → what is wrong (one line each, as the notebook says).
#: Measured live on both tracks (tests/live/test_vps_nat_live.py); the wire of each, in short:
VPS_FAULTS: dict[str, str] = {
    # Asterisk with no NAT handling (chan_sip nat=no, PJSIP rtp_symmetric=no, rewrite_contact=no):
    # it believes what the phones wrote, the private Contact and SDP c=192.168.0.x.  Modern
    # (PJSIP): it sends its INVITE for Alice to her registered Contact, 192.168.0.11, which the
    # VPS cannot route: on the Internet only Bob's INVITE (401, then 100 Trying) and nothing
    # after — no INVITE to the box, no RTP (Bob's phone gives up when the test stops waiting).
    # Legacy (chan_sip): a peer whose REGISTER's Via carries rport (RFC 3581 §4; chan_sip's
    # SIP_NAT_RPORT_PRESENT) is kept at the address the REGISTER came from even with nat=no,
    # so its INVITE for Alice reaches the box and the call is answered; but its ACK goes to
    # Alice's private Contact (RFC 3261 §13.2.2.4: the ACK to a 2xx goes to the remote
    # target), so her 200 OK is retransmitted (§13.3.1.4: 0.5 s, 1 s, 2 s …), and its RTP
    # goes to the SDP's private c= (no route from the VPS): the phones' RTP reaches the VPS,
    # none comes back.
    "no-symmetric-handling": "Asterisk believes the private addresses the phones write (no NAT handling)",
    # The box's SIP ALG on, and direct media on (symmetric handling on): the ALG rewrote the
    # phones' Contact and c= to the box's 198.51.100.1, so Asterisk's direct-media re-INVITEs
    # (RFC 3261 §14) tell each phone to send its audio to 198.51.100.1; the box does not send
    # what its own LAN sends to its public address back into the LAN (no hairpin NAT): at
    # home, RTP from each phone to 198.51.100.1 and none received; on the Internet, the RTP
    # through the VPS stops after the re-INVITEs.
    "alg-with-direct-media": "the box's SIP ALG is on and Asterisk sends the media phone to phone",
    # The VPS's firewall lets SIP in (5060/udp) but not Asterisk's RTP range: the signalling
    # is perfect (INVITE, 180, 200, ACK, BYE, with Asterisk answering at the box's public
    # address), and the phones' RTP crosses the Internet to 198.51.100.10, where the input
    # chain drops it (counted by its last rule).  Asterisk, its rtp_symmetric/comedia waiting
    # to learn where the phones' RTP comes from, never hears any, and sends nothing the box
    # could carry home: on the Internet, two RTP streams to the VPS, none from it.
    "firewall-without-rtp": "the VPS's firewall lets SIP in, not Asterisk's RTP range",
}

#: The lab-file keys a fix may set, and the place each one goes to.
VPS_FIX_KEYS: dict[str, str] = {
    "symmetric": "Asterisk's NAT handling (pbx.nat.symmetric: yes or no)",
    "direct_media": "media phone to phone (pbx.direct_media: yes or no)",
    "sip_alg": "the box's SIP ALG (the box's nat.sip_alg: yes or no)",
    "firewall_allow": "what the VPS's firewall lets in (the VPS's firewall.allow: "
                      "a list of {proto, ports} — ports a port or a range as '10000-20000')",
}
_BOOLEAN_KEYS = ("symmetric", "direct_media", "sip_alg")


class VpsFixError(NatTextError):
    """A fix text the VPS diagnosis cannot read (the message says why)."""


def pick_vps_fault(student: str | None = None) -> tuple[int, str]:
    """(number from 1, name) of the VPS fault for a student id (``LABKIT_STUDENT`` by default)."""
    return pick_for_student("vps-nat", VPS_FAULTS, student)


def _hosts(lab: str, *, sip_alg: bool | None = None, allow: list[dict] | None = None) -> list[dict]:
    """The lab file's hosts with the box's SIP ALG and/or the VPS's firewall rules replaced
    (a list in the overrides replaces the file's, so the hosts go whole)."""
    hosts = [h.model_dump(mode="json", exclude_none=True) for h in load_spec(lab).hosts]
    for host in hosts:
        if host["name"] == BOX and sip_alg is not None:
            host["nat"]["sip_alg"] = sip_alg
        if host["name"] == VPS and allow is not None:
            host["firewall"] = {"allow": copy.deepcopy(allow), "policy": "drop"}
    return hosts


def vps_fault_overrides(fault: str, lab: str = LAB) -> dict:
    """Lab-file overrides that make ``fault`` (a name of :data:`VPS_FAULTS`) on ``lab``: the
    right setup (symmetric handling, media anchored, ALG off, the VPS's firewall open to SIP
    and RTP) with that one thing wrong."""
    if fault not in VPS_FAULTS:
        raise VpsFixError(f"{fault!r} is not one of the faults: {', '.join(VPS_FAULTS)}")
    symmetric = fault != "no-symmetric-handling"
    alg = fault == "alg-with-direct-media"
    allow = [SIP_RULE] if fault == "firewall-without-rtp" else [SIP_RULE, RTP_RULE]
    return {"hosts": _hosts(lab, sip_alg=alg, allow=allow),
            "pbx": {"nat": {"symmetric": symmetric}, "direct_media": alg}}


def read_vps_fix(text: str) -> dict[str, Any]:
    """The keys of a fix's text (YAML lines ``key: value``), only those of :data:`VPS_FIX_KEYS`;
    yes/no for the switches (YAML reads a bare yes/no as a boolean), a list of rules for
    ``firewall_allow`` (its ports as text, as the lab file writes them)."""
    value = read_fix_lines(text, VPS_FIX_KEYS, VpsFixError, "symmetric")
    for key in _BOOLEAN_KEYS:
        if key in value and not isinstance(value[key], bool):
            raise VpsFixError(f"{key}: {value[key]!r} is not yes or no (write {key}: yes or {key}: no, "
                              "without quotes).")
    if "firewall_allow" in value:
        value["firewall_allow"] = _rules(value["firewall_allow"])
    return value


def _rules(rules: Any) -> list[dict]:
    """``firewall_allow``'s rules, a port written as a number taken as its text (``5060``)."""
    if not isinstance(rules, list) or not rules or not all(isinstance(r, dict) for r in rules):
        raise VpsFixError("firewall_allow: a list of rules, one a line under it: "
                          "`  - {proto: udp, ports: '5060'}`.")
    out = []
    for number, rule in enumerate(rules, 1):
        unknown = sorted(set(map(str, rule)) - {"proto", "ports", "source", "comment"})
        if unknown:
            raise VpsFixError(f"firewall_allow rule {number}: {', '.join(unknown)} is not a key of a rule "
                              "(proto, ports, source, comment)")
        rule = dict(rule)
        if isinstance(rule.get("ports"), int) and not isinstance(rule["ports"], bool):
            rule["ports"] = str(rule["ports"])
        out.append(rule)
    return out


def fix_overrides(fix: dict[str, Any], base: dict, lab: str = LAB) -> dict:
    """The fix's keys over ``base`` (a fault's overrides, or what the lab runs with), each in
    its place."""
    out = copy.deepcopy(base)
    if "symmetric" in fix:
        out = merge_overrides(out, {"pbx": {"nat": {"symmetric": fix["symmetric"]}}})
    if "direct_media" in fix:
        out = merge_overrides(out, {"pbx": {"direct_media": fix["direct_media"]}})
    if "sip_alg" in fix or "firewall_allow" in fix:
        hosts = copy.deepcopy(out.get("hosts")) or _hosts(lab)
        for host in hosts:
            if host["name"] == BOX and "sip_alg" in fix:
                host["nat"]["sip_alg"] = fix["sip_alg"]
            if host["name"] == VPS and "firewall_allow" in fix:
                host["firewall"] = {**host.get("firewall", {"policy": "drop"}), "allow": fix["firewall_allow"]}
        out["hosts"] = hosts
    return out


def _checked(overrides: dict, lab: str) -> dict:
    try:
        load_spec(lab, overrides)
    except LabkitError as exc:
        # the model names a firewall rule by its place in the hosts (hosts[1].firewall.allow[0]
        # .ports): the student wrote it as rule 1 of firewall_allow
        rules = re.findall(r"hosts\[\d+\]\.firewall\.allow\[(\d+)\]\.(\w+)[^:]*: (.*)", exc.message)
        problems = [f"firewall_allow rule {int(n) + 1} {key}: {text}" for n, key, text in rules]
        raise VpsFixError("Your fix does not make a valid lab file: "
                          + ("; ".join(problems) or exc.message)) from None
    return overrides


def vps_fix_overrides(text: str, fault: str, lab: str = LAB) -> dict:
    """The student's fix over their fault, as lab-file overrides, checked by the lab model (a
    firewall rule the model refuses — a protocol, a port range — is refused with its message)."""
    return _checked(fix_overrides(read_vps_fix(text), vps_fault_overrides(fault, lab), lab), lab)


def in_force(spec) -> str:
    """The four settings the fix may change, as the lab file now says them."""
    box, vps = spec.host(BOX), spec.host(VPS)
    yes = {True: "yes", False: "no"}
    rules = ", ".join(f"{r.proto} {r.ports}" for r in vps.firewall.allow) if vps.firewall else "(no firewall)"
    return "\n".join([f"{VPS_FIX_KEYS['symmetric'].split(' (')[0]}: symmetric = {yes[spec.pbx.nat.symmetric]}",
                      f"{VPS_FIX_KEYS['direct_media'].split(' (')[0]}: direct_media = {yes[spec.pbx.direct_media]}",
                      f"{VPS_FIX_KEYS['sip_alg'].split(' (')[0]}: sip_alg = {yes[box.nat.sip_alg]}",
                      f"what the VPS's firewall lets in: {rules}"])


class VpsNatSession:
    """The VPS's NAT diagnosis (a base class of ``Session``)."""

    @classmethod
    def vps_diagnosis(cls, name: str, lab: str = LAB, *, student: str | None = None,
                      track: str | None = None, mode: str | None = None,
                      capture: tuple[str, ...] = ("lan", "internet")):
        """A vps-pbx lab with one fault of :data:`VPS_FAULTS`, picked from the student's id
        (``LABKIT_STUDENT``): the recording is ``<name>-<number>``."""
        number, fault = pick_vps_fault(student)
        return cls.start(f"{name}-{number}", lab, track=track, mode=mode, capture=capture,
                         overrides=vps_fault_overrides(fault, lab), wait_registered=False)

    def fix_vps(self, fix: str) -> Text:
        """Your fix, as lab-file lines (``symmetric: …``, ``direct_media: …``, ``sip_alg: …``,
        ``firewall_allow: …``): each key goes to its place (:data:`VPS_FIX_KEYS`) over the lab as
        it started — your fault, as the grader applies it; a second fix replaces the first —
        Asterisk restarted, the box's ALG and the VPS's firewall set, the phones registered
        again.  Returns the settings now in force."""
        keys = read_vps_fix(fix)
        overrides = _checked(fix_overrides(keys, self.overrides or {}, self.lab_name), self.lab_name)
        spec = load_spec(self.lab_name, overrides)

        def change():
            self.lab.reconfigure(**{k: v for k, v in overrides.items() if k != "pbx"},
                                 pbx=overrides.get("pbx", {}))
            # the box's SIP helper is switched by the box's ruleset, not by a restart
            self.lab.host(BOX).set_sip_alg(spec.host(BOX).nat.sip_alg)
            for phone in self.lab.phones:
                self.lab.phone(phone).register_again()
            return in_force(spec)
        try:
            return Text(self._ask("fix-vps", change, fix={k: keys[k] for k in sorted(keys)}))
        except LabStateError:
            if self.mode != "replay":
                raise
            raise VpsFixError("This recording was made with another fix; replay can only show what was "
                              "recorded.", hint="run the notebook live (as root) to try your own fix") from None
