#!/usr/bin/env python3
"""Measure lab image costs: cold build, warm ensure_image, re-extraction, sizes.

    python benchmarks/bench_images.py                 # warm + re-extract + sizes
    python benchmarks/bench_images.py --cold          # also cold builds (downloads!)
    python benchmarks/bench_images.py --tracks modern --repeat 1000

Warm numbers use the default cache (built first if missing).  Cold builds go to a
temporary LABKIT_CACHE that is deleted afterwards, so the shared cache is untouched;
re-extraction uses a temporary cache holding a hard link of the cached tarball.
Needs root (mmdebstrap root mode, tar with owners).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import images  # noqa: E402


@contextmanager
def temp_cache(prefix: str):
    """A throw-away LABKIT_CACHE on the same filesystem as the real cache if possible."""
    base = images.cache_dir().parent if images.cache_dir().parent.is_dir() else None
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    old = os.environ.get("LABKIT_CACHE")
    os.environ["LABKIT_CACHE"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("LABKIT_CACHE", None)
        else:
            os.environ["LABKIT_CACHE"] = old
        shutil.rmtree(root, ignore_errors=True)


def cold_build(track: str, progress: bool) -> float:
    with temp_cache(f".bench-cold-{track}-"):
        started = time.perf_counter()
        images.build_image(track, progress=progress)
        return time.perf_counter() - started


def warm_ms(track: str, repeat: int) -> tuple[float, float]:
    images.ensure_image(track, progress=True)  # make sure it exists
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        images.ensure_image(track, progress=False)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def reextract_s(track: str) -> float:
    key = images.TRACKS[track].key
    src = images.cache_dir() / "images"
    with temp_cache(f".bench-rx-{track}-") as root:
        (root / "images").mkdir()
        for name in (f"{track}-{key}.tar.zst", f"{track}-{key}.json"):
            try:
                os.link(src / name, root / "images" / name)
            except OSError:
                shutil.copy2(src / name, root / "images" / name)
        started = time.perf_counter()
        images.ensure_image(track, progress=False, build=False)
        return time.perf_counter() - started


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", nargs="+", default=sorted(images.TRACKS),
                    choices=sorted(images.TRACKS))
    ap.add_argument("--cold", action="store_true",
                    help="also time cold builds into a temporary cache (downloads packages)")
    ap.add_argument("--repeat", type=int, default=200, help="warm ensure_image calls")
    ap.add_argument("--quiet", action="store_true", help="no build progress lines")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (mmdebstrap root mode, tar with numeric owners)", file=sys.stderr)
        return 2

    rows = []
    for track in args.tracks:
        cold = cold_build(track, not args.quiet) if args.cold else None
        med, worst = warm_ms(track, args.repeat)
        rx = reextract_s(track)
        info = images.image_info(track)
        rows.append((track, info.key,
                     f"{cold:.1f} s" if cold is not None else "-",
                     f"{info.build_seconds:.1f} s",
                     f"{med:.3f} / {worst:.3f} ms", f"{rx:.1f} s",
                     mib(info.size), mib(info.rootfs_size),
                     info.versions.get("asterisk", "?")))

    head = ("track", "key", "cold build", "recorded build", "warm ensure med/max",
            "re-extract", "tarball", "rootfs", "asterisk")
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    for row in (head, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
