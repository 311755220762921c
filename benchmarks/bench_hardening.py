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

    sudo .venv/bin/python benchmarks/bench_hardening.py [--guesses 300] [--bantime 20]
"""
from __future__ import annotations

import argparse
import threading
import time

from labkit import analysis
from labkit.lab import Lab
from labkit.lab.conversation import talk
from labkit.spec import load_spec

ATTACKER = "203.0.113.66"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guesses", type=int, default=300)
    parser.add_argument("--bantime", type=int, default=20)
    parser.add_argument("--tracks", nargs="+", default=["modern", "legacy"])
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
