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
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labkit import analysis, resources, tracks
from labkit.analysis import plots
from labkit.errors import LabStateError
from labkit.spec import load_spec
from labkit.teaching.display import Text, listen, show_figures_inline
from labkit.teaching.recorder import Recorder

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


class Session:
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
        self._tables: dict[tuple[str, str], Any] = {}

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
            else:
                self._pcaps = {where: self._recorded_pcap(where) for where in self.places}
        return self._pcaps[place]

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

    def table(self, kind: str, place: str | None = None) -> pd.DataFrame:
        """An analysis table (``sip``, ``calls``, ``rtp``, ``streams``) of one capture."""
        place = place or self.places[0]
        key = (kind, place)
        if key not in self._tables:
            if kind == "sip":
                value = analysis.sip_messages(self.pcap_at(place))
            elif kind == "calls":
                value = analysis.calls(self.table("sip", place))
            elif kind == "rtp":
                value = analysis.rtp_packets(self.pcap_at(place), sip=self.table("sip", place),
                                             with_payload=True)
            elif kind == "streams":
                value = analysis.rtp_streams(self.table("rtp", place), sip=self.table("sip", place))
            else:
                raise LabStateError(f"No table {kind!r}.", hint="sip, calls, rtp or streams")
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
               since: str | None = None, **kwargs):
        """The SIP ladder of a capture: only INVITE dialogs with ``calls_only``, only after
        the step marked ``since`` (see :meth:`mark`)."""
        sip = self.table("sip", place)
        if calls_only:
            sip = sip[sip.call_id.isin(self.table("calls", place).call_id)]
        if since is not None:
            sip = sip[sip.time >= self.marks()[since]]
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

    def marks(self) -> dict[str, float]:
        return {m["label"]: m["time"] for m in self.recorder.results("mark")}

    @property
    def box(self):
        """The lab's ISP box (live only; replay shows what it recorded)."""
        name = next((h.name for h in self.spec.hosts if h.nat is not None), None)
        if name is None:
            raise LabStateError(f"Lab {self.lab_name} has no NAT box.")
        if self.lab is None:
            raise LabStateError("In replay mode there is no box to change; its rules were recorded.")
        return self.lab.host(name)

    def box_rules(self) -> Text:
        """The box's nftables rules in force."""
        return Text(self._ask("box-rules", lambda: self.box.rules()))

    def forward_ports(self, to_host: str | None = None) -> Text:
        """The report's fix A: forward 5060/udp, 10000-20000/udp, 5061/tcp to the PBX."""
        target = self.address(to_host or self.spec.pbx.host)

        def forward():
            self.box.forward_walkthrough_ports(target)
            return self.box.rules()
        return Text(self._ask("forward-ports", forward, to=target))

    def sip_alg(self, enabled: bool) -> Text:
        """Switch the box's SIP ALG (the kernel's SIP helper) on or off; returns the rules."""
        def switch():
            self.box.set_sip_alg(enabled)
            return self.box.rules()
        return Text(self._ask("sip-alg", switch, enabled=enabled))

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

    def move_box(self, address: str) -> str:
        """The ISP gives the box a new public address; returns the old one."""
        return self._ask("move-box", lambda: self.box.set_public_address(address), address=address)

    def ddns_update(self, name: str, address: str) -> str:
        """The box's DDNS client updates ``name``; returns what the lab's DNS now answers."""
        def update():
            self.lab.dns.update(name, address)
            return self.lab.dns.resolve(name)
        return self._ask("ddns-update", update, name=name, address=address)

    listen = staticmethod(listen)


_VOLATILE = [
    (re.compile(r"0x[0-9a-f]{6,}"), "0x…"),
]


def _stable(text: str) -> str:
    """Recorded CLI output with memory addresses (baresip contact ids) shortened."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text
