"""Unit tests of labkit.images: no network, no root (one live test aside), fast.

Most of the build pipeline is exercised with a fake ``mmdebstrap`` (a small Python
script put first on PATH) that writes a tiny rootfs tarball, so locking, atomic
install, re-extraction, failure reporting and interrupt clean-up run for real.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from labkit.errors import EnvironmentProblem, ImageError
from labkit.images import build as images

FAKE_MMDEBSTRAP = textwrap.dedent(
    """\
    #!{python}
    # A stand-in for mmdebstrap: writes a tiny rootfs tarball to the .tar.zst argument.
    import os, pathlib, subprocess, sys, time
    mode = os.environ.get("FAKE_MM_MODE", "ok")
    if "--version" in sys.argv:
        print("mmdebstrap 0.0-fake"); sys.exit(0)
    counter = pathlib.Path(os.environ["FAKE_MM_COUNTER"])
    counter.write_text(str(int(counter.read_text() or 0) + 1) if counter.exists() else "1")
    out = pathlib.Path(next(a for a in sys.argv if a.endswith(".tar.zst")))
    print("I: automatically chosen mode: root", flush=True)
    print("I: running apt-get update...", flush=True)
    if mode == "fail":
        print("Err:1 http://mirror.invalid/debian forky InRelease")
        print("  Could not resolve 'mirror.invalid'")
        print("E: Failed to fetch http://mirror.invalid/debian/dists/forky/InRelease")
        print("E: mmdebstrap failed to run", flush=True)
        sys.exit(25)
    print("I: downloading packages with apt...", flush=True)
    if mode == "slow":
        time.sleep(60)
    tree = pathlib.Path(os.environ["TMPDIR"]) / "fake-chroot"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_bytes(b"ELF... libssl.so.3 ...")
    (tree / "etc").mkdir()
    (tree / "etc/hosts").write_text("127.0.0.1 localhost\\n")
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(
        "Package: tool\\nStatus: install ok installed\\nVersion: 1:1.2.3+dfsg-4\\n\\n"
        "Package: gone\\nStatus: deinstall ok config-files\\nVersion: 9\\n")
    print("I: creating tarball...", flush=True)
    subprocess.run(["tar", "--zstd", "-cf", str(out), "-C", str(tree), "."], check=True)
    print("I: success in 0.1 seconds", flush=True)
    """
)


FAKE_RECIPE = images.Recipe(
    suite="forky",
    mirrors=("deb http://mirror.invalid/debian forky main",),
    packages=("tool",),
    expect_files=("usr/bin/tool", "etc/hosts", "usr/sbin/tool|usr/bin/tool"),
    expect_versions=(("tool", "tool", "1."),),
    expect_linked=(("usr/bin/tool", "libssl.so"),),
)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty private cache; the real /var/cache/labkit is never touched."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LABKIT_CACHE", str(root))
    return root


@pytest.fixture
def fake_mm(tmp_path, monkeypatch, cache) -> Path:
    """A fake mmdebstrap first on PATH, a 'fake' track, and root as far as we can tell."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "mmdebstrap"
    script.write_text(FAKE_MMDEBSTRAP.format(python=sys.executable))
    script.chmod(0o755)
    counter = tmp_path / "mm-count"
    monkeypatch.setenv("FAKE_MM_COUNTER", str(counter))
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setitem(images.RECIPES, "fake", FAKE_RECIPE)
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)
    return counter


def runs(counter: Path) -> int:
    """How many times the fake mmdebstrap was asked to build."""
    return int(counter.read_text()) if counter.exists() else 0


def scratch_dirs(cache: Path) -> list[Path]:
    return list((cache / "images").glob(".tmp-*"))


def fake_image(cache: Path, track: str, key: str, *, marker: bool = True,
               tarball: bool = True) -> Path:
    """Lay out a cached image by hand (as a build would have left it)."""
    img = cache / "images"
    rootfs = img / f"{track}-{key}"
    rootfs.mkdir(parents=True)
    meta = {"track": track, "key": key, "versions": {"asterisk": "22.1.0"},
            "built_at": "2026-01-01T00:00:00+00:00", "build_seconds": 30.0,
            "rootfs_bytes": 1234}
    if marker:
        (rootfs / images.MARKER).write_text(json.dumps(meta))
    if tarball:
        (img / f"{track}-{key}.tar.zst").write_bytes(b"x" * 100)
        (img / f"{track}-{key}.json").write_text(json.dumps(meta))
    return rootfs


