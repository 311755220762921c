"""Build, cache and verify the root filesystems ("images") that labs run in.

Labs run real Asterisk, SIPp and baresip processes inside network namespaces.  Their
programs come from a Debian root filesystem that bubblewrap bind-mounts read-only, so
the host only needs the kernel, bubblewrap and this cache.  What goes into each image is
its :class:`~labkit.images.recipes.Recipe`; the recipe's key names the image on disk.
(The image parameters below are called ``track`` for history: an image is named as the
track it serves, :attr:`labkit.tracks.Track.image`.)  The cache layout::

    <cache>/images/<track>-<key>.tar.zst     what mmdebstrap produced (kept to re-extract)
    <cache>/images/<track>-<key>.json        metadata sidecar (same data as the marker)
    <cache>/images/<track>-<key>.build.log   full mmdebstrap output of the last build
    <cache>/images/<track>-<key>/            the extracted rootfs labs use
    <cache>/images/<track>-<key>/.labkit-image.json   marker, written last
    <cache>/images/.lock-<track>             flock(2) file serialising builds of a track
    <cache>/images/.tmp-<track>-*/           scratch space of a build in progress

The rootfs directory only becomes visible under its final name by a ``rename(2)`` after
the marker was written inside it, so a directory that exists under the final name but
has no marker is the leftover of a crash or an interrupted removal and is never used.
Building a new key does not delete older images of the same track: they show up in
:func:`list_images` as not current and :func:`prune` (``remove_image(stale_only=True)``)
removes them.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import EnvironmentProblem, ImageError
from labkit.images.recipes import RECIPE_VERSION, RECIPES, Recipe
from labkit.state import recorded_labs

__all__ = [
    "RECIPE_VERSION",
    "RECIPES",
    "Recipe",
    "ImageInfo",
    "cache_dir",
    "images_dir",
    "image_path",
    "ensure_image",
    "build_image",
    "list_images",
    "remove_image",
    "prune",
    "image_info",
    "verify_image",
]

DEFAULT_CACHE = Path("/var/cache/labkit")
MARKER = ".labkit-image.json"
REQUIRED_TOOLS = ("mmdebstrap", "zstd", "tar")
INSTALL_HINT = "apt-get install mmdebstrap zstd"

@dataclass(frozen=True)
class ImageInfo:
    """What the cache knows about one image (current or stale)."""

    track: str
    key: str
    path: Path  # the rootfs directory
    tarball: Path
    size: int  # bytes of the compressed tarball (0 if absent)
    rootfs_size: int  # bytes of the extracted tree, measured at build time
    build_seconds: float
    versions: dict[str, str]
    built_at: str  # ISO 8601, UTC
    current: bool  # key equals the key of the track's current recipe
    ready: bool  # rootfs directory has its marker (usable by labs)

    @property
    def state(self) -> str:
        """One word or phrase for listings."""
        if not self.current:
            return "stale (remove with prune)"
        if self.ready:
            return "ready"
        if self.tarball.exists():
            return "tarball only (re-extracted on next use)"
        return "incomplete"


# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """The cache root: ``$LABKIT_CACHE`` or ``/var/cache/labkit`` (FHS: regenerable data)."""
    env = os.environ.get("LABKIT_CACHE")
    return Path(env) if env else DEFAULT_CACHE


def images_dir() -> Path:
    return cache_dir() / "images"


def _recipe(track: str) -> Recipe:
    try:
        return RECIPES[track]
    except KeyError:
        raise ImageError(
            f"unknown image {track!r}",
            hint=f"use one of: {', '.join(sorted(RECIPES))}",
        ) from None


def _stem(track: str, key: str) -> str:
    return f"{track}-{key}"


def image_path(track: str) -> Path:
    """The rootfs directory of the track's current recipe (it may not exist yet)."""
    return images_dir() / _stem(track, _recipe(track).key)


def _tarball(track: str, key: str) -> Path:
    return images_dir() / f"{_stem(track, key)}.tar.zst"


def _sidecar(track: str, key: str) -> Path:
    return images_dir() / f"{_stem(track, key)}.json"


def _logfile(track: str, key: str) -> Path:
    return images_dir() / f"{_stem(track, key)}.build.log"


