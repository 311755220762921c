"""What notebooks call: one API whose cells read the same in *live* and *replay* mode.

* **live** drives a real lab: ``Session.start`` brings it up with a capture running from
  the first packet; ``session.cli(...)`` asks the real Asterisk; ``session.call(...)``
  places a real call between softphones.
* **replay** needs no root and no lab: the captures and every answer the lab gave come
  from ``data/``, recorded from the real lab by ``scripts/record_notebooks.py`` (which runs
  the notebooks live with ``LABKIT_RECORD=1``) in one ordered log per session
  (:mod:`labkit.teaching.recorder`).

The mode comes from ``LABKIT_MODE`` (``live`` or ``replay``); by default it is live where the
machine can run labs (root, tools, images built), else replay.  ``LABKIT_TRACK`` picks the
track (default ``modern``).  Every notebook says which mode and track it runs.

SIP over TLS (notebook 03): ``configure_tls`` changes the PBX's TLS settings (a student's own
``sip.conf``/``pjsip.conf`` lines included), ``tls_probe`` is ``openssl s_client`` from a phone's
host, ``tls_log``/``listening``/``transport_of``/``certificate`` show the server's side, and every
analysis table takes ``decrypt="keylog"`` (the capture with the lab's TLS key logs embedded,
kept for replay as ``data/captures/<session>-<track>-with-keys.pcapng``) or
``decrypt="server-key"`` (the server's RSA key: TLS 1.2 RSA key exchange only).
``Session.diagnosis`` starts a TLS lab with a fault picked per student (``LABKIT_STUDENT``).
"""
from __future__ import annotations

import atexit
import copy
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labkit import analysis, pki, resources, tracks
from labkit.analysis import plots
from labkit.errors import CaptureError, LabStateError
from labkit.spec import load_spec, merge_overrides, stanza
from labkit.spec.load import YamlTextError, yaml_text
from labkit.teaching.dialplan import DialplanSession
from labkit.teaching.display import Text, TlsProbeView, WideTable, listen, show_figures_inline, tls_lines
from labkit.teaching.faults import (
    DEFAULT_STUDENT,  # noqa: F401  (re-exported: nb03 grades with it)
    student_id,
)
from labkit.teaching.faults import pick as pick_for_student
from labkit.teaching.first_call import FirstCallSession
from labkit.teaching.hardening import HardeningSession
from labkit.teaching.nat import (
    HOME_LAB,
    box_forward_overrides,
    forward_rules,
    nat_fault_overrides,
    nat_lines,
    nat_settings,
    pick_nat_fault,
    read_fix,
)
from labkit.teaching.orientation import OrientationSession
from labkit.teaching.recorder import Recorder
from labkit.teaching.trunk import TrunkSession
from labkit.teaching.two_nat import TwoNatSession
from labkit.teaching.vps_nat import VpsNatSession

DATA = resources.data_dir()
MODES = ("live", "replay")


def mode() -> str:
    """``live`` or ``replay``: LABKIT_MODE if set, else what this machine can do."""
    chosen = os.environ.get("LABKIT_MODE", "").strip().lower()
    if chosen:
        if chosen not in MODES:
            raise LabStateError(f"LABKIT_MODE={chosen!r} is not a mode.", hint="use live or replay")
        return chosen
    return "live" if can_run_live() else "replay"


current_mode = mode  # for code where a parameter is called ``mode``


def can_run_live() -> bool:
    from labkit import images
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "bwrap", "dumpcap")):
        return False
    return all(images.image_info(track.image) is not None for track in tracks.TRACKS.values())


def default_track() -> str:
    """``LABKIT_TRACK``, or the default track."""
    return tracks.get(os.environ.get("LABKIT_TRACK", tracks.DEFAULT.name)).name


