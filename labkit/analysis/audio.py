"""Listen to a stream: G.711 payloads back to 16-bit PCM, WAV files, and a similarity score.

G.711 (ITU-T G.711, 1988) compands 14/13-bit linear samples into 8-bit codes: μ-law
(PCMU, RTP payload type 0, North America/Japan) and A-law (PCMA, PT 8, elsewhere).
The decoders below build the 256-entry expansion tables with numpy from the formulas
of the standard (as in the widely used Sun reference g711.c), so nothing depends on
the ``audioop`` module that Python 3.13 removed.

Packets are placed by RTP timestamp (RFC 3550 §5.1: the sampling instant of the first
octet), in sequence-number order with duplicates dropped; a lost packet leaves silence
for exactly the samples its timestamp gap says are missing.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import correlate as _xcorr

from labkit.errors import CaptureError


def _ulaw_table() -> np.ndarray:
    """G.711 μ-law code -> 16-bit linear (bias 0x84 = 132, segments of 16 steps)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """G.711 A-law code -> 16-bit linear (even bits inverted: XOR 0x55)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW = _ulaw_table()
ALAW = _alaw_table()
DECODERS = {0: ("PCMU", ULAW), 8: ("PCMA", ALAW)}


def ulaw_decode(data: bytes | np.ndarray) -> np.ndarray:
    return ULAW[np.frombuffer(bytes(data), dtype=np.uint8)]


def _one_stream(rtp: pd.DataFrame, stream=None) -> pd.DataFrame:
    if "payload" not in rtp:
        raise CaptureError("These RTP rows carry no payload bytes, so there is no audio to decode.",
                           hint="read them with rtp_packets(pcap, with_payload=True)")
    if stream is not None:
        m = np.ones(len(rtp), dtype=bool)
        for k in ("src", "sport", "dst", "dport", "ssrc"):
            v = stream[k] if k in stream else None
            if v is not None:
                m &= (rtp[k].astype(str) == str(v)).to_numpy() if k in ("src", "dst") \
                    else (rtp[k].to_numpy() == int(v))
        rtp = rtp[m]
    keys = rtp[["src", "sport", "dst", "dport", "ssrc"]].astype(str).drop_duplicates()
    if len(keys) > 1:
        raise CaptureError(f"These RTP rows hold {len(keys)} streams; audio is decoded one stream at a time.",
                           hint="pass stream=streams.iloc[i] (a row of rtp_streams) or filter the rows "
                                "by src, sport, dst, dport and ssrc")
    if len(rtp) == 0:
        raise CaptureError("No RTP packets to decode.", hint="check the stream selection")
    return rtp


def decode_stream(rtp: pd.DataFrame, stream=None, *, clock: int = 8000) -> np.ndarray:
    """16-bit PCM (numpy int16, 8 kHz) of one G.711 stream, gaps filled with silence.

    ``rtp``: rows of :func:`rtp_packets` read ``with_payload=True``, either of one stream
    or selected with ``stream`` (a row of :func:`rtp_streams`).  Packets whose payload
    type is not 0 (PCMU) or 8 (PCMA) — comfort noise, DTMF events — are skipped; a stream
    with none raises :class:`CaptureError`.
    """
    from labkit.analysis.streams import unwrap_seq
    rtp = _one_stream(rtp, stream)
    rtp = rtp.sort_values("frame")
    pts = rtp["payload_type"].to_numpy()
    audio = np.isin(pts, list(DECODERS))
    if not audio.any():
        raise CaptureError(f"This stream's payload type {int(pts[0])} is not G.711; only PCMU (0) "
                           "and PCMA (8) can be decoded here.",
                           hint="configure the phones/Asterisk to allow ulaw or alaw for this lab")
    ext = unwrap_seq(rtp["seq"].to_numpy())[audio]
    ts = rtp["timestamp"].to_numpy(np.int64)[audio]
    # 32-bit timestamps unwrapped relative to the first packet (RFC 3550 §5.1)
    rel = ((ts - ts[0] + 2**31) % 2**32) - 2**31
    payloads = rtp["payload"].to_numpy()[audio]
    pts = pts[audio]
    order = np.argsort(ext, kind="stable")
    _, first = np.unique(ext[order], return_index=True)  # drop duplicates
    order = order[first]
    rel = rel[order] - rel[order].min()
    chunks = [DECODERS[int(p)][1][np.frombuffer(payloads[i], dtype=np.uint8)] for i, p in
              zip(order, pts[order])]
    total = int(max(r + len(c) for r, c in zip(rel, chunks)))
    if total > 3600 * clock:
        raise CaptureError("The RTP timestamps of this stream span more than an hour; refusing to "
                           "build such a long signal.", cause="a timestamp jump or mixed streams")
    out = np.zeros(total, dtype=np.int16)
    for r, c in zip(rel, chunks):  # per packet of ONE stream, on request only
        out[r:r + len(c)] = c
    return out


def to_wav(rtp: pd.DataFrame, path, stream=None, *, rate: int = 8000) -> str:
    """Decode one G.711 stream (see :func:`decode_stream`) and write a mono 16-bit WAV."""
    pcm = decode_stream(rtp, stream)
    write_wav(path, pcm, rate)
    return str(path)


def write_wav(path, pcm: np.ndarray, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


#: Bytes a WAV may hold besides its samples (header and extra chunks) before it is taken for a
#: file still being written, whose header does not count the samples yet.
_WAV_OVERHEAD = 1024


def read_wav(path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as (int16 samples, rate); several channels are averaged.

    A file whose header counts far fewer samples than the file holds is still being written
    (libsndfile, hence baresip's recorder, sets the sizes in the header when it closes the
    file): a CaptureError, so that a caller waits for it rather than reading nothing."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise CaptureError(f"{path} is not 16-bit PCM.", hint="convert it: sox in.wav -b 16 out.wav")
            declared = w.getnframes() * w.getnchannels() * 2
            if declared + _WAV_OVERHEAD < Path(path).stat().st_size:
                raise CaptureError(f"{path} is still being written: its header counts {declared} bytes of "
                                   f"samples, the file holds {Path(path).stat().st_size}.",
                                   hint="wait until the program recording it closes it (the call ends)")
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            ch, rate = w.getnchannels(), w.getframerate()
    except (wave.Error, EOFError) as e:
        raise CaptureError(f"{path} is not a readable WAV file: {e}") from e
    except FileNotFoundError as e:
        raise CaptureError(f"WAV file {path} does not exist.") from e
    if ch > 1:
        data = data.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return data, rate


def correlate(received: np.ndarray, sent: np.ndarray) -> float:
    """How alike two signals are, from −1 to 1, after the best time alignment.

    The lag is found with an FFT cross-correlation (scipy.signal.correlate); the score is
    the Pearson correlation of the overlapping parts at that lag, so an identical signal
    delayed or padded with silence scores 1.0, and independent noise scores about 0.
    """
    a = np.asarray(received, dtype=np.float64)
    b = np.asarray(sent, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return 0.0
    a0, b0 = a - a.mean(), b - b.mean()
    xc = _xcorr(a0, b0, mode="full", method="fft")
    lag = int(np.argmax(xc)) - (len(b) - 1)  # a[n + lag] ~ b[n]
    if lag >= 0:
        x, y = a[lag:], b
    else:
        x, y = a, b[-lag:]
    n = min(len(x), len(y))
    x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0