# ---------------------------------------------------------------- recipe and paths


def test_key_is_stable_and_short():
    recipe = images.RECIPES["modern"]
    again = dataclasses.replace(recipe)
    assert recipe.key == again.key
    assert len(recipe.key) == 12 and int(recipe.key, 16) >= 0
    # Package order does not matter: the canonical JSON sorts them.
    shuffled = dataclasses.replace(recipe, packages=tuple(reversed(recipe.packages)))
    assert shuffled.key == recipe.key


def test_key_changes_with_packages_and_version_but_not_checks():
    recipe = images.RECIPES["modern"]
    assert dataclasses.replace(recipe, packages=recipe.packages + ("tcpdump",)).key != recipe.key
    assert dataclasses.replace(recipe, recipe_version=recipe.recipe_version + 1).key != recipe.key
    assert dataclasses.replace(recipe, hooks=()).key != recipe.key
    # Verification expectations are not build inputs.
    assert dataclasses.replace(recipe, expect_files=()).key == recipe.key


def test_tracks_differ_and_name_what_labs_need():
    assert set(images.RECIPES) >= {"modern", "legacy"}
    assert images.RECIPES["modern"].key != images.RECIPES["legacy"].key
    args = images.RECIPES["modern"].mmdebstrap_args(Path("/x/out.tar.zst"))
    assert "--variant=minbase" in args
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in args
    include = next(a for a in args if a.startswith("--include="))
    assert "asterisk" in include and "sip-tester" in include and "baresip-core" in include
    assert args[-2:] == ["/x/out.tar.zst", "deb http://deb.debian.org/debian forky main"]
    legacy = images.RECIPES["legacy"]
    assert legacy.suite == "bullseye"
    assert any("bullseye-security" in m for m in legacy.mirrors)


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("LABKIT_CACHE", raising=False)
    assert images.cache_dir() == Path("/var/cache/labkit")
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    assert images.cache_dir() == tmp_path
    key = images.RECIPES["modern"].key
    assert images.image_path("modern") == tmp_path / "images" / f"modern-{key}"


def test_unknown_track_is_an_image_error(cache):
    with pytest.raises(ImageError) as err:
        images.image_path("nonesuch")
    assert "modern" in err.value.hint


# ---------------------------------------------------------------- validity, list, remove


def test_ensure_image_without_build_on_empty_cache(cache):
    with pytest.raises(ImageError) as err:
        images.ensure_image("modern", build=False)
    assert "image for track modern is not built" in err.value.message
    assert "labkit images build modern" in err.value.hint


def test_dir_without_marker_is_not_valid(cache):
    rootfs = fake_image(cache, "modern", images.RECIPES["modern"].key, marker=False,
                        tarball=False)
    assert rootfs == images.image_path("modern")
    with pytest.raises(ImageError):
        images.ensure_image("modern", build=False)
    info = images.image_info("modern")
    assert info is not None and not info.ready
    (rootfs / images.MARKER).write_text("{}")
    assert images.ensure_image("modern", build=False, progress=False) == rootfs


def test_list_and_remove_on_fake_layout(cache):
    cur = images.RECIPES["modern"].key
    fake_image(cache, "modern", cur)
    fake_image(cache, "modern", "0123456789ab")  # an older recipe
    legacy_key = images.RECIPES["legacy"].key
    fake_image(cache, "legacy", legacy_key, marker=False)  # tarball only
    shutil.rmtree(cache / "images" / f"legacy-{legacy_key}")

    listed = {(i.track, i.key): i for i in images.list_images()}
    assert set(listed) == {("modern", cur), ("modern", "0123456789ab"), ("legacy", legacy_key)}
    assert listed[("modern", cur)].current and listed[("modern", cur)].ready
    assert listed[("modern", cur)].state == "ready"
    assert listed[("modern", cur)].versions == {"asterisk": "22.1.0"}
    assert listed[("modern", cur)].size == 100
    stale = listed[("modern", "0123456789ab")]
    assert not stale.current and "prune" in stale.state
    assert not listed[("legacy", legacy_key)].ready
    assert listed[("legacy", legacy_key)].state.startswith("tarball only")
    assert images.image_info("modern").key == cur

    removed = images.prune()
    assert cache / "images" / "modern-0123456789ab" in removed
    assert not (cache / "images" / "modern-0123456789ab.tar.zst").exists()
    assert not (cache / "images" / "modern-0123456789ab.json").exists()
    assert (cache / "images" / f"modern-{cur}" / images.MARKER).exists()

    removed = images.remove_image("modern")
    assert cache / "images" / f"modern-{cur}" in removed
    assert images.image_info("modern") is None
    assert [i.track for i in images.list_images()] == ["legacy"]
    images.remove_image()
    assert images.list_images() == []


