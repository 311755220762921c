"""The daemon lifecycle: start in a sandbox inside a namespace, wait ready, stop, escalate.

Every daemon of a lab (Asterisk, a softphone, a capture, …) runs from a lab image inside
its host's network namespace, in a bubblewrap sandbox:

* the image's root filesystem bound read-only at ``/`` (one image serves every lab);
* private ``/proc`` (its own pid namespace: the daemon is pid 2, bwrap's init pid 1),
  private ``/tmp`` and ``/run``, its own hostname;
* its rendered configuration bound read-only, its state directory read-write.

All mounts live in the sandbox's own mount namespace, so nothing is visible on the host
afterwards.  The launcher (``ip netns exec … bwrap …``) is a child in a new session, not
tied to the Python process: a lab brought up by ``labkit up`` outlives the command.  Its pid
and start time are recorded before we wait on it.

Stopping follows the Asterisk testsuite: ask politely (the daemon's own command), then
SIGTERM to the daemon, then SIGKILL to the sandbox's init, which takes the whole pid
namespace down with it.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from labkit.errors import DaemonError, EnvironmentProblem, PortInUse, ReadyTimeout
from labkit.net.netns import Namespace
from labkit.state import LabRecord, ProcessRecord


@dataclass
class Sandbox:
    """A bubblewrap command line: an image root plus the lab's files bound into it."""

    rootfs: Path
    hostname: str = "lab"
    ro_binds: list[tuple[Path, str]] = field(default_factory=list)
    binds: list[tuple[Path, str]] = field(default_factory=list)
    tmpfs: tuple[str, ...] = ("/tmp", "/run", "/srv")
    #: The lab's hosts file and resolver configuration, bound over the image's.
    etc_dir: Path | None = None
    chdir: str = "/"
    #: Its own pid namespace (the daemon is pid 2).  SIPp runs without: it builds Call-IDs
    #: and Via branches from its pid, and a pid that is always 2 makes every run look like
    #: a retransmission of the previous one to the registrar (RFC 3261 §17.2.3).
    own_pids: bool = True

    def argv(self, command: list[str]) -> list[str]:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise EnvironmentProblem("bubblewrap (bwrap) is missing: lab daemons run in it.",
                                     hint="apt-get install bubblewrap")
        argv = [bwrap, "--ro-bind", str(self.rootfs), "/", "--proc", "/proc", "--dev", "/dev",
                "--unshare-ipc", "--unshare-uts", "--hostname", self.hostname]
        if self.own_pids:
            argv.append("--unshare-pid")
        for path in self.tmpfs:
            argv += ["--tmpfs", path]
        if self.etc_dir is not None:
            # The image's resolv.conf is the build machine's; a lab must never query a
            # resolver outside the lab (and waiting for one cost Asterisk 5 s at boot).
            argv += ["--ro-bind", str(self.etc_dir / "hosts"), "/etc/hosts",
                     "--ro-bind", str(self.etc_dir / "resolv.conf"), "/etc/resolv.conf"]
        for src, dst in self.ro_binds:
            argv += ["--ro-bind", str(src), dst]
        for src, dst in self.binds:
            argv += ["--bind", str(src), dst]
        return argv + ["--chdir", self.chdir, "--"] + command


class Daemon:
    """A long-running process of a lab: subclasses say how it is ready and how it stops."""

    #: Seconds to wait for readiness, then for each stop step.
    ready_timeout = 10.0
    stop_timeout = 3.0

    def __init__(self, name: str, namespace: Namespace, sandbox: Sandbox | None, program: list[str],
                 log_path: Path, record: LabRecord):
        self.name = name
        self.namespace = namespace
        self.sandbox = sandbox
        self.program = program
        self.log_path = log_path
        self.record = record
        self.popen: subprocess.Popen | None = None
        self.process_record: ProcessRecord | None = None

    # -- what subclasses provide ---------------------------------------------------------
    def ready(self) -> bool:
        """True once the daemon serves requests (default: it is running)."""
        return True

    def request_stop(self) -> None:
        """Ask the daemon to stop by its own means (e.g. ``core stop gracefully``)."""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        # No sandbox: a host tool (dumpcap) that must see the namespace as it is.
        inner = self.sandbox.argv(self.program) if self.sandbox else self.program
        argv = self.namespace.exec_argv(inner)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.process_record = ProcessRecord.of(self.name, self.popen.pid, argv)
        self.record.add_process(self.process_record)

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
                    _signal(daemon, signal.SIGTERM)
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


def log_tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


def kill_tree(pid: int) -> None:
    """SIGKILL a recorded process and every descendant (children first found, then killed)."""
    try:
        root = psutil.Process(pid)
        family = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for proc in family:
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(family, timeout=3)


def kill_recorded(record: ProcessRecord) -> bool:
    """Kill a recorded process tree if it is still the process we started."""
    proc = record.process()
    if proc is None:
        return False
    kill_tree(proc.pid)
    return True


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
