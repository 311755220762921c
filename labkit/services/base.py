"""The lifecycle every daemon of a lab follows, and the small context it is given.

A :class:`Service` is one daemon (Asterisk, a baresip phone, dnsmasq, dumpcap, SIPp …).
Each declares, in its own module:

* where it runs: a host of the lab (its network namespace) and an image (:class:`ServiceContext`);
* the ports it binds (:meth:`Service.ports`), checked before anything starts;
* the files it renders into its configuration directory (:meth:`Service.render`);
* how it starts (:meth:`Service.program`, in a bubblewrap :class:`~labkit.services.sandbox.Sandbox`);
* when it is ready (:meth:`Service.ready`, polled with a deadline, as the Asterisk testsuite
  waits for ``core waitfullybooted``);
* how it stops (:meth:`Service.request_stop`: its own polite way; then SIGTERM to the
  daemon, then SIGKILL to the sandbox, which takes its whole pid namespace down);
* what it needs first (:attr:`Service.needs`: kinds of services that must be ready before
  it starts, when the lab has them).

A service gets a :class:`ServiceContext` — its namespace, its directories, the lab's record
— never the whole lab: services do not import :mod:`labkit.lab`, so the arrows point one
way (lab → services → net, spec, images).

The launcher (``ip netns exec … bwrap …``) is a child in a new session, not tied to the
Python process: a lab brought up by ``labkit up`` outlives the command.  Its pid and start
time are recorded before anything waits on it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import psutil

from labkit.errors import DaemonError, PortInUse, ReadyTimeout
from labkit.net.netns import Namespace
from labkit.services.processes import kill_tree, log_tail, send_signal
from labkit.services.sandbox import Sandbox
from labkit.spec.model import LabSpec
from labkit.state import LabRecord, ProcessRecord, namespace_prefix
from labkit.tracks import Track


@dataclass(frozen=True)
class Port:
    """A port a service binds in its host's namespace."""

    transport: Literal["udp", "tcp"]
    number: int
    purpose: str


@dataclass(frozen=True)
class ServiceContext:
    """What a service knows of its lab: its place and its directories, nothing more."""

    lab: str
    #: The host (or, for a capture, the network) it runs on.
    host: str
    namespace: Namespace
    #: The image root filesystem it runs from; None for host tools (dumpcap).
    rootfs: Path | None
    #: Rendered files: kept after the lab stops, shown in notebooks.
    config_dir: Path
    #: Databases, sockets, spools: under the lab's ``run/``, removed when it stops.
    state_dir: Path
    log_dir: Path
    #: What it received and keeps for the student (a phone's recorded audio, captures).
    recordings_dir: Path
    #: The lab's ``hosts`` and ``resolv.conf``.
    etc_dir: Path
    record: LabRecord
    #: The lab CA (``ca.crt``, ``ca.key``) when the lab uses TLS.
    pki_dir: Path | None = None
    #: Where TLS programs write their session keys (labkit.services.keylog), if they do.
    keylog_dir: Path | None = None

    def tls_binds(self, log_name: str, owner: tuple[int, int] = (0, 0)
                  ) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]], dict]:
        """Read-only binds, read-write binds and environment that give a sandboxed TLS program
        the lab CA (``/srv/pki/ca.crt``) and, when the lab keeps key logs, the preload library
        and its key log file (made here for ``owner``, uid and gid, who may not create files
        in the lab directory)."""
        from labkit.services import keylog
        ro, rw, env = [], [], {}
        if self.pki_dir is not None:
            ro.append((self.pki_dir / "ca.crt", "/srv/pki/ca.crt"))
        if self.keylog_dir is not None:
            self.keylog_dir.mkdir(parents=True, exist_ok=True)
            keys = self.keylog_dir / f"{log_name}.keys"
            keys.touch(mode=0o600)
            os.chown(keys, *owner)
            ro.append((keylog.library(), keylog.IN_SANDBOX))
            rw.append((keys, f"{keylog.KEYS_IN_SANDBOX}/{log_name}.keys"))
            env = keylog.environment(log_name)
        return ro, rw, env


@dataclass(frozen=True)
class Credentials:
    """Secrets drawn for one lab run: digest passwords per extension, the AMI login."""

    secrets: dict[str, str]
    ami_user: str
    ami_secret: str


