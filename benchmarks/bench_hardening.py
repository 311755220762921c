"""Benchmark: a password guesser against fail2ban, per track (exposed-pbx, variant fail2ban).

svcrack tries N wrong passwords for extension 6000 from the attacker's host while Bob calls
Alice; from the capture of the Internet:

* the attacker's rate before the ban (answers per second) — after it there are none: every
  REGISTER it sends meets the ban's drop (counted);
* the time from the first attempt to the last answer the attacker got (≈ time to ban: the
  log is polled once a second), and how many guesses were answered before;
* the legitimate call during the attack: two-way audio or not;
* the ban's expiry: with ``bantime`` BANTIME seconds, how long after the ban fail2ban lifts it
  (its ban manager checks expiries on its own clock, not to the second), and whether the
  attacker's next guess is answered again afterwards.

Then, with ``--measure calls`` (both measurements run by default: ``--measure ban calls``),
the legitimate calls held during the attack: the lab grown to 2N softphones on the Internet
(p0…p(2N-1) at 203.0.113.100+i, extensions 6000+i; the attacker stays at .66, the VPS at
.10), p(2i) calling p(2i+1) through Asterisk, N = 1, 2, 4 by default (``--calls``).  While the
N calls carry audio the same svcrack runs (its guesses are for 6000, p0's extension: the
phone in the first call); from the capture of the Internet, per call and per direction
(caller → PBX, PBX → callee, callee → PBX, PBX → caller), the RTP packets and the longest gap
over the attack window (the attacker's first to last packet, gaps to the window's edges
included).  A call is *held both ways* when its four directions never paused longer than
HELD_GAP_MS and both phones still report it established after the attack.  Also: the
attacker in fail2ban's list after the attack, the time to the ban (first guess to last answer,
as above), and Asterisk's CPU (user + system, the daemon and its children, psutil) over the
attack against the 3 s just before it (the calls alone), in % of one core.

    sudo .venv/bin/python benchmarks/bench_hardening.py [--guesses 300] [--bantime 20]
        [--tracks modern legacy] [--measure ban calls] [--calls 1 2 4]
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np
from cpu import cpu_seconds

from labkit import analysis
from labkit.lab import Lab
from labkit.lab.conversation import talk
from labkit.spec import load_spec

ATTACKER = "203.0.113.66"
VPS = "203.0.113.10"
FIRST_EXTENSION = 6000
HELD_GAP_MS = 500.0  # a longer pause in one direction is a dropout a caller hears


def measure(track: str, guesses: int, bantime: int) -> dict:
    overrides = load_spec("exposed-pbx").variant("fail2ban")
    overrides["pbx"]["fail2ban"]["bantime"] = bantime
    lab = Lab.load("exposed-pbx", track=track, name="benchf2b", overrides=overrides)
    lab.up(progress=False, capture=("internet",), capture_name="bench")
    try:
        result, ban = {}, {}

        def watch_the_ban() -> None:
            # fail2ban's own view, polled: when the attacker enters the ban list and when it leaves.
            deadline = time.monotonic() + 60 + bantime
            while time.monotonic() < deadline and "lifted" not in ban:
                listed = ATTACKER in lab.fail2ban.banned()
                if listed and "from" not in ban:
                    ban["from"] = time.monotonic()
                elif not listed and "from" in ban:
                    ban["lifted"] = time.monotonic()
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_the_ban)
        watcher.start()
        calling = threading.Thread(target=lambda: result.update(call=talk(lab, "bob", "6000", seconds=4)))
        calling.start()
        attack = lab.attack("attacker", "svcrack", extension="6000", timeout=8,
                            passwords=[f"guess{i:05d}" for i in range(guesses)])
        calling.join()
        watcher.join()
        lifted_after = ban["lifted"] - ban["from"] if "lifted" in ban else float("nan")
        again = lab.attack("attacker", "svcrack", extension="6000", timeout=8, passwords=["after-the-ban"])
        sip = analysis.sip_messages(lab.captures[0].stop().files["internet"])
        from_attacker = sip[sip.src == ATTACKER].time.sort_values()
        # The two attacks are split by the longest silence of the attacker (the wait for the ban's end).
        gaps = from_attacker.diff()
        second = from_attacker[gaps.idxmax()] if len(gaps.dropna()) else float("inf")
        first = sip[sip.time < second]
        sent = first[(first.src == ATTACKER) & (first.method == "REGISTER")]
        answered = first[(first.dst == ATTACKER) & first.status_code.notna()]
        answered_again = int(((sip.time >= second) & (sip.dst == ATTACKER) & sip.status_code.notna()).sum())
        start, cut = sent.time.min(), answered.time.max()
        # Every answer the attacker got came before the ban; every REGISTER after it met the drop.
        return {"to_ban_s": cut - start, "answered": len(answered),
                "rate_before": len(answered) / max(cut - start, 1e-3),
                "sent_after": int((sent.time > cut).sum()), "attack_s": attack.seconds,
                "call_two_way": result["call"].two_way, "lifted_after": lifted_after,
                "answered_again": answered_again, "second_attack_s": again.seconds}
    finally:
        lab.down()


def _phone_address(index: int) -> str:
    return f"203.0.113.{100 + index}"


def _grown(pairs: int) -> dict:
    """Overrides (on top of the variant fail2ban) for 2 × ``pairs`` softphones on the Internet."""
    names = [f"p{i}" for i in range(2 * pairs)]
    hosts = [{"name": "vps", "interfaces": [{"network": "internet", "address": VPS}]}]
    hosts += [{"name": n, "interfaces": [{"network": "internet", "address": _phone_address(i)}]}
              for i, n in enumerate(names)]
    hosts += [{"name": "attacker", "interfaces": [{"network": "internet", "address": ATTACKER}]}]
    endpoints = [{"extension": str(FIRST_EXTENSION + i), "name": n.upper(), "context": "work"}
                 for i, n in enumerate(names)]
    phones = [{"name": n, "host": n, "extension": str(FIRST_EXTENSION + i)} for i, n in enumerate(names)]
    return {"hosts": hosts, "phones": phones, "pbx": {"endpoints": endpoints}}


def _longest_gap_ms(times: np.ndarray, start: float, end: float) -> float:
    """The longest pause in ``times`` over [start, end], the window's edges included."""
    inside = np.sort(times[(times >= start) & (times <= end)])
    return float(np.diff(np.concatenate(([start], inside, [end]))).max() * 1000.0)