def _is_ready(rootfs: Path) -> bool:
    # The warm path of every lab start: one stat(2), no hashing.
    return (rootfs / MARKER).is_file()


# --------------------------------------------------------------------------- public API


def ensure_image(track: str, *, progress: bool = True, build: bool = True) -> Path:
    """Return the rootfs directory of ``track``, making it first if needed.

    Warm, this is a single stat of the marker file.  If only the tarball is cached the
    rootfs is re-extracted from it (no network).  Otherwise the image is built, unless
    ``build`` is false, in which case :class:`ImageError` says how to build it.
    """
    rootfs = image_path(track)
    if _is_ready(rootfs):
        return rootfs
    key = _recipe(track).key
    if not build and not _tarball(track, key).exists():
        raise ImageError(
            f"image for track {track} is not built; run `labkit images build {track}`",
            cause=f"{rootfs} has no {MARKER} and no cached tarball exists",
            hint=f"run `labkit images build {track}`",
        )
    return build_image(track, progress=progress).path


def build_image(track: str, *, force: bool = False, progress: bool = True) -> ImageInfo:
    """Build (or re-extract) the image of ``track`` and return its :class:`ImageInfo`.

    Without ``force`` an existing ready image is returned as it is, and a cached tarball
    is re-extracted rather than rebuilt.  Concurrent calls for the same track serialise
    on a lock file: the second one waits and then finds the image built.
    """
    recipe = _recipe(track)
    if force:
        _refuse_if_in_use(track, images_dir() / _stem(track, recipe.key))
    _check_environment()
    images = images_dir()
    images.mkdir(parents=True, exist_ok=True)
    with _track_lock(track, progress=progress):
        _remove_leftovers(track)
        rootfs = images / _stem(track, recipe.key)
        if not force:
            if _is_ready(rootfs):
                return _info_from_marker(rootfs / MARKER)
            if _tarball(track, recipe.key).exists():
                try:
                    return _reextract(track, recipe, progress=progress)
                except ImageError as err:
                    _say(progress, f"{track}: cached tarball unusable ({err.message}); rebuilding")
        return _build(track, recipe, progress=progress)


def labs_using(rootfs: Path) -> list[str]:
    """Names of recorded labs with a live process running from ``rootfs``.

    Every sandboxed daemon's recorded command line carries the tree it runs from
    (``bwrap --ro-bind <rootfs> /``), so the lab records say who uses an image.
    """
    return [record.name for record in recorded_labs()
            if any(str(rootfs) in proc.argv and proc.process() is not None
                   for proc in record.processes)]


def _refuse_if_in_use(track: str, rootfs: Path) -> None:
    """A forced rebuild replaces the extracted tree: never under a running lab's daemons."""
    users = labs_using(rootfs)
    if users:
        names = ", ".join(users)
        raise ImageError(
            f"The {track} image is in use by running lab(s): {names}; it was not rebuilt.",
            cause="--force replaces the extracted tree that their Asterisk and phones run from",
            hint=f"take them down first (`labkit down {users[0]}`), then "
                 f"`labkit images build {track} --force`")


def list_images() -> list[ImageInfo]:
    """All images in the cache, current and stale, sorted by track then build date.

    Building a new key leaves older images in place; they are listed with
    ``current=False`` until :func:`prune` removes them.
    """
    images = images_dir()
    if not images.is_dir():
        return []
    found: dict[tuple[str, str], None] = {}
    for entry in images.iterdir():
        m = _NAME_RE.match(entry.name)
        if m and not entry.name.endswith(".build.log"):  # a log alone is a failed build
            found[(m["track"], m["key"])] = None
    infos = [_info_for(track, key) for track, key in found]
    return sorted(infos, key=lambda i: (i.track, not i.current, i.built_at))


def image_info(track: str) -> ImageInfo | None:
    """Info on the current image of ``track``, or None if neither rootfs nor tarball exist."""
    key = _recipe(track).key
    if not (images_dir() / _stem(track, key)).exists() and not _tarball(track, key).exists():
        return None
    return _info_for(track, key)


