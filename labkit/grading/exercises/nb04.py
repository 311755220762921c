"""Checks of ``notebooks/04-srtp.ipynb`` (SRTP: encrypted media).

The notebook's labs, all from ``srtp-office`` (one session each, the notebook's variable in
brackets): ``04-srtp`` (SDES keys, signalling over UDP: ``session``), ``04-report`` (the
report's four chan_sip lines on every peer, phones insisting on RTP/SAVP: ``report``), and
``04-tls`` (the same SRTP call with the phones' signalling over TLS: ``tls``).  Every truth
is read from their recordings — the capture (with the TLS keys the lab logged, for
``04-tls``) and the session's ordered log (a prediction counts only if it was noted before
the call that shows the outcome) — opened by the checking code (``truth.session``), never an
object of the student's.

The configure exercise takes the SRTP lines the student wrote for each generation
(``srtp_sip``: lines of a chan_sip peer; ``srtp_pjsip``: lines of a PJSIP endpoint), turns
them into the lab file's ``pbx.media`` (:func:`srtp_lines`: only the options of the table,
values checked) and measures a fresh lab with them: Bob calls Alice, both hear each other,
and the call is encrypted (baresip's ``CALL_MENC`` event names the SRTP suite).
"""
from __future__ import annotations

import re

from labkit import analysis, tracks
from labkit.grading.answer_values import whole_number
from labkit.grading.checks import check, configure, recording
from labkit.grading.probes import Refused
from labkit.spec import stanza

NB = "04-srtp"
LAB = "srtp-office"
#: The report's chan_sip lines, as lab-file settings: encryption=yes, avpf, force_avp, icesupport.
REPORT = {"pbx": {"media": {"encryption": "sdes", "avpf": True, "force_avp": True, "ice": True}}}
#: The phones' signalling over TLS (the PBX of srtp-office already listens on 5061).
TLS_PHONES = {"phones": [{"name": name, "host": name, "extension": ext, "registrar": "pbx.office.example",
                          "media_encryption": "srtp-mand", "transport": "tls"}
                         for name, ext in (("alice", "6000"), ("bob", "6001"))]}
MAIN = recording(NB, "04-srtp", LAB).name
REPORT_SESSION = recording(NB, "04-report", LAB, overrides=REPORT).name
TLS = recording(NB, "04-tls", LAB, overrides=TLS_PHONES).name


# -- the student's SRTP lines ----------------------------------------------------------------------
_YES_NO = "yes or no"
#: chan_sip peer options the exercise accepts (sip.conf.sample, Asterisk 16).
CHAN_SIP_SRTP = stanza.Rules(options={
    "encryption": _YES_NO, "avpf": _YES_NO, "force_avp": _YES_NO, "icesupport": _YES_NO})
#: PJSIP endpoint options the exercise accepts (res_pjsip's endpoint documentation).
PJSIP_SRTP = stanza.Rules(options={
    "media_encryption": "no, sdes or dtls", "media_encryption_optimistic": _YES_NO,
    "use_avpf": _YES_NO, "force_avp": _YES_NO, "ice_support": _YES_NO})
_TRUE, _FALSE = ("yes", "true", "on", "1"), ("no", "false", "off", "0")
#: option of each generation → the lab file's pbx.media key
_MEDIA_KEY = {"encryption": "encryption", "media_encryption": "encryption",
              "media_encryption_optimistic": "optimistic", "avpf": "avpf", "use_avpf": "avpf",
              "force_avp": "force_avp", "icesupport": "ice", "ice_support": "ice"}


def srtp_lines(text, track) -> dict:
    """The lab-file overrides that a generation's SRTP lines make (``pbx.media``, complete: what
    the lines do not say is off).  Raises :class:`~labkit.grading.probes.Refused` with the line
    and the reason for anything else than the options of the exercise and their values."""
    track = tracks.get(getattr(track, "name", track))
    legacy = track.sip_config == "sip.conf"
    rules = CHAN_SIP_SRTP if legacy else PJSIP_SRTP
    if not isinstance(text, str) or not text.strip():
        raise Refused("your lines are empty")
    parsed, problems = stanza.parse(text, rules)
    if problems:
        raise Refused("your lines: " + "; ".join(f"line {n}: {m}" for n, m in problems[:3]))
    media = {"encryption": "no", "optimistic": False, "avpf": False, "force_avp": False, "ice": False}
    for option, value in parsed.options().items():
        value = value.strip().lower()
        key = _MEDIA_KEY[option]
        if option == "media_encryption":
            if value not in ("no", "sdes", "dtls"):
                raise Refused(f"media_encryption = {value}: it takes no, sdes or dtls")
            media[key] = value
        elif value in _TRUE + _FALSE:
            on = value in _TRUE
            media[key] = ("sdes" if on else "no") if option == "encryption" else on
        else:
            raise Refused(f"{option} = {value}: it takes yes or no")
    return {"pbx": {"media": media}}


