"""Replay a capture offline: tables, ladder diagrams and a short report, no lab needed.

``labkit replay FILE [-o DIR]`` (or :func:`replay`) writes into DIR:

* ``sip.csv``, ``calls.csv``, ``streams.csv`` — the tables of :mod:`labkit.analysis`;
  ``tls.csv`` (one row per TLS session, :func:`~labkit.analysis.tls_sessions`) when the
  capture holds TLS;
* ``ladder-<n>.png/.svg`` per call (``ladder.png/.svg`` for the whole file when it holds
  no INVITE, e.g. only REGISTERs), ``rtp-timeline.png/.svg`` when there is RTP;
* ``report.md`` — counts, calls with status and duration, streams with loss, jitter and
  the MOS estimate, and warnings a student should look at (RTP nobody announced in SDP,
  private addresses in SDP that crossed a NAT, SDES keys in clear text, …).

SIP over TLS: ``--tls-keylog KEYS`` (or secrets embedded with ``editcap --inject-secrets``)
decrypts it and the SIP inside is analysed like any other; without keys the report says how
many TLS sessions and records there are on which ports, that the SIP inside cannot be read,
and how to decrypt it — a TLS-only capture is never just "0 SIP messages".

SRTP (RFC 3711): the keys in readable SDP of the same capture (SDES, RFC 4568) are used with
no option; ``--srtp-key INLINE_KEY`` (repeatable) adds keys for streams no SDP key opens, and
``--srtp-key SSRC=INLINE_KEY`` pins one to a stream — which also works on a capture with no SIP
at all, the stream being found by the RTP heuristic (SRTP headers are plain RTP headers).
``streams.csv`` says for every stream whether it is SRTP (and the evidence), its payload
entropy, the key used, the packets decrypted, the authentication and replay failures and why
it was not decrypted (no key, wrong key, DTLS-SRTP, RFC 5764); each decrypted G.711 stream is
written as ``stream-<n>-decrypted.wav``.  See :mod:`labkit.analysis.srtp`.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from labkit import resources
from labkit.addresses import is_rfc1918, parse_ipv4
from labkit.analysis.srtp import SdesKey, SrtpResult, parse_key
from labkit.analysis.srtp import summary as srtp_summary
from labkit.analysis.tls import SIP_TLS_PORT, empty_sessions, to_markdown, to_text
from labkit.analysis.tls import summary as tls_summary
from labkit.errors import LabkitError


@dataclass
class ReplayReport:
    """What :func:`replay` found and wrote."""
    pcap: str
    outdir: str
    sip: pd.DataFrame
    calls: pd.DataFrame
    rtp: pd.DataFrame
    streams: pd.DataFrame
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tls: pd.DataFrame = field(default_factory=empty_sessions)
    tls_notes: list[str] = field(default_factory=list)
    srtp: SrtpResult | None = None     # streams, decrypted packets and SDES keys (labkit.analysis.srtp)
    srtp_notes: list[str] = field(default_factory=list)

    @property
    def report_path(self) -> str:
        return os.path.join(self.outdir, "report.md")


def _beyond_a_nat(addr: str) -> bool:
    """An address a home LAN would reach through its box: not RFC 1918, not loopback or
    link-local (the labs' RFC 5737 "public" ranges count as public here, as they should)."""
    parsed = parse_ipv4(addr)
    return parsed is not None and not is_rfc1918(parsed) and not (
        parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified)


def _warnings(sip: pd.DataFrame, rtp: pd.DataFrame, streams: pd.DataFrame, calls: pd.DataFrame,
              extra: list[str], tls: pd.DataFrame | None = None) -> list[str]:
    w = list(extra)
    hidden = 0 if tls is None or tls.empty else int((~tls["decrypted"].astype(bool)).sum())
    if len(streams):
        orphan = streams[streams["call_id"].isna()]
        why = ("; the SIP that announced it is inside TLS that was not decrypted" if hidden
               else "; the SIP was not captured" if sip.empty else "")
        for r in orphan.itertuples():
            w.append(f"RTP stream {r.direction} (SSRC {r.ssrc_hex}) matches no SDP in the capture "
                     f"(found heuristically{why}).")
        for r in streams[streams["loss_pct"] > 1].itertuples():
            w.append(f"Stream {r.direction} lost {r.lost} packets ({r.loss_pct:.1f} %).")
        for r in streams[streams["jitter_mean_ms"] > 30].itertuples():
            w.append(f"Stream {r.direction} has a high mean jitter of {r.jitter_mean_ms:.1f} ms.")
    if len(sip):
        sent_by = sip["via"].fillna("").str.extract(r"^\S+\s+\[?([^\]:;\s]+)", expand=False).fillna("")
        nat = sip[(sip["via_received"].fillna("") != "") & (sip["via_received"] != sent_by)]
        if len(nat):
            r = nat.iloc[0]
            w.append(f"{len(nat)} messages carry Via received={r['via_received']} while the Via says "
                     f"{sent_by[nat.index[0]]}: the server saw another address than the phone wrote "
                     f"(NAT between them?).")
        sdp = sip[sip["has_sdp"].astype(bool)]
        for r in sdp.itertuples():
            if r.sdp_c_addr and is_rfc1918(r.sdp_c_addr) and r.src and _beyond_a_nat(str(r.src)):
                w.append(f"Frame {r.frame}: SDP announces private address {r.sdp_c_addr} but the message "
                         f"came from public {r.src} — media will not reach it without NAT help.")
            if r.sdp_crypto and r.transport == "TLS":
                w.append(f"Frame {r.frame}: SDES keys (a=crypto {r.sdp_crypto}) travel in the SDP inside TLS: "
                         f"hidden on the wire, but whoever holds the TLS keys (this key log) can decrypt the SRTP.")
            elif r.sdp_crypto:
                w.append(f"Frame {r.frame}: SDES keys (a=crypto {r.sdp_crypto}) travel in the SDP; over plain "
                         f"{r.transport} anyone capturing can decrypt the SRTP.")
            if r.sdp_direction in ("sendonly", "recvonly", "inactive"):
                w.append(f"Frame {r.frame}: SDP direction is {r.sdp_direction} (hold?).")
        ch = sip[sip["status_code"].isin([401, 407])]
        answered = sip[sip["has_auth"]]
        if len(ch) and answered.empty:
            w.append("Authentication was requested (401/407) but no request with credentials followed.")
    if len(calls) and len(streams):
        # symmetric RTP check: media to one side should come from what the other side announced
        for c in calls.itertuples():
            for to, frm in ((c.offer_media, c.answer_media), (c.answer_media, c.offer_media)):
                if not to or not frm:
                    continue
                got = streams[(streams["dst"] + ":" + streams["dport"].astype(str)) == to]
                for s in got.itertuples():
                    src = f"{s.src}:{s.sport}"
                    if src != frm:
                        w.append(f"RTP to {to} comes from {src}, but the SDP announced {frm} "
                                 f"(NAT, a media relay, or a phone not using symmetric RTP).")
    if len(calls):
        for r in calls[calls["state"] != "answered"].itertuples():
            w.append(f"Call {r.call_id} was not answered: {r.state}, final status {r.final_status}.")
    if tls is not None and len(tls):
        log = tls.attrs.get("keylog")
        if log is not None and not tls["client_random"].isin(log.client_randoms).any():
            w.append(f"The key log {log.source} decrypts 0 of {len(tls)} TLS sessions: none of its "
                     f"{len(log.client_randoms)} client randoms is in this capture. It was written during "
                     f"another run, or by an endpoint of other connections: use the key log of the same run "
                     f"(the server's decrypts every connection to it).")
        if hidden:
            w.append(f"{hidden} TLS session{'s' if hidden != 1 else ''} not decrypted: the SIP inside "
                     f"{'them is' if hidden != 1 else 'it is'} not in sip.csv (see the TLS section).")
    return list(dict.fromkeys(w))


def _fmt(v, spec="") -> str:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
        return "–"
    return format(v, spec) if spec else str(v)


def _markdown(rep: ReplayReport) -> str:
    s, c, st = rep.sip, rep.calls, rep.streams
    t = rep.tls
    hidden = 0 if t.empty else int((~t["decrypted"].astype(bool)).sum())
    sip_line = f"- SIP messages: {len(s)} ({int(s['is_request'].sum()) if len(s) else 0} requests)"
    if hidden:
        sip_line += (f" — plus the SIP inside {hidden} TLS session{'s' if hidden != 1 else ''} that could not "
                     f"be decrypted (see TLS below)")
    lines = [f"# Replay of `{os.path.basename(rep.pcap)}`", "", sip_line,
             f"- calls (INVITE dialogs): {len(c)}",
             f"- RTP packets: {len(rep.rtp)} in {len(st)} streams"]
    if len(t):
        lines.append(f"- TLS sessions: {len(t)} ({len(t) - hidden} decrypted)")
    lines.append("")
    if len(t):
        lines += ["## TLS", ""] + to_markdown(rep.tls_notes)
        lines += ["", "| # | client → server | version | cipher suite | SNI | records c→s / s→c | "
                  "app-data bytes c→s / s→c | decrypted | why |", "|---|---|---|---|---|---|---|---|---|"]
        for r in t.itertuples():
            lines.append(f"| {r.session} | {r.client}:{r.client_port} → {r.server}:{r.server_port} | "
                         f"{r.version or '–'} | {r.cipher_suite or '–'} | {r.sni or '–'} | "
                         f"{r.records_c2s} / {r.records_s2c} | {r.app_bytes_c2s} / {r.app_bytes_s2c} | "
                         f"{'yes' if r.decrypted else 'no'} | {r.why} |")
        lines.append("")
    if len(c):
        lines += ["## Calls", "", "| call | caller → callee | status | setup (s) | duration (s) |",
                  "|---|---|---|---|---|"]
        for i, r in enumerate(c.itertuples(), 1):
            lines.append(f"| {i} `{r.call_id}` | {r.caller} → {r.callee} | {r.state} ({_fmt(r.final_status)}) | "
                         f"{_fmt(r.setup_time, '.3f')} | {_fmt(r.duration, '.2f')} |")
        lines.append("")
    if len(st):
        lines += ["## RTP streams", "", "| direction | codec | packets | lost | jitter mean/max (ms) | MOS (est.) |",
                  "|---|---|---|---|---|---|"]
        for r in st.itertuples():
            lines.append(f"| {r.direction} | {r.codec} | {r.packets} | {r.lost} ({r.loss_pct:.1f} %) | "
                         f"{r.jitter_mean_ms:.2f} / {r.jitter_max_ms:.2f} | {_fmt(r.mos)} |")
        lines += ["", "MOS is an ITU-T G.107 E-model *estimate* from loss and jitter only "
                  "(0 ms network delay assumed; see `mos_inputs` in streams.csv).", ""]
    if rep.srtp_notes:
        lines += ["## SRTP", ""] + to_markdown(rep.srtp_notes)
        lines += ["", "| stream | direction | SSRC | SRTP (evidence) | payload entropy (bits/byte) | key (from) | "
                  "decrypted | auth. failures | replays | why | WAV |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in st.itertuples():
            srtp = f"yes ({r.srtp_evidence})" if r.srtp else "no"
            key = f"`{r.srtp_key}` ({r.srtp_key_source})" if r.srtp_key else "–"
            lines.append(f"| {r.stream} | {r.direction} | {r.ssrc_hex} | {srtp} | {_fmt(r.entropy, '.3f')} | {key} | "
                         f"{r.srtp_decrypted} | {r.srtp_auth_failures} | {r.srtp_replay_failures} | {r.srtp_why} | "
                         f"{r.wav or '–'} |")
        lines.append("")
    lines += ["## Warnings", ""] + ([f"- {x}" for x in rep.warnings] or ["- none"])
    figs = [os.path.basename(f) for f in rep.files if f.endswith(".png")]
    if figs:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figs]
    return "\n".join(lines) + "\n"


def replay(pcap, outdir, names: dict | None = None, *, sip_ports=(), max_messages: int = 60,
           tls_keylog=None, tls_rsa_key=None, tls_ports=(), srtp_keys=()) -> ReplayReport:
    """Analyse ``pcap`` and write tables, figures and ``report.md`` into ``outdir``.

    ``tls_keylog``/``tls_rsa_key``/``tls_ports``: decrypt SIP over TLS (see
    :mod:`labkit.analysis.tls`); secrets embedded in a pcapng are used without them.  SIP
    inside a decrypted session on a port other than 5061 is found without ``tls_ports``.
    ``srtp_keys``: SRTP keys besides those of the capture's SDP (strings as for
    :func:`~labkit.analysis.srtp.parse_key`, e.g. ``"inline:…"`` or ``"0x1234ABCD=inline:…"``).
    """
    from labkit.analysis import plots
    from labkit.analysis.audio import to_wav
    from labkit.analysis.calls import calls as calls_of
    from labkit.analysis.rtp import rtp_packets
    from labkit.analysis.sip import sip_messages
    from labkit.analysis.srtp import srtp_decrypt
    from labkit.analysis.streams import rtp_streams
    from labkit.analysis.tls import tls_sessions

    pcap = os.fspath(pcap)
    keys = [k if isinstance(k, SdesKey) else parse_key(k) for k in srtp_keys]  # refused before any work
    tls = tls_sessions(pcap, tls_keylog, tls_rsa_key, tls_ports=tls_ports)
    # Decrypted, but tshark did not recognise what is inside (SIP is registered on 5061 only).
    unknown = tls[tls["decrypted"].astype(bool) & ~tls["inner_protocol"].astype(str).str.contains("sip")
                  & (tls["server_port"] != SIP_TLS_PORT)] if len(tls) else tls
    ports = sorted({*map(int, tls_ports), *map(int, unknown["server_port"])})
    sip = sip_messages(pcap, ports=sip_ports, tls_keylog=tls_keylog, tls_rsa_key=tls_rsa_key, tls_ports=ports)
    rtp = rtp_packets(pcap, sip=sip, with_payload=True, with_packet=True)
    streams = rtp_streams(rtp, sip=sip)
    hidden = 0 if tls.empty else int((~tls["decrypted"].astype(bool)).sum())
    srtp = srtp_decrypt(rtp, sip=sip, keys=keys, pcap=pcap, tls_hidden=bool(hidden))
    rtp = srtp.rtp  # payloads in clear text where decrypted; the whole packets are no longer needed
    calls = calls_of(sip)
    os.makedirs(outdir, exist_ok=True)
    wavs = {}
    plain = srtp.plain_rtp
    for r in srtp.streams[(srtp.streams["decrypted"] > 0) & srtp.streams["payload_type"].isin([0, 8])].itertuples():
        name = f"stream-{r.stream}-decrypted.wav"
        try:
            to_wav(plain, os.path.join(outdir, name), stream=r._asdict())
        except LabkitError:  # e.g. only comfort noise decrypted: nothing to listen to
            continue
        wavs[r.stream] = name
    streams = _with_srtp(streams, srtp.streams, wavs)
    rep = ReplayReport(pcap, os.fspath(outdir), sip, calls, rtp, streams, tls=tls, srtp=srtp)
    rep.files += [os.path.join(outdir, w) for w in wavs.values()]
    rep.srtp_notes = srtp_summary(srtp.streams, pcap, keys_given=len(keys), sip=sip, wavs=wavs)
    rep.tls_notes = tls_summary(tls, pcap, sip_rows=int((sip["transport"] == "TLS").sum()) if len(sip) else 0)
    tables = [("sip", sip), ("calls", calls), ("streams", streams)] + ([("tls", tls)] if len(tls) else [])
    for name, df in tables:
        path = os.path.join(outdir, f"{name}.csv")
        df.to_csv(path, index=False)
        rep.files.append(path)
    if len(calls):
        for i, call_id in enumerate(calls["call_id"], 1):
            fig = plots.ladder(sip[sip["call_id"] == call_id], names=names, max_messages=max_messages,
                               title=f"Call {i}: {call_id}")
            rep.files += plots.save(fig, os.path.join(outdir, f"ladder-{i}"))
    elif len(sip):
        fig = plots.ladder(sip, names=names, max_messages=max_messages, title=os.path.basename(pcap))
        rep.files += plots.save(fig, os.path.join(outdir, "ladder"))
    if len(rtp):
        fig = plots.rtp_timeline(rtp, streams)
        rep.files += plots.save(fig, os.path.join(outdir, "rtp-timeline"))
    rep.warnings = _warnings(sip, rtp, streams, calls,
                             tls.attrs.get("warnings", []) + sip.attrs.get("warnings", []) + rtp.attrs.get(
                                 "warnings", []), tls)
    with open(rep.report_path, "w", encoding="utf-8") as f:
        f.write(_markdown(rep))
    rep.files.append(rep.report_path)
    return rep


SRTP_COLUMNS = {"srtp": "srtp", "evidence": "srtp_evidence", "entropy": "entropy", "suite": "srtp_suite",
                "key": "srtp_key", "key_source": "srtp_key_source", "decrypted": "srtp_decrypted",
                "auth_failures": "srtp_auth_failures", "replay_failures": "srtp_replay_failures",
                "why": "srtp_why"}


def _with_srtp(streams: pd.DataFrame, srtp: pd.DataFrame, wavs: dict) -> pd.DataFrame:
    """The streams table with the SRTP columns of :func:`~labkit.analysis.srtp.srtp_decrypt`
    (prefixed ``srtp_``; ``entropy`` as is) and ``wav`` (the decrypted audio written)."""
    cols = list(SRTP_COLUMNS.values()) + ["wav"]
    if streams.empty:
        return streams.reindex(columns=list(streams.columns) + cols)
    extra = srtp[["stream", *SRTP_COLUMNS]].rename(columns=SRTP_COLUMNS)
    out = streams.merge(extra, on="stream", how="left")
    out["wav"] = [wavs.get(k, "") for k in out["stream"]]
    return out


def shipped_capture(name: str) -> Path | None:
    """A capture shipped with the kit (``data/captures/<name>.pcap``), when ``name`` is not
    a file of the user's."""
    if os.path.exists(name) or os.sep in name:
        return None
    path = resources.data_dir() / "captures" / f"{Path(name).stem}.pcap"
    return path if path.is_file() else None


def main(argv=None) -> int:
    """``labkit replay FILE [-o DIR] [--tls-keylog KEYS] [--tls-rsa-key KEY] [--srtp-key INLINE_KEY]``:
    returns 0 on success, 2 on a capture problem (or a key log / key that cannot be used)."""
    ap = argparse.ArgumentParser(prog="labkit replay",
                                 description="Analyse a pcap/pcapng offline: SIP ladder, calls, RTP "
                                             "streams with loss/jitter/MOS estimate, report.md.")
    ap.add_argument("file", help="capture file (.pcap or .pcapng), or the name of a capture the kit "
                                 "ships (e.g. first-call-modern; see data/manifest.json)")
    ap.add_argument("-o", "--outdir", help="output directory (default: FILE without extension + -replay)")
    ap.add_argument("--sip-port", type=int, action="append", default=[], help="extra port to decode as SIP")
    ap.add_argument("--name", action="append", default=[], metavar="ADDR=LABEL",
                    help='label an endpoint in ladders, e.g. --name 192.168.0.11=alice')
    ap.add_argument("--tls-keylog", metavar="KEYS",
                    help="NSS key log (SSLKEYLOGFILE, keylog.so) to decrypt SIP over TLS; a pcapng made by "
                         "'editcap --inject-secrets tls,KEYS in out' needs none")
    ap.add_argument("--tls-rsa-key", metavar="KEY",
                    help="the server's RSA private key (PEM): decrypts TLS 1.2 sessions with RSA key exchange "
                         "only, never ECDHE or TLS 1.3 (forward secrecy)")
    ap.add_argument("--tls-port", type=int, action="append", default=[],
                    help="TCP port carrying SIP over TLS besides 5061 (found by itself once decrypted)")
    ap.add_argument("--srtp-key", action="append", default=[], metavar="INLINE_KEY",
                    help="SRTP master key+salt as SDES writes it (inline:<base64>, from an a=crypto line) for "
                         "streams no SDP key of the capture opens; SSRC=INLINE_KEY (e.g. 0x1234ABCD=inline:…) "
                         "pins it to one stream. Repeatable. Keys in readable SDP are used without it")
    args = ap.parse_args(argv)
    shipped = shipped_capture(args.file)
    # A user's file gets its results beside it; a shipped one in the working directory.
    outdir = args.outdir or (f"{shipped.stem}-replay" if shipped else os.path.splitext(args.file)[0] + "-replay")
    if shipped:
        args.file = str(shipped)
    names = dict(n.split("=", 1) for n in args.name if "=" in n)
    try:
        rep = replay(args.file, outdir, names=names or None, sip_ports=args.sip_port,
                     tls_keylog=args.tls_keylog, tls_rsa_key=args.tls_rsa_key, tls_ports=args.tls_port,
                     srtp_keys=args.srtp_key)
    except LabkitError as e:
        print(f"labkit replay: {e.explain()}", file=sys.stderr)
        return 2
    hidden = 0 if rep.tls.empty else int((~rep.tls["decrypted"].astype(bool)).sum())
    inside = f" (+ the SIP inside {hidden} TLS session{'s' if hidden != 1 else ''} not decrypted)" if hidden else ""
    print(f"{len(rep.sip)} SIP messages{inside}, {len(rep.calls)} calls, {len(rep.streams)} RTP streams "
          f"-> {rep.report_path}")
    for line in to_text(rep.tls_notes) + to_text(rep.srtp_notes):
        print(line)
    for w in rep.warnings[:10]:
        print(f"  warning: {w}")
    return 0