def remove_image(track: str | None = None, *, stale_only: bool = False) -> list[Path]:
    """Remove cached images of ``track`` (all tracks if None) and return what went.

    With ``stale_only`` only images whose key is not the track's current key go.  The
    marker is deleted before the tree so an interrupted removal never leaves a
    directory that looks valid.
    """
    if track is not None:
        _recipe(track)
    images = images_dir()
    if not images.is_dir():
        return []
    removed: list[Path] = []
    for info in list_images():
        if track is not None and info.track != track:
            continue
        if stale_only and info.current:
            continue
        lock = _track_lock(info.track, progress=False) if info.track in RECIPES else _nolock()
        with lock:
            removed += _remove_files(info.track, info.key)
    if not stale_only:  # logs of failed builds belong to no image
        for log in images.glob(f"{track or '*'}-*.build.log"):
            log.unlink(missing_ok=True)
    return removed


def prune() -> list[Path]:
    """Remove every image whose key is not the current key of its track."""
    return remove_image(stale_only=True)


def verify_image(path: Path | str, track: str) -> dict[str, str]:
    """Check that a rootfs has what the track's labs need; return the versions found.

    Versions come from dpkg's database (``var/lib/dpkg/status``) inside the rootfs, not
    from running the binaries, so no sandbox or chroot is needed.  Raises
    :class:`ImageError` listing everything that is missing or of the wrong version.
    """
    recipe = _recipe(track)
    root = Path(path)
    problems = [f"missing {spec.replace('|', ' or ')}" for spec in recipe.expect_files
                if not _exists_in(root, spec)]
    status = _dpkg_versions(root)
    versions: dict[str, str] = {}
    for package, label, prefix in recipe.expect_versions:
        debian = status.get(package)
        if debian is None:
            problems.append(f"package {package} is not installed")
            continue
        versions[label] = _upstream_version(debian)
        if not versions[label].startswith(prefix):
            problems.append(f"{package} is {versions[label]}, expected {prefix}*")
    for binary, needle in recipe.expect_linked:
        target = root / binary
        if target.is_file() and needle.encode() not in target.read_bytes():
            problems.append(f"{binary} does not reference {needle}")
    if problems:
        raise ImageError(
            f"the {track} image at {root} is not usable: " + "; ".join(problems),
            cause="the Debian packages changed (renamed, split or a new major version)",
            hint=f"inspect {root}, adjust RECIPES[{track!r}] in labkit/images/recipes.py, "
            f"then `labkit images build {track} --force`",
        )
    return versions


# --------------------------------------------------------------------------- building

_NAME_RE = re.compile(
    r"^(?P<track>[a-z][a-z0-9_]*)-(?P<key>[0-9a-f]{12})(?:\.tar\.zst|\.json|\.build\.log)?$"
)


def _check_environment() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise EnvironmentProblem(
            f"cannot build lab images: {', '.join(missing)} not found on PATH",
            cause="the image builder uses mmdebstrap to make a Debian rootfs and zstd "
            "to compress it",
            hint=INSTALL_HINT,
        )
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "building or extracting lab images needs root",
            cause="mmdebstrap's root mode and tar must create files owned by other "
            "users and device nodes, exactly as Debian installs them",
            hint="run the command as root (sudo labkit images build ...)",
        )


@contextmanager
def _track_lock(track: str, *, progress: bool) -> Iterator[None]:
    """Exclusive flock(2) on ``.lock-<track>``; released when the process dies too."""
    images = images_dir()
    images.mkdir(parents=True, exist_ok=True)
    with open(images / f".lock-{track}", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"{track}: another labkit process is building this image; waiting")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _nolock() -> Iterator[None]:
    yield


def _remove_leftovers(track: str) -> None:
    """Delete scratch dirs of earlier builds of ``track`` that died (we hold its lock)."""
    for tmp in images_dir().glob(f".tmp-{track}-*"):
        _rmtree(tmp)
    for stem_dir in images_dir().glob(f"{track}-*"):
        # A rootfs dir without marker under a final name: half-removed; never valid.
        if stem_dir.is_dir() and _NAME_RE.match(stem_dir.name) and not _is_ready(stem_dir):
            _rmtree(stem_dir)