class Session(TrunkSession, DialplanSession, HardeningSession, FirstCallSession, OrientationSession,
              TwoNatSession, VpsNatSession):
    """One notebook's lab (live) or its recording (replay), with the analysis on top."""

    def __init__(self, name: str, lab: str, track: str, mode: str, overrides: dict | None):
        self.name = name
        self.lab_name = lab
        self.track = tracks.get(track).name
        self.mode = mode
        self.overrides = overrides or {}
        self.spec = load_spec(lab, self.overrides)
        self.lab = None
        self.recording = mode == "live" and os.environ.get("LABKIT_RECORD") == "1"
        self.places: tuple[str, ...] = ("lan",)
        self.recorder: Recorder | None = None
        self._pcaps: dict[str, Path] = {}
        self._keyed: dict[str, Path] = {}
        self._tables: dict[tuple, Any] = {}
        #: the overrides in force after every configure_tls (they add up, as in the lab)
        self._tls_overrides: dict = copy.deepcopy(self.overrides)
        #: live: where each log stood when Asterisk last (re)started (tls_log, symptoms)
        self._log_marks: dict[str, int] = {}
        self._server_key: Path | None = None
        self._capture_start: dict[str, float] = {}
        #: the certificate exercise's folder and CA (certificate_workshop)
        self.workshop: Path | None = None
        self.workshop_ca = None

    # -- start and stop ---------------------------------------------------------------------
    @classmethod
    def start(cls, name: str, lab: str = "first-call", *, track: str | None = None,
              overrides: dict | None = None, mode: str | None = None,
              capture: tuple[str, ...] = ("lan",), wait_registered: bool = True) -> Session:
        """Bring the lab up (live) or open its recording (replay).

        ``name`` identifies this notebook part's recording (``data/recorded/<name>-<track>``);
        ``capture`` names the networks captured from the first packet (the first is the
        default one for the analysis); ``wait_registered=False`` for labs broken on purpose.
        """
        show_figures_inline()
        session = cls(name, lab, track or default_track(), mode or current_mode(), overrides)
        session.places = tuple(capture)
        about = {"session": name, "lab": lab, "track": session.track, "places": list(capture),
                 "overrides": session.overrides}
        session.recorder = Recorder(session.recorded_dir / "session.json",
                                    replay=session.mode == "replay", write=session.recording,
                                    about=about)
        if session.mode == "live":
            from labkit.lab import Lab
            if session.recording:
                shutil.rmtree(session.recorded_dir, ignore_errors=True)
            session.lab = Lab.load(lab, track=session.track, name=f"nb-{name}"[:16].rstrip("-"),
                                   overrides=overrides)
            session.lab.up(progress=False, capture=session.places, capture_name=name,
                           wait_registered=wait_registered)
        return session

    def close(self) -> None:
        """Take the lab down (live); the capture and logs stay in the lab directory."""
        if self.lab is not None:
            self.pcap_at()  # stop and keep the captures first
            self.lab.down()
            self.lab = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.name} {self.mode} {self.track}>"

    def banner(self):
        """A line saying what runs: mode, track, Asterisk generation."""
        from IPython.display import Markdown
        if self.mode == "live":
            how = f"**live** — a real lab is running (`{self.lab.dir}`)"
        else:
            how = "**replay** — outputs and capture recorded from the real lab (`data/`)"
        return Markdown(f"Mode: {how}. Track: **{self.track}**, {tracks.get(self.track).generation}.")

    @property
    def recorded_dir(self) -> Path:
        return DATA / "recorded" / f"{self.name}-{self.track}"

    def _ask(self, kind: str, compute, stored=None, **args):
        """Everything the lab is asked goes through the session's one ordered log."""
        return self.recorder(kind, args, compute, stored)

    # -- the PBX ----------------------------------------------------------------------------
    def cli(self, command: str) -> Text:
        """An Asterisk CLI command's output (live: asked now; replay: as recorded)."""
        return Text(self._ask("cli", lambda: self.lab.pbx.cli(command), stored=_stable,
                             command=command))

    def config(self, filename: str) -> Text:
        """A rendered configuration file of the lab's Asterisk (secrets are per run)."""
        return Text(self._ask("config", lambda: self.lab.pbx.config(filename), file=filename))

    def registrations(self) -> pd.DataFrame:
        """Extension → contact address of each registered phone, as the PBX sees it."""
        data = self._ask("registrations", lambda: self.lab.pbx.registered())
        return pd.DataFrame(sorted(data.items()), columns=["extension", "contact"])

    # -- calls ------------------------------------------------------------------------------
    def call(self, caller: str = "bob", callee: str = "6000", seconds: float = 3.0) -> pd.DataFrame:
        """``caller`` (a phone) dials ``callee`` (an extension), talks for ``seconds``, hangs up.

        Returns Asterisk's RTP statistics per channel taken during the call (packets and
        losses each way), the proof that media flowed.
        """
        def place_call():
            call = self.lab.phone(caller).call(callee).wait_established(10)
            time.sleep(seconds)
            stats = self.lab.pbx.channel_stats()
            call.hangup()
            return stats
        stats = self._ask("call", place_call, caller=caller, callee=callee, seconds=seconds)
        return pd.DataFrame(stats)

    # -- the capture and its analysis ----------------------------------------------------------
    def pcap_at(self, place: str | None = None) -> Path:
        """The capture of one network (live: the captures stop the first time one is read)."""
        place = place or self.places[0]
        if place not in self.places:
            raise LabStateError(f"Nothing was captured on {place!r}.",
                                hint=f"captured networks: {', '.join(self.places)}")
        if not self._pcaps:
            if self.mode == "live":
                capture = self.lab.captures[0].stop()
                self._pcaps = dict(capture.files)
                if self.recording:
                    for where, path in self._pcaps.items():
                        shutil.copyfile(path, self._recorded_pcap(where))
                if self.lab.uses_tls:
                    self._embed_tls_keys(capture)
            else:
                self._pcaps = {where: self._recorded_pcap(where) for where in self.places}
        return self._pcaps[place]

    def _embed_tls_keys(self, capture) -> None:
        """Live, a TLS lab: each capture again with the session keys the lab's programs logged
        embedded (``editcap --inject-secrets``), made now while the lab's key logs exist."""
        for where in self._pcaps:
            try:
                keyed = capture.with_tls_keys(where)
            except CaptureError:
                continue  # no key was logged (no TLS connection): nothing to decrypt
            self._keyed[where] = keyed
            if self.recording:
                shutil.copyfile(keyed, self._recorded_keyed(where))

    def pcap_with_keys(self, place: str | None = None) -> Path:
        """The capture of ``place`` with the TLS session keys embedded in it (a pcapng that
        tshark and Wireshark decrypt with no option): live, made from the lab's key logs;
        replay, ``data/captures/<session>-<track>-with-keys.pcapng``."""
        place = place or self.places[0]
        self.pcap_at(place)
        if self.mode == "replay":
            path = self._recorded_keyed(place)
            if path.is_file():
                self._keyed.setdefault(place, path)
        if place not in self._keyed:
            raise LabStateError(f"No TLS session keys for the capture of {place!r}.",
                                cause="the lab has no TLS transport, keeps no key log, or made no TLS "
                                      "connection; in replay, the capture with keys was not recorded",
                                hint="tls-office logs them (pbx.tls.keylog: true); re-record the notebook")
        return self._keyed[place]

    def _has_tls_keys(self, place: str) -> bool:
        try:
            self.pcap_with_keys(place)
        except LabStateError:
            return False
        return True

    def _recorded_keyed(self, place: str) -> Path:
        plain = self._recorded_pcap(place)
        return plain.with_name(plain.stem + "-with-keys.pcapng")

    def _decryptable(self, place: str, decrypt: str | None) -> tuple[Path, dict]:
        if decrypt == "keylog":
            return self.pcap_with_keys(place), {}
        if decrypt == "server-key":
            return self.pcap_at(place), {"rsa_key": self._server_key_file()}
        return self.pcap_at(place), {}

    def _recorded_pcap(self, place: str) -> Path:
        # The first place keeps the plain name (data/captures/<name>-<track>.pcap).
        suffix = "" if place == self.places[0] else f"-{place}"
        path = DATA / "captures" / f"{self.name}-{self.track}{suffix}.pcap"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def pcap(self) -> Path:
        """The capture file of the first captured network."""
        return self.pcap_at()

    def table(self, kind: str, place: str | None = None, *, decrypt: str | None = None) -> pd.DataFrame:
        """An analysis table (``sip``, ``calls``, ``rtp``, ``streams``, ``tls``, ``icmp``) of one capture.

        ``decrypt``: None (the capture as it crossed the wire), ``"keylog"`` (the same capture
        with the TLS session keys the lab's programs logged embedded in it) or
        ``"server-key"`` (tshark given the PBX's private key: only TLS 1.2 sessions with RSA
        key exchange open with it).
        """
        place = place or self.places[0]
        if decrypt not in DECRYPT:
            raise LabStateError(f"No decryption {decrypt!r}.", hint="decrypt=None, 'keylog' or 'server-key'")
        key = (kind, place, decrypt)
        if key not in self._tables:
            pcap, options = self._decryptable(place, decrypt)
            if kind == "sip":
                value = analysis.sip_messages(pcap, tls_rsa_key=options.get("rsa_key"))
            elif kind == "calls":
                value = analysis.calls(self.table("sip", place, decrypt=decrypt))
            elif kind == "rtp":
                value = analysis.rtp_packets(pcap, sip=self.table("sip", place, decrypt=decrypt),
                                             with_payload=True)
            elif kind == "streams":
                value = analysis.rtp_streams(self.table("rtp", place, decrypt=decrypt),
                                             sip=self.table("sip", place, decrypt=decrypt))
            elif kind == "tls":
                value = self._tls_table(pcap, place, options.get("rsa_key"))
            elif kind == "icmp":
                value = analysis.icmp_unreachable(pcap)
            else:
                raise LabStateError(f"No table {kind!r}.", hint="sip, calls, rtp, streams, tls or icmp")
            self._tables[key] = value
        return self._tables[key]

    @property
    def sip(self) -> pd.DataFrame:
        return self.table("sip")

    @property
    def calls(self) -> pd.DataFrame:
        return self.table("calls")

    @property
    def rtp(self) -> pd.DataFrame:
        return self.table("rtp")

    @property
    def streams(self) -> pd.DataFrame:
        return self.table("streams")

    @property
    def names(self) -> dict[str, str]:
        """IP address → actor label, for ladders (``alice (192.168.0.11)``)."""
        out = {}
        for host in self.spec.hosts:
            for iface in host.interfaces:
                label = "Asterisk" if host.name == self.spec.pbx.host else host.name
                out[str(iface.address)] = f"{label}\n{iface.address}"
        return out

    def hosts(self) -> pd.DataFrame:
        """The lab's hosts: name, role, network and address (one row per interface)."""
        rows = []
        phones = {p.host: p for p in self.spec.phones}
        for host in self.spec.hosts:
            if host.name == self.spec.pbx.host:
                role = "Asterisk (PBX, registrar)"
            elif host.name in phones:
                role = f"softphone, extension {phones[host.name].extension}"
            elif host.nat is not None:
                role = "ISP box (NAT)"
            elif self.spec.dns is not None and host.name == self.spec.dns.host:
                role = "DNS server (DDNS)"
            else:
                role = ""
            for iface in host.interfaces:
                rows.append((host.name, role, iface.network, str(iface.address)))
        return pd.DataFrame(rows, columns=["host", "role", "network", "address"])

    def address(self, host: str) -> str:
        return str(self.spec.address_of(host))

    def ladder(self, *, calls_only: bool = False, place: str | None = None,
               since: str | None = None, decrypt: str | None = None, **kwargs):
        """The SIP ladder of a capture: only INVITE dialogs with ``calls_only``, only after
        the step marked ``since`` (see :meth:`mark`); SIP over TLS with ``decrypt``."""
        sip = self.table("sip", place, decrypt=decrypt)
        if calls_only:
            sip = sip[sip.call_id.isin(self.table("calls", place, decrypt=decrypt).call_id)]
        if since is not None:
            sip = sip[sip.time >= self.marks()[since]]
        # The ICMP errors of the same capture, drawn between the messages they answered.
        kwargs.setdefault("icmp", self.table("icmp", place, decrypt=decrypt))
        return plots.ladder(sip, names=self.names, **kwargs)

    def timeline(self, place: str | None = None, **kwargs):
        """Every RTP stream of a capture over time, with jitter below."""
        return plots.rtp_timeline(self.table("rtp", place), self.table("streams", place), **kwargs)

    # -- audio --------------------------------------------------------------------------------
    def stream(self, src_host: str, dst_host: str) -> pd.Series:
        """The RTP stream from one host to another (a row of :attr:`streams`)."""
        src, dst = self.address(src_host), self.address(dst_host)
        match = self.streams[(self.streams.src == src) & (self.streams.dst == dst)]
        if match.empty:
            raise LabStateError(f"No RTP stream from {src_host} ({src}) to {dst_host} ({dst}).",
                                hint="look at session.streams for the streams that exist")
        return match.iloc[0]

    def _stream_of(self, phone: str, column: str) -> pd.Series:
        rows = self.streams[self.streams[column] == self.address(phone)]
        if rows.empty:
            way = "reached" if column == "dst" else "left"
            raise LabStateError(f"No RTP stream {way} {phone} in this capture.",
                                hint="look at session.streams for the streams that exist")
        return rows.sort_values("packets").iloc[-1]

    def heard(self, phone: str) -> np.ndarray:
        """The audio ``phone`` received, decoded from the captured G.711 packets."""
        return analysis.decode_stream(self.rtp, self._stream_of(phone, "dst"))

    def said(self, phone: str) -> np.ndarray:
        """The audio ``phone`` sent, decoded from the captured packets it sent."""
        return analysis.decode_stream(self.rtp, self._stream_of(phone, "src"))

    # -- actions on the lab (NAT, DDNS…), in the same log ------------------------------------
    def mark(self, label: str) -> None:
        """Note the time a step starts, to look at its packets later (``ladder(since=…)``)."""
        self._ask("mark", lambda: {"label": label, "time": time.time()}, label=label)

    def wait(self, seconds: float) -> float:
        """Let ``seconds`` of lab time pass (live: a real pause, e.g. for a timer to expire;
        replay: at once); returns the seconds waited."""
        if not 0 <= seconds <= 120:
            raise LabStateError(f"wait({seconds!r}): between 0 and 120 seconds.",
                                hint="a lab timer longer than two minutes belongs in a test, not a cell")
        return self._ask("wait", lambda: (time.sleep(seconds), seconds)[1], seconds=seconds)

    def marks(self) -> dict[str, float]:
        return {m["label"]: m["time"] for m in self.recorder.results("mark")}

    @property
    def box(self):
        """The lab's ISP box (live only; replay shows what it recorded)."""
        name = self.box_name
        if self.lab is None:
            raise LabStateError("In replay mode there is no box to change; its rules were recorded.")
        return self.lab.host(name)

    def box_rules(self) -> Text:
        """The box's nftables rules in force."""
        return Text(self._ask("box-rules", lambda: self.box.rules()))

    def forward_ports(self, forwards: str | None = None, *, to_host: str | None = None) -> Text:
        """The report's fix A on the box, returning its rules: ``forwards`` — your rules as the
        lab file's YAML list (``- {proto: udp, ports: 5060, to: ADDRESS}``), read as data and
        checked by the lab model — or, without it, the report's port table (5060/udp,
        10000-20000/udp, 5061/tcp) to the PBX.  In replay, only the forwards put in force when
        the notebook was recorded have an answer."""
        if forwards is None:
            target = self.address(to_host or self.spec.pbx.host)

            def forward():
                self.box.forward_walkthrough_ports(target)
                return self.box.rules()
            return Text(self._ask("forward-ports", forward, to=target))
        rules = forward_rules(forwards)
        box_forward_overrides(rules, self.lab_name, self.box_name)  # the lab model's checks

        def put_in_force():
            self.box.set_forwards(rules)
            return self.box.rules()
        return Text(self._ask("forward-ports", put_in_force, forwards=rules))

    @property
    def box_name(self) -> str:
        name = next((h.name for h in self.spec.hosts if h.nat is not None), None)
        if name is None:
            raise LabStateError(f"Lab {self.lab_name} has no NAT box.")
        return name

    def sip_alg(self, enabled: bool) -> Text:
        """Switch the box's SIP ALG (the kernel's SIP helper) on or off; returns the rules."""
        def switch():
            self.box.set_sip_alg(enabled)
            return self.box.rules()
        return Text(self._ask("sip-alg", switch, enabled=enabled))

    def configure_nat(self, sip_conf: str | None = None, pjsip_conf: str | None = None) -> Text:
        """The report's fix B, as you write it: the NAT lines of ``sip.conf`` (``[general]``:
        externip, localnet, nat) and of ``pjsip.conf`` (the transport: external_media_address,
        external_signaling_address, local_net); the track's own file is read as data into the
        lab's NAT settings, rendered and Asterisk restarted.  Returns the NAT lines the PBX's
        configuration now has."""
        config = tracks.get(self.track).sip_config
        text = sip_conf if config == "sip.conf" else pjsip_conf
        if text is None:
            raise LabStateError(f"This track's Asterisk reads {config}: give its lines "
                                f"({'sip_conf' if config == 'sip.conf' else 'pjsip_conf'}=…).")
        return Text(nat_lines(str(self.configure_pbx(**nat_settings(text, config)))))

    @classmethod
    def nat_diagnosis(cls, name: str, lab: str = HOME_LAB, *, student: str | None = None,
                      track: str | None = None, mode: str | None = None,
                      capture: tuple[str, ...] = ("lan", "internet")) -> Session:
        """A home-pbx lab with one NAT fault of :data:`~labkit.teaching.nat.NAT_FAULTS`, picked
        from the student's id (``LABKIT_STUDENT``): the recording is ``<name>-<number>``."""
        number, fault = pick_nat_fault(student)
        return cls.start(f"{name}-{number}", lab, track=track, mode=mode, capture=capture,
                         overrides=nat_fault_overrides(fault, lab), wait_registered=False)

    def fix_nat(self, fix: str) -> Text:
        """Your fix of a NAT diagnosis lab, in what you wrote before: the box's forwards (a YAML
        list, which replaces the box's forwards: returns its rules) or Asterisk's NAT lines
        (``[general]`` of sip.conf or a pjsip.conf transport, read into the lab's NAT settings
        whatever the track: returns the NAT lines the PBX's configuration now has)."""
        kind, value = read_fix(fix)
        if kind == "forwards":
            return self.forward_ports(fix)
        return Text(nat_lines(str(self.configure_pbx(**value))))

    def configure_pbx(self, **nat: Any) -> Text:
        """Change the PBX's NAT settings (restarts Asterisk); returns its SIP configuration."""
        def change():
            self.lab.reconfigure({"nat": nat})
            return self.lab.pbx.config(self.lab.pbx.sip_config_name)
        return Text(self._ask("configure-pbx", change, nat=nat))

    def register(self, phone: str) -> bool:
        """Make ``phone`` register now; True if the PBX accepted it."""
        return bool(self._ask("register", lambda: self.lab.phone(phone).register_again(), phone=phone))

    def talk(self, caller: str = "bob", callee: str = "6000", seconds: float = 3.0) -> pd.DataFrame:
        """A call where both sides speak; what each heard, judged against what the other said."""
        from labkit.lab.conversation import talk

        def converse():
            conversation = talk(self.lab, caller, callee, seconds)
            return {"established": conversation.established, "error": conversation.error,
                    "heard": conversation.summary()}
        result = self._ask("talk", converse, caller=caller, callee=callee, seconds=seconds)
        table = pd.DataFrame(result["heard"]).T.rename_axis("listener")
        table.attrs["established"] = result["established"]
        return table

    def hold(self, caller: str = "bob", callee: str = "6000", longest: float = 40.0) -> pd.DataFrame:
        """A call nobody hangs up for ``longest`` seconds: did it stay up, or end by itself after
        how many seconds, and how (as the caller's phone saw it)."""
        from labkit.lab.conversation import hold

        def keep_up():
            held = hold(self.lab, caller, callee, longest)
            return {"established": held.established, "lasted_s": held.lasted,
                    "ended_by_itself": held.ended_by_itself, "reason": held.reason, "error": held.error}
        result = self._ask("hold", keep_up, caller=caller, callee=callee, longest=longest)
        return pd.DataFrame([result], index=[f"{caller} → {callee}"])

    def move_box(self, address: str) -> str:
        """The ISP gives the box a new public address; returns the old one."""
        return self._ask("move-box", lambda: self.box.set_public_address(address), address=address)

    def ddns_update(self, name: str, address: str) -> str:
        """The box's DDNS client updates ``name``; returns what the lab's DNS now answers."""
        def update():
            self.lab.dns.update(name, address)
            return self.lab.dns.resolve(name)
        return self._ask("ddns-update", update, name=name, address=address)

    # -- SIP over TLS (notebook 03) ----------------------------------------------------------
    @classmethod
    def diagnosis(cls, name: str, lab: str = "tls-office", *, student: str | None = None,
                  track: str | None = None, mode: str | None = None,
                  capture: tuple[str, ...] = ("lan",)) -> Session:
        """A TLS lab with one fault of :data:`TLS_FAULTS`, picked from the student's id
        (``LABKIT_STUDENT``; a fixed default): the recording is ``<name>-<number>``, one per
        fault, so that replay shows each student the lab they were given."""
        number, fault = pick_fault(student)
        return cls.start(f"{name}-{number}", lab, track=track, mode=mode, capture=capture,
                         overrides={"pbx": {"tls": copy.deepcopy(TLS_FAULTS[fault])}},
                         wait_registered=False)

    def configure_tls(self, text: str | None = None, **tls: Any) -> Text:
        """Change the PBX's TLS settings — the lab file's ``pbx.tls``: ``certificate={...}``,
        ``versions=[...]``, ``ciphers=...``, or the lines of ``sip.conf`` (``sip_conf=``) and of
        ``pjsip.conf`` (``pjsip_conf=``) as you wrote them — and restart Asterisk.

        Changes add up, as edits to the file do: what is not named stays as it was.  The text
        is checked like a lab file (the exercise's options only, files under
        ``/etc/asterisk/tls``), in both modes.  Returns the TLS lines of the SIP configuration
        Asterisk now runs with.  In replay, only a configuration that was measured when the
        notebook was recorded has an answer.

        ``text`` (optional) gives the same settings as lines of the lab file's ``pbx.tls``
        (YAML: ``certificate:`` then ``  variant: good`` …); keywords are merged over it.
        """
        if text is not None:
            tls = merge_overrides(tls_settings(text), tls)
        overrides = merge_overrides(self._tls_overrides, {"pbx": {"tls": tls}})
        spec = load_spec(self.lab_name, overrides)  # refuses a bad stanza with its line number

        def change():
            self._log_marks = self._log_sizes()
            self.lab.reconfigure({"tls": tls})
            text = self.lab.pbx.config(self.lab.pbx.sip_config_name)
            return {"lines": tls_lines(text, tracks.get(self.track).sip_config), "time": time.time(),
                    "change": _describe_change(tls)}
        result = self._ask("configure-tls", change, tls=self.tls_key(spec))
        self._tls_overrides, self.spec = overrides, spec
        return Text(result["lines"])

    def tls_key(self, spec=None) -> dict:
        """The TLS settings in force, as one comparable dict (what a configure_tls entry is
        recorded under): the stanza of this track normalised, the other track's left out."""
        tls = (spec or self.spec).pbx.tls.model_dump(mode="json")
        mine = STANZA_FIELD[tracks.get(self.track).sip_config]
        tls.pop(next(f for f in STANZA_FIELD.values() if f != mine))
        if tls[mine]:
            tls[mine] = normalise_stanza(tls[mine], mine)
        tls["versions"] = sorted(set(tls["versions"]))
        return tls

    def tls_probe(self, host: str = "alice", name: str | None = None, version: str | None = None,
                  cipher: str | None = None, options: bool = False) -> TlsProbeView:
        """``openssl s_client`` from ``host`` to the PBX's TLS port, trusting the lab CA only,
        checking ``name`` (the name a phone dials) — what a phone sees: verify code, TLS
        alert, version, cipher, and the raw output.  ``version`` forces one TLS version
        ("1.0" … "1.3"); for 1.0 and 1.1 the client lowers its own security level so that it
        really offers them, as an old phone would.  ``options=True`` sends a SIP OPTIONS
        request once connected (something to decrypt in the capture)."""
        if cipher is None and version in ("1.0", "1.1"):
            cipher = "DEFAULT@SECLEVEL=0"
        send = None
        if options:
            tag = re.sub(r"[^A-Za-z0-9-]", "-", f"probe-{version or 'any'}-{cipher or 'default'}")
            send = OPTIONS_REQUEST.format(tag=tag, src=self.address(host),
                                          to=name or self.address(self.spec.pbx.host))

        def probe():
            seen = self.lab.tls_probe(host, name=name, version=version, cipher=cipher, send=send)
            return {**seen.summary(), "error": _socket_error(seen.output), "output": seen.output}
        return TlsProbeView(self._ask("tls-probe", probe, host=host, name=name, version=version,
                                      cipher=cipher, options=options))

    def tls_log(self) -> Text:
        """What Asterisk's log says about TLS since it last (re)started: its certificate and
        key, the handshakes it refused (timestamps left out)."""
        return Text("\n".join(self._ask("tls-log", self._tls_log_lines)) or "(nothing about TLS)")

    def listening(self, port: int | None = None) -> Text:
        """``ss -ltn`` in the PBX's namespace for one TCP port (default: the TLS port)."""
        port = int(port or self.spec.pbx.tls.port)

        def ss():
            out = self.lab.host(self.spec.pbx.host).run(["ss", "-Hltn", f"sport = :{port}"], check=False)
            return out.stdout.strip()
        out = self._ask("listening", ss, port=port)
        return Text(f"$ ss -ltn 'sport = :{port}'\n" + (out or f"(nothing listens on TCP port {port})"))

    def transport_of(self, extension: str = "6000") -> Text:
        """How the PBX reaches a registered phone: ``sip show peer N`` (Prim.Transp., the
        contact) on chan_sip, ``pjsip show aor N`` (the contact URI, ``;transport=TLS``) on PJSIP."""
        legacy = self.track == tracks.LEGACY.name
        command = f"sip show peer {extension}" if legacy else f"pjsip show aor {extension}"
        keep = ("Prim.Transp", "Allowed.Trsp", "Addr->IP", "Reg. Contact") if legacy else ("contact ",)

        def ask():
            out = self.lab.pbx.cli(command)
            lines = [line.rstrip() for line in out.splitlines() if line.strip().startswith(keep)]
            return "\n".join(lines) or out.strip()
        return Text(f"> {command}\n" + self._ask("transport-of", ask, stored=_stable, extension=extension))

    def certificate(self, yours: str | os.PathLike | None = None) -> pd.DataFrame:
        """The certificate the PBX serves (from the lab's PKI), as ``labkit.pki.describe``
        reads it; with ``yours``, a certificate file of yours in a second column."""
        def describe():
            return pki.describe(self.lab.pbx.config_dir / "tls" / "pbx.crt")
        columns = {"the lab's PBX": self._ask("certificate", describe)}
        if yours is not None:
            path = Path(yours)
            columns["yours"] = pki.describe(path) if path.is_file() else {"subject": f"(no file {path.name})"}
        rows = {label: {field: _cell(info.get(field)) for field in CERTIFICATE_FIELDS}
                for label, info in columns.items()}
        return pd.DataFrame(rows)

    def certificate_workshop(self) -> Path:
        """A private folder (0700) holding a CA made for the certificate exercise (``ca.crt``,
        ``ca.key``): where your ``pbx.key`` and ``pbx.crt`` go.  The same folder every call."""
        if self.workshop is None:
            folder = Path(tempfile.mkdtemp(prefix=f"labkit-{self.name}-certs-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            ca = workshop_ca()
            ca.write(folder)
            self.workshop, self.workshop_ca = folder, ca.cert
        return self.workshop

    def predict(self, **values: Any) -> Text:
        """Write predictions down before the cell that shows what happens: they are noted in
        order with what the lab is asked (a check compares them with what it then did)."""
        entry = self.recorder.note("prediction", {k: _plain(v) for k, v in values.items()})
        return Text("Noted before the lab was asked: "
                    + ", ".join(f"{k} = {v!r}" for k, v in entry["args"].items()))

    def symptoms(self, phone: str = "alice", label: str = "") -> pd.DataFrame:
        """One row: what a broken TLS set-up looks like from everywhere at once — does
        ``phone`` register, what it logs, what ``openssl s_client`` from its host says (verify
        code, alert), whether 5061 listens, what Asterisk logs."""
        def measure():
            spec_phone = next(p for p in self.spec.phones if p.name == phone)
            registered = self.lab.phone(phone).register_again(timeout=3)
            name = spec_phone.registrar if _is_name(spec_phone.registrar) else None
            seen = self.lab.tls_probe(spec_phone.host, name=name)
            return {"configuration": label, "registered": bool(registered),
                    "phone says": "registered" if registered else self._phone_says(phone),
                    "verify": _verify_text(seen.verify_code, seen.verify_error),
                    "alert": f"{seen.alert} {seen.alert_name}".strip() if seen.alert else "",
                    "socket": _socket_error(seen.output),
                    "listens": self.lab.pbx.tls_listens(),
                    "Asterisk log": _short_log(self._tls_log_lines())}
        row = self._ask("symptoms", measure, phone=phone, label=label)
        return WideTable([row]).set_index("configuration")

    def symptom_table(self) -> pd.DataFrame:
        """Every :meth:`symptoms` row of this session so far."""
        rows = self.recorder.results("symptoms")
        return WideTable(rows).set_index("configuration") if rows else WideTable()

    def message(self, what: str | int, *, src: str | None = None, dst: str | None = None,
                index: int = 0, place: str | None = None, decrypt: str | None = "keylog") -> Text:
        """The raw text of one SIP message as it crossed the wire (decrypted): the
        ``index``-th (from 0) request ``what`` ("REGISTER") or response ``what`` (401) sent by
        host ``src`` and/or to host ``dst``.  A lab without TLS keys is read as captured."""
        if decrypt == "keylog" and not self._has_tls_keys(place or self.places[0]):
            decrypt = None
        sip = self.table("sip", place, decrypt=decrypt)
        if isinstance(what, int) or str(what).isdigit():
            rows = sip[sip.status_code == int(what)]
        else:
            rows = sip[sip.method == str(what).upper()]
        if src:
            rows = rows[rows.src == self.address(src)]
        if dst:
            rows = rows[rows.dst == self.address(dst)]
        rows = rows.sort_values("frame")
        if len(rows) <= index:
            raise LabStateError(f"No SIP message {what} number {index} "
                                f"{'from ' + src if src else ''} {'to ' + dst if dst else ''} in this capture.",
                                hint="look at the SIP table (table('sip', decrypt='keylog')) for what is there")
        pcap, options = self._decryptable(place or self.places[0], decrypt)
        return Text(frame_text(pcap, int(rows.frame.iloc[index]), what, rsa_key=options.get("rsa_key")))

    def wire(self, place: str | None = None, *, decrypt: str | None = None, limit: int = 20,
             display_filter: str = "tls || sip") -> Text:
        """What crossed the wire, one line per packet as tshark prints it (first ``limit``)."""
        pcap, options = self._decryptable(place or self.places[0], decrypt)
        extra = ["-o", f'uat:rsa_keys:"{options["rsa_key"]}",""'] if options.get("rsa_key") else []
        out = _tshark([*extra, "-Y", display_filter], pcap)
        lines = [" ".join(line.split()) for line in out.splitlines() if line.strip()]
        more = f"\n… ({len(lines) - limit} more)" if len(lines) > limit else ""
        return Text("\n".join(lines[:limit]) + more)

    # -- TLS helpers ----------------------------------------------------------------------------
    def _log_sizes(self) -> dict[str, int]:
        sizes = {"pbx": _size(self.lab.pbx.log_dir / "messages")}
        for name, phone in self.lab.phones.items():
            sizes[name] = _size(phone.log_path)
        return sizes

    def _tls_log_lines(self) -> list[str]:
        text = _read_from(self.lab.pbx.log_dir / "messages", self._log_marks.get("pbx", 0))
        marks = (*type(self.lab.pbx).TLS_TROUBLE, "tcptls.c", "transport-tls", "Permission denied")
        out = []
        for line in text.splitlines():
            if any(mark in line for mark in marks) and "Remote UNIX" not in line:
                out.append(" ".join(_TIMESTAMP.sub("", line).split()))
        return out[-12:]

    def _phone_says(self, phone: str) -> str:
        text = _ANSI.sub("", _read_from(self.lab.phone(phone).log_path, self._log_marks.get(phone, 0)))
        register = re.findall(r"Register: ([^\n]+)", text)
        verify = re.findall(r"error_string = ([^\n]+)", text)
        said = register[-1].strip() if register else ""
        if verify:
            said += f" ({verify[-1].strip()})"
        return said or "(nothing)"

    def _server_key_file(self) -> Path:
        """The PBX's private key, to hand tshark (asked once; recorded, so replay has it)."""
        if self._server_key is None:
            pem = self._ask("server-key", lambda: (self.lab.pbx.config_dir / "tls" / "pbx.key").read_text())
            folder = Path(tempfile.mkdtemp(prefix=f"labkit-{self.name}-key-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            path = folder / "pbx.key"
            path.write_text(pem)
            path.chmod(0o600)
            self._server_key = path
        return self._server_key

    def _tls_table(self, pcap: Path, place: str, rsa_key: Path | None) -> pd.DataFrame:
        """tls_sessions, with the configuration in force when each session started."""
        table = analysis.tls_sessions(pcap, rsa_key=rsa_key)
        steps = [("as started", 0.0)] + [(c.get("change", ""), c["time"])
                                           for c in self.recorder.results("configure-tls")]
        if len(steps) > 1 and len(table):
            start = self._capture_start.get(place)
            if start is None:
                first = _tshark(["-c", "1", "-T", "fields", "-e", "frame.time_epoch"], self.pcap_at(place))
                start = self._capture_start[place] = float(first.split()[0]) if first.split() else 0.0
            times = start + table.start_rel.astype(float)
            table.insert(0, "configuration", [next(label for label, t in reversed(steps) if t <= when)
                                              for when in times])
        return table

    listen = staticmethod(listen)


_VOLATILE = [
    (re.compile(r"0x[0-9a-f]{6,}"), "0x…"),
]


def _stable(text: str) -> str:
    """Recorded CLI output with memory addresses (baresip contact ids) shortened."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


#: What ``table(…, decrypt=…)`` knows.
DECRYPT = (None, "keylog", "server-key")
#: The lab-file field holding a student's TLS lines, per SIP configuration file.
STANZA_FIELD = {"sip.conf": "sip_conf", "pjsip.conf": "pjsip_conf"}
#: The rows of :meth:`Session.certificate`.
CERTIFICATE_FIELDS = ("subject", "issuer", "self_signed", "san_dns", "san_ip", "not_before", "not_after",
                      "days_total", "key_type", "signature_algorithm", "extended_key_usage")
#: A SIP request an ``openssl s_client`` probe can send once connected (RFC 3261 §11).
OPTIONS_REQUEST = ("OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/TLS {src}:5099;branch=z9hG4bK-{tag}\r\n"
                   "From: <sip:probe@{src}>;tag={tag}\r\nTo: <sip:{to}>\r\nCall-ID: {tag}\r\n"
                   "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")

#: The faults a TLS diagnosis lab may hide: name → the lab-file change that makes it (each
#: breaks registration on both tracks; each leaves its own trace in the probe or the log).
TLS_FAULTS: dict[str, dict] = {
    "expired-certificate": {"certificate": {"variant": "expired"}},
    "name-mismatch": {"certificate": {"variant": "wrong_name"}},
    "unknown-ca": {"certificate": {"variant": "other_ca"}},
    "self-signed": {"certificate": {"variant": "self_signed"}},
    "unreadable-key": {"certificate": {"owner": "root", "key_mode": "0600"}},
    "key-mismatch": {"certificate": {"variant": "key_mismatch"}},
}
def pick_fault(student: str | None = None) -> tuple[int, str]:
    """(number from 1, name) of the TLS fault for a student id (``LABKIT_STUDENT`` by default)."""
    return pick_for_student("tls", TLS_FAULTS, student)


#: The CA of the certificate exercise (its subject CN).
WORKSHOP_CA_NAME = "Office Lab CA"
#: The order of the P-256 group: a private key is a number from 1 to this, minus one.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def workshop_ca(student: str | None = None) -> pki.LabCA:
    """The certificate exercise's CA for a student id (``LABKIT_STUDENT`` by default): its key
    is derived from the id, so that the same CA (same key, same name) can be made again — by
    the grader, which checks that the student's certificate chains to it.  Not a secret: the
    student is given its key to sign with."""
    from cryptography.hazmat.primitives.asymmetric import ec
    digest = hashlib.sha256(f"labkit-workshop-ca:{student_id(student)}".encode()).digest()
    secret = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    return pki.LabCA.create(WORKSHOP_CA_NAME, key=ec.derive_private_key(secret, ec.SECP256R1()))


def tls_settings(text: str, allowed: tuple[str, ...] = ("certificate",)) -> dict:
    """Lab-file lines of ``pbx.tls`` written as text (YAML: ``certificate:`` then indented
    ``variant: good`` …) as a mapping; only the keys *allowed* (and what is under them)."""
    if not isinstance(text, str):
        raise LabStateError(f"The settings should be text (lab-file lines), not {type(text).__name__}.")
    try:
        data = yaml_text(text)
    except YamlTextError as exc:
        raise LabStateError(f"The settings are {exc}.",
                            hint="e.g. 'certificate:' then '  variant: good' on the next line") from None
    if not isinstance(data, dict) or not data:
        raise LabStateError("The settings must be a YAML mapping, e.g. 'certificate: {variant: good}'.")
    bad = [str(key) for key in data if key not in allowed]
    if bad:
        raise LabStateError(f"{', '.join(bad)}: not a setting of this exercise (allowed: {', '.join(allowed)}).")
    return data


def normalise_stanza(text: str, field: str) -> str:
    """A student's TLS lines as the configuration gets them (comments and spacing dropped)."""
    rules = stanza.CHAN_SIP_TLS if field == "sip_conf" else stanza.PJSIP_TLS
    parsed, _ = stanza.parse(text, rules)
    return parsed.text()


def frame_text(pcap: Path, frame: int, what: str | int | None = None, *, rsa_key: Path | None = None) -> str:
    """The application data of one frame (decrypted TLS if the keys are there), as text; when
    it holds several SIP messages, the one that starts with ``what`` (a method or a code)."""
    extra = ["-o", f'uat:rsa_keys:"{rsa_key}",""'] if rsa_key else []
    dump = _tshark([*extra, "-x", "-Y", f"frame.number == {int(frame)}"], pcap)
    blocks = re.split(r"^(?=\S.*\(\d+ bytes\):$)", dump, flags=re.M)
    decrypted = [b for b in blocks if b.startswith("Decrypted TLS")]
    data = b"".join(_hex_block(b) for b in decrypted) if decrypted else _hex_block(dump)
    text = data.decode("utf-8", "replace")
    # Without TLS the dump also holds the Ethernet/IP/UDP headers, decoded as text on the
    # same line as the start line: look for the start line anywhere, by its method names.
    start = re.search(rf"(?:(?:{_METHODS}) \S+ SIP/2\.0|SIP/2\.0 \d{{3}} )", text)
    text = text[start.start():] if start else text
    messages = re.split(r"(?m)^(?=[A-Z]+ \S+ SIP/2\.0\r?$|SIP/2\.0 \d{3} )", text)
    messages = [m for m in messages if m.strip()]
    if what is not None and len(messages) > 1:
        wanted = str(what).upper()
        for m in messages:
            first = m.split("\n", 1)[0]
            if first.startswith(wanted + " ") or first.startswith(f"SIP/2.0 {wanted} "):
                return m.replace("\r\n", "\n")
    return (messages[0] if messages else text).replace("\r\n", "\n")


#: SIP request methods (RFC 3261 and the extensions a lab meets).
_METHODS = "INVITE|ACK|BYE|CANCEL|REGISTER|OPTIONS|PRACK|SUBSCRIBE|NOTIFY|PUBLISH|INFO|REFER|MESSAGE|UPDATE"
_HEX_LINE = re.compile(r"^[0-9a-f]{4}\s+((?:[0-9a-f]{2}\s){1,16})", re.M)


def _hex_block(block: str) -> bytes:
    return bytes.fromhex("".join(m.group(1).replace(" ", "") for m in _HEX_LINE.finditer(block)))


def _tshark(args: list[str], pcap: Path) -> str:
    tshark = analysis.tshark.tshark_path()
    done = subprocess.run([tshark, "-n", "-r", str(pcap), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "LC_ALL": "C"})
    if done.returncode != 0:
        raise CaptureError(f"tshark could not read {pcap}: {done.stderr.strip()[-300:]}")
    return done.stdout


def _describe_change(tls: dict) -> str:
    """``{"certificate": {"variant": "expired"}}`` → ``certificate.variant=expired``."""
    parts = []
    for key, value in tls.items():
        if isinstance(value, dict):
            parts += [f"{key}.{k}={v}" for k, v in value.items()]
        elif key in STANZA_FIELD.values():
            parts.append(f"{key}=(your lines)" if value else f"{key}=None")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def _socket_error(output: str) -> str:
    """What the TCP connection did when no TLS answer came (s_client's errno lines)."""
    if "errno=111" in output or "Connection refused" in output:
        return "connection refused"
    if "errno=104" in output:
        return "connection reset"
    return ""


def _verify_text(code, error: str) -> str:
    if code is None:
        return ""
    return "0 ok" if code == 0 else f"{code} {error}".strip()


_TIMESTAMP = re.compile(r"^\[[\d\-: .]+\]\s*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _short_log(lines: list[str]) -> str:
    """The gist of what Asterisk logged about TLS, for a table (tls_log() gives it in full):
    the last telling line, its source file and the reason in it."""
    telling = [line for line in lines if not any(noise in line for noise in _LOG_NOISE)]
    if not telling:
        return ""
    line = telling[-1]
    source = re.match(r"^\w+\[\d+\]\s+([\w./]+):\s*", line)
    where = source.group(1) if source else ""
    rest = line[source.end():] if source else line
    for pattern, form in _LOG_GIST:
        found = pattern.search(rest)
        if found:
            rest = form.format(*found.groups())
            break
    return f"{where}: {rest}"[:140] if where else rest[:140]


#: Lines that follow a telling one and say nothing more.
_LOG_NOISE = ("Could not create an object", "Error parsing", "SSL_shutdown() failed",
              "certificate ok", "Unable to set up ssl connection", "STATUS_FROM_SSL_ERR")
#: (pattern, short form) of the lines Asterisk writes about TLS, both generations.
_LOG_GIST = (
    (re.compile(r"<error:[0-9A-Fa-f]+:[^:>]*::?([^>]+)>.*?peer: (\S+)"), "handshake failed: {} (peer {})"),
    (re.compile(r"Error adding private key from '([^']+)': (.+)"), "private key {}: {}"),
    (re.compile(r"Error loading certificate chain file '([^']+)': (.+)"), "certificate {}: {}"),
    (re.compile(r"(priv_key_file \S+ is either missing or not readable)"), "{}"),
    (re.compile(r"error:[0-9A-Fa-f]+:[^:]+:([^:]+):([^:]+):"), "{}: {}"),
    (re.compile(r"(Problem setting up ssl connection): error:0+1:lib\(0\)[^,]*, (.+)"), "{} ({})"),
)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _is_name(value: str | None) -> bool:
    if not value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return True
    return False


def _plain(value: Any) -> Any:
    """A prediction as JSON keeps it (numpy numbers as Python ones)."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", value):
        return value.replace("T", " ").replace("+00:00", " UTC")  # as openssl x509 -dates reads
    return value
