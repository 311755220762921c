"""The student image: Debian with the kit, JupyterLab and the notebooks, for one container per student.

Built offline from what the registries give, like the lab images (:mod:`labkit.images`):
no container registry is needed, and pip never runs inside a build that could not reach PyPI.

1. On the host, ``pip download`` fetches binary wheels of the kit's pinned dependencies for the
   image's Python (:data:`TARGET_PYTHON`: Debian 12's ``python3``; ``--python-version`` keeps
   out releases that require a newer one), and ``pip wheel`` builds the kit itself; they are
   staged with the notebooks and the start script in ``<cache>/classroom/inputs``.
2. mmdebstrap builds a Debian root filesystem (:data:`PACKAGES`: the host tools the labs use)
   whose hooks copy the staged files in, make a virtualenv ``/opt/labkit-venv`` and install the
   wheels from there (``--no-index``).  The recipe's key covers the packages, the hooks and the
   digests of the staged files: any change names a new image.
3. ``podman import`` turns the tarball into the image ``localhost/labkit-student:<key>``
   (:data:`REPOSITORY`) in the kit's podman storage (:mod:`labkit.classroom.podman`), with its
   command, entry point and environment; a container of it then says the versions it holds.

The lab images themselves are not copied in: a student container mounts the machine's image
cache read-only (:mod:`labkit.classroom.container`), so fifty students share one copy.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from labkit.classroom import podman
from labkit.errors import EnvironmentProblem, ImageError
from labkit.images.build import Progress, run_mmdebstrap
from labkit.images.recipes import BASE_HOOKS, Recipe

REPOSITORY = "localhost/labkit-student"
SUITE = "bookworm"
MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
#: Debian 12's python3 (3.11.2): the wheels are chosen for it, and the built image is checked.
TARGET_PYTHON = "3.11.2"
#: The host tools the kit drives inside a student's container (the same list as ``./kit``'s,
#: less what only builds images or compiles: the lab images come from the host's cache).
PACKAGES = ("python3", "python3-venv", "iproute2", "bubblewrap", "tshark", "espeak-ng", "nftables",
            "iptables", "conntrack", "dnsutils", "procps", "openssl", "ca-certificates", "zstd", "tini")
#: What pip installs into the image: the kit with JupyterLab and the hub's single-user server.
REQUIREMENT = "labkit[notebooks,singleuser]"
VENV = "/opt/labkit-venv"
NOTEBOOKS = "/opt/labkit/notebooks"
HOME = "/home/student"
START = "/usr/local/bin/labkit-student-start"

#: The start script: the notebooks go into the student's home once (a volume: their work
#: survives a restart, and a new version of the kit never overwrites it), then the command runs.
START_SCRIPT = f"""\
#!/bin/sh
# labkit student container: copy the kit's notebooks into the home once, then run the command.
set -e
source="${{LABKIT_NOTEBOOKS_SOURCE:-{NOTEBOOKS}}}"
if [ ! -e "$HOME/notebooks" ]; then
    mkdir -p "$HOME"
    cp -R "$source" "$HOME/notebooks"
fi
exec "$@"
"""


@dataclass(frozen=True)
class StudentImage:
    """A built student image: its tag and what it holds."""

    tag: str
    key: str
    versions: dict[str, str]
    reused: bool


def project_root() -> Path:
    """The kit's repository (the image is built from it: its notebooks, its pinned project)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "notebooks").is_dir():
        raise EnvironmentProblem(f"No kit repository at {root}: the student image is built from the "
                                 "repository (its pyproject.toml and notebooks/).",
                                 hint="run `labkit classroom image build` from a clone of the kit")
    return root


def inputs_dir() -> Path:
    return podman.root() / "inputs"


def stage_inputs(progress: Progress) -> str:
    """Wheels, notebooks and the start script in :func:`inputs_dir`; returns their digest."""
    root, inputs = project_root(), inputs_dir()
    shutil.rmtree(inputs, ignore_errors=True)
    wheels = inputs / "wheels"
    wheels.mkdir(parents=True)
    progress.phase("downloading wheels for the image's Python")
    _pip("download", "--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation", "cp",
         "--platform", "manylinux_2_36_x86_64", "--platform", "manylinux_2_28_x86_64",
         "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
         "--platform", "linux_x86_64", "-d", str(wheels), f"{root}[notebooks,singleuser]")
    progress.phase("building the kit's wheel")
    _pip("wheel", "--no-deps", "-w", str(wheels), str(root))
    shutil.copytree(root / "notebooks", inputs / "notebooks")
    (inputs / "start").write_text(START_SCRIPT)
    return digest_of(inputs)