def _build(track: str, recipe: Recipe, *, progress: bool) -> ImageInfo:
    key = recipe.key
    images = images_dir()
    log_path = _logfile(track, key)
    tmp = _scratch_dir(track, key)
    try:
        started = time.monotonic()
        tar_tmp = tmp / "image.tar.zst"
        with Progress(track, enabled=progress) as bar, _sigterm_interrupts():
            run_mmdebstrap(track, recipe, tar_tmp, tmp, log_path, bar)
            bar.phase("extracting the tarball")
            rootfs_tmp = tmp / "rootfs"
            _extract(tar_tmp, rootfs_tmp)
            bar.phase("verifying the image")
            versions = verify_image(rootfs_tmp, track)
            bar.phase("hashing the tarball")
            meta = {
                "track": track,
                "key": key,
                "recipe": recipe.build_spec(),
                "versions": versions,
                "packages": {p: v for p, v in _dpkg_versions(rootfs_tmp).items()
                             if p in {e[0] for e in recipe.expect_versions}},
                "built_at": _now(),
                "build_seconds": round(time.monotonic() - started, 1),
                "tarball": f"{_stem(track, key)}.tar.zst",
                "tarball_sha256": _sha256(tar_tmp),
                "tarball_bytes": tar_tmp.stat().st_size,
                "rootfs_bytes": _tree_size(rootfs_tmp),
                "mmdebstrap": _mmdebstrap_version(),
            }
            _install(track, key, tar_tmp, rootfs_tmp, meta, tmp)
            bar.done(f"built in {meta['build_seconds']:.0f} s "
                     f"(asterisk {versions.get('asterisk', '?')})")
        return _info_from_marker(images / _stem(track, key) / MARKER)
    finally:
        _rmtree(tmp)


def _reextract(track: str, recipe: Recipe, *, progress: bool) -> ImageInfo:
    """Recreate the rootfs from the cached tarball (no network, no mmdebstrap)."""
    key = recipe.key
    tarball = _tarball(track, key)
    tmp = _scratch_dir(track, key)
    try:
        with Progress(track, enabled=progress) as bar:
            meta = _read_json(_sidecar(track, key)) or {}
            bar.phase("checking the cached tarball")
            digest = _sha256(tarball)
            if meta.get("tarball_sha256") not in (None, digest):
                raise ImageError(f"{tarball} does not match its recorded sha256")
            bar.phase("re-extracting the cached tarball")
            rootfs_tmp = tmp / "rootfs"
            _extract(tarball, rootfs_tmp)
            versions = verify_image(rootfs_tmp, track)
            meta.update({
                "track": track, "key": key, "recipe": recipe.build_spec(),
                "versions": versions, "tarball": tarball.name,
                "tarball_sha256": digest, "tarball_bytes": tarball.stat().st_size,
                "rootfs_bytes": _tree_size(rootfs_tmp),
            })
            meta.setdefault("built_at", _mtime_iso(tarball))
            meta.setdefault("build_seconds", 0.0)
            _install(track, key, None, rootfs_tmp, meta, tmp)
            bar.done("re-extracted")
        return _info_from_marker(images_dir() / _stem(track, key) / MARKER)
    finally:
        _rmtree(tmp)


