"""Benchmark: labkit's RTP reader against tshark -T fields and pyshark; SRTP decryption.

    .venv/bin/python benchmarks/bench_analysis.py [--pcap FILE] [--streams 10] [--packets 10000]
    .venv/bin/python benchmarks/bench_analysis.py --srtp-only      # the SRTP part alone

Without --pcap it synthesises a capture of STREAMS x PACKETS G.711 RTP packets (20 ms,
160-byte payloads, Ethernet/IPv4/UDP, streams interleaved in time) plus one twice as
large, then measures, each method in its own subprocess so that memory figures do not
pollute each other:

* kit      labkit.analysis.rtp_packets + rtp_streams (the fast reader, full file), also on
           a capture with twice the packets and on one with the same packets but 1200-byte
           payloads (7x the bytes) to show memory follows packets, not file size
* tshark   tshark -T fields (--enable-heuristic rtp_udp, -Y rtp) read into pandas (full file)
* pyshark  pyshark.FileCapture iteration reading rtp.seq, first --pyshark-limit packets
           only; its rate is extrapolated to the whole file (it is too slow to run fully)

* srtp     the same capture with every packet encrypted by pylibsrtp (AES_CM_128_HMAC_SHA1_80,
           one SDES key, RFC 3711): labkit.analysis.srtp_decrypt with that key given (the
           stream found by the RTP heuristic, the key tried then every packet authenticated and
           decrypted by libsrtp) against the plain analysis of the plain capture, in packets/s;
           also the bare pylibsrtp unprotect loop, the floor of what decryption can cost.

Times are the best of 3 runs for kit, srtp and tshark (pyshark: one run of the first
--pyshark-limit packets).  Memory: "peak RSS" is the worker's VmHWM (for tshark and pyshark, the larger of the Python
worker and its tshark child, polled from /proc), "Δ RSS" the growth of the Python worker
alone over its RSS after imports, and for the kit also the tracemalloc peak of Python/numpy allocations
in a second run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPEAT = 3
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def synthesize(path: str, streams: int, packets: int, payload: int = 160) -> int:
    """Write a pcap of ``streams`` x ``packets`` RTP packets with numpy, 20,000 at a time."""
    n = streams * packets
    with open(path, "wb") as f:
        f.write(np.array([0xA1B2C3D4], dtype="<u4").tobytes()
                + np.array([2, 4], dtype="<u2").tobytes()
                + np.array([0, 0, 65535, 1], dtype="<u4").tobytes())
        for a in range(0, n, 20_000):
            f.write(_records(np.arange(a, min(n, a + 20_000)), streams, payload).tobytes())
    return n


def _records(k: np.ndarray, streams: int, payload: int) -> np.ndarray:
    n = len(k)
    frame_len = 14 + 20 + 8 + 12 + payload
    rec = np.zeros((n, 16 + frame_len), dtype=np.uint8)
    s = k % streams                      # interleaved: packet i of every stream, then i+1 …
    i = k // streams
    t_us = (1_700_000_000 * 1_000_000 + i * 20_000 + s * 100).astype(np.int64)

    def put(col, values, nbytes, big=True):
        v = np.asarray(values, dtype=np.uint64)
        for b in range(nbytes):
            shift = 8 * (nbytes - 1 - b) if big else 8 * b
            rec[:, col + b] = ((v >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.uint8)
    put(0, t_us // 1_000_000, 4, big=False)
    put(4, t_us % 1_000_000, 4, big=False)
    put(8, np.full(n, frame_len), 4, big=False)
    put(12, np.full(n, frame_len), 4, big=False)
    e = 16
    rec[:, e:e + 6] = [2, 0, 0, 0, 0, 2]
    rec[:, e + 6:e + 12] = [2, 0, 0, 0, 0, 1]
    put(e + 12, np.full(n, 0x0800), 2)
    ip = e + 14
    rec[:, ip] = 0x45
    put(ip + 2, np.full(n, 20 + 8 + 12 + payload), 2)
    put(ip + 6, np.full(n, 0x4000), 2)
    rec[:, ip + 8] = 64
    rec[:, ip + 9] = 17
    put(ip + 12, 0x0A000000 + 1 + s, 4)       # 10.0.0.(1+s)
    put(ip + 16, 0x0A000100 + 1 + s, 4)       # 10.0.1.(1+s)
    udp = ip + 20
    put(udp, 20000 + 2 * s, 2)
    put(udp + 2, 30000 + 2 * s, 2)
    put(udp + 4, np.full(n, 8 + 12 + payload), 2)
    r = udp + 8
    rec[:, r] = 0x80
    rec[:, r + 1] = 0
    put(r + 2, (1000 + i) & 0xFFFF, 2)
    put(r + 4, (i * payload) & 0xFFFFFFFF, 4)
    put(r + 8, 0x10000 + s, 4)
    rng = np.random.default_rng(int(k[0]) if n else 0)
    rec[:, r + 12:] = rng.integers(0, 256, size=(n, payload), dtype=np.uint8)
    return rec


SRTP_KEY = bytes(range(1, 31))  # 16-byte master key + 14-byte master salt (RFC 3711 §4.3)
SRTP_TAG = 10                   # AES_CM_128_HMAC_SHA1_80: 80-bit authentication tag


def synthesize_srtp(path: str, streams: int, packets: int, payload: int = 160) -> int:
    """The capture of :func:`synthesize`, packet for packet, with every RTP packet protected by
    pylibsrtp (as a sender does): same headers, the payload encrypted, a 10-byte tag appended."""
    from pylibsrtp import Policy, Session
    tx = Session(Policy(key=SRTP_KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                        srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    n = streams * packets
    r = 16 + 14 + 20 + 8                 # the RTP packet's offset in a record
    rtp_len = 12 + payload
    with open(path, "wb") as f:
        f.write(np.array([0xA1B2C3D4], dtype="<u4").tobytes()
                + np.array([2, 4], dtype="<u2").tobytes()
                + np.array([0, 0, 65535, 1], dtype="<u4").tobytes())
        for a in range(0, n, 20_000):
            k = np.arange(a, min(n, a + 20_000))
            plain = _records(k, streams, payload)[:, r:r + rtp_len]
            rec = _records(k, streams, payload + SRTP_TAG)  # headers and lengths sized for the tag
            enc = b"".join(tx.protect(row.tobytes()) for row in plain)
            rec[:, r:r + rtp_len + SRTP_TAG] = np.frombuffer(enc, dtype=np.uint8).reshape(len(k), -1)
            f.write(rec.tobytes())
    return n


def _status_mb(field: str, pid="self") -> float:
    """VmRSS / VmHWM (peak RSS) of a process from /proc, in MiB.  VmHWM, unlike
    ru_maxrss, starts afresh at exec, so a worker does not inherit its parent's peak."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmHWM")


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


