"""A running lab: the model brought to life, and taken down again without leftovers.

>>> with Lab.load("first-call", track="legacy") as lab:
...     lab.pbx.cli("sip show peers")
...     call = lab.phone("bob").call("6000").wait_established()
...     call.hangup()

``up`` builds, in this order, recording each thing *before* making it: namespaces (one
per network as a switch, one per host), veth links, addresses and routes, the hosts file,
the rendered configuration, Asterisk (ready when fully booted), the softphones (ready when
the PBX lists them as registered).  ``down`` undoes it in reverse and also runs on an
exception, on Ctrl-C, and at interpreter exit; after a SIGKILL, ``labkit clean`` follows
the record.  ``Lab.attach(name)`` takes over a lab that another process brought up.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import ipaddress
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from labkit import images
from labkit.net import netns
from labkit.services.asterisk.service import Asterisk
from labkit.services.base import ensure_port_free, kill_recorded
from labkit.errors import DaemonError, EnvironmentProblem, LabStateError, ReadyTimeout
from labkit.spec.model import TRACKS, LabSpec, draw_secrets, find_lab_file, load_spec, merge_overrides
from labkit.net.netns import Namespace
from labkit.services.baresip import CTRL_PORT, Softphone, render_account, render_config
from labkit.services.asterisk.config import PbxCredentials, render_pbx
from labkit.services.speech import sentence_wav
from labkit.state import LabRecord, lab_dir, namespace_prefix, recorded_labs

REGISTRATION_TIMEOUT = 10.0


class Host:
    """A lab host as seen from Python: its namespace and how to run things in it."""

    def __init__(self, lab: "Lab", name: str):
        self.lab = lab
        self.name = name
        self.namespace = Namespace(namespace_prefix(lab.name) + name)
        self.spec = lab.spec.host(name)

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.spec.interfaces[0].address

    def run(self, argv: list[str], check: bool = True, timeout: float = 30):
        """Run a host command (from the machine, e.g. ``ping``, ``ss``) in this host's namespace."""
        return self.namespace.run(argv, check=check, timeout=timeout)

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address}>"


