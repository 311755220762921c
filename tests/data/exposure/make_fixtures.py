"""Records the exposure fixtures of this directory from a live whole-chain lab (root needed).

    sudo .venv/bin/python tests/data/exposure/make_fixtures.py [modern|legacy]

Brings up configs/labs/whole-chain.yaml with captures on its three segments (lan: Alice behind
the box; internet: the box, Bob, the VPS; carrier: the trunk's Kamailio, the PSTN exchange and
Carol), registers, then Alice (TLS + SRTP, behind NAT) calls Carol's PSTN number through the
trunk for two seconds.  Each capture is cut to keep it small: every packet that is not media,
and the first MEDIA_PACKETS packets of each media flow (enough for srtp_decrypt's entropy test
and a second of G.711).  The TLS key logs of the run (Asterisk's and the phones') are kept in
chain.keys, for the observer who holds them.  All addresses are RFC 5737/1918, the numbers
ARCEP fiction blocks; the lab's secrets are drawn per run and this run is gone.
"""
from __future__ import annotations

import struct
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from labkit.lab import Lab  # noqa: E402

MEDIA_PACKETS = 60
SIGNALLING_PORTS = {53, 5060, 5061}


def thin(src: Path, dst: Path, keep: int = MEDIA_PACKETS) -> None:
    """Copy a classic pcap (Ethernet, IPv4), keeping ``keep`` packets per UDP media flow."""
    data = src.read_bytes()
    out, seen, p = [data[:24]], Counter(), 24
    while p + 16 <= len(data):
        incl = struct.unpack_from("<I", data, p + 8)[0]
        frame = data[p + 16:p + 16 + incl]
        record = data[p:p + 16 + incl]
        p += 16 + incl
        if len(frame) >= 42 and frame[12:14] == b"\x08\x00" and frame[23] == 17:
            ihl = (frame[14] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
            if sport not in SIGNALLING_PORTS and dport not in SIGNALLING_PORTS:
                flow = (frame[26:30], sport, frame[30:34], dport)
                seen[flow] += 1
                if seen[flow] > keep:
                    continue
        out.append(record)
    dst.write_bytes(b"".join(out))


def main(track: str = "modern") -> None:
    lab = Lab.load("whole-chain", track=track, name="exposurefix")
    try:
        lab.up(capture=("lan", "internet", "carrier"), capture_name="chain")
        conversation = lab.talk("alice", "0639980001", "carol", seconds=2)
        print(conversation.summary())
        capture = lab.captures[0].stop()
        for segment, path in capture.files.items():
            thin(Path(path), HERE / f"chain-{segment}.pcap")
        keys = "".join(p.read_text() for p in sorted(lab.keylog_dir.glob("*.keys")))
        (HERE / "chain.keys").write_text(keys)
    finally:
        lab.down()


if __name__ == "__main__":
    main(*sys.argv[1:])