def measure_calls(track: str, pairs: int, guesses: int) -> dict:
    """``pairs`` calls through the PBX while svcrack guesses; what the calls and the ban did."""
    lab = Lab.load("exposed-pbx", track=track, name=f"bhc{track[0]}{pairs}", variant="fail2ban",
                   overrides=_grown(pairs))
    lab.up(progress=False)
    try:
        calls = [lab.phone(f"p{2 * i}").call(str(FIRST_EXTENSION + 2 * i + 1)) for i in range(pairs)]
        for call in calls:
            call.wait_established(20)
        time.sleep(1.0)  # past the first packets (Strict RTP learning)
        asterisk = lab.pbx.payload()
        with lab.capture("internet", name="calls") as capture:
            quiet_start, quiet_cpu = time.monotonic(), cpu_seconds(asterisk)
            time.sleep(3.0)
            quiet = (cpu_seconds(asterisk) - quiet_cpu) / (time.monotonic() - quiet_start)
            start, before = time.monotonic(), cpu_seconds(asterisk)
            attack = lab.attack("attacker", "svcrack", extension=str(FIRST_EXTENSION), timeout=8,
                                passwords=[f"guess{i:04d}" for i in range(guesses)])
            during = (cpu_seconds(asterisk) - before) / (time.monotonic() - start)
            banned = ATTACKER in lab.fail2ban.banned()
            time.sleep(1.0)  # RTP after the attack's last packet, then the calls' state
        callee_calls = [lab.phone(f"p{2 * i + 1}").last_call() for i in range(pairs)]
        established = [bool(c.established and r is not None and r.established)
                       for c, r in zip(calls, callee_calls)]
        pcap = capture.files["internet"]
        sip = analysis.sip_messages(pcap)
        rtp = analysis.rtp_packets(pcap, sip)
        from_attacker = sip[sip.src == ATTACKER]
        window = (from_attacker.time.min(), from_attacker.time.max())
        sent = from_attacker[from_attacker.method == "REGISTER"]
        answered = sip[(sip.dst == ATTACKER) & sip.status_code.notna()]
        per_call = []
        for i in range(pairs):
            caller, callee = _phone_address(2 * i), _phone_address(2 * i + 1)
            directions = {}
            for label, src, dst in ((f"p{2 * i}>pbx", caller, VPS), (f"pbx>p{2 * i + 1}", VPS, callee),
                                    (f"p{2 * i + 1}>pbx", callee, VPS), (f"pbx>p{2 * i}", VPS, caller)):
                times = rtp.time[(rtp.src == src) & (rtp.dst == dst)].to_numpy(np.float64)
                in_window = int(((times >= window[0]) & (times <= window[1])).sum())
                directions[label] = {"packets": in_window, "gap_ms": _longest_gap_ms(times, *window)}
            held = established[i] and all(d["packets"] and d["gap_ms"] < HELD_GAP_MS
                                          for d in directions.values())
            per_call.append({"held": held, "established": established[i], "directions": directions})
        for call in calls:
            if call.established:
                call.hangup()
        gaps = [d["gap_ms"] for c in per_call for d in c["directions"].values()]
        packets = [d["packets"] for c in per_call for d in c["directions"].values()]
        return {"held": sum(c["held"] for c in per_call), "calls": per_call,
                "worst_gap_ms": max(gaps), "fewest_packets": min(packets),
                "window_s": window[1] - window[0], "banned": banned,
                "to_ban_s": answered.time.max() - sent.time.min() if len(answered) else float("nan"),
                "attack_s": attack.seconds, "cpu_quiet": 100 * quiet, "cpu_attack": 100 * during}
    finally:
        lab.down()