def digest_of(folder: Path) -> str:
    """One digest of the files under ``folder``, by name and content.  A wheel counts by the
    content of its members: ``pip wheel`` writes each build of the same sources with new zip
    timestamps, which must not name a new image."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0".encode())
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                for member in sorted(wheel.namelist()):
                    digest.update(f"{member}\0".encode() + hashlib.sha256(wheel.read(member)).digest())
        else:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if "is ignored" not in line][-3:]
        raise ImageError(f"pip {args[0]} failed for the student image: " + " / ".join(said),
                         cause="PyPI not reachable, or a pinned package has no wheel for "
                               f"CPython {TARGET_PYTHON} on x86_64",
                         hint="check that `pip download` works on this machine")


def recipe(inputs_digest: str) -> Recipe:
    """The mmdebstrap recipe of the student image, for staged inputs of this digest."""
    inputs = inputs_dir()
    hooks = (*BASE_HOOKS,
             f'mkdir -p "$1/opt/labkit" "$1{HOME}"',
             f'copy-in {inputs}/wheels /opt',
             f'copy-in {inputs}/notebooks /opt/labkit',
             f'upload {inputs}/start {START}',
             f'chmod 0755 "$1{START}"',
             f'chroot "$1" python3 -m venv {VENV}',
             f'chroot "$1" {VENV}/bin/pip install --quiet --no-index --find-links /opt/wheels "{REQUIREMENT}"',
             'rm -rf "$1/opt/wheels" "$1/root/.cache"')
    return Recipe(suite=SUITE, mirrors=MIRRORS, packages=PACKAGES, hooks=hooks, inputs=(inputs_digest,))


def build(*, force: bool = False, progress: bool = True) -> StudentImage:
    """Build the student image (or reuse the one of the same key); returns it."""
    podman.check_installed()
    try:
        return _build(force=force, progress=progress)
    finally:
        shutil.rmtree(inputs_dir(), ignore_errors=True)  # the staged wheels: 180 MB, rebuilt each time


def _build(*, force: bool, progress: bool) -> StudentImage:
    with Progress("student image", enabled=progress) as bar:
        the_recipe = recipe(stage_inputs(bar))
        tag = f"{REPOSITORY}:{the_recipe.key}"
        if podman.image_exists(tag) and not force:
            bar.done(f"{tag} is up to date")
            return StudentImage(tag, the_recipe.key, versions(tag), reused=True)
        scratch = podman.root() / f".tmp-build-{the_recipe.key}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            tarball = scratch / "rootfs.tar"
            run_mmdebstrap("student", the_recipe, tarball, scratch, podman.root() / "student-image.build.log", bar)
            bar.phase("importing into podman")
            podman.run("import", *_import_changes(), str(tarball), tag, timeout=900)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        bar.phase("checking the image")
        found = versions(tag)
        if found.get("python") != TARGET_PYTHON:
            podman.run("rmi", tag, check=False)
            raise ImageError(f"The student image's Python is {found.get('python')}, its wheels were chosen for "
                             f"{TARGET_PYTHON}.", hint="update TARGET_PYTHON in labkit/classroom/image.py")
        bar.done(f"built {tag} ({', '.join(f'{k} {v}' for k, v in found.items())})")
        return StudentImage(tag, the_recipe.key, found, reused=False)


def _import_changes() -> list[str]:
    """The image's configuration (Containerfile instructions given to ``podman import``)."""
    changes = [f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               f"ENV HOME={HOME}", f"WORKDIR {HOME}",
               # tini reaps the orphans a lab leaves when a kernel dies (PID 1's duty)
               f'ENTRYPOINT ["/usr/bin/tini", "--", "{START}"]',
               f'CMD ["{VENV}/bin/jupyter-lab", "--allow-root", "--ip=0.0.0.0", "--no-browser"]',
               "LABEL org.opencontainers.image.title=labkit-student"]
    return [arg for change in changes for arg in ("--change", change)]


def versions(tag: str) -> dict[str, str]:
    """What a container of the image says it holds (Python, the kit, JupyterLab, JupyterHub)."""
    code = ("import platform, importlib.metadata as m; "
            "print(platform.python_version(), *(m.version(p) for p in ('labkit', 'jupyterlab', 'jupyterhub')))")
    out = podman.run("run", "--rm", "--network", "none", "--entrypoint", f"{VENV}/bin/python", tag, "-c", code,
                     timeout=120).stdout.split()
    return dict(zip(("python", "labkit", "jupyterlab", "jupyterhub"), out))


def list_images() -> list[dict]:
    """The kit's student images: tag, size, creation date."""
    rows = []
    for image in podman.images(REPOSITORY):
        for name in image.get("Names") or []:
            rows.append({"tag": name, "size": image.get("Size", 0), "created": image.get("CreatedAt", "")})
    return rows


def remove(tag: str | None = None) -> list[str]:
    """Remove one student image (or all of them); returns the tags removed."""
    tags = [tag] if tag else [row["tag"] for row in list_images()]
    for name in tags:
        podman.run("rmi", "--force", name)
    return tags