def test_list_and_remove_on_missing_cache(cache):
    assert images.list_images() == []
    assert images.remove_image() == []
    assert images.image_info("legacy") is None


# ---------------------------------------------------------------- verify_image


def write_rootfs(root: Path, files: list[str], status: str) -> None:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\x7fELF libssl.so.3")
    (root / "var/lib/dpkg").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text(status)


def stanza(package: str, version: str) -> str:
    return f"Package: {package}\nStatus: install ok installed\nVersion: {version}\n\n"


def test_verify_image_legacy(tmp_path):
    write_rootfs(tmp_path, ["usr/sbin/asterisk", "usr/lib/asterisk/modules/chan_sip.so",
                            "usr/bin/openssl", "bin/ip", "bin/ps", "etc/hosts"],
                 stanza("asterisk", "1:16.28.0~dfsg-0+deb11u10") + stanza("openssl", "1.1.1w-0"))
    assert images.verify_image(tmp_path, "legacy") == {"asterisk": "16.28.0",
                                                        "openssl": "1.1.1"}
    (tmp_path / "usr/lib/asterisk/modules/chan_sip.so").unlink()
    with pytest.raises(ImageError) as err:
        images.verify_image(tmp_path, "legacy")
    assert "chan_sip.so" in err.value.message


def test_verify_image_modern_checks_versions_and_modules(tmp_path):
    mods = [f"usr/lib/x86_64-linux-gnu/asterisk/modules/{m}.so"
            for m in ("chan_pjsip", "res_pjsip", "res_srtp")]
    bmods = [f"usr/lib/baresip/modules/{m}.so"
             for m in ("ctrl_tcp", "aufile", "g711", "srtp", "sndfile")]
    kmods = [f"usr/lib/x86_64-linux-gnu/kamailio/modules/{m}.so"
             for m in ("tm", "registrar", "usrloc", "auth", "htable", "uac", "nathelper", "sanity",
                       "db_text")]
    files = ["usr/sbin/asterisk", "usr/bin/sipp", "usr/bin/baresip", "usr/sbin/dnsmasq",
             "usr/bin/openssl", "usr/bin/ip", "usr/bin/ps", "etc/hosts", *mods, *bmods,
             "usr/sbin/kamailio", *kmods, "usr/share/kamailio/dbtext/kamailio/location",
             "usr/sbin/policy-rc.d", "usr/bin/svwar", "usr/sbin/nft", "usr/bin/fail2ban-server",
             "etc/fail2ban/filter.d/asterisk.conf"]
    status = (stanza("asterisk", "1:22.10.1+dfsg+~cs6.17.60671434-1")
              + stanza("sip-tester", "1:3.8.0-1") + stanza("baresip-core", "1.1.0-3.1")
              + stanza("openssl", "3.6.5-1") + stanza("dnsmasq-base", "2.93-3")
              + stanza("kamailio", "6.1.5-1"))
    write_rootfs(tmp_path, files, status)
    versions = images.verify_image(tmp_path, "modern")
    assert versions["asterisk"] == "22.10.1" and versions["sipp"] == "3.8.0"
    # Asterisk 20 instead of 22 and a missing baresip module are both reported.
    write_rootfs(tmp_path, [], status.replace("1:22.10.1", "1:20.5.0"))
    (tmp_path / "usr/lib/baresip/modules/srtp.so").unlink()
    with pytest.raises(ImageError) as err:
        images.verify_image(tmp_path, "modern")
    assert "expected 22.*" in err.value.message and "srtp.so" in err.value.message


