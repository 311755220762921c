"""Benchmark: the SIP trunk to the Kamailio carrier, on both tracks.

* Kamailio start-to-ready: launch of ``ip netns exec … bwrap … kamailio`` to the first
  ``200 Keepalive`` to an OPTIONS (the service's readiness probe), median of N restarts;
* trunk registration: Asterisk started (launch) to ``Registered`` in the CLI, and on the wire
  the first REGISTER to its 200 OK (REGISTER → 401 → REGISTER with digest → 200);
* outbound call set-up on the wire, PBX ↔ carrier: INVITE → 407, INVITE → 183 (the PSTN's
  early media starts), and INVITE → 200 — with the PSTN's announcement (it plays before the
  phone rings) and without it (``pstn.early_media: false``): the call set-up proper.

Medians of N (default 5).  Prints a table.

    sudo .venv/bin/python benchmarks/bench_trunk.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

from labkit import analysis
from labkit.lab import Lab

PBX, CARRIER = "198.51.100.10", "203.0.113.10"


def _trunk_sip(pcap):
    sip = analysis.sip_messages(pcap)
    return sip[sip.src.isin([PBX, CARRIER]) & sip.dst.isin([PBX, CARRIER])]


def _after(sip, since: float, condition) -> float:
    rows = sip[(sip.time >= since) & condition(sip)]
    return float(rows.time.min())


def registrations(lab: Lab, runs: int) -> dict[str, list[float]]:
    """Restart Asterisk ``runs`` times: launch → Registered (CLI), and REGISTER → 200 on the wire."""
    to_registered, wire = [], []
    with lab.capture("internet", name="registrations") as capture:
        starts = []
        for _ in range(runs):
            lab.pbx.stop()
            time.sleep(0.2)
            starts.append(time.time())
            began = time.perf_counter()
            lab.pbx.start()
            lab.pbx.wait_ready()
            state = lab.pbx.wait_trunk(timeout=10)
            assert state == "Registered", state
            to_registered.append(time.perf_counter() - began)
    sip = _trunk_sip(capture.files["internet"])
    for since in starts:
        first = _after(sip, since, lambda s: s.method == "REGISTER")
        ok = _after(sip, first, lambda s: (s.cseq_method == "REGISTER") & (s.status_code == 200))
        wire.append(ok - first)
    return {"to_registered": to_registered, "wire": wire}


def calls(lab: Lab, runs: int) -> dict[str, list[float]]:
    """``runs`` calls from Alice to Carol through the trunk: INVITE → 407, → 183, → 200."""
    out: dict[str, list[float]] = {"407": [], "183": [], "200": []}
    with lab.capture("internet", name="calls") as capture:
        starts = []
        for _ in range(runs):
            starts.append(time.time())
            lab.phone("alice").call("0639980001").wait_established(30).hangup()
            time.sleep(0.3)
    sip = _trunk_sip(capture.files["internet"])
    for since in starts:
        invite = _after(sip, since, lambda s: s.method == "INVITE")
        for code in out:
            answer = _after(sip, invite, lambda s, c=int(code): (s.cseq_method == "INVITE") & (s.status_code == c))
            out[code].append(answer - invite)
    return out


def kamailio_starts(lab: Lab, runs: int) -> list[float]:
    """Launch to the first 200 Keepalive, probing every few milliseconds (finer than the
    service's own readiness polling, which sleeps 50 ms between probes)."""
    carrier, out = lab.carrier, []
    for _ in range(runs):
        carrier.stop()
        began = time.perf_counter()
        carrier.start()
        while not (carrier.probe(timeout=0.005) or "").startswith("SIP/2.0 200"):
            assert time.perf_counter() - began < carrier.ready_timeout, carrier.log()
        out.append(time.perf_counter() - began)
    carrier.wait_ready()
    return out


def measure(track: str, runs: int) -> dict:
    lab = Lab.load("trunk-office", track=track, name="benchtrunk")
    lab.up(progress=False)
    try:
        assert lab.pbx.wait_trunk(timeout=10) == "Registered"
        result = {"kamailio": kamailio_starts(lab, runs), "registration": registrations(lab, runs),
                  "calls": calls(lab, runs)}
        lab.reconfigure(pstn={"early_media": False})
        assert lab.pbx.wait_trunk(timeout=10) == "Registered"
        result["calls_no_early_media"] = calls(lab, runs)
        return result
    finally:
        lab.down()


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"The trunk to the Kamailio carrier (trunk-office), medians of {args.runs}")
    print(f"{'track':<7} {'Kamailio ready':>14} {'start→Registered':>17} {'REGISTER→200':>13} "
          f"{'INVITE→407':>11} {'INVITE→183':>11} {'INVITE→200':>11} {'→200, no early media':>21}")
    for track in ("modern", "legacy"):
        m = measure(track, args.runs)
        print(f"{track:<7} {_ms(m['kamailio']):>14} {_ms(m['registration']['to_registered']):>17} "
              f"{_ms(m['registration']['wire']):>13} {_ms(m['calls']['407']):>11} "
              f"{_ms(m['calls']['183']):>11} {_ms(m['calls']['200']):>11} "
              f"{_ms(m['calls_no_early_media']['200']):>21}")
    print("Kamailio ready: launch (sandbox included) to the first 200 Keepalive; start→Registered: "
          "Asterisk's launch to Registered in the CLI (its boot included); INVITE→200 with early media "
          "includes the PSTN's announcement (about 2.5 s) and its ringing.")


if __name__ == "__main__":
    main()