def _scratch_dir(track: str, key: str) -> Path:
    """A fresh scratch dir next to the final image, so renames stay on one filesystem.

    mkdtemp makes it 0700; apt's download sandbox runs as the _apt user and must be
    able to enter mmdebstrap's chroot below it, hence 0755.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{track}-{key}-", dir=images_dir()))
    tmp.chmod(0o755)
    return tmp


def _install(track: str, key: str, tar_tmp: Path | None, rootfs_tmp: Path, meta: dict,
             tmp: Path) -> None:
    """Move a finished build into place: marker last, then atomic renames.

    The tarball and sidecar go first; the rootfs directory (marker already inside) is
    renamed last, so a reader either sees no directory or a complete one.
    """
    meta = {**meta, "extracted_at": _now()}
    _write_json(rootfs_tmp / MARKER, meta)
    if tar_tmp is not None:
        os.replace(tar_tmp, _tarball(track, key))
    _write_json(_sidecar(track, key), {k: v for k, v in meta.items() if k != "extracted_at"})
    final = images_dir() / _stem(track, key)
    if final.exists():  # --force: move the old tree aside, it is deleted with tmp
        (final / MARKER).unlink(missing_ok=True)
        os.replace(final, tmp / "old-rootfs")
    os.replace(rootfs_tmp, final)


def run_mmdebstrap(track: str, recipe: Recipe, output: Path, tmp: Path, log_path: Path,
                    bar: Progress) -> None:
    """Run mmdebstrap with its output going to the log, which we follow for progress.

    TMPDIR points into our scratch dir: mmdebstrap makes its chroot there (File::Temp),
    so whatever an interrupted run leaves is removed with the scratch dir.  Output goes
    to the log file rather than a pipe, and setpriv(1) --pdeathsig asks the kernel to
    send SIGINT to mmdebstrap if labkit dies (even by SIGKILL): mmdebstrap then cleans
    up its chroot and mounts normally instead of dying of SIGPIPE on a dead pipe.
    """
    argv = recipe.mmdebstrap_args(output)
    if shutil.which("setpriv"):
        argv = ["setpriv", "--pdeathsig", "INT", "--", *argv]
    env = {**os.environ, "TMPDIR": str(tmp), "LC_ALL": "C.UTF-8"}
    with open(log_path, "w") as log:
        log.write(f"# {_now()} labkit build of {track} ({recipe.key})\n# $ "
                  + " ".join(_shell_quote(a) for a in argv) + "\n")
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, process_group=0)
        try:
            _follow(proc, log_path, log.tell(), bar)
            rc = proc.wait()
        except BaseException:
            _stop(proc)
            log.write(f"# {_now()} interrupted; mmdebstrap stopped\n")
            raise
        log.write(f"# {_now()} mmdebstrap exited with status {rc}\n")
    if rc != 0:
        raise _mirror_error(track, rc, log_path)
    if not output.is_file():
        raise ImageError(f"mmdebstrap reported success but wrote no {output.name}",
                         hint=f"read the build log {log_path}")


def _follow(proc: subprocess.Popen, log_path: Path, offset: int, bar: Progress) -> None:
    """Follow the log as mmdebstrap writes it ("tail -f") until mmdebstrap exits.

    mmdebstrap's "I: <step>..." lines become progress phases; "E:"/"W:" lines are shown.
    """
    with open(log_path, errors="replace") as fh:
        fh.seek(offset)
        pending = ""
        while True:
            exited = proc.poll() is not None  # read once more after the exit
            pending += fh.read()
            *lines, pending = pending.split("\n")
            for line in lines:
                _show(line.strip(), bar)
            if exited:
                if pending.strip():
                    _show(pending.strip(), bar)
                return
            time.sleep(0.1)


def _show(text: str, bar: Progress) -> None:
    if text.startswith("I: "):
        phase = _phase_of(text[3:])
        if phase:
            bar.phase(phase)
    elif text.startswith(("E: ", "W: ")):
        bar.note(text)


def _phase_of(message: str) -> str | None:
    """A short phase name from an mmdebstrap info message, None for chatter."""
    message = message.rstrip(". ")
    boring = ("automatically chosen", "chroot architecture", "finding correct",
              "using /", "removing tempdir", "success in", "done", "main() received")
    if message.startswith(boring):
        return None
    if message.startswith("running --customize-hook") or message.startswith("running special hook"):
        return "running customize hooks"
    return message[:70]


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while building, so `kill` also cleans up.

    Python's default SIGTERM action ends the process without running ``finally``
    blocks; the scratch dir would then only be removed by the next build of the track.
    Signal handlers can only be set from the main thread; elsewhere this does nothing.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(proc: subprocess.Popen) -> None:
    """Give mmdebstrap the chance to unmount and remove its chroot, then insist.

    mmdebstrap runs in its own process group (so a terminal's Ctrl-C reaches only us
    and we decide); the signal goes to the whole group, as a Ctrl-C would, because
    mmdebstrap on SIGINT waits for its running apt/dpkg child before cleaning up.
    """
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: go straight on to harsher signals
            continue


_CAUSES = (
    (("Could not resolve", "Temporary failure resolving", "Name or service not known"),
     "the mirror's host name cannot be resolved (no network, no DNS, or a wrong URL)"),
    (("Connection refused", "Connection timed out", "Unable to connect", "Network is unreachable"),
     "the mirror cannot be reached (network or proxy problem)"),
    (("404  Not Found", "404 Not Found", "not have a Release file",
      "no longer has a Release file"),
     "the mirror no longer serves this suite"),
    (("is not yet valid", "is expired", "EXPKEYSIG", "NO_PUBKEY", "not signed"),
     "the suite's signature is not accepted (clock skew or expired archive key)"),
    (("Unable to locate package", "has no installation candidate", "unmet dependencies",
      "Unmet dependencies", "held broken packages"),
     "a package of the recipe does not exist or cannot be installed in this suite"),
)


def _mirror_error(track: str, rc: int, log_path: Path) -> ImageError:
    """Turn a failed mmdebstrap run into an error with the meaningful log lines."""
    lines = log_path.read_text(errors="replace").splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    meaningful = [ln.strip() for ln in body
                  if ln.startswith(("E:", "W:", "Err:")) or "Failed to fetch" in ln
                  or "Unable to locate" in ln or "no installation candidate" in ln]
    tail = (meaningful or body)[-8:]
    joined = "\n".join(body)
    cause = next((why for needles, why in _CAUSES if any(n in joined for n in needles)),
                 "mmdebstrap failed; see the log")
    hint = f"read the full log {log_path}"
    recipe = RECIPES.get(track)
    if recipe is not None and recipe.suite == "bullseye":
        if cause.startswith(("the mirror no longer", "the suite's signature", "mmdebstrap failed")):
            # Debian moves releases past their (LTS) support to archive.debian.org and
            # then drops them from deb.debian.org and its mirrors.
            cause += ("; bullseye has probably moved to archive.debian.org, which "
                      "deb.debian.org no longer serves")
        hint += ("; the modern track does not use bullseye and still works "
                 "(`labkit images build modern`)")
    shown = "\n  ".join(tail) if tail else "(no output)"
    return ImageError(
        f"building the {track} image failed: mmdebstrap exited with status {rc}; "
        f"log: {log_path}\n  {shown}",
        cause=cause,
        hint=hint,
    )


# --------------------------------------------------------------------------- helpers


def _extract(tarball: Path, dest: Path) -> None:
    """Unpack a rootfs tarball as Debian made it: numeric owners, modes, xattrs."""
    dest.mkdir(parents=True)
    argv = ["tar", "--zstd", "-x", "-f", str(tarball), "-C", str(dest),
            "--numeric-owner", "--same-owner", "--preserve-permissions",
            "--xattrs", "--xattrs-include=*"]
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise ImageError(f"extracting {tarball} failed: {res.stderr.strip()[-500:]}",
                         cause="the tarball is truncated or the disk is full",
                         hint="free disk space or rebuild with `labkit images build --force`")


def _exists_in(root: Path, spec: str) -> bool:
    """True if any alternative of ``spec`` ("a|b", globs allowed) exists under ``root``.

    Paths are checked without following a final symlink: absolute symlinks inside a
    rootfs point into the host's tree when looked at from outside a chroot.
    """
    for alt in spec.split("|"):
        if any(c in alt for c in "*?["):
            if any(True for _ in root.glob(alt)):
                return True
        elif os.path.lexists(root / alt):
            return True
    return False


def _dpkg_versions(root: Path) -> dict[str, str]:
    """Package -> version of installed packages, from the rootfs' dpkg status file."""
    status = root / "var/lib/dpkg/status"
    try:
        text = status.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    versions: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields = dict(_FIELD_RE.findall(stanza))
        if "Package" in fields and "installed" in fields.get("Status", "").split():
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