class Lab:
    """One lab: a spec, a track, a name (default: the spec's), and its running parts."""

    def __init__(self, spec: LabSpec, track: str = "modern", name: str | None = None,
                 lab_file: Path | None = None):
        if track not in TRACKS:
            raise LabStateError(f"Unknown track {track!r}.", hint=f"use one of: {', '.join(TRACKS)}")
        self.spec = spec
        self.track = track
        self.name = name or spec.name
        self.lab_file = lab_file
        self.record = LabRecord(name=self.name)
        self.pbx: Asterisk | None = None
        self.dns = None  # a DnsServer when the lab declares one
        self.phones: dict[str, Softphone] = {}
        self.credentials: PbxCredentials | None = None
        self.captures: list = []
        self.overrides: dict = {}
        self.owner = False

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, lab: str | Path, track: str = "modern", name: str | None = None,
             overrides: dict | None = None) -> "Lab":
        """Read and validate a lab file (by name, ``first-call``, or path).

        ``overrides`` changes the lab file's values for this run only, e.g.
        ``{"pbx": {"direct_media": True}}`` (see :func:`labkit.model.load_spec`).
        """
        path = find_lab_file(lab)
        lab_obj = cls(load_spec(path, overrides), track=track, name=name, lab_file=path)
        lab_obj.overrides = overrides or {}
        return lab_obj

    @classmethod
    def attach(cls, name: str | None = None) -> "Lab":
        """The running lab recorded under ``name`` (or the only one running)."""
        record = _find_record(name)
        overrides = record.info.get("overrides") or None
        lab = cls(load_spec(record.lab_file, overrides), track=record.track, name=record.name,
                  lab_file=Path(record.lab_file))
        lab.record = record
        lab.credentials = PbxCredentials(**record.info["credentials"])
        lab._build_daemons(images.ensure_image(record.track, build=False, progress=False),
                           images.ensure_image("modern", build=False, progress=False))
        by_name = {p.name: p for p in record.processes}
        for daemon in lab._daemons():
            if daemon.name in by_name:
                daemon.attach(by_name[daemon.name])
        return lab

    # -- places -----------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return lab_dir(self.name)

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def captures_dir(self) -> Path:
        return self.dir / "captures"

    @property
    def etc_dir(self) -> Path:
        """The lab's ``hosts`` and ``resolv.conf``, bound into every sandbox."""
        return self.config_dir / "etc"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    def host(self, name: str):
        """A host of the lab; an ISP box (a host with ``nat:``) comes as a :class:`NatBox`."""
        if name not in {h.name for h in self.spec.hosts}:
            raise LabStateError(f"No host {name!r} in lab {self.name}.",
                                hint=f"hosts: {', '.join(h.name for h in self.spec.hosts)}")
        if self.spec.host(name).nat is not None:
            from labkit.net.natbox import NatBox
            return NatBox(self, name)
        return Host(self, name)

    def phone(self, name: str) -> Softphone:
        if name not in self.phones:
            raise LabStateError(f"No phone {name!r} in lab {self.name}.",
                                hint=f"phones: {', '.join(self.phones) or 'none'}")
        return self.phones[name]

    def capture(self, *places: str, name: str | None = None, capture_filter: str | None = None):
        """Capture on hosts and/or networks: ``with lab.capture("pbx", "alice") as cap:``."""
        from labkit.lab.capture import Capture
        if not self.record.namespaces:
            raise LabStateError(f"Lab {self.name} is not up: there is nothing to capture on yet.",
                                hint="call lab.up() first, or lab.up(capture=(\"lan\",)) to capture "
                                     "from the very first packet")
        capture = Capture(self, places, name=name, capture_filter=capture_filter)
        self.captures.append(capture)
        return capture

    def namespace(self, host_or_network: str) -> Namespace:
        return Namespace(namespace_prefix(self.name) + host_or_network)

    # -- up -----------------------------------------------------------------------------
    def up(self, *, build_images: bool = True, progress: bool = True,
           capture: tuple[str, ...] = (), capture_name: str = "lab",
           wait_registered: bool = True) -> "Lab":
        """Bring the whole lab up; on any failure take down what was made, then raise.

        ``capture=("lan",)`` starts a capture on those hosts/networks once the network
        exists and *before* any daemon starts, so registrations are in it (as ipmininet's
        captures do); it is ``lab.captures[0]`` and stops at ``down`` or ``.stop()``.
        """
        _require_root()
        rootfs = images.ensure_image(self.track, build=build_images, progress=progress)
        phone_rootfs = images.ensure_image("modern", build=build_images, progress=progress) \
            if self.spec.phones or self.spec.dns else rootfs
        self._claim()
        try:
            self._build_network()
            if capture:
                self.capture(*capture, name=capture_name).start()
            self._write_files()
            self._build_daemons(rootfs, phone_rootfs)
            self._check_ports()
            if self.dns is not None:  # names must resolve before Asterisk and phones start
                self.dns.start()
                self.dns.wait_ready()
            self.pbx.start()
            self.pbx.wait_ready()
            for phone in self.phones.values():
                phone.start()
            for phone in self.phones.values():
                phone.wait_ready()
            if wait_registered:  # a lab broken on purpose (NAT) may not register yet
                self.wait_registered()
        except BaseException:
            self.down()
            raise
        return self

    def _claim(self) -> None:
        existing = LabRecord.load(self.name)
        if existing is not None:
            alive = [p.name for p in existing.processes if p.process() is not None]
            namespaces = [n for n in existing.namespaces if Namespace(n).exists()]
            state = "running" if alive or namespaces else "left over from a crash (nothing of it runs)"
            raise LabStateError(
                f"A lab named {self.name!r} is already recorded: {state}.",
                cause="it was brought up before and not taken down"
                      + ("" if alive else " (the machine or the Python process stopped)"),
                hint=f"`labkit down {self.name}` (or `labkit clean {self.name}`), or give this lab "
                     f"another name (`labkit up … --name other`, `Lab.load(…, name='other')`)")
        leftovers = [n for n in netns.existing_namespaces() if n.startswith(namespace_prefix(self.name))]
        if leftovers:
            raise LabStateError(f"Namespaces of a lab named {self.name!r} exist but are not "
                                f"recorded: {', '.join(leftovers)}.",
                                cause="a lab crashed before writing its record, or was made by hand",
                                hint=f"`labkit clean {self.name}` removes them")
        # A lab directory shows one run: the previous run's files go before this one starts.
        for sub in ("run", "config", "logs", "recordings", "captures"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.record = LabRecord(name=self.name, lab_file=str(self.lab_file or ""),
                                track=self.track, owner_pid=os.getpid())
        self.record.info["overrides"] = self.overrides
        self.record.add_temp_dir(self.run_dir)
        self.owner = True
        atexit.register(self._down_at_exit)

    def _build_network(self) -> None:
        spec = self.spec
        for network in spec.networks:
            switch = self.namespace(network.name)
            self.record.add_namespace(switch.name)
            switch.create()
            netns.add_bridge(switch)
        for host in spec.hosts:
            namespace = self.namespace(host.name)
            self.record.add_namespace(namespace.name)
            namespace.create()
            for index, iface in enumerate(host.interfaces):
                ifname = f"eth{index}"
                switch = self.namespace(iface.network)
                netns.add_veth(namespace, ifname, switch, host.name)
                netns.attach_to_bridge(switch, host.name)
                prefix = spec.network(iface.network).subnet.prefixlen
                netns.set_address(namespace, ifname, f"{iface.address}/{prefix}")
            netns.add_default_route(namespace, str(host.gateway) if host.gateway else None, "eth0")
            if host.forwarding:
                namespace.sysctl("net.ipv4.ip_forward", "1")
            if host.nat is not None:
                self.host(host.name).apply()

    def _write_files(self) -> None:
        spec = self.spec
        self.run_dir.mkdir(parents=True, exist_ok=True)
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        hosts += [f"{h.interfaces[0].address}\t{h.name}.{self.name}.test {h.name}" for h in spec.hosts]
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        (self.etc_dir / "hosts").write_text("\n".join(hosts) + "\n")
        # No resolver outside the lab: the lab's DNS server if it has one, else the host's
        # own loopback, where queries fail at once.
        nameserver = spec.address_of(spec.dns.host) if spec.dns else "127.0.0.1"
        (self.etc_dir / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:1\n")
        secrets = draw_secrets(spec)
        self.credentials = PbxCredentials(secrets=secrets, ami_user="labkit",
                                          ami_secret=draw_secrets_ami())
        self.record.info["credentials"] = {"secrets": secrets, "ami_user": "labkit",
                                           "ami_secret": self.credentials.ami_secret}
        self.record.save()
        render_pbx(spec, self.track, self.credentials, self.config_dir / spec.pbx.host)
        pbx_address = spec.address_of(spec.pbx.host)
        codecs = {"ulaw": "PCMU", "alaw": "PCMA", "g722": "G722"}
        for phone in spec.phones:
            endpoint = spec.endpoint(phone.extension)
            conf = self.config_dir / phone.name
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "config").write_text(render_config(
                address=str(spec.address_of(phone.host)), sip_port=phone.sip_port,
                audio_file="/srv/phone/say.wav", record_dir="/srv/phone/rec"))
            (conf / "accounts").write_text(render_account(
                display=endpoint.name, extension=endpoint.extension,
                registrar=phone.registrar or str(pbx_address),
                secret=secrets[endpoint.extension],
                codecs=[codecs[c] for c in spec.pbx.codecs]))
            (conf / "contacts").write_text("")
            sentence = self.config_dir / phone.name / "say.wav"
            sentence_wav(f"Hello, this is {endpoint.name} at extension "
                         f"{' '.join(endpoint.extension)}. The quick brown fox jumps over the lazy dog.",
                         sentence, repeat=4)

    def _build_daemons(self, rootfs: Path, phone_rootfs: Path) -> None:
        spec = self.spec
        if spec.dns is not None:
            from labkit.services.dnsmasq import DnsServer
            self.dns = DnsServer(self, phone_rootfs)
        pbx_host = spec.pbx.host
        self.pbx = Asterisk(
            host=pbx_host, track=self.track, namespace=self.namespace(pbx_host), rootfs=rootfs,
            config_dir=self.config_dir / pbx_host, state_dir=self.run_dir / pbx_host,
            log_dir=self.logs_dir / pbx_host, etc_dir=self.etc_dir,
            credentials=self.credentials, ami_port=spec.pbx.ami_port, record=self.record)
        for phone in spec.phones:
            self.phones[phone.name] = Softphone(
                name=phone.name, extension=phone.extension, namespace=self.namespace(phone.host),
                rootfs=phone_rootfs, config_dir=self.config_dir / phone.name,
                record_dir=self.dir / "recordings" / phone.name,
                audio_file=self.config_dir / phone.name / "say.wav",
                etc_dir=self.etc_dir,
                log_path=self.logs_dir / phone.name / "baresip.log", record=self.record,
                registrar_holds=self._registrar_holds(phone.extension))

    def _registrar_holds(self, extension: str) -> Callable[[], bool]:
        """Asks the lab's PBX whether ``extension`` is registered (for re-registration)."""
        return lambda: extension in self.pbx.registered()

    def _check_ports(self) -> None:
        """Fail with a clear PortInUse before a daemon fails with a cryptic bind error."""
        pbx = self.spec.pbx
        pbx_ns = self.namespace(pbx.host)
        for transport in pbx.transports:
            ensure_port_free(pbx_ns, pbx.sip_port, transport, "Asterisk (SIP)")
        ensure_port_free(pbx_ns, pbx.ami_port, "tcp", "Asterisk (AMI)")
        for phone in self.spec.phones:
            ensure_port_free(self.namespace(phone.host), phone.sip_port, "udp", f"phone {phone.name}")
            ensure_port_free(self.namespace(phone.host), CTRL_PORT, "tcp", f"phone {phone.name} (ctrl_tcp)")

    def _daemons(self) -> list:
        dumpcaps = [d for capture in self.captures for d in capture.dumpcaps]
        return [d for d in [*dumpcaps, *self.phones.values(), self.pbx, self.dns] if d is not None]

    def reconfigure(self, pbx: dict) -> None:
        """Change PBX settings of the running lab, e.g. ``{"nat": {"symmetric": True}}``.

        The configuration is rendered again (same secrets) and Asterisk restarted: PJSIP
        transports (where external addresses live) are not reloadable by default, and a
        restart is the same on both tracks.  Registrations survive in Asterisk's astdb.
        """
        overrides = merge_overrides(self.overrides, {"pbx": pbx})
        spec = load_spec(self.lab_file, overrides)
        self.spec, self.overrides = spec, overrides
        self.record.info["overrides"] = overrides
        self.record.save()
        render_pbx(spec, self.track, self.credentials, self.config_dir / spec.pbx.host)
        self.pbx.stop()
        self.pbx.start()
        self.pbx.wait_ready()

    # -- state ---------------------------------------------------------------------------
    def wait_registered(self, timeout: float = REGISTRATION_TIMEOUT) -> dict[str, str]:
        """Wait until every phone's extension is registered; return extension → contact."""
        wanted = {p.extension for p in self.spec.phones}
        deadline = time.monotonic() + timeout
        registered: dict[str, str] = {}
        while time.monotonic() < deadline:
            registered = self.pbx.registered()
            if wanted <= set(registered):
                return registered
            for phone in self.phones.values():
                if not phone.running():
                    raise DaemonError(f"Softphone {phone.phone_name} stopped.",
                                      hint=f"read its log: {phone.log_path}")
            time.sleep(0.1)
        missing = ", ".join(sorted(wanted - set(registered)))
        raise ReadyTimeout(f"Extensions {missing} did not register within {timeout:g} s.",
                          cause="wrong credentials, a network problem, or the PBX refused them — "
                                "or a lab broken on purpose (home-pbx starts without port forwards)",
                          hint=f"`labkit cli 'pjsip show contacts'`; logs in {self.logs_dir}; "
                               "to bring up a lab whose phones cannot register yet: "
                               "`labkit up LAB --no-wait` (Python: up(wait_registered=False))")

    def status(self) -> dict:
        """What runs: hosts with addresses, daemons with pids, registrations, boxes."""
        daemons = {d.name: (f"running (pid {d.process_record.pid})" if d.running() else "stopped")
                   for d in self._daemons()}
        registrations: dict[str, str] = {}
        if self.pbx is not None and self.pbx.running():
            try:
                registrations = self.pbx.registered()
            except Exception as exc:  # status must not fail because AMI is slow
                registrations = {"error": str(exc)}
        boxes = {}
        for host in self.spec.hosts:
            if host.nat is not None and self.namespace(host.name).exists():
                box = self.host(host.name)
                forwards = [f"{f.proto} {f.range[0]}-{f.range[1]} → {f.to}" for f in box.nat.forwards]
                boxes[host.name] = {"public address": box.public_address,
                                    "forwards": ", ".join(forwards) or "none",
                                    "SIP ALG": "on" if box.nat.sip_alg else "off"}
        return {
            "lab": self.name, "track": self.track, "dir": str(self.dir),
            "hosts": {h.name: [str(i.address) for i in h.interfaces] for h in self.spec.hosts},
            "daemons": daemons, "registrations": registrations, "boxes": boxes,
        }

    # -- down -----------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every daemon, delete every namespace and temporary dir this lab recorded."""
        daemons = self._daemons()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(daemons))) as pool:
            for future in [pool.submit(d.stop) for d in daemons]:
                try:
                    future.result()
                except Exception:
                    pass  # whatever did not stop is killed through the record below
        clean_record(self.record)
        self.owner = False
        atexit.unregister(self._down_at_exit)

    def detach(self) -> None:
        """Leave the lab running when this process ends (what ``labkit up`` does)."""
        self.owner = False
        atexit.unregister(self._down_at_exit)
        if self.pbx is not None:
            self.pbx.close_ami()

    def _down_at_exit(self) -> None:
        if self.owner:
            self.down()

    def __enter__(self) -> "Lab":
        if not self.owner:
            self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def __repr__(self) -> str:
        return f"<Lab {self.name} track={self.track} dir={self.dir}>"