# ---------------------------------------------------------------- environment checks


def test_missing_mmdebstrap_is_an_environment_problem(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EnvironmentProblem) as err:
        images.build_image("modern", progress=False)
    assert "mmdebstrap" in err.value.message
    assert err.value.hint == "apt-get install mmdebstrap zstd"
    with pytest.raises(EnvironmentProblem):
        images.ensure_image("modern", progress=False)


def test_not_root_is_an_environment_problem(cache, monkeypatch):
    if not all(shutil.which(t) for t in images.REQUIRED_TOOLS):
        pytest.skip("mmdebstrap/zstd not installed")
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem) as err:
        images.build_image("modern", progress=False)
    assert "root" in err.value.message
    assert not isinstance(err.value, ImageError)


# ---------------------------------------------------------------- the pipeline, faked


def test_fake_build_warm_reextract_force(fake_mm, cache):
    info = images.build_image("fake", progress=False)
    assert runs(fake_mm) == 1
    assert info.ready and info.current and info.versions == {"tool": "1.2.3"}
    assert info.path == images.image_path("fake") and info.tarball.exists()
    assert (info.path / "usr/bin/tool").exists()
    meta = json.loads((info.path / images.MARKER).read_text())
    assert meta["key"] == FAKE_RECIPE.key and len(meta["tarball_sha256"]) == 64
    assert scratch_dirs(cache) == []

    # Warm: no build, same path.
    assert images.ensure_image("fake", progress=False) == info.path
    assert runs(fake_mm) == 1

    # Extracted dir gone: re-extracted from the tarball, mmdebstrap not run.
    shutil.rmtree(info.path)
    assert images.ensure_image("fake", progress=False) == info.path
    assert (info.path / images.MARKER).exists() and runs(fake_mm) == 1
    # ... and with build=False too: re-extraction needs no network.
    shutil.rmtree(info.path)
    assert images.ensure_image("fake", progress=False, build=False) == info.path
    assert runs(fake_mm) == 1

    # A corrupt tarball (sha256 mismatch) is not trusted: rebuilt.
    shutil.rmtree(info.path)
    info.tarball.write_bytes(b"garbage")
    assert images.ensure_image("fake", progress=False) == info.path
    assert runs(fake_mm) == 2

    images.build_image("fake", force=True, progress=False)
    assert runs(fake_mm) == 3
    assert scratch_dirs(cache) == []


def test_fake_build_failure_reports_log_and_leaves_nothing(fake_mm, cache, monkeypatch):
    monkeypatch.setenv("FAKE_MM_MODE", "fail")
    with pytest.raises(ImageError) as err:
        images.build_image("fake", progress=False)
    log = cache / "images" / f"fake-{FAKE_RECIPE.key}.build.log"
    assert str(log) in err.value.message and log.exists()
    assert "Could not resolve" in err.value.message or "Failed to fetch" in err.value.message
    assert "cannot be resolved" in err.value.cause
    assert str(log) in err.value.hint
    assert scratch_dirs(cache) == []
    assert not images.image_path("fake").exists()
    assert images.image_info("fake") is None or not images.image_info("fake").ready


def test_fake_build_interrupted_cleans_up(fake_mm, cache, monkeypatch):
    """Ctrl-C during mmdebstrap: child stopped, scratch removed, no image."""
    monkeypatch.setenv("FAKE_MM_MODE", "slow")
    real_phase = images.Progress.phase

    def interrupt(self, text):
        real_phase(self, text)
        if text.startswith("downloading"):
            raise KeyboardInterrupt

    monkeypatch.setattr(images.Progress, "phase", interrupt)
    with pytest.raises(KeyboardInterrupt):
        images.build_image("fake", progress=False)
    assert scratch_dirs(cache) == []
    assert not images.image_path("fake").exists()
    log = (cache / "images" / f"fake-{FAKE_RECIPE.key}.build.log").read_text()
    assert "interrupted" in log


