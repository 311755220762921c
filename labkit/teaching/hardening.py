"""Hardening (notebook 07): what a notebook asks an ``exposed-pbx`` lab.

:class:`HardeningSession` is a base class of :class:`labkit.teaching.session.Session`, next to
:class:`~labkit.teaching.trunk.TrunkSession` and :class:`~labkit.teaching.dialplan.DialplanSession`.
Every method goes through the session's one ordered log (``self._ask``), so that it reads the
same live and in replay.

* the lab as one of its file's **variants** (:meth:`~HardeningSession.expose`: one weak setting);
* an **attack** from the attacker's host with SIPVicious (:meth:`~HardeningSession.attack`:
  ``svmap``, ``svwar``, ``svcrack``, bounded by :meth:`labkit.lab.Lab.attack`), marked for
  reading the capture afterwards: the messages between two hosts since a mark
  (:meth:`~HardeningSession.messages`) and the full text of one of them
  (:meth:`~HardeningSession.sip_text`);
* the VPS's **firewall** written by the student (:meth:`~HardeningSession.firewall`): the lab
  file's ``firewall:`` section as YAML text, read as data (:func:`firewall_settings`) and
  validated by the lab model, never executed; what each rule counted
  (:meth:`~HardeningSession.firewall_counters`);
* **fail2ban** as ``jail.local`` text (:func:`jail_settings`: the lab file's ``pbx.fail2ban``);
* ``labkit audit`` on the report's weak configuration (:meth:`~HardeningSession.audit_file`,
  :meth:`~HardeningSession.audit`), the kit's fictional rewrite of it;
* the **whole chain** (the ``whole-chain`` lab): what an observer on each captured segment reads
  (:meth:`~HardeningSession.exposure`, :func:`readable_by_segment`), measured from the captures
  by :func:`labkit.analysis.exposure`.
"""
from __future__ import annotations

import re

import pandas as pd

from labkit import resources
from labkit.errors import LabkitError, LabStateError
from labkit.spec import load_spec
from labkit.spec.load import YamlTextError, yaml_text
from labkit.teaching.display import Text
from labkit.teaching.trunk import _fresh, _window, udp_payload

LAB = "exposed-pbx"
#: The first passwords of every dictionary (the report's own "test" is too short for the lab
#: file's minimum of 8 characters: the weak-secret variant picks 12345678).
DICTIONARY = ("123456", "password", "12345678", "qwerty", "123456789", "1234", "test", "secret",
              "6000", "6001", "000000", "111111", "abc123", "asterisk", "voip")
#: The report's weak configuration, rewritten with fictional values; shipped with the kit
#: (configs/audit, in the wheel too) and one of ``labkit audit``'s golden test sets.
AUDIT_FOLDER = resources.configs_dir() / "audit" / "report-weak"
AUDIT_FILES = ("sip.conf", "extensions.conf")
#: The whole chain's segments, in the order a call crosses them, and what an observer may read.
CHAIN_SEGMENTS = ("lan", "internet", "carrier")
READABLE = ("sip", "media")
#: The columns :meth:`HardeningSession.exposure` shows (analysis.exposure has more).
EXPOSURE_COLUMNS = ["segment", "a", "b", "signalling", "sip_messages", "sdp_keys", "media", "media_entropy",
                    "audio_seconds"]
#: What ``jail.local`` lines the fail2ban exercise reads (the lab file's ``pbx.fail2ban``).
JAIL_OPTIONS = ("enabled", "maxretry", "findtime", "bantime")
TOOLS = ("svmap", "svwar", "svcrack")
#: Each tool's deadline (s, svwar's and svcrack's ``--maximumtime``): svmap sweeps a /27 in
#: under 4 s; svwar's 21 extensions and svcrack's 15 passwords are answered within a second,
#: and fail2ban bans a fast svcrack within one (measured: 0.3-0.8 s).
TIMEOUTS = {"svmap": 15.0, "svwar": 10.0, "svcrack": 2.0}


class HardeningTextError(LabStateError):
    """A firewall or jail text that cannot be read into the lab file (the message says why)."""


