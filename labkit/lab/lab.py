"""A running lab: the lab file brought to life, and taken down again without leftovers.

>>> with Lab.load("first-call", track=tracks.LEGACY) as lab:
...     lab.pbx.cli("sip show peers")
...     call = lab.phone("bob").call("6000").wait_established()
...     call.hangup()

``up`` does, in this order, recording each thing *before* making it: claims the lab's
record, draws the run's secrets, asks every service module what the lab file calls for
(:data:`labkit.services.PROVIDERS`), builds the network (a namespace per network as a
switch and per host, veth links, addresses, routes, NAT boxes), starts the requested
captures, writes the lab's hosts file, renders every service's files, checks every port,
then starts the services in the order their needs give, each ready before the next wave
(Asterisk when fully booted, phones when their control socket answers), and waits for the
phones to be registered.  ``down`` stops the services and removes what the record lists;
it also runs on an exception, on Ctrl-C and at interpreter exit; after a SIGKILL,
``labkit clean`` follows the record.  ``Lab.attach(name)`` takes over a lab that another
process brought up.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from labkit import images, services, tracks
from labkit.analysis import correlate, read_wav
from labkit.errors import (
    DaemonError,
    EnvironmentProblem,
    LabkitError,
    LabStateError,
    PhoneError,
    ReadyTimeout,
)
from labkit.lab.cleanup import clean_record
from labkit.lab.conversation import Conversation
from labkit.net import netns
from labkit.net.firewall import HostFirewall
from labkit.net.host import Host
from labkit.net.natbox import NatBox
from labkit.net.netns import Namespace
from labkit.services.asterisk import Asterisk
from labkit.services.asterisk.service import HOSTS_BY_HOST
from labkit.services.asterisk.tls import make_lab_ca
from labkit.services.baresip import Softphone
from labkit.services.base import Credentials, LabContext, Service, check_ports, start_order
from labkit.services.dnsmasq import DnsServer
from labkit.services.fail2ban import Fail2ban
from labkit.services.kamailio import Kamailio
from labkit.services.pstn import PstnExchange
from labkit.services.sipp import SippResult, SippRun
from labkit.services.sipvicious import AttackResult, SipviciousRun
from labkit.services.tlsprobe import TlsProbe, TlsProbeResult
from labkit.spec import LabSpec, draw_secrets, find_lab_file, load_spec, merge_overrides
from labkit.state import LabRecord, lab_dir, namespace_prefix, recorded_labs

REGISTRATION_TIMEOUT = 10.0
AMI_USER = "labkit"


class Lab:
    """One lab: a spec, a track, a name (default: the spec's), and its running parts."""

    def __init__(self, spec: LabSpec, track: str | tracks.Track = tracks.DEFAULT,
                 name: str | None = None, lab_file: Path | None = None,
                 overrides: dict | None = None):
        self.spec = spec
        self.track = tracks.get(track)
        self.name = name or spec.name
        self.lab_file = lab_file
        self.overrides: dict = overrides or {}
        self.record = LabRecord(name=self.name)
        self.credentials: Credentials | None = None
        self.services: list[Service] = []
        self.captures: list = []
        self.owner = False

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, lab: str | Path, track: str = tracks.DEFAULT.name, name: str | None = None,
             overrides: dict | None = None, variant: str | None = None) -> Lab:
        """Read and validate a lab file (by name, ``first-call``, or path).

        ``overrides`` changes the lab file's values for this run only, e.g.
        ``{"pbx": {"direct_media": True}}`` (see :func:`labkit.spec.load_spec`);
        ``variant`` starts from one of the file's named variants (``variants:``), e.g.
        ``Lab.load("trunk-office", variant="wrong-password")``.
        """
        path = find_lab_file(lab)
        if variant is not None:
            overrides = merge_overrides(load_spec(path).variant(variant), overrides or {})
        return cls(load_spec(path, overrides), track=track, name=name, lab_file=path,
                   overrides=overrides)

    @classmethod
    def attach(cls, name: str | None = None) -> Lab:
        """The running lab recorded under ``name`` (or the only one running)."""
        record = _find_record(name)
        overrides = record.info.get("overrides") or None
        lab = cls(load_spec(record.lab_file, overrides), track=record.track, name=record.name,
                  lab_file=Path(record.lab_file), overrides=overrides)
        lab.record = record
        lab.credentials = Credentials(**record.info["credentials"])
        lab.services = lab._make_services(build_images=False, progress=False)
        by_name = {p.name: p for p in record.processes}
        for service in lab.services:
            if service.name in by_name:
                service.attach(by_name[service.name])
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

    def namespace(self, host_or_network: str) -> Namespace:
        return Namespace(namespace_prefix(self.name) + host_or_network)

    # -- its parts --------------------------------------------------------------------------
    def _service_of(self, kind: type[Service]) -> Service | None:
        return next((s for s in self.services if isinstance(s, kind)), None)

    @property
    def pbx(self) -> Asterisk | None:
        """The lab's Asterisk (not the PSTN's exchange, an Asterisk too)."""
        return next((s for s in self.services if type(s) is Asterisk), None)

    @property
    def fail2ban(self) -> Fail2ban | None:
        """fail2ban beside the PBX, when the lab file declares ``pbx.fail2ban``."""
        return self._service_of(Fail2ban)

    @property
    def carrier(self) -> Kamailio | None:
        """The carrier's Kamailio, when the lab file declares ``carrier:``."""
        return self._service_of(Kamailio)

    @property
    def pstn(self) -> PstnExchange | None:
        """The PSTN's exchange (an Asterisk 22), when the lab file declares ``pstn:``."""
        return self._service_of(PstnExchange)

    @property
    def dns(self) -> DnsServer | None:
        """The lab's DNS server (dnsmasq), when the lab file declares one."""
        return self._service_of(DnsServer)

    @property
    def phones(self) -> dict[str, Softphone]:
        return {s.phone_name: s for s in self.services if isinstance(s, Softphone)}

    def phone(self, name: str) -> Softphone:
        phones = self.phones
        if name not in phones:
            raise LabStateError(f"No phone {name!r} in lab {self.name}.",
                                hint=f"phones: {', '.join(phones) or 'none'}")
        return phones[name]

    def host(self, name: str) -> Host:
        """A host of the lab; an ISP box (a host with ``nat:``) comes as a :class:`NatBox`."""
        if name not in {h.name for h in self.spec.hosts}:
            raise LabStateError(f"No host {name!r} in lab {self.name}.",
                                hint=f"hosts: {', '.join(h.name for h in self.spec.hosts)}")
        spec = self.spec.host(name)
        if spec.nat is None:
            return Host(spec, self.namespace(name))
        neighbours = [self.namespace(h.name) for h in self.spec.hosts if h.name != name
                      and any(i.network == spec.nat.outside for i in h.interfaces)]
        return NatBox(spec, self.namespace(name), networks={n.name: n for n in self.spec.networks},
                      record=self.record, wan_neighbours=neighbours)

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

    def sipp(self, host: str, scenario: str, *, extension: str, secret: str | None = None,
             target: str | None = None, local_port: int = 5070, timeout: float = 15.0,
             transport: str = "udp", keys: dict[str, str] | None = None) -> SippResult:
        """Run one call of ``configs/sipp/<scenario>.xml`` from ``host`` (against the PBX
        unless ``target`` says otherwise), as ``extension`` with its secret of this run
        (pass a wrong ``secret`` to see the registrar refuse it), over ``transport``."""
        pbx = self.spec.pbx
        port = pbx.tls.port if transport == "tls" else pbx.sip_port
        run = SippRun(
            self.context(build_images=False).service_context(host, SippRun.kind,
                                                              image=tracks.TOOLS_IMAGE),
            scenario=scenario, target=target or f"{self.spec.address_of(pbx.host)}:{port}",
            address=str(self.spec.address_of(host)), user=extension,
            auth=(extension, secret if secret is not None else self.credentials.secrets[extension]),
            local_port=local_port, timeout=timeout, transport=transport, keys=keys)
        return run.run()

    def attack(self, host: str, tool: str, *, target: str | None = None, extensions: str | None = None,
               extension: str | None = None, passwords: list[str] | None = None,
               method: str = "REGISTER", timeout: float = 30.0) -> AttackResult:
        """Run a SIPVicious tool (``svmap``, ``svwar``, ``svcrack``) from ``host`` against the
        PBX (or ``target``: an address or a network of the lab), bounded in count and time
        (:mod:`labkit.services.sipvicious`); what it found."""
        run = SipviciousRun(
            self.context(build_images=False).service_context(host, SipviciousRun.kind, image=tracks.TOOLS_IMAGE),
            tool=tool, target=target or str(self.spec.address_of(self.spec.pbx.host)),
            networks=[str(n.subnet) for n in self.spec.networks], extensions=extensions,
            extension=extension, passwords=passwords, port=self.spec.pbx.sip_port, method=method,
            timeout=timeout)
        return run.run()

    def tls_probe(self, host: str, *, server: str | None = None, name: str | None = None,
                  port: int | None = None, version: str | None = None,
                  cipher: str | None = None, send: str | None = None) -> TlsProbeResult:
        """What a TLS client on ``host`` sees of the PBX's TLS port (``openssl s_client``,
        trusting the lab CA): verify result, alert, version, cipher.  ``name`` is the name the
        client dials and checks (default: the address it connects to is checked as-is);
        ``send`` is written once connected (e.g. a SIP request, to have something to decrypt)."""
        pbx = self.spec.pbx
        probe = TlsProbe(self.context().service_context(host, TlsProbe.kind, image=tracks.TOOLS_IMAGE),
                         address=server or str(self.spec.address_of(pbx.host)),
                         port=port or pbx.tls.port, name=name, version=version, cipher=cipher,
                         send=send)
        return probe.run()

    # -- up -----------------------------------------------------------------------------
    def up(self, *, build_images: bool = True, progress: bool = True,
           capture: tuple[str, ...] = (), capture_name: str = "lab",
           wait_registered: bool = True) -> Lab:
        """Bring the whole lab up; on any failure take down what was made, then raise.

        ``capture=("lan",)`` starts a capture on those hosts/networks once the network
        exists and *before* any daemon starts, so registrations are in it (as ipmininet's
        captures do); it is ``lab.captures[0]`` and stops at ``down`` or ``.stop()``.
        """
        _require_root()
        # Images first (building one takes a while, and may fail): nothing exists yet.
        for image in self.images_needed():
            images.ensure_image(image, build=build_images, progress=progress)
        self._claim()
        try:
            self._draw_credentials()
            self.services = self._make_services(build_images=False, progress=False)
            self._build_network()
            if capture:
                self.capture(*capture, name=capture_name).start()
            self._write_lab_files()
            for service in self.services:
                service.render()
            check_ports(self.services)
            for wave in start_order(self.services):
                for service in wave:
                    service.start()
                for service in wave:
                    service.wait_ready()
            if wait_registered:  # a lab broken on purpose (NAT, TLS) may not register yet
                self._check_tls_listens()
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
                                track=self.track.name, owner_pid=os.getpid())
        self.record.info["overrides"] = self.overrides
        self.record.add_temp_dir(self.run_dir)
        self.owner = True
        atexit.register(self._down_at_exit)

    def _draw_credentials(self) -> None:
        """The run's secrets: the lab file's, else random ones (never ``secret=test``)."""
        self.credentials = Credentials(secrets=draw_secrets(self.spec), ami_user=AMI_USER,
                                       ami_secret=secrets.token_urlsafe(16))
        self.record.info["credentials"] = {"secrets": self.credentials.secrets,
                                           "ami_user": AMI_USER,
                                           "ami_secret": self.credentials.ami_secret}
        self.record.save()

    def context(self, *, build_images: bool = False, progress: bool = False) -> LabContext:
        """What service modules are given (see :class:`~labkit.services.base.LabContext`)."""
        tls = self.spec.pbx.tls if self.uses_tls else None
        return LabContext(
            name=self.name, spec=self.spec, track=self.track, credentials=self.credentials,
            record=self.record, dir=self.dir, etc_dir=self.etc_dir,
            rootfs=lambda image: images.ensure_image(image, build=build_images, progress=progress),
            pki_dir=self.pki_dir if tls else None,
            keylog_dir=self.keylog_dir if tls and tls.keylog else None)

    @property
    def uses_tls(self) -> bool:
        return "tls" in self.spec.pbx.transports

    @property
    def pki_dir(self) -> Path:
        """The lab CA of this run (``ca.crt`` for clients, ``ca.key`` kept private)."""
        return self.config_dir / "pki"

    @property
    def keylog_dir(self) -> Path:
        """The TLS session keys the lab's programs wrote (one ``<program>.keys`` each)."""
        return self.captures_dir / "tls-keys"

    def images_needed(self) -> set[str]:
        """The images this lab's services run from (the service modules say which)."""
        wanted: set[str] = set()

        def note(image: str) -> Path:
            wanted.add(image)
            return Path("/nonexistent")
        context = self.context()
        dry_run = Credentials(secrets=draw_secrets(self.spec), ami_user=AMI_USER, ami_secret="")
        _provide(dataclasses.replace(context, rootfs=note, credentials=self.credentials or dry_run))
        return wanted

    def _make_services(self, *, build_images: bool, progress: bool) -> list[Service]:
        made = _provide(self.context(build_images=build_images, progress=progress))
        pbx = next((s for s in made if type(s) is Asterisk), None)
        pbx_phones = {p.name for p in self.spec.phones}
        for phone in made:
            if isinstance(phone, Softphone) and pbx is not None and phone.phone_name in pbx_phones:
                # Re-registering waits for the PBX to drop the old binding (see
                # Softphone.register_again): the phone asks its registrar through this.
                phone.registrar_holds = _holds(pbx, phone.extension)
        return made

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
            if host.firewall is not None:
                self.firewall(host.name).apply()

    def firewall(self, host: str) -> HostFirewall:
        """The nftables firewall of ``host`` (its lab file's ``firewall:``): rules, counters."""
        spec = self.spec.host(host)
        if spec.firewall is None:
            raise LabStateError(f"Host {host} has no firewall in lab {self.name}.",
                                hint="add a firewall: section to the host in the lab file")
        sources = {h.name: str(h.interfaces[0].address) for h in self.spec.hosts}
        return HostFirewall(host, self.namespace(host), spec.firewall, sources)

    def _write_lab_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_hosts_files()
        if self.uses_tls:
            make_lab_ca(self.pki_dir, self.name)

    def _write_hosts_files(self) -> None:
        """The lab's ``hosts`` and ``resolv.conf``, and the same per host (``by-host/<host>/``)
        with the host's own entries of the lab file's ``etc_hosts`` added (rewritten in place
        on a reconfigure: the sandboxes bind the files, not copies)."""
        spec = self.spec
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        hosts += [f"{h.interfaces[0].address}\t{h.name}.{self.name}.test {h.name}" for h in spec.hosts]
        # No resolver outside the lab: the lab's DNS server if it has one, else the host's
        # own loopback, where queries fail at once.
        nameserver = spec.address_of(spec.dns.host) if spec.dns else "127.0.0.1"
        resolv = f"nameserver {nameserver}\noptions timeout:1 attempts:1\n"
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        (self.etc_dir / "hosts").write_text("\n".join(hosts) + "\n")
        (self.etc_dir / "resolv.conf").write_text(resolv)
        for host in spec.hosts:
            own = self.etc_dir / HOSTS_BY_HOST / host.name
            own.mkdir(parents=True, exist_ok=True)
            extra = [f"{address}\t{name}\t# etc_hosts in the lab file"
                     for name, address in spec.etc_hosts.get(host.name, {}).items()]
            (own / "hosts").write_text("\n".join(hosts + extra) + "\n")
            (own / "resolv.conf").write_text(resolv)

    def _check_tls_listens(self) -> None:
        if self.uses_tls and self.pbx is not None and not self.pbx.tls_listens():
            problems = self.pbx.tls_problems()
            raise DaemonError(
                f"Asterisk does not accept TLS on port {self.spec.pbx.tls.port}.",
                cause="its log says: " + " / ".join(problems[-3:]) if problems else
                      "its TLS transport did not load (see the log)",
                hint=f"check the certificate and key files and their owner and mode "
                     f"(config/{self.spec.pbx.host}/tls, Asterisk runs as the user asterisk); "
                     f"log: {self.pbx.log_dir / 'messages'}; for a lab broken on purpose: "
                     "up(wait_registered=False)")

    def reconfigure(self, pbx: dict | None = None, **sections) -> None:
        """Change settings of the running lab, e.g. ``{"nat": {"symmetric": True}}`` for the
        PBX, or another section by its name (``dns=``, ``carrier=``, ``pstn=``, ``etc_hosts=``);
        a ``None`` removes a key (back to its default).  What changed is rendered again (same
        secrets) and restarted; Asterisk always is."""
        changes = {**sections, **({"pbx": pbx} if pbx is not None else {})}
        self._apply(merge_overrides(self.overrides, changes), restart_pbx=True)

    def switch(self, variant: str | None) -> None:
        """Run the lab as one of its file's named variants (``None``: as the file says),
        e.g. ``lab.switch("wrong-password")`` then ``lab.switch(None)`` to fix it; the
        services whose sections differ are rendered again and restarted."""
        spec = load_spec(self.lab_file)
        self._apply(spec.variant(variant) if variant else {}, restart_pbx=False)

    def _apply(self, overrides: dict, *, restart_pbx: bool) -> None:
        old, spec = self.spec, load_spec(self.lab_file, overrides)
        changed = {name for name in type(spec).model_fields
                   if getattr(old, name) != getattr(spec, name)}
        self.spec, self.overrides = spec, overrides
        self.record.info["overrides"] = overrides
        self.record.save()
        self._write_hosts_files()
        if "hosts" in changed:  # a firewall switched on, off or changed: its rules again
            for old_host, host in zip(old.hosts, spec.hosts):
                if host.firewall is not None:
                    self.firewall(host.name).apply()
                elif old_host.firewall is not None:
                    HostFirewall(host.name, self.namespace(host.name), old_host.firewall, {}).remove()
        # In start order (the DNS server and the carrier before the PBX, which registers at
        # boot): each service whose lab file sections changed is rendered again and restarted.
        for service in [s for wave in start_order(self.services) for s in wave]:
            watched = set(getattr(service, "sections", ()))
            if watched & changed or (restart_pbx and service is self.pbx):
                service.reconfigure(spec)

    def talk(self, caller: str, target: str, callee: str, *, seconds: float = 3.0,
             answer_timeout: float = 20.0) -> Conversation:
        """A call from phone ``caller`` to ``target`` (an extension or a number) that phone
        ``callee`` answers — through the trunk and the PSTN too — measured from both ends,
        like :func:`labkit.lab.conversation.talk`.  Each correlation is taken on the last
        ``seconds`` of what a phone received, after the answer; ``heard`` keeps everything
        it received, early media (an announcement before the answer) included."""
        phones = [self.phone(caller), self.phone(callee)]
        earlier = {p.phone_name: set(p.record_dir.glob("dump-*-dec.wav")) for p in phones}
        call = phones[0].call(target)
        conversation = Conversation(caller, callee, established=False)
        try:
            call.wait_established(answer_timeout)
            conversation.established = True
            time.sleep(seconds)
            conversation.channel_stats = self.pbx.channel_stats()
        except LabkitError as exc:
            conversation.error = exc.message
        finally:
            for phone in phones:  # both ends: a lost BYE must not keep a call open
                try:
                    phone.command("hangup")
                except PhoneError:
                    pass
            time.sleep(0.3)  # sndfile writes the WAV header when the call's audio closes
        for listener, speaker in ((phones[0], phones[1]), (phones[1], phones[0])):
            heard = _new_recordings(listener.record_dir, earlier[listener.phone_name])
            conversation.heard[listener.phone_name] = heard
            said, _ = read_wav(speaker.audio_file)
            tail = heard[-int((seconds - 0.5) * 8000):] if conversation.established else heard[:0]
            conversation.correlation[listener.phone_name] = correlate(tail, said) if tail.size else 0.0
        return conversation

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
        tls = self.pbx.tls_problems()[-2:] if self.uses_tls else []
        raise ReadyTimeout(f"Extensions {missing} did not register within {timeout:g} s.",
                           cause=("TLS failed — Asterisk's log: " + " / ".join(tls)) if tls else
                                 "wrong credentials, a network problem, or the PBX refused them — "
                                 "or a lab broken on purpose (home-pbx starts without port forwards)",
                           hint=f"`labkit cli '{self.track.commands.contacts}'`; logs in "
                                f"{self.logs_dir}; to bring up a lab whose phones cannot register "
                                "yet: `labkit up LAB --no-wait` (Python: up(wait_registered=False))")

    def _all_services(self) -> list[Service]:
        dumpcaps = [d for capture in self.captures for d in capture.dumpcaps]
        return [*dumpcaps, *self.services]

    def status(self) -> dict:
        """What runs: hosts with addresses, daemons with pids, registrations, boxes."""
        daemons = {s.name: (f"running (pid {s.process_record.pid})" if s.running() else "stopped")
                   for s in self._all_services()}
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
        trunk = {}
        if self.spec.pbx.trunk is not None and self.pbx is not None and self.pbx.running():
            try:  # the trunk's registration with the carrier, as the CLI shows it
                trunk = {self.spec.pbx.trunk.name: self.pbx.trunk_state() or "not registering"}
            except Exception as exc:
                trunk = {"error": str(exc)}
        return {
            "lab": self.name, "track": self.track.name, "dir": str(self.dir),
            "hosts": {h.name: [str(i.address) for i in h.interfaces] for h in self.spec.hosts},
            "daemons": daemons, "registrations": registrations, "boxes": boxes, "trunk": trunk,
        }

    # -- down -----------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every service, delete every namespace and temporary dir this lab recorded.

        Services stop in the reverse of their start waves (phones, then Asterisk, then the
        carrier and the DNS), each wave in parallel: a daemon's goodbye (a phone's or a
        trunk's un-REGISTER) is answered instead of waited for until its stop timeout."""
        dumpcaps = [d for capture in self.captures for d in capture.dumpcaps]
        try:
            waves = list(reversed(start_order(self.services)))
        except DaemonError:
            waves = [self.services]
        waves = [[*dumpcaps, *waves[0]], *waves[1:]] if waves else [dumpcaps]
        for wave in waves:
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(wave))) as pool:
                for future in [pool.submit(s.stop) for s in wave]:
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

    def __enter__(self) -> Lab:
        if not self.owner:
            self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def __repr__(self) -> str:
        return f"<Lab {self.name} track={self.track.name} dir={self.dir}>"


def _provide(context: LabContext) -> list[Service]:
    return [service for provider in services.PROVIDERS for service in provider.provide(context)]


def _new_recordings(directory: Path, earlier: set[Path], wait: float = 8.0) -> np.ndarray:
    """Everything baresip recorded in files that are not in ``earlier`` (one per call, or two
    when early media and the answered call come apart), oldest first.  sndfile writes a WAV
    header when the call's audio closes, which takes longer on a busy machine: a file that
    cannot be read yet is waited for, up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        files = sorted(set(directory.glob("dump-*-dec.wav")) - earlier, key=lambda p: p.stat().st_mtime)
        parts = []
        for path in files:
            try:
                parts.append(read_wav(path)[0])
            except LabkitError:
                break  # not finished yet
        if len(parts) == len(files) or time.monotonic() > deadline:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        time.sleep(0.1)


def _holds(pbx: Asterisk, extension: str):
    """A check asking ``pbx`` whether ``extension`` is registered."""
    return lambda: extension in pbx.registered()


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