def _sent_suites(lab) -> list[str]:
    return [str(e.get("param")) for e in lab.phone("bob").last_call().events if e.get("type") == "CALL_MENC"]


@configure(NB, "srtp-lines", answer={"sip.conf": "srtp_sip", "pjsip.conf": "srtp_pjsip"}, lab=LAB,
           apply=srtp_lines, points=2, timeout=150,
           hint="the phones insist on RTP/SAVP with SDES keys: switch SRTP on with SDES, and nothing that "
                "changes the RTP profile they offer")
def _srtp_lines(lab):
    from labkit.lab.conversation import talk
    conversation = talk(lab, "bob", "6000", seconds=2)
    if not conversation.established:
        return False, f"with your lines Bob's call failed: {conversation.error or 'no answer'}"
    deaf = [p for p, s in conversation.summary().items() if not s["heard_the_other"]]
    if deaf:
        return False, f"the call was set up but {' and '.join(deaf)} heard nothing"
    suites = _sent_suites(lab)
    if not any("AES_CM_128_HMAC_SHA1" in s for s in suites):
        return False, "the call worked, but not encrypted (the phone reports no SRTP suite)"
    return True, f"two-way audio, encrypted ({suites[0].split(',')[-1]})"


@check(NB, "srtp-lines-other-generation", points=1, hidden=True, answers=("srtp_sip", "srtp_pjsip"),
       hint="the other generation's lines: SRTP keyed by SDES, the RTP profile the phones offer")
def _srtp_other_generation(answer, truth):
    other = tracks.LEGACY if tracks.get(truth.track).name != tracks.LEGACY.name else tracks.MODERN
    variable = "srtp_sip" if other.sip_config == "sip.conf" else "srtp_pjsip"
    try:
        media = srtp_lines(answer[variable], other)["pbx"]["media"]
    except Refused as exc:
        return False, f"your {variable}: {exc.message}"
    if media["encryption"] != "sdes":
        return False, f"your {variable} does not switch SRTP with SDES keys on (encryption: {media['encryption']})"
    if media["avpf"]:
        return False, f"your {variable} demands AVPF: phones offering RTP/SAVP are refused"
    return True, f"your {variable} switches SDES-SRTP on for phones offering RTP/SAVP"


# -- truths ----------------------------------------------------------------------------------------
def outcome(result: dict) -> int:
    """The status code a talk ended with: 200 when the call was set up, else the error's code."""
    if result.get("established"):
        return 200
    found = re.search(r"\b([3-6]\d\d)\b", str(result.get("error", "")))
    if not found:
        raise AssertionError(f"the call failed without a SIP status code ({result.get('error')!r})")
    return int(found.group(1))


def keys_sent(session, sip) -> list[dict]:
    """Every SDES key in the SIP table ``sip``, with the host that wrote it and the one it went to."""
    keys = analysis.sdes_keys(sip)
    if keys is None or keys.empty:
        return []
    dst = dict(zip(sip.frame, sip.dst))
    names = {session.address(h.name): h.name for h in session.spec.hosts}
    return [{"from": names.get(str(r.src), str(r.src)), "to": names.get(str(dst.get(r.frame)), ""),
             "inline": _inline(r.inline), "port": int(r.port), "message": str(r.message), "frame": int(r.frame)}
            for r in keys.sort_values("frame").itertuples() if not r.error]


def key_to(session, sip, sender: str, receiver: str) -> dict:
    found = [k for k in keys_sent(session, sip) if k["from"] == sender and k["to"] == receiver]
    if not found:
        raise AssertionError(f"this capture holds no SDP key sent by {sender} to {receiver}")
    return found[-1]


def _inline(value) -> str:
    text = str(value).strip()
    text = text.split("inline:", 1)[1] if "inline:" in text else text
    return text.split("|")[0].split()[0] if text.split() else ""