def test_concurrent_builds_serialise(fake_mm, cache):
    results, errors = [], []

    def build():
        try:
            results.append(images.ensure_image("fake", progress=False))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 3
    assert runs(fake_mm) == 1  # built once; the others waited and found it


def test_leftovers_of_a_crash_are_removed_by_the_next_build(fake_mm, cache):
    images_dir = cache / "images"
    (images_dir / f".tmp-fake-{FAKE_RECIPE.key}-dead/rootfs").mkdir(parents=True)
    half = images_dir / f"fake-{FAKE_RECIPE.key}"
    (half / "usr").mkdir(parents=True)  # final name, no marker: half-removed
    images.build_image("fake", progress=False)
    assert scratch_dirs(cache) == []
    assert (half / images.MARKER).exists()


def test_progress_plain_lines(fake_mm, cache, capsys):
    images.build_image("fake", progress=True)
    err = capsys.readouterr().err
    assert "fake: running apt-get update" in err
    assert "fake: downloading packages with apt" in err
    assert "automatically chosen" not in err


def test_mirror_error_for_bullseye_mentions_archive_and_modern(tmp_path):
    log = tmp_path / "legacy.build.log"
    log.write_text("# header\nI: running apt-get update...\n"
                   "Err:2 http://deb.debian.org/debian bullseye Release\n"
                   "  404  Not Found [IP: 151.101.2.132 80]\n"
                   "E: The repository 'http://deb.debian.org/debian bullseye Release' "
                   "does not have a Release file.\n")
    err = images._mirror_error("legacy", 25, log)
    assert str(log) in err.message
    assert "does not have a Release file" in err.message
    assert "archive.debian.org" in err.cause
    assert "modern" in err.hint


def test_phase_parsing():
    assert images._phase_of("downloading packages with apt...") == "downloading packages with apt"
    assert images._phase_of("automatically chosen mode: root") is None
    assert images._phase_of("running --customize-hook in shell: sh -c 'x'") == \
        "running customize hooks"


# ---------------------------------------------------------------- real mmdebstrap, bad mirror


@pytest.mark.live
def test_real_mmdebstrap_unresolvable_mirror(cache, monkeypatch):
    """Real mmdebstrap against http://mirror.invalid: fails fast, leaves only the log.

    Needs root (mmdebstrap root mode) but no network: .invalid never resolves.
    """
    if os.geteuid() != 0 or not all(shutil.which(t) for t in images.REQUIRED_TOOLS):
        pytest.skip("needs root, mmdebstrap and zstd")
    broken = dataclasses.replace(
        images.RECIPES["modern"],
        mirrors=("deb http://mirror.invalid/debian forky main",),
        aptopts=images.RECIPES["modern"].aptopts + ('Acquire::Retries "0"',),
    )
    monkeypatch.setitem(images.RECIPES, "broken", broken)
    with pytest.raises(ImageError) as err:
        images.build_image("broken", progress=False)
    log = cache / "images" / f"broken-{broken.key}.build.log"
    assert str(log) in err.value.message and log.exists()
    assert "mirror.invalid" in err.value.message
    assert scratch_dirs(cache) == []
    assert not images.image_path("broken").exists()
    assert not list((cache / "images").glob(f"**/{images.MARKER}"))


def test_force_rebuild_refused_while_a_lab_runs_from_the_image(fake_mm, cache, tmp_path, monkeypatch):
    """--force replaces the extracted tree: refused while a recorded lab's daemon runs from it."""
    import subprocess

    from labkit.state import LabRecord, ProcessRecord

    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    info = images.build_image("fake", progress=False)
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = LabRecord(name="busy", track="fake")
        record.add_process(ProcessRecord.of("pbx/asterisk", daemon.pid,
                                            ["bwrap", "--ro-bind", str(info.path), "/", "asterisk"]))
        with pytest.raises(ImageError) as err:
            images.build_image("fake", force=True, progress=False)
        assert "busy" in err.value.message and "labkit down busy" in err.value.hint
        assert runs(fake_mm) == 1 and (info.path / images.MARKER).exists()
    finally:
        daemon.kill()
        daemon.wait()
    # The lab's daemon is gone (a crashed lab's stale record does not block either).
    images.build_image("fake", force=True, progress=False)
    assert runs(fake_mm) == 2