_FIELD_RE = re.compile(r"^(Package|Status|Version): *(.*)$", re.MULTILINE)


def _upstream_version(debian: str) -> str:
    """'1:22.10.1+dfsg+~cs6-1' -> '22.10.1': epoch, repack suffix and revision dropped."""
    m = re.match(r"^(?:\d+:)?(\d+(?:\.\d+)*)", debian)
    return m.group(1) if m else debian


def _info_for(track: str, key: str) -> ImageInfo:
    rootfs = images_dir() / _stem(track, key)
    meta = _read_json(rootfs / MARKER) if _is_ready(rootfs) else None
    ready = meta is not None
    meta = meta or _read_json(_sidecar(track, key)) or {}
    tarball = _tarball(track, key)
    current = track in RECIPES and RECIPES[track].key == key
    return ImageInfo(
        track=track, key=key, path=rootfs, tarball=tarball,
        size=tarball.stat().st_size if tarball.exists() else 0,
        rootfs_size=int(meta.get("rootfs_bytes", 0)),
        build_seconds=float(meta.get("build_seconds", 0.0)),
        versions=dict(meta.get("versions", {})),
        built_at=str(meta.get("built_at", "")),
        current=current, ready=ready,
    )


def _info_from_marker(marker: Path) -> ImageInfo:
    meta = _read_json(marker) or {}
    return _info_for(meta.get("track", marker.parent.name.rsplit("-", 1)[0]),
                     meta.get("key", marker.parent.name.rsplit("-", 1)[-1]))


