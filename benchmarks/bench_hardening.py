"""Benchmark: a password guesser against fail2ban, per track (exposed-pbx, variant fail2ban).

svcrack tries N wrong passwords for extension 6000 from the attacker's host while Bob calls
Alice; from the capture of the Internet:

* the attacker's rate before the ban (answers per second) — after it there are none: every
  REGISTER it sends meets the ban's drop (counted);
* the time from the first attempt to the last answer the attacker got (≈ time to ban: the
  log is polled once a second), and how many guesses were answered before;
* the legitimate call during the attack: two-way audio or not.

    sudo .venv/bin/python benchmarks/bench_hardening.py [--guesses 300]
"""
from __future__ import annotations

import argparse
import threading

from labkit import analysis
from labkit.lab import Lab
from labkit.lab.conversation import talk
from labkit.spec import load_spec

ATTACKER = "203.0.113.66"


def measure(track: str, guesses: int) -> dict:
    lab = Lab.load("exposed-pbx", track=track, name="benchf2b",
                   overrides=load_spec("exposed-pbx").variant("fail2ban"))
    lab.up(progress=False, capture=("internet",), capture_name="bench")
    try:
        result = {}
        calling = threading.Thread(target=lambda: result.update(call=talk(lab, "bob", "6000", seconds=4)))
        calling.start()
        attack = lab.attack("attacker", "svcrack", extension="6000", timeout=8,
                            passwords=[f"guess{i:05d}" for i in range(guesses)])
        calling.join()
        sip = analysis.sip_messages(lab.captures[0].stop().files["internet"])
        sent = sip[(sip.src == ATTACKER) & (sip.method == "REGISTER")]
        answered = sip[(sip.dst == ATTACKER) & sip.status_code.notna()]
        start, cut = sent.time.min(), answered.time.max()
        # Every answer the attacker got came before the ban; every REGISTER after it met the drop.
        return {"to_ban_s": cut - start, "answered": len(answered),
                "rate_before": len(answered) / max(cut - start, 1e-3),
                "sent_after": int((sent.time > cut).sum()), "attack_s": attack.seconds,
                "call_two_way": result["call"].two_way}
    finally:
        lab.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guesses", type=int, default=300)
    parser.add_argument("--tracks", nargs="+", default=["modern", "legacy"])
    args = parser.parse_args()
    print(f"svcrack, {args.guesses} wrong passwords, against fail2ban (maxretry 5, log polled each second)")
    print(f"{'track':8}{'to ban':>9}{'answers':>9}{'answers/s before':>18}{'dropped after':>15}{'call 2-way':>12}")
    for track in args.tracks:
        r = measure(track, args.guesses)
        print(f"{track:8}{r['to_ban_s']:>8.2f}s{r['answered']:>9}{r['rate_before']:>18.0f}{r['sent_after']:>15}"
              f"{str(r['call_two_way']):>12}")
    print("answers: 401 challenges and 403 refusals the attacker got (two per guess); after the ban it gets "
          "none (answers/s after = 0), its REGISTERs are dropped by the ban's nftables set.")


if __name__ == "__main__":
    main()
