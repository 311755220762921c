"""Record the reference captures of data/ from the real lab (never by hand).

    sudo .venv/bin/python scripts/record_reference.py [SCENARIO ...]

For each scenario and track it brings the lab up, captures on the LAN (the switch sees
every packet once), runs the scenario, and writes:

* ``data/captures/<scenario>-<track>.pcap`` — the capture (kept under 1 MiB);
* ``data/recorded/<scenario>-<track>/*.txt`` — CLI outputs the notebooks show in replay mode;
* an entry in ``data/manifest.json``: scenario, track, software versions, date, sha256,
  size, packet counts and what the capture shows.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from labkit.analysis import rtp_streams, sip_messages
from labkit.lab import Lab
from labkit.teaching import manifest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
MAX_BYTES = 1 << 20


def first_call(lab: Lab) -> tuple[str, dict[str, str]]:
    """Bob (6001) calls Alice (6000) through Asterisk; 3 s of speech each way; Bob hangs up."""
    call = lab.phone("bob").call("6000").wait_established(10)
    time.sleep(3.0)
    stats = lab.pbx.cli("sip show channelstats" if lab.track == "legacy" else "pjsip show channelstats")
    channels = lab.pbx.cli("core show channels")
    call.hangup()
    peers = lab.pbx.cli("sip show peers" if lab.track == "legacy" else "pjsip show endpoints")
    contacts = lab.pbx.cli("sip show peer 6000" if lab.track == "legacy" else "pjsip show contacts")
    return ("Both phones register (REGISTER, 401 challenge, REGISTER with credentials, 200); "
            "Bob (6001) calls Alice (6000): INVITE, 401, ACK, INVITE with credentials, 100, "
            "Asterisk's INVITE to Alice, 180, 200, ACK, 3 s of G.711 speech each way anchored "
            "on Asterisk (two RTP legs), BYE, 200.",
            {"channelstats": stats, "channels": channels, "peers": peers, "contacts": contacts})


SCENARIOS = {"first-call": ("first-call", first_call)}


def record(scenario: str, track: str) -> dict:
    lab_file, run = SCENARIOS[scenario]
    lab = Lab.load(lab_file, track=track, name=f"ref-{track}")
    lab.up(progress=False, capture=("lan",), capture_name="reference")  # before registration
    try:
        what, outputs = run(lab)
        cap = lab.captures[0].stop()
    finally:
        lab.down()
    target = DATA / "captures" / f"{scenario}-{track}.pcap"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cap.files["lan"], target)
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{target} is {size} bytes, over the 1 MiB budget: shorten the scenario")
    recorded = DATA / "recorded" / f"{scenario}-{track}"
    recorded.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (recorded / f"{name}.txt").write_text(text)
    sip = sip_messages(target)
    streams = rtp_streams(target, sip=sip)
    return manifest.entry(target, scenario=scenario, track=track, lab=lab_file, what=what,
                          sip_messages=int(len(sip)), rtp_streams=int(len(streams)),
                          rtp_packets=int(streams["packets"].sum()) if len(streams) else 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--tracks", nargs="*", default=["modern", "legacy"])
    args = parser.parse_args()
    entries = []
    for scenario in args.scenarios:
        for track in args.tracks:
            entries.append(record(scenario, track))
            print(f"{entries[-1]['file']}: {entries[-1]['bytes']} bytes, "
                  f"{entries[-1]['sip_messages']} SIP messages, {entries[-1]['rtp_streams']} RTP streams")
    manifest.update(entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
