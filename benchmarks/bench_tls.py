"""Benchmark: a registration over TLS against the same over UDP, per track.

One SIPp REGISTER (401 challenge, then 200 with digest) from Bob's host, repeated; the
capture of each TLS run gives the handshakes and bytes a registration costs.  Prints a table.

    sudo .venv/bin/python benchmarks/bench_tls.py [--runs 10]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from labkit import analysis
from labkit.lab import Lab


def _on_the_wire(pcap, port: int) -> dict:
    """From one captured registration on ``port``: milliseconds of the TCP+TLS handshake (first
    packet to the last handshake message), of the SIP exchange (first REGISTER to the 200 OK),
    and the packets and bytes up to that 200.  Over TLS the SIP is read with the lab's keys
    injected.  (SIPp itself waits about 100 ms after a TLS handshake before its first request:
    that idle time is in neither figure.)"""
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", f"udp.port == {port} || tcp.port == {port}",
                          "-T", "fields", "-e", "frame.time_relative", "-e", "frame.len",
                          "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "tls.handshake.type"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [(line.split("\t") + [""] * 5)[:5] for line in out]
    first_sip = next(i for i, r in enumerate(rows) if r[2] == "REGISTER")
    ok = next(i for i, r in enumerate(rows) if r[3] == "200")
    handshake = [float(r[0]) for r in rows[:first_sip] if r[4]]
    start = float(rows[0][0])
    return {"handshake_ms": (max(handshake) - start) * 1000 if handshake else 0.0,
            "sip_ms": (float(rows[ok][0]) - float(rows[first_sip][0])) * 1000,
            "packets": ok + 1, "bytes": sum(int(r[1]) for r in rows[:ok + 1])}


def measure(track: str, runs: int) -> dict[str, float]:
    lab = Lab.load("tls-office", track=track, name="benchtls")
    lab.up(progress=False)
    try:
        timings: dict[str, list[float]] = {"udp": [], "tls": []}
        for transport in ("udp", "tls"):
            for _ in range(runs):
                start = time.perf_counter()
                result = lab.sipp("bob", "register", extension="6001", transport=transport, local_port=5071)
                timings[transport].append(time.perf_counter() - start)
                assert result.ok, result.log
        wire = {}
        for transport, port in (("udp", 5060), ("tls", 5061)):
            with lab.capture("bob", name=f"one-{transport}") as capture:
                assert lab.sipp("bob", "register", extension="6001", transport=transport, local_port=5071).ok
            pcap = capture.with_tls_keys("bob") if transport == "tls" else capture.files["bob"]
            wire[transport] = _on_the_wire(pcap, port)
        sessions = analysis.tls_sessions(capture.files["bob"])
        return {"udp_median_s": statistics.median(timings["udp"]),
                "tls_median_s": statistics.median(timings["tls"]), "wire": wire,
                "handshakes": len(sessions),
                "records": int(sessions[["records_c2s", "records_s2c"]].sum().sum())}
    finally:
        lab.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"SIPp REGISTER (401, then 200 with digest): whole SIPp run, median of {args.runs}; then one "
          "captured run each way")
    print(f"{'track':<7} {'transport':<9} {'SIPp run':>9} {'handshake':>10} {'REGISTER→200':>13} "
          f"{'packets':>8} {'bytes':>6} {'TLS sessions/records':>21}")
    for track in ("modern", "legacy"):
        m = measure(track, args.runs)
        for transport in ("udp", "tls"):
            w = m["wire"][transport]
            tls = f"{m['handshakes']}/{m['records']}" if transport == "tls" else "-"
            print(f"{track:<7} {transport:<9} {m[transport + '_median_s'] * 1000:7.0f} ms "
                  f"{w['handshake_ms']:7.1f} ms {w['sip_ms']:10.1f} ms {w['packets']:8d} {w['bytes']:6d} "
                  f"{tls:>21}")


if __name__ == "__main__":
    main()
