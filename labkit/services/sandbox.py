"""The bubblewrap sandbox every lab daemon runs in.

A daemon runs from a lab image inside its host's network namespace:

* the image's root filesystem bound read-only at ``/`` (one image serves every lab);
* private ``/proc`` (its own pid namespace: the daemon is pid 2, bwrap's init pid 1),
  private ``/tmp``, ``/run`` and ``/srv``, its own hostname and IPC;
* its rendered configuration bound read-only, its state directory read-write;
* the lab's ``/etc/hosts`` and a ``resolv.conf`` that never points outside the lab.

All mounts live in the sandbox's own mount namespace, so nothing is visible on the host
afterwards (bwrap(1)).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import EnvironmentProblem

#: The environment every sandboxed program starts with (plus what its service adds).
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


@dataclass
class Sandbox:
    """A bubblewrap command line: an image root plus the lab's files bound into it."""

    rootfs: Path
    hostname: str = "lab"
    ro_binds: list[tuple[Path, str]] = field(default_factory=list)
    binds: list[tuple[Path, str]] = field(default_factory=list)
    tmpfs: tuple[str, ...] = ("/tmp", "/run", "/srv", "/opt")
    #: The lab's hosts file and resolver configuration, bound over the image's.
    etc_dir: Path | None = None
    chdir: str = "/"
    #: Its own pid namespace (the daemon is pid 2).  SIPp runs without: it builds Call-IDs
    #: and Via branches from its pid, and a pid that is always 2 makes every run look like
    #: a retransmission of the previous one to the registrar (RFC 3261 §17.2.3).
    own_pids: bool = True
    #: Environment variables set inside (e.g. a preload library, see labkit.services.keylog).
    env: dict[str, str] = field(default_factory=dict)

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
        # bwrap makes a missing parent of a bind target mode 0700: a daemon that drops root
        # (Asterisk) could not reach what is bound there.  Make them 0755 first.
        made = set(self.tmpfs)
        for _, dst in [*self.ro_binds, *self.binds]:
            parents = [str(p) for p in reversed(Path(dst).parents) if str(p) != "/"]
            for parent in parents:
                if parent not in made and any(parent.startswith(t + "/") for t in self.tmpfs):
                    argv += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
        for src, dst in self.ro_binds:
            argv += ["--ro-bind", str(src), dst]
        for src, dst in self.binds:
            argv += ["--bind", str(src), dst]
        # Nothing of the caller's environment (a notebook's, a CI runner's) leaks in.
        argv += ["--clearenv"]
        for name, value in {**BASE_ENV, "HOSTNAME": self.hostname, **self.env}.items():
            argv += ["--setenv", name, value]
        return argv + ["--chdir", self.chdir, "--"] + command