@dataclass(frozen=True)
class LabContext:
    """What a service module reads to decide which services a lab has, and where.

    Each service module has ``provide(lab: LabContext) -> list[Service]``; the running lab
    builds one of these, asks every module in :data:`labkit.services.PROVIDERS`, and runs
    what they return.  Directories follow the lab directory's layout: ``config/<name>/``
    (kept), ``run/<name>/`` (removed at ``down``), ``logs/<name>/``.
    """

    name: str
    spec: LabSpec
    track: Track
    credentials: Credentials
    record: LabRecord
    dir: Path
    etc_dir: Path
    #: The root filesystem of an image, by image name (built or extracted on demand).
    rootfs: Callable[[str], Path]
    pki_dir: Path | None = None
    keylog_dir: Path | None = None

    def service_context(self, host: str, kind: str, *, image: str | None,
                        directory: str | None = None) -> ServiceContext:
        """The context of a ``kind`` service on ``host``, running from ``image`` (None: a
        host tool).  Its configuration, logs and recordings go in directories named
        ``directory`` (default: the host's name); its state in ``run/<directory>/<kind>``,
        its own even when another service shares the host."""
        directory = directory or host
        return ServiceContext(
            lab=self.name, host=host, namespace=Namespace(namespace_prefix(self.name) + host),
            rootfs=self.rootfs(image) if image else None,
            config_dir=self.dir / "config" / directory,
            state_dir=self.dir / "run" / directory / kind,
            log_dir=self.dir / "logs" / directory, recordings_dir=self.dir / "recordings" / directory,
            etc_dir=self.etc_dir, record=self.record, pki_dir=self.pki_dir, keylog_dir=self.keylog_dir)


