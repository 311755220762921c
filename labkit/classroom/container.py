"""A student's container: where one student's notebooks and labs run, apart from the others.

What a container gets, and why (the least the labs need; FEASIBILITY "A class on one machine"):

* ``--cap-add NET_ADMIN``: the labs create network namespaces, veth pairs, addresses, routes
  and nftables rules (the box's NAT, the VPS's firewall) — all inside the container's own
  network namespace;
* ``--cap-add SYS_ADMIN``: ``ip netns add`` bind-mounts the new namespace under ``/run/netns``
  and bubblewrap mounts each daemon's view of its image (mount(2) needs CAP_SYS_ADMIN);
* ``--security-opt unmask=/proc/sys``: podman masks ``/proc/sys`` read-only, and a lab's router
  must set ``net.ipv4.ip_forward`` in its namespace (``sysctl`` fails without it);
* the machine's lab images (and the TLS key log library), mounted **read-only** at the same
  path: one copy for the class, and nothing else of the cache (it holds every student's home);
* a named volume for the home (the student's work survives a restart of the container);
* an ``--internal`` network (no route out of the machine), closed to the machine itself by the
  host's nftables (:mod:`labkit.classroom.firewall`), a memory limit, a CPU share and a process
  limit.

With NET_ADMIN and SYS_ADMIN and no user namespace, a student who escapes the container is
root on the host: acceptable on a machine given to the class, not on a shared server (see
the README's "Teaching a class").

Everything made here carries the label :data:`LABEL`, in the kit's own podman storage
(:mod:`labkit.classroom.podman`): :func:`clean` removes what carries it, never anything else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from labkit.classroom import firewall, podman
from labkit.images.build import cache_dir, images_dir
from labkit.services import keylog

LABEL = "labkit.classroom=1"
CAPABILITIES = ("NET_ADMIN", "SYS_ADMIN")
PREFIX = "labkit-student-"


@dataclass(frozen=True)
class Limits:
    """What one student's container may use."""

    memory: str = "1g"     # a kernel with labkit ~250 MiB, a lab ~100 MiB, JupyterLab ~110 MiB
    cpus: float = 1.0      # a share: the labs are idle most of the time
    pids: int = 2048


def create_network(name: str) -> str:
    """An internal network for students, closed to the machine by the host's firewall
    (:mod:`labkit.classroom.firewall`: a student may add a route, not get through)."""
    podman.run("network", "create", "--internal", "--label", LABEL, name)
    try:
        firewall.close(name, bridge_of(name))
    except Exception:
        podman.run("network", "rm", "--force", name, check=False)
        raise
    return name


def bridge_of(network: str) -> str:
    """The host interface of a network (CNI names it when the network is made)."""
    return json.loads(podman.run("network", "inspect", network).stdout)[0]["network_interface"]


def start(student: str, image: str, network: str, *, limits: Limits = Limits(),
          command: tuple[str, ...] = ()) -> str:
    """Start ``student``'s container (``labkit-student-<student>``); returns its name."""
    name, home = PREFIX + student, f"{PREFIX}{student}-home"
    if podman.run("volume", "exists", home, check=False).returncode != 0:
        podman.run("volume", "create", "--label", LABEL, home)
    args = ["run", "--detach", "--name", name, "--hostname", student, "--label", LABEL,
            "--network", network,
            *(arg for cap in CAPABILITIES for arg in ("--cap-add", cap)),
            "--security-opt", "unmask=/proc/sys",
            *(arg for shared in shared_cache() for arg in ("--volume", f"{shared}:{shared}:ro")),
            "--volume", f"{home}:/home/student",
            "--memory", limits.memory, "--cpus", str(limits.cpus), "--pids-limit", str(limits.pids),
            image, *command]
    podman.run(*args, timeout=120)
    return name


def shared_cache() -> list[Path]:
    """What of the machine's cache a student's labs read: the lab images and the TLS key log
    library (compiled here once, so that containers need no compiler).  Only these: the cache
    also holds the classroom's podman storage — every student's home volume."""
    keylog.library()
    return [images_dir(), cache_dir() / "tls"]


def execute(name: str, *command: str, timeout: float = 300, check: bool = True):
    """Run a command in a running container (as its root)."""
    return podman.run("exec", name, *command, timeout=timeout, check=check)


def ours() -> dict[str, list[str]]:
    """The containers, volumes and networks the classroom made (by their label)."""
    def names(*listing: str) -> list[str]:
        return podman.run(*listing, "--filter", f"label={LABEL}", check=False).stdout.split()
    return {"containers": names("ps", "--all", "--format", "{{.Names}}"),
            "volumes": names("volume", "ls", "--format", "{{.Name}}"),
            "networks": names("network", "ls", "--format", "{{.Name}}")}


def clean() -> dict[str, list[str]]:
    """Remove every container, volume and network the classroom made; returns what it removed."""
    found = ours()
    for name in found["containers"]:
        podman.run("rm", "--force", "--time", "5", name, check=False)
    for name in found["volumes"]:
        podman.run("volume", "rm", "--force", name, check=False)
    for name in found["networks"]:
        podman.run("network", "rm", "--force", name, check=False)
    for table in firewall.tables():  # the networks' tables, and any a crash left behind
        firewall.drop_table(table)
    return found