# -- exercise 1: predict the report's lines ----------------------------------------------------------
@check(NB, "predict-report", points=1, answers=("report_status",),
       hint="what RTP profile do the phones offer, and what does avpf=yes make Asterisk demand? "
            "An offer Asterisk cannot accept is answered with a 4xx code")
def _predict_report(answer, truth):
    items = truth.session(REPORT_SESSION).recorder.entries
    reveal = next((i for i, e in enumerate(items) if e["kind"] == "talk"), None)
    if reveal is None:
        return False, "the call that shows the outcome has not run yet: run the cells after the prediction"
    noted = next((e["args"]["report_status"] for e in reversed(items[:reveal])
                  if e["kind"] == "prediction" and "report_status" in e["args"]), None)
    if noted is None:
        return False, "no prediction was noted before the call: run the prediction cell (report.predict) first"
    said = whole_number(answer["report_status"])
    if whole_number(noted) != said:
        return False, f"report_status is {said} now, but you predicted {whole_number(noted)}"
    return said == outcome(items[reveal]["result"]), f"you predicted {said}"


# -- exercise 3: read the raw SDP ------------------------------------------------------------------
@check(NB, "wire-key", points=1, answers=("pbx_to_alice_key",),
       hint="the key that protects what a side sends is in the SDP that side wrote: Asterisk's INVITE "
            "to Alice, a=crypto:1 … inline:KEY")
def _wire_key(answer, truth):
    session = truth.session(MAIN)
    expected = key_to(session, session.table("sip"), "pbx", "alice")["inline"]
    said = _inline(answer["pbx_to_alice_key"])
    return said == expected, f"you said {said[:12]}…" if said else "your key is empty"


@check(NB, "wire-port", points=1, answers=("alice_rtp_port",),
       hint="the m=audio line of the SDP Alice's phone answered with: m=audio PORT RTP/SAVP …")
def _wire_port(answer, truth):
    session = truth.session(MAIN)
    expected = key_to(session, session.table("sip"), "alice", "pbx")["port"]
    said = whole_number(answer["alice_rtp_port"])
    return said == expected, f"you said {said}"


# -- exercise 4: decrypt what TLS hid ----------------------------------------------------------------
def tls_truth(session) -> tuple[str, int, float]:
    """(the key Asterisk sent Alice, read in the SIP decrypted with the TLS keys; the packets of
    Asterisk → Alice that this key opens in the raw capture; the entropy of their decrypted payload)."""
    raw = session.table("sip")
    if len(raw):
        raise AssertionError("this capture has readable SIP: it is not the lab with TLS signalling")
    key = key_to(session, session.table("sip", decrypt="keylog"), "pbx", "alice")["inline"]
    streams = analysis.srtp_streams(session.pcap, keys=[f"inline:{key}"])
    to_alice = streams[(streams.src == session.address("pbx")) & (streams.dst == session.address("alice"))]
    if to_alice.empty:
        raise AssertionError("no stream from Asterisk to Alice in this capture")
    row = to_alice.iloc[0]
    return key, int(row.decrypted), float(row.entropy_decrypted)


@check(NB, "tls-key", points=1, answers=("tls_key",),
       hint="tls.message('INVITE', src='pbx', dst='alice') reads the INVITE decrypted with the TLS keys: "
            "its a=crypto line")
def _tls_key(answer, truth):
    expected = tls_truth(truth.session(TLS))[0]
    said = _inline(answer["tls_key"])
    return said == expected, f"you said {said[:12]}…" if said else "your key is empty"


@check(NB, "tls-decrypted", points=1, answers=("tls_entropy",),
       hint="analysis.srtp_streams(tls.pcap, keys=[...]) with your key: the entropy_decrypted column of the "
            "stream from Asterisk to Alice")
def _tls_decrypted(answer, truth):
    _, packets, expected = tls_truth(truth.session(TLS))
    if packets == 0 or expected != expected:
        return False, "the key of this capture opens no packet of Asterisk → Alice"
    value = answer["tls_entropy"]
    if isinstance(value, bool):
        raise TypeError(f"expected a number, not {value!r}")
    said = float(value)
    if said >= 7.5:
        return False, f"{said:g} bits/byte is the entropy of ciphertext: the payload you measured was not decrypted"
    return abs(said - expected) <= 0.01, f"you said {said:g} bits/byte"
