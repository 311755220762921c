"""Spoken test sentences for the softphones: espeak-ng, resampled to 8 kHz mono 16-bit.

A phone sends a real sentence rather than a tone so that a student can *listen* to what
crossed the network, and so that the received audio can be compared with the sent one
(each phone says something different, which tells the two directions apart).

baresip's ``ausine`` source is 48 kHz only and fails with G.711 (measured), hence a WAV
through ``aufile``; G.711 runs at 8 kHz, so the file is made at 8 kHz to avoid resampling
in the phone.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from labkit.errors import EnvironmentProblem

RATE = 8000


def sentence_wav(text: str, path: Path, *, voice: str = "en", pause_s: float = 0.3,
                 repeat: int = 1) -> Path:
    """Write ``text`` spoken by espeak-ng to ``path`` (8 kHz, mono, 16-bit PCM)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise EnvironmentProblem("espeak-ng is missing: the softphones' test sentences are "
                                 "spoken by it.", hint="apt-get install espeak-ng")
    with tempfile.TemporaryDirectory(prefix="labkit-speech-") as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(raw), text],
                       check=True, capture_output=True, timeout=30)
        samples, rate = read_pcm16(raw)
    divisor = gcd(rate, RATE)
    resampled = resample_poly(samples.astype(np.float64), RATE // divisor, rate // divisor)
    pause = np.zeros(int(pause_s * RATE))
    signal = np.concatenate([pause, resampled, pause] * repeat)
    write_pcm16(path, np.clip(signal, -32768, 32767).astype(np.int16), RATE)
    return path


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        frames = wav.readframes(wav.getnframes())
        samples = np.frombuffer(frames, dtype="<i2")
        if wav.getnchannels() > 1:
            samples = samples.reshape(-1, wav.getnchannels())[:, 0]
        return samples, wav.getframerate()


def write_pcm16(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
