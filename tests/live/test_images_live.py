"""Live tests of labkit.images: real mmdebstrap builds from deb.debian.org, as root.

The real images are built into the *default* cache (/var/cache/labkit unless
LABKIT_CACHE says otherwise) so that every later lab and test reuses them; a build
only happens when the cache lacks the current key.  The re-extraction test works on a
private cache holding a hard link of the real tarball, so it never deletes a rootfs
that a running lab may have bind-mounted.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from labkit.images import build as images

pytestmark = pytest.mark.live


@pytest.fixture(scope="module", autouse=True)
def _needs_root_and_tools():
    if os.geteuid() != 0:
        pytest.skip("building images needs root")
    missing = [t for t in images.REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (apt-get install mmdebstrap zstd)")


@pytest.fixture(scope="module")
def modern() -> Path:
    return images.ensure_image("modern", progress=True)


@pytest.fixture(scope="module")
def legacy() -> Path:
    return images.ensure_image("legacy", progress=True)


def _no_build(*args, **kwargs):
    raise AssertionError("mmdebstrap build started although the image was cached")


def test_modern_image_has_asterisk_22_sipp_38_and_baresip(modern):
    assert modern == images.image_path("modern")
    assert modern.parent == images.cache_dir() / "images"
    versions = images.verify_image(modern, "modern")
    assert versions["asterisk"].startswith("22.")
    assert versions["sipp"].startswith("3.8")
    assert versions["baresip"]
    assert b"libssl" in (modern / "usr/bin/sipp").read_bytes()  # SIPp built with TLS
    mods = modern / "usr/lib/baresip/modules"
    for mod in ("ctrl_tcp", "aufile", "g711", "srtp", "sndfile"):
        assert (mods / f"{mod}.so").is_file(), mod
    pjsip = list(modern.glob("usr/lib/*/asterisk/modules/res_pjsip.so"))
    assert pjsip, "res_pjsip.so missing"
    assert (pjsip[0].parent / "res_srtp.so").is_file()
    assert "127.0.0.1\tlocalhost" in (modern / "etc/hosts").read_text()
    assert not any((modern / "var/lib/apt/lists").glob("*_Packages"))


def test_legacy_image_has_asterisk_16_with_chan_sip(legacy):
    versions = images.verify_image(legacy, "legacy")
    assert versions["asterisk"].startswith("16.")
    assert (legacy / "usr/lib/asterisk/modules/chan_sip.so").is_file()
    assert "::1\tlocalhost ip6-localhost" in (legacy / "etc/hosts").read_text()


def test_marker_and_listing(modern, legacy):
    for track, path in (("modern", modern), ("legacy", legacy)):
        meta = json.loads((path / images.MARKER).read_text())
        assert meta["track"] == track and meta["key"] == images.RECIPES[track].key
        assert meta["versions"]["asterisk"] and len(meta["tarball_sha256"]) == 64
        info = images.image_info(track)
        assert info is not None and info.ready and info.current
        assert info.size > 10_000_000 and info.tarball.is_file()
        assert info.rootfs_size > info.size
    listed = {(i.track, i.key) for i in images.list_images()}
    assert ("modern", images.RECIPES["modern"].key) in listed
    assert ("legacy", images.RECIPES["legacy"].key) in listed


def test_warm_ensure_image_does_not_build(modern, legacy, monkeypatch):
    monkeypatch.setattr(images, "_build", _no_build)
    monkeypatch.setattr(images, "_reextract", _no_build)
    for _ in range(20):
        assert images.ensure_image("modern", progress=False) == modern
        assert images.ensure_image("legacy", progress=False, build=False) == legacy
    assert images.build_image("modern", progress=False).path == modern


def test_missing_rootfs_is_reextracted_not_rebuilt(modern, tmp_path, monkeypatch):
    """Delete the extracted dir: the cached tarball is unpacked again, mmdebstrap not run."""
    key = images.RECIPES["modern"].key
    src = images.cache_dir() / "images"
    private = tmp_path / "cache"
    (private / "images").mkdir(parents=True)
    for name in (f"modern-{key}.tar.zst", f"modern-{key}.json"):
        try:
            os.link(src / name, private / "images" / name)
        except OSError:  # another filesystem
            shutil.copy2(src / name, private / "images" / name)
    monkeypatch.setenv("LABKIT_CACHE", str(private))
    tarball = private / "images" / f"modern-{key}.tar.zst"
    mtime = tarball.stat().st_mtime_ns
    monkeypatch.setattr(images, "_build", _no_build)

    path = images.ensure_image("modern", progress=False)
    assert (path / images.MARKER).is_file()
    shutil.rmtree(path)
    started = time.monotonic()
    again = images.ensure_image("modern", progress=False, build=False)
    assert again == path and (again / images.MARKER).is_file()
    assert images.verify_image(again, "modern")["asterisk"].startswith("22.")
    assert tarball.stat().st_mtime_ns == mtime
    assert not list((private / "images").glob(".tmp-*"))
    print(f"re-extract took {time.monotonic() - started:.1f} s")