# ------------------------------------------------------------------ the student's texts as data
def firewall_settings(text: str) -> dict:
    """The lab file's ``firewall:`` section of a host, from YAML text (``allow:`` rules and
    ``policy``).  Data only: YAML's safe loader, the keys of the lab model; the lab model then
    checks each rule (protocol, ports, source host, rate, comment)."""
    if not isinstance(text, str) or not text.strip():
        raise HardeningTextError("The firewall should be text: the lines of the firewall: section you wrote.")
    try:
        data = yaml_text(text)
    except YamlTextError as exc:
        raise HardeningTextError(f"Your firewall is {exc}") from None
    if isinstance(data, dict) and set(data) == {"firewall"}:
        data = data["firewall"]
    if not isinstance(data, dict):
        raise HardeningTextError("Your firewall should be a mapping: allow: (a list of rules), policy: drop")
    unknown = sorted(set(map(str, data)) - {"allow", "policy"})
    if unknown:
        raise HardeningTextError(f"{', '.join(unknown)}: not a key of firewall: (allow, policy)")
    return data


def firewall_overrides(text: str, lab: str = LAB, host: str = "vps") -> dict:
    """Lab-file overrides giving ``host`` the firewall the text describes (checked by the lab model)."""
    settings = firewall_settings(text)
    hosts = [h.model_dump(mode="json", exclude_none=True) for h in load_spec(lab).hosts]
    for each in hosts:
        if each["name"] == host:
            each["firewall"] = settings
    overrides = {"hosts": hosts}
    load_spec(lab, overrides)  # refuses a bad rule with its place (hosts[0].firewall.allow[1].ports)
    return overrides


def jail_settings(text: str) -> dict:
    """The lab file's ``pbx.fail2ban`` from ``jail.local`` text: one ``[asterisk]`` section with
    ``enabled = true`` and :data:`JAIL_OPTIONS` (whole seconds).  Anything else is refused
    with the line: the text is data, never handed to fail2ban as written."""
    if not isinstance(text, str) or not text.strip():
        raise HardeningTextError("The jail should be text: the lines of jail.local you wrote.")
    section, values, problems = None, {}, []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.split(r"\s[#;]|^[#;]", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[([^\]]+)\]", line)
        if header:
            section = header.group(1).strip()
            if section != "asterisk":
                problems.append(f"line {number}: [{section}] — this exercise writes the [asterisk] jail only")
            continue
        found = re.fullmatch(r"([A-Za-z_]+)\s*=\s*(.*)", line)
        if not found:
            problems.append(f"line {number}: {line!r} is not option = value")
            continue
        if section is None:
            problems.append(f"line {number}: an option before [asterisk]")
            continue
        key, value = found.group(1).lower(), found.group(2).strip()
        if key not in JAIL_OPTIONS:
            problems.append(f"line {number}: {key} is not an option of this exercise ({', '.join(JAIL_OPTIONS)})")
        elif key in values:
            problems.append(f"line {number}: {key} a second time")
        else:
            values[key] = value
    if section is None and not problems:
        problems.append("no [asterisk] section")
    if problems:
        raise HardeningTextError("Your jail is not valid here: " + "; ".join(problems[:5]))
    if values.pop("enabled", "").lower() not in ("true", "yes", "1"):
        raise HardeningTextError("The jail is not enabled: write enabled = true")
    out = {}
    for key, value in values.items():
        if not re.fullmatch(r"\d{1,6}", value):
            raise HardeningTextError(f"{key} = {value}: a whole number (seconds for findtime and bantime)")
        out[key] = int(value)
    return out


def jail_overrides(text: str, lab: str = LAB) -> dict:
    overrides = {"pbx": {"fail2ban": jail_settings(text)}}
    load_spec(lab, overrides)  # the lab model's bounds (maxretry 1-100, bantime up to a day …)
    return overrides


