"""Two homes, two boxes (notebook 02b): each phone behind its own NAT, Asterisk on a VPS.

The report's real topology (lab ``two-homes``): Alice behind her ISP box, Bob behind his, both
homes on the same private subnet (``192.168.1.0/24``, as real homes often are), Asterisk with a
public address and its NAT settings on (``nat=force_rport,comedia`` / ``rtp_symmetric``,
``force_rport``, ``rewrite_contact``).  The variable is ``pbx.direct_media``:
:meth:`TwoNatSession.direct_media` switches it on the running lab (Asterisk re-rendered and
restarted), in the same log as the rest of the session.

With direct media on, Asterisk re-INVITEs each phone with the other's address as the phone
wrote it: a private one, which in the other home is an address of the home's own subnet.  The
phone then asks its own LAN who has that address (ARP) and, with nobody answering, sends no
RTP at all: :func:`arp_requests` reads those questions from a capture.

:class:`TwoNatSession` is a base class of :class:`labkit.teaching.session.Session`.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd

from labkit import analysis
from labkit.errors import CaptureError
from labkit.teaching.display import Text

TWO_HOMES_LAB = "two-homes"
#: The lines of the track's configuration that say whether media is anchored (and how Asterisk
#: treats phones behind NAT).
_MEDIA_LINES = ("directmedia", "direct_media", "nat ", "rtp_symmetric", "force_rport", "rewrite_contact")


def arp_requests(pcap: str | os.PathLike) -> pd.DataFrame:
    """The ARP requests of a capture, one row per address asked for: who asked (``asker``),
    for which address (``asked``), how many times, when first (epoch seconds), and whether
    anyone answered (an ARP reply from that address)."""
    done = subprocess.run(
        [analysis.tshark.tshark_path(), "-n", "-r", os.fspath(Path(pcap)), "-Y", "arp", "-T", "fields",
         "-E", "separator=/t", "-e", "frame.time_epoch", "-e", "arp.opcode", "-e", "arp.src.proto_ipv4",
         "-e", "arp.dst.proto_ipv4"], capture_output=True, text=True, timeout=120, env={**os.environ, "LC_ALL": "C"})
    if done.returncode != 0:
        raise CaptureError(f"tshark could not read {pcap}: {done.stderr.strip()[-300:]}")
    rows = [line.split("\t") for line in done.stdout.splitlines() if line.count("\t") == 3]
    requests = [(float(t), src, dst) for t, op, src, dst in rows if op == "1"]
    answered = {src for _, op, src, _ in rows if op == "2"}
    columns = ["asker", "asked", "requests", "first_time", "answered"]
    if not requests:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(requests, columns=["time", "asker", "asked"])
    grouped = table.groupby(["asker", "asked"], sort=False).time.agg(["count", "min"]).reset_index()
    grouped.columns = ["asker", "asked", "requests", "first_time"]
    return grouped.assign(answered=grouped.asked.isin(answered))[columns]


class TwoNatSession:
    """Notebook 02b's two-NAT part of a session."""

    def direct_media(self, enabled: bool) -> Text:
        """Let media flow phone to phone (``directmedia=yes`` / ``direct_media = yes``) or
        anchor it on Asterisk (``no``); Asterisk restarts.  Returns the lines of its SIP
        configuration that decide it (the phones' NAT handling included)."""
        def change():
            self.lab.reconfigure({"direct_media": bool(enabled)})
            return self.lab.pbx.config(self.lab.pbx.sip_config_name)
        conf = self._ask("direct-media", change, enabled=bool(enabled))
        return Text("\n".join(dict.fromkeys(line.strip() for line in conf.splitlines()
                                            if line.strip().startswith(_MEDIA_LINES))))

    def who_has(self, place: str | None = None) -> pd.DataFrame:
        """The ARP requests captured on ``place`` (a home network): which host asked its LAN for
        which address, how often, and whether anyone answered."""
        return arp_requests(self.pcap_at(place)).drop(columns="first_time")
