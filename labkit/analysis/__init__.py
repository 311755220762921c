"""labkit.analysis: captures of the VoIP labs turned into pandas tables.

    sip   = sip_messages("call.pcap")          # one row per SIP message (tshark)
    calls(sip)                                 # one row per INVITE dialog
    caller_ids("call.pcap")                    # per INVITE: From, P-Asserted-Identity, Privacy
    rtp   = rtp_packets("call.pcap", sip=sip)  # one row per RTP packet (fast reader)
    rtp_streams(rtp, sip=sip)                  # loss, jitter (RFC 3550), MOS estimate (G.107)
    packet("call.pcap", 5)                     # every field of frame 5 (pyshark)
    replay("call.pcap", "out/")                # CSVs, ladder diagrams and report.md
    tls_sessions("tls.pcapng", keylog="keys")  # one row per TLS session: decrypted or why not
    srtp_streams("srtp.pcap")                  # per stream: SRTP?, key, decrypted, failures, why

SIP over TLS: every table takes ``tls_keylog=`` (NSS key log), ``tls_rsa_key=`` (TLS 1.2
RSA key exchange only) and ``tls_ports=``; secrets embedded with ``editcap --inject-secrets``
are used with no option (:mod:`labkit.analysis.tls`).

SRTP (RFC 3711): ``srtp_decrypt(pcap, keys=["inline:…"])`` decrypts with the SDES keys of the
capture's SDP (RFC 4568) and the keys given; its ``.plain_rtp`` goes to ``decode_stream``;
``sdes_keys(sip)`` lists the keys; DTLS-SRTP (RFC 5764) is recognised, never decrypted
(:mod:`labkit.analysis.srtp`).

Audio: ``decode_stream``, ``to_wav``, ``read_wav``, ``correlate`` (G.711 only).
Figures: :mod:`labkit.analysis.plots`.  Every problem with a file raises
:class:`labkit.errors.CaptureError`, whose ``explain()`` says what to do.
"""
from __future__ import annotations

from labkit.analysis.audio import correlate, decode_stream, read_wav, to_wav
from labkit.analysis.callerid import caller_ids
from labkit.analysis.calls import calls
from labkit.analysis.exposure import exposure, exposure_by_segment
from labkit.analysis.icmp import icmp_unreachable
from labkit.analysis.inspect import packet
from labkit.analysis.quality import explain as explain_mos
from labkit.analysis.replay import ReplayReport, replay
from labkit.analysis.replay import main as _replay_main
from labkit.analysis.rtp import rtp_packets
from labkit.analysis.sip import sip_messages
from labkit.analysis.srtp import sdes_keys, srtp_decrypt, srtp_streams
from labkit.analysis.streams import rtp_streams
from labkit.analysis.tls import tls_sessions

# The function ``replay`` shadows the module of the same name in this package, so give it
# the module's CLI entry too: ``labkit.analysis.replay.main(["f.pcap", "-o", "out"])`` works
# whichever of the two a caller got (``from labkit.analysis.replay import main`` also works).
replay.main = _replay_main

__all__ = ["sip_messages", "caller_ids", "calls", "rtp_packets", "rtp_streams", "tls_sessions", "srtp_streams",
           "srtp_decrypt", "sdes_keys", "packet", "replay", "ReplayReport", "decode_stream", "to_wav", "read_wav",
           "correlate", "explain_mos", "exposure", "exposure_by_segment", "icmp_unreachable"]