class Service:
    """One daemon of a lab; a subclass per kind of daemon (one module each)."""

    #: The kind of daemon, used in its name (``pbx/asterisk``) and in other services' needs.
    kind: ClassVar[str] = ""
    #: Kinds of services that must be ready before this one starts (ignored when absent).
    needs: ClassVar[tuple[str, ...]] = ()
    #: Seconds to wait for readiness, then for each stop step.
    ready_timeout: ClassVar[float] = 10.0
    stop_timeout: ClassVar[float] = 3.0
    #: What the program reads on its standard input (None: nothing, /dev/null).
    stdin_data: bytes | None = None

    def __init__(self, context: ServiceContext, name: str | None = None):
        self.context = context
        self.name = name or f"{context.host}/{self.kind}"
        self.namespace = context.namespace
        self.record = context.record
        self.popen: subprocess.Popen | None = None
        self.process_record: ProcessRecord | None = None

    # -- what subclasses declare -----------------------------------------------------------
    def ports(self) -> list[Port]:
        """The ports it binds in its host's namespace."""
        return []

    def render(self) -> None:
        """Write its configuration files (called once, before the lab starts anything)."""

    def program(self) -> list[str]:
        """The command line, as seen inside the sandbox."""
        raise NotImplementedError

    @property
    def sandbox(self) -> Sandbox | None:
        """Its bubblewrap sandbox; None runs the program directly in the namespace."""
        return None

    @property
    def log_path(self) -> Path:
        return self.context.log_dir / f"{self.kind}.log"

    def ready(self) -> bool:
        """True once it serves requests (default: it is running)."""
        return True

    def request_stop(self) -> None:
        """Ask it to stop by its own means (e.g. ``core stop gracefully``)."""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        sandbox = self.sandbox
        inner = sandbox.argv(self.program()) if sandbox else self.program()
        argv = self.namespace.exec_argv(inner)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stdin = subprocess.DEVNULL if self.stdin_data is None else subprocess.PIPE
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdin=stdin, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.process_record = ProcessRecord.of(self.name, self.popen.pid, argv)
        self.record.add_process(self.process_record)
        if self.stdin_data is not None:
            try:
                self.popen.stdin.write(self.stdin_data)
                self.popen.stdin.close()
            except BrokenPipeError:
                pass  # it exited at once: its log says why

    def attach(self, process_record: ProcessRecord) -> None:
        """Take over a daemon started by another labkit process (``labkit up`` earlier)."""
        self.process_record = process_record

    def wait_ready(self, timeout: float | None = None) -> None:
        timeout = timeout or self.ready_timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise DaemonError(
                    f"{self.name} exited during start-up (exit status {self.exit_status()}).",
                    cause=self._log_cause(),
                    hint=f"read its log: {self.log_path}",
                )
            if self.ready():
                return
            time.sleep(0.05)
        raise ReadyTimeout(f"{self.name} did not become ready within {timeout:g} s.",
                           cause=self._log_cause(), hint=f"read its log: {self.log_path}")

    def _process(self) -> psutil.Process | None:
        if self.popen is not None:
            return psutil.Process(self.popen.pid) if self.popen.poll() is None else None
        return self.process_record.process() if self.process_record else None

    def running(self) -> bool:
        return self._process() is not None

    def exit_status(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def payload(self) -> psutil.Process | None:
        """The daemon itself: the child of the sandbox's init (launcher → init → daemon)."""
        launcher = self._process()
        if self.sandbox is None:
            return launcher  # `ip netns exec` execs the program: same pid
        try:
            init = launcher.children() if launcher else []
            daemon = init[0].children() if init else []
            return daemon[0] if daemon else None
        except psutil.Error:
            return None

    def stop(self) -> None:
        """Polite request, then SIGTERM to the daemon, then SIGKILL to the sandbox."""
        if self.process_record is None:
            return
        if self.running():
            try:
                self.request_stop()
            except Exception:  # a daemon that cannot even be asked is handled below
                pass
            if not self._wait_exit(self.stop_timeout):
                daemon = self.payload()
                if daemon is not None:
                    send_signal(daemon, signal.SIGTERM)
                if not self._wait_exit(self.stop_timeout):
                    kill_tree(self.process_record.pid)
                    self._wait_exit(self.stop_timeout)
        self.record.forget_process(self.process_record.pid)
        self.process_record = None

    def _wait_exit(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        # Not our child (attached to a lab another process started): poll.  The launcher
        # may linger as a zombie of whichever process reaps orphans here, so "gone" means
        # exited *or* zombie (ProcessRecord.process() returns None for both).
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process() is None:
                return True
            time.sleep(0.02)
        return False

    def _log_cause(self) -> str | None:
        tail = log_tail(self.log_path, 6)
        if "Address already in use" in tail or "Unable to bind" in tail:
            return "a port it needs is taken: " + tail
        return f"its log ends with:\n{tail}" if tail else None

    def __repr__(self) -> str:
        state = f"pid {self.process_record.pid}" if self.process_record else "not started"
        return f"<{type(self).__name__} {self.name} {state}>"


# -- the lab's services together ------------------------------------------------------------

def check_ports(services: Iterable[Service]) -> None:
    """Every port of every service: no two services of a host on the same one, then each
    free in its namespace — a clear PortInUse before a daemon fails with a cryptic bind error."""
    services = list(services)
    owners: dict[tuple[str, str, int], Service] = {}
    for service in services:
        for port in service.ports():
            key = (service.namespace.name, port.transport, port.number)
            if key in owners:
                raise PortInUse(
                    f"{port.transport.upper()} port {port.number} on host {service.context.host} "
                    f"is wanted by both {owners[key].name} and {service.name} ({port.purpose}).",
                    cause="two services of the lab file were given the same host and port",
                    hint="give one of them another port in the lab file")
            owners[key] = service
    for service in services:
        for port in service.ports():
            ensure_port_free(service.namespace, port.number, port.transport,
                             f"{service.name} ({port.purpose})")


def ensure_port_free(namespace: Namespace, port: int, transport: str, owner: str) -> None:
    """Fail early, with a helpful message, when a port a daemon needs is already bound."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    sock = namespace.socket(socket.AF_INET, kind)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:
        holder = namespace.run(["ss", "-Hlnp", f"sport = :{port}"], check=False).stdout.strip()
        raise PortInUse(
            f"{transport.upper()} port {port} on host {namespace.name} is already in use; "
            f"{owner} cannot bind it.",
            cause=f"another program listens there: {holder or 'unknown'}",
            hint="stop that program, or choose another port in the lab file",
        ) from None
    finally:
        sock.close()


def start_order(services: Iterable[Service]) -> list[list[Service]]:
    """Services in waves: each wave needs only services of earlier waves.

    A need names a *kind*; a kind the lab does not have is no need (a lab without a DNS
    server starts Asterisk first).  A cycle is a programming error, reported as such.
    """
    pending = list(services)
    present = {s.kind for s in pending}
    started: set[str] = set()
    waves: list[list[Service]] = []
    while pending:
        wave = [s for s in pending if all(k in started or k not in present for k in s.needs
                                          if k != s.kind)]
        if not wave:
            names = ", ".join(f"{s.name} (needs {', '.join(s.needs)})" for s in pending)
            raise DaemonError(f"Services wait for each other in a circle: {names}.",
                              hint="a service's `needs` must not lead back to itself")
        waves.append(wave)
        pending = [s for s in pending if s not in wave]
        # A kind counts as started once none of its services is pending any more.
        started = {k for k in present if all(s.kind != k for s in pending)}
    return waves