def audit_table(sources) -> pd.DataFrame:
    """``labkit audit``'s findings as a table: severity, where, rule, what, the fix."""
    from labkit.audit import audit
    rows = [{"severity": f.severity, "where": f"{f.file.rsplit('/', 1)[-1]}:{f.line} [{f.section}]",
             "rule": f.rule, "what": f.what, "fix": f.fix} for f in audit(sources)]
    return pd.DataFrame(rows, columns=["severity", "where", "rule", "what", "fix"])


class HardeningSession:
    """The attack and defence operations of a notebook's session (a base class of ``Session``)."""

    #: The first passwords of every dictionary (:data:`DICTIONARY`).
    dictionary = DICTIONARY

    @classmethod
    def start_variant(cls, name: str, variant: str, lab: str = LAB, *, capture: tuple[str, ...] = ("internet",)):
        """A session whose lab runs one of its file's variants from the start."""
        return cls.start(name, lab, overrides=load_spec(lab).variant(variant), capture=capture)

    @staticmethod
    def guesses(count: int) -> list[str]:
        """``count`` passwords nobody uses (guess0000 …): an attacker that never succeeds."""
        return [f"guess{i:04d}" for i in range(int(count))]

    # -- the lab's variants ------------------------------------------------------------------
    def expose(self, variant: str | None) -> Text:
        """Run the PBX as one of the lab file's variants (``None``: as shipped); the phones
        register again.  Shows the lab-file lines the variant changes."""
        spec = load_spec(self.lab_name)
        overrides = spec.variant(variant) if variant else {}
        self.mark(_fresh(variant or "shipped", self.marks()))

        def change():
            self.lab.switch(variant)
            self.lab.wait_registered()
            return "switched"
        self._ask("expose", change, variant=variant)
        import yaml
        shown = yaml.safe_dump(overrides.get("pbx", {}), default_flow_style=None, sort_keys=False).strip()
        return Text(f"variant: {variant or '(none: as shipped)'}\n" + (f"pbx: {shown}" if overrides else ""))

    # -- attacks -----------------------------------------------------------------------------
    def attack(self, tool: str, *, target: str | None = None, extensions: str | None = None,
               extension: str | None = None, passwords: list[str] | tuple[str, ...] | None = None,
               label: str | None = None, timeout: float | None = None) -> Text:
        """SIPVicious from the attacker's host (bounded in count and time, inside the lab):
        ``svmap`` (``target``: a lab network), ``svwar`` (``extensions``: "5990-6010"),
        ``svcrack`` (``extension`` and ``passwords``).  Marked ``label`` (default: the tool's
        name) for :meth:`messages`; ``timeout`` (seconds, default :data:`TIMEOUTS`) bounds it.
        Shows what the tool reported."""
        if tool not in TOOLS:
            raise LabStateError(f"No attack {tool!r}.", hint=", ".join(TOOLS))
        timeout = float(timeout if timeout is not None else TIMEOUTS[tool])
        self.mark(_fresh(label or tool, self.marks()))
        args = {"tool": tool, "target": target, "extensions": extensions, "extension": extension,
                "passwords": list(passwords) if passwords else None}

        def run():
            found = self.lab.attack("attacker", tool, target=target, extensions=extensions,
                                    extension=extension, passwords=list(passwords) if passwords else None,
                                    timeout=timeout)
            return {"found": found.found, "refused": found.refused_to_enumerate,
                    "seconds": round(found.seconds, 1)}
        result = self._ask("attack", run, **args)
        self._capture_so_far()
        return Text(_attack_text(tool, args, result))

    def attack_results(self, tool: str) -> list[dict]:
        """What each ``tool`` attack of this session found so far (its rows)."""
        return [e["result"]["found"] for e in self.recorder.entries
                if e["kind"] == "attack" and e["args"].get("tool") == tool]

    def messages(self, since: str, between: tuple[str, str] = ("attacker", "vps")) -> pd.DataFrame:
        """The SIP messages between two hosts (default: the attacker and the VPS) in the
        capture, from the mark ``since`` (an attack's label) to the next mark."""
        sip = self._between(since, between)
        names = {self.address(h.name): h.name for h in self.spec.hosts}
        out = pd.DataFrame({
            "time": (sip.time - sip.time.iloc[0]).round(3) if len(sip) else sip.time,
            "from": sip.src.map(names), "to": sip.dst.map(names), "method": sip.method,
            "status_code": sip.status_code, "reason": sip.reason, "cseq_method": sip.cseq_method,
            "to_user": sip.to_uri.map(_user)})
        return out.reset_index(drop=True)

    def sip_text(self, what: str | int, since: str, *, src: str = "attacker", dst: str = "vps",
                 index: int = 0) -> Text:
        """The full text of one SIP message as it crossed the wire: the ``index``-th (from 0)
        request ``what`` ("OPTIONS") or response ``what`` (a code, or "response": any) from ``src`` to ``dst``
        after the mark ``since``."""
        sip = self._between(since, (src, dst))
        sip = sip[sip.src == self.address(src)]
        if str(what) == "response":
            rows = sip[sip.status_code.notna()]
        elif str(what).isdigit():
            rows = sip[sip.status_code == int(what)]
        else:
            rows = sip[sip.method == str(what).upper()]
        if len(rows) <= index:
            raise LabStateError(f"No SIP message {what} number {index} from {src} to {dst} after the mark {since!r}.",
                                hint="messages(since=…) lists what is there")
        return Text(udp_payload(self.pcap, int(rows.frame.iloc[index])))

    def _between(self, since: str, between: tuple[str, str]) -> pd.DataFrame:
        self._capture_so_far()
        until = self._read_time()
        sip = self.table("sip")
        ends = {self.address(h) for h in between}
        sip = sip[sip.src.isin(ends) & sip.dst.isin(ends) & (sip.time <= until)]
        start, stop = _window(self.marks(), since)
        return sip[(sip.time >= start) & (sip.time < stop)].sort_values("frame")

    # -- the firewall ------------------------------------------------------------------------
    def firewall(self, text: str) -> Text:
        """Your firewall for the VPS — the lab file's ``firewall:`` section as YAML text — read
        as data, checked by the lab model and put in force (nftables in the VPS's namespace;
        Asterisk restarts, the phones register again).  Returns the rules the kernel lists.
        In replay, only the firewall measured when the notebook was recorded has an answer."""
        overrides = firewall_overrides(text, self.lab_name)
        settings = next(h for h in overrides["hosts"] if h["name"] == "vps")["firewall"]
        self.mark(_fresh("firewall", self.marks()))

        def change():
            self.lab.reconfigure(hosts=overrides["hosts"])
            self.lab.wait_registered()
            return self.lab.firewall("vps").rules()
        return Text(_strip_counters(self._ask("firewall", change, firewall=settings)))

    def firewall_counters(self) -> pd.DataFrame:
        """Packets and bytes each rule of the VPS's firewall counted so far."""
        def read():
            try:
                return self.lab.firewall("vps").counters()
            except LabkitError:
                return {}
        counters = self._ask("firewall-counters", read)
        return pd.DataFrame(counters).T.rename_axis("rule") if counters else pd.DataFrame(columns=["packets", "bytes"])

    # -- fail2ban ----------------------------------------------------------------------------
    def banned(self, wait: float = 3.0) -> list[str]:
        """The addresses fail2ban's asterisk jail bans now — waiting up to ``wait`` seconds for
        the attacker's to appear (fail2ban reads Asterisk's log once a second)."""
        def read():
            attacker = self.address("attacker")
            try:
                self.lab.fail2ban.wait_banned(attacker, timeout=wait)
            except LabkitError:
                pass  # not banned: the list says so
            return self.lab.fail2ban.banned()
        return list(self._ask("banned", read))

    def answered(self, since: str) -> pd.DataFrame:
        """One row for the attack marked ``since``: the requests the attacker sent, the answers
        it got, and the seconds from its first request to the last answer."""
        sip = self._between(since, ("attacker", "vps"))
        sent = sip[sip.src == self.address("attacker")]
        got = sip[(sip.dst == self.address("attacker")) & sip.status_code.notna()]
        span = round(float(got.time.max() - sent.time.min()), 2) if len(got) and len(sent) else None
        return pd.DataFrame([{"requests sent": len(sent), "answers": len(got),
                              "first request to last answer (s)": span}], index=[since])

    # -- the audit ---------------------------------------------------------------------------
    def audit_file(self, name: str = "sip.conf") -> Text:
        """One file of the report's configuration as the audit reads it (fictional values)."""
        if name not in AUDIT_FILES:
            raise LabStateError(f"No file {name!r} here.", hint=", ".join(AUDIT_FILES))
        return Text(self._ask("audit-file", lambda: (AUDIT_FOLDER / name).read_text(), file=name))

    def audit(self, sip_conf: str | None = None) -> pd.DataFrame:
        """``labkit audit`` on the report's configuration — with your ``sip.conf`` text in place
        of its own when given: one row per finding, most severe first."""
        sources = [("sip.conf", sip_conf if sip_conf is not None else self.audit_file("sip.conf")),
                   ("extensions.conf", self.audit_file("extensions.conf"))]
        return audit_table(sources)

    # -- the whole chain ---------------------------------------------------------------------
    def exposure(self, *, by_segment: bool = False) -> pd.DataFrame:
        """What an observer on each captured network reads of the capture so far, measured
        (:func:`labkit.analysis.exposure`): one row per pair of hosts that exchanged SIP, TLS or
        RTP — or, ``by_segment``, one per network."""
        from labkit import analysis
        self._capture_so_far()
        # In the order a call crosses them (the first captured place is the analysis default).
        order = sorted(self.places, key=lambda p: CHAIN_SEGMENTS.index(p) if p in CHAIN_SEGMENTS else 99)
        table = analysis.exposure({p: self.pcap_at(p) for p in order}, self._short_names())
        if by_segment:
            return analysis.exposure_by_segment(table)
        return table[EXPOSURE_COLUMNS]

    def _short_names(self) -> dict[str, str]:
        """Address → host name (the PBX's host as ``Asterisk``); behind a NAT the box's public
        address is what the Internet sees."""
        return {address: label.split("\n")[0] for address, label in self.names.items()}