def _remove_files(track: str, key: str) -> list[Path]:
    removed = []
    rootfs = images_dir() / _stem(track, key)
    if rootfs.exists():
        (rootfs / MARKER).unlink(missing_ok=True)  # invalid first, then slowly gone
        _rmtree(rootfs)
        removed.append(rootfs)
    for extra in (_tarball(track, key), _sidecar(track, key), _logfile(track, key)):
        if extra.exists():
            extra.unlink()
            if extra.suffix == ".zst":
                removed.append(extra)
    return removed


def _rmtree(path: Path) -> None:
    """Remove a scratch tree, unmounting anything a killed mmdebstrap left mounted.

    mmdebstrap mounts /proc, /sys and /dev pieces into its chroot; if it died with
    them mounted, a plain rmtree would walk into the host's /dev or /sys.
    """
    if not os.path.lexists(path):
        return
    for mountpoint in _mounts_below(path):
        subprocess.run(["umount", "--lazy", mountpoint], capture_output=True)
    if _mounts_below(path):
        raise ImageError(f"cannot remove {path}: filesystems are still mounted below it",
                         hint=f"unmount them (see `findmnt -R {path}`) and remove it by hand")
    shutil.rmtree(path, ignore_errors=True)


def _mounts_below(path: Path) -> list[str]:
    prefix = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [_unescape_mount(ln.split()[4]) for ln in lines if len(ln.split()) > 4]
    below = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(below, key=len, reverse=True)


def _unescape_mount(field_: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _tree_size(root: Path) -> int:
    """Apparent size of a tree, hard links counted once (what du --apparent-size says)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _mmdebstrap_version() -> str:
    try:
        out = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return ""


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _mtime_iso(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.UTC).isoformat(
        timespec="seconds")


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Progress:
    """A live "track: phase (12 s)" line on a terminal, timestamped lines otherwise.

    rich is only imported when stderr is a TTY, so CI logs get plain lines and the
    module stays cheap to import.
    """

    def __init__(self, track: str, *, enabled: bool):
        self.track = track
        self.enabled = enabled
        self.started = time.monotonic()
        self._live = None
        self._task = None
        self._last = ""

    def __enter__(self) -> Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._live = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[track]}[/]"),
                                  TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=True)
            self._live.start()
            self._task = self._live.add_task("starting", track=self.track, total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()

    def phase(self, text: str) -> None:
        if not self.enabled or text == self._last:
            return
        self._last = text
        if self._live is not None:
            self._live.update(self._task, description=text)
        else:
            _say(True, f"{self.track}: {text} (+{time.monotonic() - self.started:.0f} s)")

    def note(self, text: str) -> None:
        if self.enabled and self._live is not None:
            self._live.console.print(f"  {text}", markup=False, highlight=False)
        elif self.enabled:
            _say(True, f"{self.track}: {text}")

    def done(self, text: str) -> None:
        if self.enabled:
            if self._live is not None:
                self._live.console.print(f"[green]✓[/] {self.track}: {text}")
            else:
                _say(True, f"{self.track}: {text}")
