"""Captures inside lab namespaces: ``with lab.capture("pbx", "alice") as cap: …``.

One dumpcap per named place runs in that place's namespace: a host (``-i any``: what the
host sends and receives) or a network (its bridge: everything on the segment).  As in
ipmininet's ``NetworkCapture``, a capture is confirmed running before the caller's traffic
starts (dumpcap has written the file header) and stopped with SIGINT, so that dumpcap
flushes and closes a complete file.  Files stay in the lab's ``captures/`` directory.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.errors import CaptureError, EnvironmentProblem
from labkit.services.dumpcap import Dumpcap

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


class Capture:
    """Several dumpcaps started and stopped together; a context manager."""

    def __init__(self, lab: Lab, places: tuple[str, ...], name: str | None = None,
                 capture_filter: str | None = None):
        known = {h.name for h in lab.spec.hosts} | {n.name for n in lab.spec.networks}
        unknown = [p for p in places if p not in known]
        if unknown or not places:
            raise CaptureError(f"Cannot capture on {', '.join(unknown) or 'nothing'}.",
                               hint=f"name hosts or networks of the lab: {', '.join(sorted(known))}")
        self.lab = lab
        self.name = name or time.strftime("capture-%H%M%S")
        self.directory = lab.captures_dir
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files = {place: self.directory / f"{self.name}-{place}.pcap" for place in places}
        for path in self.files.values():
            if path.exists():
                path.unlink()
        networks = {n.name for n in lab.spec.networks}
        context = lab.context(build_images=False)
        self.dumpcaps = [
            Dumpcap(context.service_context(place, Dumpcap.kind, image=None, directory="captures"),
                    path=path, interface="br0" if place in networks else "any",
                    capture_filter=capture_filter)
            for place, path in self.files.items()]

    def start(self) -> Capture:
        try:
            for dumpcap in self.dumpcaps:
                dumpcap.start()
            for dumpcap in self.dumpcaps:
                dumpcap.wait_ready()
        except BaseException:
            self.stop()
            raise
        # dumpcap has opened the interface when the header is written; give the kernel a
        # moment to attach the socket filter before the caller's first packet.
        time.sleep(0.1)
        return self

    def stop(self, linger: float = 0.3) -> Capture:
        """Stop after ``linger`` seconds, so that the last packets (the BYE's 200 OK,
        sent after the phone already reported the call closed) are in the file."""
        if any(d.running() for d in self.dumpcaps):
            time.sleep(linger)
        for dumpcap in self.dumpcaps:
            dumpcap.stop()
        return self

    def merged(self) -> Path:
        """One file with every place's packets in time order (mergecap -a would concatenate)."""
        if len(self.files) == 1:
            return next(iter(self.files.values()))
        mergecap = shutil.which("mergecap")
        if mergecap is None:
            raise EnvironmentProblem("mergecap is missing.", hint="apt-get install wireshark-common")
        out = self.directory / f"{self.name}-merged.pcap"
        subprocess.run([mergecap, "-F", "pcap", "-w", str(out), *map(str, self.files.values())],
                       check=True, capture_output=True, timeout=60)
        return out

    @property
    def file(self) -> Path:
        """The capture file: the only one, or the merged one."""
        return self.merged()

    def with_tls_keys(self, place: str | None = None) -> Path:
        """The capture of ``place`` (default: the only or merged one) with the TLS session keys
        the lab's programs logged embedded in it: a pcapng that tshark, Wireshark and
        ``labkit replay`` decrypt with no key file (``editcap --inject-secrets``, a Decryption
        Secrets Block — pcapng spec §4.7)."""
        source = self.files[place] if place else self.file
        keys = self.lab.keylog_dir
        logs = sorted(keys.glob("*.keys")) if keys.is_dir() else []
        if not any(p.stat().st_size for p in logs):
            raise CaptureError("No TLS session keys were logged in this lab.",
                               cause="the lab has no TLS transport, keylog is off in its lab file, or "
                                     "no TLS connection was made yet",
                               hint="pbx.transports: [udp, tls] and pbx.tls.keylog: true")
        merged = keys / "all.keys"
        merged.write_bytes(b"".join(p.read_bytes() for p in logs if p != merged))
        editcap = shutil.which("editcap")
        if editcap is None:
            raise EnvironmentProblem("editcap is missing.", hint="apt-get install wireshark-common")
        out = source.with_name(source.stem + "-with-keys.pcapng")
        subprocess.run([editcap, "--inject-secrets", f"tls,{merged}", str(source), str(out)],
                       check=True, capture_output=True, timeout=60)
        return out

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