def readable_by_segment(session) -> dict[str, list[str]]:
    """Per captured segment, what an observer there reads in clear: ``"sip"`` (SIP messages)
    and ``"media"`` (audio one can play), from :meth:`HardeningSession.exposure`."""
    table = session.exposure(by_segment=True).set_index("segment")
    return {segment: [what for what, column in (("sip", "sip_readable"), ("media", "media_readable"))
                      if bool(table.loc[segment, column])] if segment in table.index else []
            for segment in CHAIN_SEGMENTS if segment in session.places}


def _user(uri) -> str:
    found = re.search(r"sips?:([^@;>]*)@", str(uri or ""))
    return found.group(1) if found else ""


def _strip_counters(rules: str) -> str:
    return re.sub(r" counter packets \d+ bytes \d+", " counter", str(rules)).strip()


def _attack_text(tool: str, args: dict, result: dict) -> str:
    what = {"svmap": f"svmap {args['target']}", "svwar": f"svwar -e{args['extensions']}",
            "svcrack": f"svcrack -u{args['extension']} ({len(args['passwords'] or [])} passwords)"}[tool]
    found = result["found"]
    lines = [f"$ {what}   (from the attacker, {result['seconds']} s)"]
    if found:
        keys = list(found[0])
        widths = [max(len(k), *(len(str(r.get(k, ""))) for r in found)) for k in keys]
        lines.append("  ".join(k.ljust(w) for k, w in zip(keys, widths)).rstrip())
        lines += ["  ".join(str(r.get(k, "")).ljust(w) for k, w in zip(keys, widths)).rstrip() for r in found]
    elif tool == "svwar" and result["refused"]:
        lines.append("nothing found: the server answered an extension that cannot exist like the others "
                     "(svwar gives up)")
    else:
        lines.append("nothing found")
    return "\n".join(lines)

