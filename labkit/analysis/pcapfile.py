"""A fast, streaming reader of pcap and pcapng files down to UDP payloads.

Why not dpkt/scapy/pyshark objects?  A ten-minute call is 60,000 RTP packets; building a
Python object per packet is what makes those readers slow.  Here the file is read in
windows of a few MiB into one reusable buffer, the record headers are walked (the only
per-record Python step: it reads two integers), and everything after that — link layer,
IPv4/IPv6, UDP — is decoded for all packets of the window at once with numpy gathers at
fixed offsets.  Memory is the window plus a few numbers per UDP packet: the capture is
never held twice.

Supported link types (the ``linktype`` of the file or, for pcapng, of each interface):

==========  ====================================================================
1           Ethernet (with 802.1Q / 802.1ad VLAN tags, up to two)
113         Linux cooked capture v1, "SLL" (``tcpdump -i any``)
276         Linux cooked capture v2, "SLL2" (``tshark -i any`` on newer versions)
101/12/14   raw IP (version read from the first nibble)
228 / 229   raw IPv4 / raw IPv6
0 / 108     BSD loopback ("null", host byte order) / OpenBSD loopback (network order)
==========  ====================================================================

Non-first IPv4 fragments and IPv6 extension headers are skipped (RTP is never
fragmented in practice).  Truncated files: every complete record is read, the torn last
record is dropped and a warning is given (``warnings`` of the returned scan); see
:class:`ScanResult`.
"""
from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from labkit.errors import CaptureError


class CaptureWarning(UserWarning):
    """Something in a capture was skipped (e.g. the torn last record of a cut file)."""


def warn_all(messages) -> None:
    """Issue each message as a :class:`CaptureWarning` (and they also stay in df.attrs)."""
    import warnings
    for m in messages:
        warnings.warn(m, CaptureWarning, stacklevel=3)


WINDOW = 4 << 20  # bytes read per window; memory use does not grow with the file

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),   # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),   # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"

@dataclass
class Window:
    """The packets whose records lie entirely in one buffer window.

    ``buf`` is a uint8 view of the window; ``off`` are the offsets of each packet's
    first link-layer byte in it; ``caplen`` its captured length; ``ts`` the epoch time;
    ``frame`` the 1-based frame number as Wireshark counts it; ``linktype`` per packet.
    """
    buf: np.ndarray
    off: np.ndarray
    caplen: np.ndarray
    ts: np.ndarray
    frame: np.ndarray
    linktype: np.ndarray


@dataclass
class ScanResult:
    """Bookkeeping about one pass over a file."""
    path: str
    fmt: str = ""
    frames: int = 0
    first_time: float = float("nan")
    linktypes: set = field(default_factory=set)
    warnings: list = field(default_factory=list)


def _not_capture(path: str, why: str) -> CaptureError:
    return CaptureError(
        f"{path} is not a pcap or pcapng capture ({why}).",
        cause="the file is something else (text, a log, a compressed capture) or is damaged",
        hint="give a file written by tcpdump, tshark or dumpcap (.pcap/.pcapng); "
             "gunzip it first if it ends in .gz")


