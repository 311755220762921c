"""podman as the classroom uses it: the kit's own storage, run directory and settings.

Every call goes through :func:`run`, which gives podman

* ``--root <cache>/classroom/storage`` and ``--runroot /run/labkit-classroom``: the kit's
  images, containers and volumes live apart from anything else podman holds on the machine,
  and removing the classroom removes them (``podman system reset`` is never needed);
* ``CONTAINERS_CONF=<cache>/classroom/containers.conf`` (:data:`CONTAINERS_CONF`): the runtime,
  the ulimits and the network configuration directory this machine needs, without editing
  ``/etc/containers``.

podman is a daemonless tool: nothing keeps running between calls, except the containers the
kit starts (their ``conmon`` monitors), which :mod:`labkit.classroom.container` records and
removes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from labkit.errors import EnvironmentProblem, LabkitError
from labkit.images.build import cache_dir

INSTALL_HINT = "apt-get install podman runc (or `sudo ./kit setup`)"
#: podman's run directory for the kit's containers (a tmpfs: gone at reboot, as podman expects).
RUN_DIR = Path("/run/labkit-classroom")

#: podman's settings for the kit's containers only (read through the CONTAINERS_CONF variable).
CONTAINERS_CONF = """\
# labkit classroom: podman's settings for the kit's own containers (CONTAINERS_CONF).
[containers]
# podman asks for nofile=1048576 by default; hosts (and CI sandboxes) with a lower hard limit
# then refuse every container.  A student's lab needs a few thousand descriptors at most.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun 1.8 (Debian 12) cannot start containers on hosts with hybrid cgroups; runc can.
runtime = "runc"

[network]
# The kit's internal networks, apart from the host's (CNI files, one per network).
network_config_dir = "{networks}"
"""


class PodmanError(LabkitError):
    """A podman command the classroom needs failed (the message quotes podman)."""


def root() -> Path:
    """Everything podman keeps for the classroom: ``<cache>/classroom``."""
    return cache_dir() / "classroom"


def storage_dir() -> Path:
    return root() / "storage"


def networks_dir() -> Path:
    return root() / "networks"


def config_file() -> Path:
    return root() / "containers.conf"


def check_installed() -> None:
    """podman and runc are on the PATH, or a clear error with the install command."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        raise EnvironmentProblem(f"{' and '.join(missing)} not found: the classroom runs each student "
                                 "in a podman container.", hint=INSTALL_HINT)
    if os.geteuid() != 0:
        raise EnvironmentProblem("The classroom needs root: its containers create network namespaces "
                                 "for the labs.", hint="run it with sudo")


def environment() -> dict[str, str]:
    """The environment of a podman call: the kit's containers.conf (written if needed)."""
    conf = config_file()
    text = CONTAINERS_CONF.format(networks=networks_dir())
    if not conf.is_file() or conf.read_text() != text:
        networks_dir().mkdir(parents=True, exist_ok=True)
        conf.write_text(text)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def argv(*args: str) -> list[str]:
    """The full podman command line for ``args``, on the kit's storage."""
    return ["podman", "--root", str(storage_dir()), "--runroot", str(RUN_DIR), *args]


def run(*args: str, timeout: float = 600, check: bool = True, stdin: str | None = None
        ) -> subprocess.CompletedProcess:
    """Run ``podman ARGS`` on the kit's storage; a failure raises :class:`PodmanError` with
    what podman said."""
    check_installed()
    try:
        proc = subprocess.run(argv(*args), input=stdin, capture_output=True, text=True,
                              env=environment(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PodmanError(f"podman {args[0]} did not finish in {timeout:.0f} s.",
                          hint="`podman ps` may show a container that does not stop; "
                               "`labkit classroom clean` removes what the kit made") from None
    if check and proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise PodmanError(f"podman {' '.join(args[:2])} failed (status {proc.returncode}): " + " / ".join(said))
    return proc


def image_exists(tag: str) -> bool:
    return run("image", "exists", tag, check=False).returncode == 0


def images(repository: str) -> list[dict]:
    """The kit's images of ``repository`` (``podman images`` rows: Id, Names, Size, Created)."""
    out = run("images", "--format", "json", "--filter", f"reference={repository}").stdout
    return json.loads(out or "[]")
