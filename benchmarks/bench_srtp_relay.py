"""Benchmark: the CPU Asterisk spends relaying calls, with and without SRTP, per track.

The ``srtp-office`` lab, grown to N pairs of phones (one host each, N = 1, 2, 4 by default);
the N calls are set up together, then Asterisk's CPU time (user + system, the daemon and its
children, read from /proc through psutil) is measured over a window of W seconds while every
call carries audio both ways, once with SDES-SRTP on every leg (the PBX and the phones
mandatory) and once with plain RTP.  With media through Asterisk each call is two legs, each
leg decrypted and re-encrypted (RFC 3711 AES-CM + HMAC-SHA1-80): the ratio is the overhead.

    sudo .venv/bin/python benchmarks/bench_srtp_relay.py [--calls 1 2 4] [--window 10]

Figures are a share of one core (CPU seconds per wall second, in %).
"""
from __future__ import annotations

import argparse
import time

from cpu import cpu_seconds

from labkit.lab import Lab

FIRST_EXTENSION = 6000


def _overrides(pairs: int, encrypted: bool) -> dict:
    """The lab file's hosts, endpoints and phones for ``pairs`` callers and as many callees."""
    count = 2 * pairs
    names = [f"p{i}" for i in range(count)]
    hosts = [{"name": "pbx", "interfaces": [{"network": "lan", "address": "192.168.0.10"}]}]
    hosts += [{"name": n, "interfaces": [{"network": "lan", "address": f"192.168.0.{20 + i}"}]}
              for i, n in enumerate(names)]
    endpoints = [{"extension": str(FIRST_EXTENSION + i), "name": n.upper(), "context": "work"}
                 for i, n in enumerate(names)]
    phones = [{"name": n, "host": n, "extension": str(FIRST_EXTENSION + i), "registrar": "pbx.office.example",
               "media_encryption": "srtp-mand" if encrypted else "none"} for i, n in enumerate(names)]
    return {"hosts": hosts, "phones": phones,
            "pbx": {"endpoints": endpoints, "media": {"encryption": "sdes" if encrypted else "no"}}}


def measure(track: str, pairs: int, encrypted: bool, window: float) -> float:
    """Asterisk's CPU share (% of one core) while ``pairs`` calls carry audio."""
    lab = Lab.load("srtp-office", track=track, name="benchsrtp", overrides=_overrides(pairs, encrypted))
    lab.up(progress=False)
    try:
        calls = [lab.phone(f"p{2 * i}").call(str(FIRST_EXTENSION + 2 * i + 1)) for i in range(pairs)]
        for call in calls:
            call.wait_established(20)
        time.sleep(1.0)  # past the first packets (Strict RTP learning, key set-up)
        asterisk = lab.pbx.payload()
        before, start = cpu_seconds(asterisk), time.monotonic()
        time.sleep(window)
        used, elapsed = cpu_seconds(asterisk) - before, time.monotonic() - start
        for call in calls:
            assert call.established, "a call ended during the measurement"
            call.hangup()
        return 100 * used / elapsed
    finally:
        lab.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--tracks", nargs="+", default=["modern", "legacy"])
    args = parser.parse_args()
    print(f"Asterisk's CPU (% of one core) relaying N calls for {args.window:g} s, "
          f"plain RTP vs SDES-SRTP (AES_CM_128_HMAC_SHA1_80) on every leg")
    print(f"{'track':8}{'calls':>6}{'RTP':>9}{'SRTP':>9}{'ratio':>8}")
    for track in args.tracks:
        for pairs in args.calls:
            plain = measure(track, pairs, False, args.window)
            srtp = measure(track, pairs, True, args.window)
            print(f"{track:8}{pairs:>6}{plain:>8.2f}%{srtp:>8.2f}%{srtp / plain if plain else float('nan'):>8.2f}")


if __name__ == "__main__":
    main()