def report_ban(args: argparse.Namespace) -> None:
    print(f"svcrack, {args.guesses} wrong passwords, against fail2ban (maxretry 5, log polled each second)")
    print(f"{'track':8}{'to ban':>9}{'answers':>9}{'answers/s before':>18}{'dropped after':>15}{'call 2-way':>12}"
          f"{'ban lifted after':>18}{'answered again':>16}")
    for track in args.tracks:
        r = measure(track, args.guesses, args.bantime)
        print(f"{track:8}{r['to_ban_s']:>8.2f}s{r['answered']:>9}{r['rate_before']:>18.0f}{r['sent_after']:>15}"
              f"{str(r['call_two_way']):>12}{r['lifted_after']:>17.1f}s{r['answered_again']:>16}")
    print(f"ban lifted after: seconds from the ban to its end, bantime = {args.bantime} s; answered again: "
          "answers to one guess sent after it (401 + 403 when the ban is gone).")
    print("answers: 401 challenges and 403 refusals the attacker got (two per guess); after the ban it gets "
          "none (answers/s after = 0), its REGISTERs are dropped by the ban's nftables set.")


def report_calls(args: argparse.Namespace) -> None:
    print(f"\nN legitimate calls through the PBX while svcrack sends {args.guesses} wrong passwords "
          f"(fail2ban: maxretry 5, bantime 60 s)")
    print(f"{'track':8}{'N':>3}{'held both ways':>16}{'worst gap':>11}{'pkts/dir min':>14}{'window':>8}"
          f"{'banned':>8}{'to ban':>8}{'CPU calls':>11}{'CPU attack':>12}")
    for track in args.tracks:
        for pairs in args.calls:
            r = measure_calls(track, pairs, args.guesses)
            held = f"{r['held']}/{pairs}"
            print(f"{track:8}{pairs:>3}{held:>16}{r['worst_gap_ms']:>8.0f} ms"
                  f"{r['fewest_packets']:>14}{r['window_s']:>7.1f}s{str(r['banned']):>8}{r['to_ban_s']:>7.2f}s"
                  f"{r['cpu_quiet']:>10.1f}%{r['cpu_attack']:>11.1f}%")
            for i, call in enumerate(r["calls"]):
                if not call["held"]:
                    print(f"    call {i}: established after the attack {call['established']}, "
                          + ", ".join(f"{k} {d['packets']} pkts gap {d['gap_ms']:.0f} ms"
                                      for k, d in call["directions"].items()))
    print(f"held both ways: RTP in all four directions of the call (each phone to the PBX and back), "
          f"no pause of {HELD_GAP_MS:g} ms or more over the attack window, established on both phones "
          "after it.  worst gap: the longest pause of any direction of any call; pkts/dir min: the fewest "
          "RTP packets one direction carried in the window (the attacker's first to last packet).  "
          "CPU: Asterisk's, % of one core, 3 s of calls alone vs the attack.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guesses", type=int, default=300)
    parser.add_argument("--bantime", type=int, default=20)
    parser.add_argument("--tracks", nargs="+", default=["modern", "legacy"])
    parser.add_argument("--measure", nargs="+", choices=["ban", "calls"], default=["ban", "calls"],
                        help="the ban and its expiry with one call (ban), N calls held during the attack (calls)")
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4], help="N, the concurrent calls")
    args = parser.parse_args()
    if "ban" in args.measure:
        report_ban(args)
    if "calls" in args.measure:
        report_calls(args)


if __name__ == "__main__":
    main()