def draw_secrets_ami() -> str:
    return secrets.token_urlsafe(16)


def clean_record(record: LabRecord) -> list[str]:
    """Remove everything a lab record lists; return what was removed (for messages)."""
    removed = []
    for proc in list(record.processes):
        if kill_recorded(proc):
            removed.append(f"process {proc.pid} ({proc.name})")
    for name in reversed(record.namespaces):
        namespace = Namespace(name)
        if namespace.exists():
            # Anything still in a namespace we made is ours (e.g. a daemon whose record was
            # lost mid-write); the namespace identifies it, not its name.
            for pid in namespace.pids():
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            namespace.delete()
            removed.append(f"namespace {name}")
    for path in record.temp_dirs:
        if Path(path).exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"directory {path}")
    try:
        record.path.unlink()
    except FileNotFoundError:
        pass
    return removed


def leftovers(name: str) -> list[str]:
    """Everything of lab ``name`` that still exists: namespaces, processes, mounts, dirs.

    Empty after a clean ``down`` or ``labkit clean``; tests assert it, notebooks show it.
    """
    found = [f"namespace {n}" for n in netns.existing_namespaces()
             if n.startswith(namespace_prefix(name))]
    record = LabRecord.load(name)
    if record is not None:
        found.append(f"record {record.path}")
        found += [f"process {p.pid} ({p.name})" for p in record.processes if p.process() is not None]
    run = lab_dir(name) / "run"
    if run.exists():
        found.append(f"directory {run}")
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            mount_point = line.split()[4]
            if mount_point.startswith(str(lab_dir(name))) or \
                    mount_point.startswith(f"/run/netns/{namespace_prefix(name)}"):
                found.append(f"mount {mount_point}")
    return found


def _find_record(name: str | None) -> LabRecord:
    if name:
        record = LabRecord.load(name)
        if record is None:
            raise LabStateError(f"No lab named {name!r} is running.", hint="`labkit status` lists labs")
        return record
    records = recorded_labs()
    if not records:
        raise LabStateError("No lab is running.", hint="`labkit up first-call`")
    if len(records) > 1:
        raise LabStateError(f"Several labs are running: {', '.join(r.name for r in records)}.",
                            hint="name one (`--lab NAME`)")
    return records[0]


def _require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "Labs must run as root.",
            cause="creating network namespaces and sandboxes needs CAP_NET_ADMIN and CAP_SYS_ADMIN",
            hint="run with sudo, or use replay mode (LABKIT_MODE=replay) which needs no root")
