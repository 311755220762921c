"""A deep look at one packet with pyshark — for a single frame, never for bulk work.

pyshark drives tshark through asyncio.  Inside Jupyter an event loop is already running
in the main thread, and pyshark calling ``run_until_complete`` there fails ("This event
loop is already running").  So the work is done in a worker thread that owns a fresh
event loop of its own; the caller just waits for the result.  That works the same from a
script, from Jupyter, and from inside ``asyncio.run(...)``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os

from labkit.analysis.pcapfile import open_capture
from labkit.errors import CaptureError


def _layer_fields(layer) -> dict:
    out = {}
    for name in getattr(layer, "field_names", []):
        try:
            out[name] = layer.get_field_value(name)
        except Exception:  # pyshark raises on odd fields; skip them
            continue
    return {k: (str(v) if v is not None else None) for k, v in out.items()}


def _load(path: str, n: int, raw: bool, timeout: float):
    import pyshark
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    cap = None
    try:
        cap = pyshark.FileCapture(path, display_filter=f"frame.number == {int(n)}", eventloop=loop,
                                  keep_packets=True)
        try:
            pkt = cap.next()
        except StopIteration:
            pkt = None
        if pkt is None:
            raise CaptureError(f"{path} has no frame number {n}.",
                               hint="frame numbers start at 1; see the 'frame' column of the tables")
        if raw:
            return pkt
        return {"frame": int(n), "time": float(pkt.sniff_timestamp),
                "length": int(pkt.length), "highest_layer": pkt.highest_layer,
                "layers": {layer.layer_name: _layer_fields(layer) for layer in pkt.layers},
                "summary": str(pkt)}
    finally:
        if cap is not None:
            try:
                cap.close()
            except Exception:
                pass
            # never leave work for pyshark's __del__: it would run on a closed loop later
            for proc in list(getattr(cap, "_running_processes", ())):
                try:
                    proc.kill()
                except Exception:
                    pass
            getattr(cap, "_running_processes", set()).clear()
        loop.close()
        asyncio.set_event_loop(None)


def packet(pcap, n: int, *, raw: bool = False, timeout: float = 60.0):
    """Every field tshark decodes in frame ``n`` (1-based, as in Wireshark).

    Returns a dict ``{"frame", "time", "length", "highest_layer", "layers": {layer:
    {field: value}}, "summary"}``; with ``raw=True`` the pyshark packet itself.
    Safe to call from Jupyter or from code running inside an asyncio event loop.
    """
    f, _, _ = open_capture(pcap)
    f.close()
    if int(n) < 1:
        raise CaptureError(f"Frame number {n} does not exist: frames are numbered from 1.")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="labkit-pyshark") as ex:
        fut = ex.submit(_load, os.fspath(pcap), int(n), raw, timeout)
        try:
            return fut.result(timeout=timeout)
        except concurrent.futures.TimeoutError as e:
            raise CaptureError(f"pyshark took more than {timeout:.0f} s to decode frame {n} of {pcap}.",
                               hint="the capture may be very large; cut it with editcap first") from e
