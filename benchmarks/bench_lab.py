"""Benchmark: `up` until every phone is registered, and `down`, per track.

Prints a table; numbers go to the README.  Warm images are assumed (`labkit images build`
first; bench_images.py measures the builds).  Targets on a 2-core machine: up ≤ 3 s,
down ≤ 3 s.

    sudo .venv/bin/python benchmarks/bench_lab.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

from labkit.lab import Lab, leftovers


def measure(track: str, runs: int) -> dict[str, list[float]]:
    ups, downs, calls = [], [], []
    for i in range(runs):
        lab = Lab.load("first-call", track=track, name=f"bench{i}")
        start = time.perf_counter()
        lab.up(progress=False)          # returns once every phone is registered
        ups.append(time.perf_counter() - start)
        start = time.perf_counter()
        lab.phone("bob").call("6000").wait_established(10).hangup()
        calls.append(time.perf_counter() - start)
        start = time.perf_counter()
        lab.down()
        downs.append(time.perf_counter() - start)
        assert leftovers(lab.name) == [], leftovers(lab.name)
    return {"up → registered": ups, "call set-up + hangup": calls, "down": downs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'track':<8} {'step':<22} {'median s':>9} {'min s':>7} {'max s':>7}  (runs={args.runs})")
    for track in ("modern", "legacy"):
        for step, values in measure(track, args.runs).items():
            print(f"{track:<8} {step:<22} {statistics.median(values):9.2f} "
                  f"{min(values):7.2f} {max(values):7.2f}")


if __name__ == "__main__":
    main()