def open_capture(path) -> tuple[object, str, bytes]:
    """Open ``path`` and check it is a capture.  Returns (file, format, first bytes).

    Raises :class:`CaptureError` for a missing, empty or non-capture file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CaptureError(f"Capture file {path} does not exist.",
                           hint="check the path; captures of a lab are under runs/<lab>/")
    if os.path.isdir(path):
        raise CaptureError(f"{path} is a directory, not a capture file.",
                           hint="name one .pcap/.pcapng file inside it")
    size = os.path.getsize(path)
    if size == 0:
        raise CaptureError(f"Capture file {path} is empty (0 bytes).",
                           cause="the capture was stopped before tcpdump/tshark wrote its header, "
                                 "or it is still being written",
                           hint="stop the capture cleanly (Ctrl-C / lab stop) and read it again")
    f = open(path, "rb")
    head = f.read(24)
    magic = head[:4]
    if magic in PCAP_MAGICS:
        if len(head) < 24:
            f.close()
            raise CaptureError(f"Capture file {path} is cut inside its 24-byte header.",
                               cause="the capture was interrupted", hint="capture again")
        return f, "pcap", head
    if magic == PCAPNG_SHB:
        return f, "pcapng", head
    f.close()
    if head[:2] == b"\x1f\x8b":
        raise _not_capture(path, "it is gzip-compressed")
    raise _not_capture(path, f"unknown magic number {magic.hex()}")


def iter_windows(path, result: ScanResult | None = None, window: int = WINDOW) -> Iterator[Window]:
    """Yield :class:`Window` s covering every complete packet record of the file."""
    result = result if result is not None else ScanResult(os.fspath(path))
    f, fmt, head = open_capture(path)
    result.fmt = fmt
    try:
        f.seek(0)
        if fmt == "pcap":
            yield from _pcap_windows(f, head, result, window)
        else:
            yield from _pcapng_windows(f, result, window)
    finally:
        f.close()


def _fill(f, buf: bytearray, keep: int) -> int:
    """Read into ``buf`` after the ``keep`` bytes already there; return bytes valid."""
    mv = memoryview(buf)
    n = keep
    while n < len(buf):
        got = f.readinto(mv[n:])
        if not got:
            break
        n += got
    return n


def _carry(buf: bytearray, p: int, n: int) -> int:
    """Move the unread tail ``buf[p:n]`` to the front; return its length."""
    rest = n - p
    if rest and p:
        buf[:rest] = bytes(buf[p:n])
    return rest


def _grown(buf: bytearray, n: int) -> bytearray:
    """A buffer twice as big holding the same first ``n`` bytes (a new object, so numpy
    views of the old one stay valid)."""
    nb = bytearray(2 * len(buf))
    nb[:n] = buf[:n]
    return nb


def _pcap_windows(f, head, result, window):
    endian, tick = PCAP_MAGICS[head[:4]]
    linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
    result.linktypes.add(linktype)
    f.seek(24)
    rec = struct.Struct(endian + "IIII")
    buf = bytearray(window)
    keep, frame, eof = 0, 0, False
    while not eof:
        n = _fill(f, buf, keep)
        eof = n < len(buf)
        # array('q') keeps machine integers, not Python int objects, per record
        offs, caps, secs, fracs = array("q"), array("q"), array("q"), array("q")
        p = 0
        # The only per-record loop: 16-byte record headers, RFC-less but see
        # draft-ietf-opsawg-pcap (ts_sec, ts_usec|nsec, incl_len, orig_len).
        while p + 16 <= n:
            sec, frac, incl, _orig = rec.unpack_from(buf, p)
            if incl > 0x4000000:
                raise CaptureError(f"{result.path}: record at byte {f.tell() - n + p} claims "
                                   f"{incl} bytes; the file is damaged.",
                                   hint="try `editcap` or `pcapfix` to repair it")
            if p + 16 + incl > n:
                break
            offs.append(p + 16)
            caps.append(incl)
            secs.append(sec)
            fracs.append(frac)
            p += 16 + incl
        count = len(offs)
        if count:
            ts = np.frombuffer(secs, dtype=np.int64) + np.frombuffer(fracs, dtype=np.int64) * tick
            yield Window(np.frombuffer(buf, dtype=np.uint8, count=n),
                         np.frombuffer(offs, dtype=np.int64), np.frombuffer(caps, dtype=np.int64), ts,
                         np.arange(frame + 1, frame + 1 + count, dtype=np.int64),
                         np.full(count, linktype, dtype=np.int32))
            frame += count
        keep = _carry(buf, p, n)
        if p == 0 and n == len(buf):  # one record bigger than the window: grow
            buf = _grown(buf, n)
    result.frames = frame
    if keep:
        result.warnings.append(
            f"{result.path} ends in the middle of a packet record ({keep} bytes left over); "
            f"the {frame} complete packets were read and the torn one dropped.")


def _pcapng_windows(f, result, window):
    """pcapng (draft-ietf-opsawg-pcapng): SHB, IDB, EPB, SPB and obsolete PB blocks."""
    buf = bytearray(window)
    keep, frame, eof = 0, 0, False
    endian = "<"
    ifaces: list[tuple[int, int, float, int]] = []  # (linktype, ticks per second, offset_s, snaplen)
    while not eof:
        n = _fill(f, buf, keep)
        eof = n < len(buf)
        offs, caps, tsl, ifl = array("q"), array("q"), array("d"), array("q")
        p = 0
        while p + 12 <= n:
            btype_raw = bytes(buf[p:p + 4])
            if btype_raw == PCAPNG_SHB:
                if p + 12 > n:
                    break
                bom = bytes(buf[p + 8:p + 12])
                endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
                if endian is None:
                    raise _not_capture(result.path, "bad pcapng byte-order magic")
            btype, blen = struct.unpack_from(endian + "II", buf, p)
            if blen < 12 or blen % 4 or blen > 0x4000000:
                if frame == 0 and not ifaces and p == 0:
                    raise _not_capture(result.path, "bad pcapng block length")
                raise CaptureError(f"{result.path}: pcapng block at byte {f.tell() - n + p} has a "
                                   f"bad length {blen}; the file is damaged.",
                                   hint="try `editcap` to rewrite it")
            if p + blen > n:
                break
            if btype == 0x0A0D0D0A:
                ifaces = []
            elif btype == 1:  # Interface Description Block
                lt, snap = struct.unpack_from(endian + "HxxI", buf, p + 8)
                units, tsoff = 1_000_000, 0.0
                q = p + 16
                while q + 4 <= p + blen - 4:
                    code, olen = struct.unpack_from(endian + "HH", buf, q)
                    if code == 0:
                        break
                    if code == 9 and olen >= 1:  # if_tsresol
                        r = buf[q + 4]
                        units = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
                    elif code == 14 and olen >= 8:  # if_tsoffset (seconds)
                        tsoff = float(struct.unpack_from(endian + "q", buf, q + 4)[0])
                    q += 4 + ((olen + 3) & ~3)
                ifaces.append((lt, units, tsoff, snap))
                result.linktypes.add(lt)
            elif btype == 6 or btype == 2:  # Enhanced Packet Block / obsolete Packet Block
                if btype == 6:
                    iface, hi, lo, cap = struct.unpack_from(endian + "IIII", buf, p + 8)
                else:
                    iface, hi, lo, cap = struct.unpack_from(endian + "HxxIII", buf, p + 8)
                if iface >= len(ifaces):
                    result.warnings.append(f"packet for undeclared interface {iface} skipped")
                else:
                    lt, units, tsoff, _ = ifaces[iface]
                    offs.append(p + 28)
                    caps.append(min(cap, blen - 28))
                    ifl.append(iface)
                    sec, frac = divmod((hi << 32) | lo, units)  # exact, even for ns
                    tsl.append(sec + frac / units + tsoff)
            elif btype == 3:  # Simple Packet Block: no timestamp, interface 0
                if ifaces:
                    orig = struct.unpack_from(endian + "I", buf, p + 8)[0]
                    snap = ifaces[0][3] or orig
                    offs.append(p + 12)
                    caps.append(min(orig, snap, blen - 16))
                    ifl.append(0)
                    tsl.append(float("nan"))
            p += blen
        count = len(offs)
        if count:
            lts = np.array([ifaces[i][0] if i < len(ifaces) else -1 for i in range(max(ifl) + 1)],
                           dtype=np.int32)
            yield Window(np.frombuffer(buf, dtype=np.uint8, count=n),
                         np.frombuffer(offs, dtype=np.int64), np.frombuffer(caps, dtype=np.int64),
                         np.frombuffer(tsl, dtype=np.float64),
                         np.arange(frame + 1, frame + 1 + count, dtype=np.int64),
                         lts[np.frombuffer(ifl, dtype=np.int64)])
            frame += count
        keep = _carry(buf, p, n)
        if p == 0 and n == len(buf):  # one record bigger than the window: grow
            buf = _grown(buf, n)
    result.frames = frame
    if keep:
        result.warnings.append(
            f"{result.path} ends in the middle of a pcapng block ({keep} bytes left over); "
            f"the {frame} complete packets were read and the torn one dropped.")


# ---------------------------------------------------------------------------------------
# Vectorised decoding: link layer -> IP -> UDP, all packets of a window at once.

def _gather(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return buf[np.minimum(idx, len(buf) - 1)]


def _be16(buf, idx):
    return (_gather(buf, idx).astype(np.uint32) << 8) | _gather(buf, idx + 1)


def _be32(buf, idx):
    return ((_gather(buf, idx).astype(np.uint64) << 24) | (_gather(buf, idx + 1).astype(np.uint64) << 16)
            | (_gather(buf, idx + 2).astype(np.uint64) << 8) | _gather(buf, idx + 3))


def _be64(buf, idx):
    return (_be32(buf, idx) << np.uint64(32)) | _be32(buf, idx + 4)


@dataclass
class UdpWindow:
    """UDP datagrams of one window: addresses as (hi, lo) 64-bit pairs (IPv4 is mapped
    to ``::ffff:a.b.c.d``), ports, and where the payload lies in ``buf``."""
    buf: np.ndarray
    frame: np.ndarray
    ts: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    pay: np.ndarray
    paylen: np.ndarray


V4MAPPED = np.uint64(0xFFFF00000000)


def udp_of(w: Window) -> UdpWindow:
    """Find the IPv4/IPv6 UDP datagrams in a window (vectorised)."""
    b, off, cap, lt = w.buf, w.off, w.caplen, w.linktype
    end = off + cap
    l3 = np.full(len(off), -1, dtype=np.int64)
    ver = np.zeros(len(off), dtype=np.int64)  # 4, 6 or 0 (from link layer), -1 = read nibble
    # Ethernet: ethertype at 12, VLAN tags 0x8100/0x88a8 add 4 bytes each.
    m = lt == 1
    if m.any():
        o = off[m]
        et = _be16(b, o + 12).astype(np.int64)
        pos = o + 14
        for _ in range(2):  # up to two VLAN tags (802.1Q, 802.1ad)
            tag = (et == 0x8100) | (et == 0x88A8)
            et = np.where(tag, _be16(b, pos + 2).astype(np.int64), et)
            pos = np.where(tag, pos + 4, pos)
        l3[m] = pos
        ver[m] = np.where(et == 0x0800, 4, np.where(et == 0x86DD, 6, 0))
    m = lt == 113  # SLL: 16-byte header, protocol at 14
    if m.any():
        et = _be16(b, off[m] + 14)
        l3[m] = off[m] + 16
        ver[m] = np.where(et == 0x0800, 4, np.where(et == 0x86DD, 6, 0))
    m = lt == 276  # SLL2: 20-byte header, protocol at 0
    if m.any():
        et = _be16(b, off[m])
        l3[m] = off[m] + 20
        ver[m] = np.where(et == 0x0800, 4, np.where(et == 0x86DD, 6, 0))
    m = np.isin(lt, (12, 14, 101, 228, 229))
    if m.any():
        l3[m] = off[m]
        ver[m] = -1
    m = np.isin(lt, (0, 108))  # 4-byte address family, either byte order
    if m.any():
        o = off[m]
        le = (_gather(b, o).astype(np.int64) | (_gather(b, o + 1).astype(np.int64) << 8)
              | (_gather(b, o + 2).astype(np.int64) << 16) | (_gather(b, o + 3).astype(np.int64) << 24))
        be = _be32(b, o).astype(np.int64)
        fam = np.where(le < 256, le, be)
        l3[m] = o + 4
        ver[m] = np.where(fam == 2, 4, np.where(np.isin(fam, (10, 23, 24, 28, 30)), 6, 0))
    nib = (_gather(b, l3) >> 4).astype(np.int64)
    ver = np.where(ver == -1, nib, ver)
    ok = (l3 >= 0) & (ver == nib)

    v4 = ok & (ver == 4) & (l3 + 20 <= end)
    ihl = (_gather(b, l3) & 0x0F).astype(np.int64) * 4
    proto4 = _gather(b, l3 + 9)
    frag = _be16(b, l3 + 6) & 0x3FFF  # MF flag + fragment offset: keep unfragmented only
    v4 &= (proto4 == 17) & (frag == 0) & (ihl >= 20)
    v6 = ok & (ver == 6) & (l3 + 40 <= end) & (_gather(b, l3 + 6) == 17)
    l4 = np.where(v4, l3 + ihl, l3 + 40)
    udp = (v4 | v6) & (l4 + 8 <= end)

    sel = np.flatnonzero(udp)
    l3s, l4s, v4s = l3[sel], l4[sel], v4[sel]
    src_lo = np.where(v4s, V4MAPPED | _be32(b, l3s + 12), _be64(b, l3s + 16))
    dst_lo = np.where(v4s, V4MAPPED | _be32(b, l3s + 16), _be64(b, l3s + 32))
    zero = np.uint64(0)
    src_hi = np.where(v4s, zero, _be64(b, l3s + 8))
    dst_hi = np.where(v4s, zero, _be64(b, l3s + 24))
    ulen = _be16(b, l4s + 4).astype(np.int64)
    pay = l4s + 8
    paylen = np.minimum(ulen - 8, end[sel] - pay)
    paylen = np.where(ulen < 8, end[sel] - pay, paylen)
    return UdpWindow(b, w.frame[sel], w.ts[sel], src_hi, src_lo, dst_hi, dst_lo,
                     _be16(b, l4s).astype(np.uint16), _be16(b, l4s + 2).astype(np.uint16),
                     pay, np.maximum(paylen, 0))


class AddressBook:
    """Numbers the distinct addresses met across windows, so a packet stores a 4-byte code
    instead of a 16-byte address; only distinct addresses become Python strings."""

    def __init__(self):
        self.codes: dict[tuple[int, int], int] = {}

    def encode(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        if len(lo) == 0:
            return np.zeros(0, dtype=np.int32)
        if not hi.any():
            uniq, inv = np.unique(lo, return_inverse=True)
            keys = [(0, int(u)) for u in uniq]
        else:
            uniq, inv = np.unique(np.stack([hi, lo], axis=1), axis=0, return_inverse=True)
            keys = [(int(high), int(low)) for high, low in uniq]
        table = np.array([self.codes.setdefault(k, len(self.codes)) for k in keys], dtype=np.int32)
        return table[inv.reshape(-1)]

    def labels(self) -> list[str]:
        import ipaddress
        out = []
        for (high, low) in self.codes:  # insertion order == code order
            a = ipaddress.IPv6Address((high << 64) | low)
            out.append(str(a.ipv4_mapped) if a.ipv4_mapped else str(a))
        return out


def scan_udp(path, extract: Callable[[UdpWindow], dict], result: ScanResult | None = None,
             window: int = WINDOW) -> tuple[dict, ScanResult]:
    """Run ``extract`` on the UDP datagrams of every window and concatenate its columns.

    ``extract`` gets a :class:`UdpWindow` and returns a dict of equal-length numpy arrays
    (it must copy out whatever it needs from ``buf``: the buffer is reused).
    """
    result = result if result is not None else ScanResult(os.fspath(path))
    parts: dict[str, list] = {}
    for w in iter_windows(path, result, window):
        if result.first_time != result.first_time and len(w.ts):
            result.first_time = float(np.nanmin(w.ts)) if not np.isnan(w.ts).all() else float("nan")
        cols = extract(udp_of(w))
        for k, v in cols.items():
            parts.setdefault(k, []).append(v)
    out = {}
    for k, v in parts.items():
        if v and isinstance(v[0], np.ndarray):
            out[k] = np.concatenate(v)
        else:
            out[k] = [x for chunk in v for x in chunk]
    return out, result
