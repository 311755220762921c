"""Re-make ``rsa-vs-ecdhe.pcapng`` / ``rsa-vs-ecdhe.keys`` and ``tls13-port5062.*`` (root only).

Not run by the tests: it records the two small fixtures of this folder that are not copies
of the Asterisk captures.  One network namespace ``kt-fx-<pid>`` with the fictional
addresses 192.0.2.10 (pbx.home.example) and 192.0.2.22 (bob) on its loopback, dumpcap on
``lo``, a Python ``ssl`` server (the host's OpenSSL) with the RSA certificate ``pbx-rsa.crt``
and its key ``pbx-rsa.key`` (the same throwaway lab key Asterisk 16 served in
``rsa-kx.pcapng``), and a client that sends one SIP OPTIONS per connection:

* ``rsa-vs-ecdhe``: two TLS 1.2 connections to 5061 with the same server key — one
  ``AES256-SHA256`` (TLS_RSA_WITH_AES_256_CBC_SHA256: the client encrypts the premaster
  secret with the server's RSA key, RFC 5246 §7.4.7.1, so that key alone decrypts it), one
  ``ECDHE-RSA-AES256-GCM-SHA384`` (the RSA key only signs an ephemeral ECDH share,
  RFC 8422 §2: the key cannot decrypt it — forward secrecy);
* ``tls13-port5062``: one TLS 1.3 connection to port 5062, where tshark finds TLS by its
  heuristic but does not know that SIP runs inside (``tls_ports=[5062]`` in labkit).

The server writes an NSS key log (``SSLContext.keylog_filename``) for both files.

    sudo python3 tests/data/tls/make_rsa_vs_ecdhe.py tests/data/tls
"""
from __future__ import annotations

import ctypes
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

PBX, BOB = "192.0.2.10", "192.0.2.22"
OPTIONS = ("OPTIONS sip:pbx.home.example SIP/2.0\r\n"
           "Via: SIP/2.0/TLS 192.0.2.22:5099;branch=z9hG4bK-{tag};rport\r\n"
           "From: <sip:probe@home.example>;tag={tag}\r\nTo: <sip:pbx.home.example>\r\n"
           "Call-ID: {tag}@192.0.2.22\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
           "User-Agent: labkit fixture\r\nContent-Length: 0\r\n\r\n")


def answer(request: str) -> bytes:
    head = dict(line.split(": ", 1) for line in request.split("\r\n")[1:] if ": " in line)
    return ("SIP/2.0 200 OK\r\n" + "".join(f"{h}: {head[h]}\r\n" for h in ("Via", "From", "To", "Call-ID", "CSeq"))
            + "Server: labkit fixture\r\nContent-Length: 0\r\n\r\n").encode()


def serve(ctx: ssl.SSLContext, port: int, n: int, ready: threading.Event):
    with socket.create_server((PBX, port)) as srv:
        ready.set()
        for _ in range(n):
            conn, _addr = srv.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                req = tls.recv(4096).decode()
                tls.sendall(answer(req))
                if tls.recv(1) == b"":  # the client's close_notify (RFC 8446 §6.1) ...
                    tls.unwrap()         # ... answered with ours: a clean close both ways


def client(port: int, tag: str, ciphers: str | None, version: ssl.TLSVersion, ca: Path):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    with socket.create_connection((PBX, port), source_address=(BOB, 0)) as raw, \
            ctx.wrap_socket(raw, server_hostname="pbx.home.example") as tls:
        tls.sendall(OPTIONS.format(tag=tag).encode())
        reply = tls.recv(4096).decode()
        assert reply.startswith("SIP/2.0 200 OK"), reply
        print(f"{tag}: {tls.version()} {tls.cipher()[0]} -> {reply.splitlines()[0]}")
        tls.unwrap()


def setns(fd: int):
    """os.setns() exists from Python 3.12 on; this is the same system call for 3.11."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns failed")


def record(out: Path, name: str, port: int, sessions, max_version: ssl.TLSVersion):
    ns = f"kt-fx-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cap = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for a in (PBX, BOB):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{a}/32", "dev", "lo"], check=True)
        pcap, keys = out / f"{name}.pcapng", out / f"{name}.keys"
        for p in (pcap, keys):
            p.unlink(missing_ok=True)
        cap = subprocess.Popen(["ip", "netns", "exec", ns, "dumpcap", "-i", "lo", "-w", str(pcap)],
                               stderr=subprocess.PIPE, text=True)
        for line in cap.stderr:  # ready once it says "Capturing on 'lo'"
            if "Capturing on" in line:
                break
        time.sleep(1.0)  # the message comes a little before the first packet is taken
        # this thread enters the namespace for the sockets of both sides
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        old = os.open("/proc/self/ns/net", os.O_RDONLY)
        setns(fd)
        try:
            sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            sctx.maximum_version = max_version
            sctx.set_ciphers("AES256-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
            sctx.load_cert_chain(out / "pbx-rsa.crt", out / "pbx-rsa.key")
            sctx.keylog_filename = str(keys)
            ready = threading.Event()
            t = threading.Thread(target=serve, args=(sctx, port, len(sessions), ready))
            t.start()
            ready.wait(5)
            for tag, ciphers in sessions:
                client(port, tag, ciphers, max_version, out / "ca.crt")
            t.join(10)
        finally:
            setns(old)
            os.close(fd)
            os.close(old)
        time.sleep(0.3)
    finally:
        if cap is not None:
            cap.send_signal(2)
            cap.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main(out: Path):
    record(out, "rsa-vs-ecdhe", 5061, [("kt-rsa", "AES256-SHA256"), ("kt-ecdhe", "ECDHE-RSA-AES256-GCM-SHA384")],
           ssl.TLSVersion.TLSv1_2)
    record(out, "tls13-port5062", 5062, [("kt-tls13", None)], ssl.TLSVersion.TLSv1_3)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))))
