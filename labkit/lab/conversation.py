"""A call between two lab phones, measured from both ends: did each hear the other?

``talk(lab, "bob", "6000")`` places the call, lets both sides speak their sentence for a
few seconds, hangs up *both* phones (behind a broken NAT a BYE may never arrive), and
compares what each phone recorded with what the other one sent.  One-way audio — the
classic NAT symptom — shows as one correlation near 1 and the other near 0 (or an empty
recording).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from labkit.analysis import correlate, read_wav
from labkit.errors import LabkitError, PhoneError

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

#: Correlation above which the received audio is taken to be the sent sentence.
HEARD = 0.9


@dataclass
class Conversation:
    caller: str
    callee: str
    established: bool
    error: str = ""
    channel_stats: list[dict] = field(default_factory=list)
    heard: dict[str, np.ndarray] = field(default_factory=dict)
    correlation: dict[str, float] = field(default_factory=dict)

    @property
    def two_way(self) -> bool:
        return len(self.correlation) == 2 and all(c >= HEARD for c in self.correlation.values())

    def summary(self) -> dict:
        """One line per listener: seconds of audio received and whether it was the other's voice."""
        return {phone: {"seconds_received": round(len(self.heard.get(phone, ())) / 8000, 2),
                        "correlation_with_sent": round(self.correlation.get(phone, 0.0), 3),
                        "heard_the_other": self.correlation.get(phone, 0.0) >= HEARD}
                for phone in (self.caller, self.callee)}


def talk(lab: Lab, caller: str, callee_extension: str, seconds: float = 3.0) -> Conversation:
    callee = next(p.name for p in lab.spec.phones if p.extension == callee_extension)
    phones = [lab.phone(caller), lab.phone(callee)]
    started = time.time()
    conversation = Conversation(caller, callee, established=False)
    try:
        call = phones[0].call(callee_extension)
    except PhoneError as exc:
        # baresip refuses to dial without an account that registered ("could not find UA"):
        # a result of the lab (a broken forward), not an error of the kit.
        conversation.error = f"{caller} could not place the call: {exc.message}. Is {caller} registered?"
        return conversation
    try:
        call.wait_established(10)
        conversation.established = True
        time.sleep(seconds)
        conversation.channel_stats = lab.pbx.channel_stats()
    except LabkitError as exc:
        conversation.error = exc.message
    finally:
        for phone in phones:  # both ends: a BYE lost behind NAT must not keep a call open
            try:
                phone.command("hangup")
            except PhoneError:
                pass
        time.sleep(0.3)  # sndfile writes the WAV header when the call's audio closes
    for listener, speaker in ((phones[0], phones[1]), (phones[1], phones[0])):
        heard = _recording_since(listener.record_dir, started)
        conversation.heard[listener.phone_name] = heard
        said, _ = read_wav(speaker.audio_file)
        conversation.correlation[listener.phone_name] = correlate(heard, said) if heard.size else 0.0
    return conversation


def _recording_since(directory: Path, since: float) -> np.ndarray:
    """The received audio baresip wrote for a call that started at ``since`` (empty if none)."""
    files = [p for p in directory.glob("dump-*-dec.wav") if p.stat().st_mtime >= since - 1]
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            samples, _ = read_wav(path)
            return samples
        except LabkitError:
            continue  # an unfinished file: nothing was received (or the call never closed)
    return np.zeros(0, dtype=np.int16)


@dataclass
class Hold:
    """A call left up until it ends by itself (or ``longest`` seconds): how long it lasted once
    answered, and how it ended as the caller's phone saw it."""
    caller: str
    callee: str
    established: bool
    lasted: float = 0.0          #: seconds from the answer to the end (or to ``longest``)
    ended_by_itself: bool = False
    reason: str = ""             #: baresip's CALL_CLOSED text ("Connection reset by peer" …)
    error: str = ""


def hold(lab: Lab, caller: str, callee_extension: str, longest: float = 40.0) -> Hold:
    """Place a call and leave it up: nobody hangs up before ``longest`` seconds.  Behind a broken
    NAT a call that was answered may still end by itself — a UAS that never receives the ACK of
    its 2xx gives up after 64*T1 = 32 s and sends BYE (RFC 3261 §13.3.1.4) — which a 3-second
    call never shows."""
    callee = next(p.name for p in lab.spec.phones if p.extension == callee_extension)
    result = Hold(caller, callee, established=False)
    try:
        call = lab.phone(caller).call(callee_extension)
        call.wait_established(10)
    except LabkitError as exc:
        result.error = exc.message
        return result
    result.established = True
    answered = time.monotonic()
    try:
        call.wait_closed(longest)
        result.ended_by_itself = True
        closed = next(e for e in call.events if e.get("type") == "CALL_CLOSED")
        result.reason = str(closed.get("param") or "")
    except LabkitError:
        pass  # still up after `longest`: the call works, we end it
    result.lasted = round(time.monotonic() - answered, 1)
    for name in (caller, callee):
        try:
            lab.phone(name).command("hangup")
        except PhoneError:
            pass
    return result