def _watch_peak(pid: int, box: list) -> None:
    """Poll a child's VmHWM until it exits (its last value is its peak RSS)."""
    while True:
        v = _status_mb("VmHWM", pid)
        if v == 0.0:
            return
        box[0] = max(box[0], v)
        time.sleep(0.02)


def worker(method: str, pcap: str, limit: int) -> dict:
    sys.path.insert(0, ROOT)
    import pandas as pd  # noqa: F401  (imports count in the baseline, not in the work)
    if method == "kit":
        from labkit.analysis import rtp_packets, rtp_streams
        base = _current_rss_mb()
        dt = float("inf")
        for _ in range(REPEAT):  # best of REPEAT runs (the first also warms the page cache)
            t = time.perf_counter()
            rtp = rtp_packets(pcap)
            streams = rtp_streams(rtp)
            dt = min(dt, time.perf_counter() - t)
            if _ < REPEAT - 1:
                del rtp, streams
        peak = _rss_mb()
        n, ns = len(rtp), len(streams)
        del rtp, streams
        import tracemalloc
        tracemalloc.start()
        rtp_streams(rtp_packets(pcap))
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return {"packets": n, "streams": ns, "seconds": dt, "peak_rss_mb": peak, "base_rss_mb": base,
                "traced_peak_mb": traced, "measured": n}
    if method == "tshark":
        import csv

        import pandas as pd
        base = _current_rss_mb()
        fields = ["frame.number", "frame.time_epoch", "ip.src", "udp.srcport", "ip.dst", "udp.dstport",
                  "rtp.ssrc", "rtp.seq", "rtp.timestamp", "rtp.p_type", "rtp.marker"]
        cmd = ["tshark", "-n", "-r", pcap, "--enable-heuristic", "rtp_udp", "-Y", "rtp", "-T", "fields",
               "-E", "separator=/t"]
        for f in fields:
            cmd += ["-e", f]
        t = time.perf_counter()
        import threading
        dt, box = float("inf"), [0.0]
        for _ in range(REPEAT):  # best of REPEAT runs, like the kit
            t = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            watcher = threading.Thread(target=_watch_peak, args=(p.pid, box), daemon=True)
            watcher.start()
            df = pd.read_csv(p.stdout, sep="\t", header=None, names=fields, quoting=csv.QUOTE_NONE)
            dt = min(dt, time.perf_counter() - t)
            watcher.join(timeout=5)  # the child is a zombie until wait(): /proc still readable
            p.wait()
        child = box[0]
        return {"packets": len(df), "seconds": dt, "peak_rss_mb": max(_rss_mb(), child), "worker_peak_mb": _rss_mb(),
                "base_rss_mb": base, "child_rss_mb": child, "measured": len(df)}
    if method == "pyshark":
        import asyncio

        import pyshark
        base = _current_rss_mb()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        cap = pyshark.FileCapture(pcap, keep_packets=False, eventloop=loop,
                                  custom_parameters=["--enable-heuristic", "rtp_udp"])
        import threading
        box, t = [0.0], time.perf_counter()
        count, seqs = 0, 0
        for pkt in cap:
            if hasattr(pkt, "rtp"):
                seqs += int(pkt.rtp.seq) >= 0
            count += 1
            if count == 100:  # tshark is running now: watch its peak memory
                for proc in list(getattr(cap, "_running_processes", ())):
                    threading.Thread(target=_watch_peak, args=(proc.pid, box), daemon=True).start()
            if count >= limit:
                break
        dt = time.perf_counter() - t
        try:
            cap.close()
        except Exception:
            pass
        child = box[0]
        return {"packets": seqs, "seconds": dt, "peak_rss_mb": max(_rss_mb(), child),
                "worker_peak_mb": _rss_mb(), "base_rss_mb": base,
                "child_rss_mb": child,
                "measured": count, "extrapolated": True}
    if method == "srtp":
        import base64

        from pylibsrtp import Policy, Session

        from labkit.analysis import rtp_packets, rtp_streams
        from labkit.analysis.srtp import srtp_decrypt
        key = "inline:" + base64.b64encode(SRTP_KEY).decode()
        best = {"read": float("inf"), "decrypt": float("inf"), "analyse": float("inf")}
        for _ in range(REPEAT):
            t = time.perf_counter()
            rtp = rtp_packets(pcap, with_packet=True)
            t1 = time.perf_counter()
            res = srtp_decrypt(rtp, keys=[key])
            t2 = time.perf_counter()
            streams = rtp_streams(rtp)
            t3 = time.perf_counter()
            for name, dt in (("read", t1 - t), ("decrypt", t2 - t1), ("analyse", t3 - t2)):
                best[name] = min(best[name], dt)
        decrypted = int(res.streams["decrypted"].sum())
        failures = int(res.streams["auth_failures"].sum() + res.streams["replay_failures"].sum())
        pkts = rtp["packet"].tolist()
        raw = float("inf")
        for _ in range(REPEAT):  # the bare libsrtp loop: one session, every packet, nothing else
            sess = Session(Policy(key=SRTP_KEY, ssrc_type=Policy.SSRC_ANY_INBOUND,
                                  srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
            t = time.perf_counter()
            for x in pkts:
                sess.unprotect(x)
            raw = min(raw, time.perf_counter() - t)
        return {"packets": len(rtp), "streams": len(streams), "decrypted": decrypted, "failures": failures,
                "seconds": best["read"] + best["decrypt"] + best["analyse"], **best, "raw_unprotect": raw,
                "peak_rss_mb": _rss_mb(), "measured": len(rtp)}
    raise SystemExit(f"unknown method {method}")


def run(method: str, pcap: str, limit: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", method, pcap,
                          "--pyshark-limit", str(limit)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{method} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcap", help="benchmark this capture instead of a synthetic one")
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--packets", type=int, default=10_000, help="packets per stream")
    ap.add_argument("--pyshark-limit", type=int, default=5000)
    ap.add_argument("--srtp-only", action="store_true", help="only the SRTP decryption rate (synthetic capture)")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "PCAP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.pyshark_limit)))
        return 0
    tmp = tempfile.mkdtemp(prefix="labkit-bench-")
    if args.srtp_only:
        pcap = os.path.join(tmp, "bench.pcap")
        synthesize(pcap, args.streams, args.packets)
        srtp_rates(pcap, tmp, args)
        os.unlink(pcap)
        os.rmdir(tmp)
        return 0
    if args.pcap:
        pcap, big = args.pcap, None
        total = None
    else:
        pcap = os.path.join(tmp, "bench.pcap")
        big = os.path.join(tmp, "bench2x.pcap")
        fat = os.path.join(tmp, "bench-fat.pcap")
        total = synthesize(pcap, args.streams, args.packets)
        synthesize(big, args.streams, 2 * args.packets)
        synthesize(fat, args.streams, args.packets, payload=1200)
    size_mb = os.path.getsize(pcap) / 2**20
    print(f"capture: {pcap} ({size_mb:.1f} MiB{f', {total} RTP packets' if total else ''})")
    res = {m: run(m, pcap, args.pyshark_limit) for m in ("kit", "tshark", "pyshark")}
    n_file = res["kit"]["packets"]
    rows = []
    for m, r in res.items():
        rate = r["measured"] / r["seconds"]
        note = ""
        if r.get("extrapolated"):
            note = f"first {r['measured']} packets, extrapolated: {n_file / rate:.0f} s for the file"
        if r.get("child_rss_mb"):
            note = (note + "; " if note else "") + f"tshark child peak {r['child_rss_mb']:.0f} MB"
        rows.append((m, r["packets"] if not r.get("extrapolated") else n_file, r["seconds"], rate,
                     r["peak_rss_mb"], r.get("worker_peak_mb", r["peak_rss_mb"]) - r["base_rss_mb"],
                     r.get("traced_peak_mb"), note))
    if big:
        for label, path in (("kit (2x pkts)", big), ("kit (1200B pl)", fat)):
            r = run("kit", path, args.pyshark_limit)
            rows.append((label, r["packets"], r["seconds"], r["packets"] / r["seconds"], r["peak_rss_mb"],
                         r["peak_rss_mb"] - r["base_rss_mb"], r["traced_peak_mb"],
                         f"file {os.path.getsize(path) / 2**20:.1f} MiB"))
    print(f"\n{'method':<15}{'packets':>9}{'seconds':>9}{'packets/s':>12}{'peak RSS MB':>13}"
          f"{'Δ RSS MB':>10}{'traced MB':>11}  note")
    for m, n, s, rate, peak, delta, traced, note in rows:
        tr = f"{traced:.1f}" if traced is not None else "–"
        print(f"{m:<15}{n:>9}{s:>9.2f}{rate:>12,.0f}{peak:>13.1f}{delta:>10.1f}{tr:>11}  {note}")
    kit = rows[0][3]
    print("\nkit memory is the tables (~60 B per RTP packet) plus a fixed 4 MiB read window: it grows")
    print("with the number of packets, not with the bytes of the file (see the 1200-byte-payload row).")
    print(f"\nkit / pyshark : {kit / rows[2][3]:.0f}x   (target >= 30x)")
    print(f"kit / tshark  : {kit / rows[1][3]:.1f}x   (target >= 1x)")
    if not args.pcap:
        srtp_rates(pcap, tmp, args, plain=res["kit"])
    if not args.pcap:
        for p in (pcap, big, fat):
            os.unlink(p)
        os.rmdir(tmp)
    return 0


def srtp_rates(pcap: str, tmp: str, args, plain: dict | None = None) -> None:
    """SRTP decryption vs plain RTP analysis of the same packets, printed as packets/s."""
    enc = os.path.join(tmp, "bench-srtp.pcap")
    synthesize_srtp(enc, args.streams, args.packets)
    plain = plain or run("kit", pcap, args.pyshark_limit)
    r = run("srtp", enc, args.pyshark_limit)
    n = r["packets"]
    print(f"\nSRTP: the same {n:,} packets encrypted (AES_CM_128_HMAC_SHA1_80, one key given; "
          f"{os.path.getsize(enc) / 2**20:.1f} MiB, {r['streams']} streams): {r['decrypted']:,} decrypted, "
          f"{r['failures']} failures")
    rows = [("plain RTP analysis (rtp_packets + rtp_streams)", plain["packets"], plain["seconds"]),
            ("SRTP: rtp_packets(with_packet=True)", n, r["read"]),
            ("SRTP: srtp_decrypt (pylibsrtp)", n, r["decrypt"]),
            ("SRTP: rtp_streams", n, r["analyse"]),
            ("SRTP analysis, total", n, r["seconds"]),
            ("bare pylibsrtp unprotect loop", n, r["raw_unprotect"])]
    print(f"{'step':<50}{'packets':>9}{'seconds':>9}{'packets/s':>12}")
    for name, k, sec in rows:
        print(f"{name:<50}{k:>9}{sec:>9.2f}{k / sec:>12,.0f}")
    print(f"\nSRTP analysis takes {r['seconds'] / plain['seconds']:.1f}x the time of the plain analysis; "
          f"decryption alone runs at {n / r['decrypt']:,.0f} packets/s "
          f"({n / r['decrypt'] / 50:,.0f} concurrent 50-packet/s G.711 streams in real time).")
    os.unlink(enc)


if __name__ == "__main__":
    sys.exit(main())
