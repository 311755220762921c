"""Checks of ``notebooks/00-orientation.ipynb`` (and a small table helper it uses).

Every truth comes from the student's own capture (``ns["session"]``), never from the text
of their code: the same check passes in live mode (their lab) and in replay mode (the
recording), on either track.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from labkit.grading.checks import check

NB = "00-orientation"


# -- helpers the notebook calls (pure: they only read the session) -----------------------------
# -- truths, from the capture -----------------------------------------------------------------
def pbx_sip_port(session) -> int:
    """The UDP port the SIP requests sent to Asterisk went to."""
    sip = session.sip
    to_pbx = sip[(sip.dst == session.address("pbx")) & sip.is_request]
    return int(to_pbx.dport.mode().iloc[0])


def pbx_rtp_ports(session) -> set[int]:
    """The UDP ports Asterisk used for RTP (its side of every stream)."""
    s, pbx = session.streams, session.address("pbx")
    return {int(p) for p in s[s.src == pbx].sport} | {int(p) for p in s[s.dst == pbx].dport}


def register_counts(session) -> dict[str, int]:
    """Phone name → number of REGISTER requests it sent."""
    sip = session.sip
    reqs = sip[(sip.method == "REGISTER") & sip.is_request]
    return {p.name: int((reqs.src == session.address(p.host)).sum()) for p in session.spec.phones}


def first_register_answer(session) -> int:
    """The status code of Asterisk's first answer to a REGISTER."""
    sip = session.sip
    answers = sip[(sip.cseq_method == "REGISTER") & ~sip.is_request].sort_values("frame")
    return int(answers.status_code.iloc[0])


def _as_int_set(value) -> set[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    return {int(v) for v in value}


def _by_phone(session, value) -> dict[str, int]:
    """A student's {phone name or address: count} (dict or Series) as {phone name: count}."""
    if isinstance(value, pd.Series):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a dict or a Series, not {type(value).__name__}")
    names = {session.address(p.host): p.name for p in session.spec.phones}
    names.update({p.extension: p.name for p in session.spec.phones})
    out = {}
    for key, count in value.items():
        key = str(key)
        out[names.get(key, key.lower())] = int(count)
    return out


# -- checks ------------------------------------------------------------------------------------
@check(NB, "sip-port", points=1,
       hint="filter session.sip on the messages whose dst is session.address('pbx') and read their dport")
def _sip_port(ns):
    truth = pbx_sip_port(ns["session"])
    answer = ns["sip_port"]
    return int(answer) == truth, f"you said {answer!r}"


@check(NB, "asterisk-rtp-ports", points=1,
       hint="in session.streams, Asterisk's ports are the sport of the rows whose src is "
            "Asterisk's address (and the dport of the rows whose dst is)")
def _asterisk_rtp_ports(ns):
    truth = pbx_rtp_ports(ns["session"])
    answer = _as_int_set(ns["asterisk_rtp_ports"])
    if answer == truth:
        return True, f"{sorted(answer)}"
    missing, extra = truth - answer, answer - truth
    why = []
    if missing:
        why.append(f"{len(missing)} of Asterisk's ports missing")
    if extra:
        why.append(f"{sorted(extra)} {'is' if len(extra) == 1 else 'are'} not Asterisk's")
    return False, "; ".join(why)


@check(NB, "rtp-in-range", points=1,
       hint="compare each port with session.spec.pbx.rtp_ports (rtpstart, rtpend); the answer is True or False")
def _rtp_in_range(ns):
    session = ns["session"]
    low, high = session.spec.pbx.rtp_ports
    truth = all(low <= p <= high for p in pbx_rtp_ports(session))
    answer = ns["inside_range"]
    if not isinstance(answer, bool) and type(answer).__name__ != "bool_":
        return False, f"inside_range should be True or False, not a {type(answer).__name__}"
    return bool(answer) == truth, ""


@check(NB, "register-counts", points=1,
       hint="keep the REGISTER requests (is_request) and count them per src address "
            "(.groupby('src').size() or .value_counts())")
def _register_counts(ns):
    session = ns["session"]
    truth = register_counts(session)
    answer = _by_phone(session, ns["register_counts"])
    wrong = [name for name in truth if answer.get(name) != truth[name]]
    if not wrong:
        return True, ", ".join(f"{k}: {v}" for k, v in truth.items())
    return False, f"wrong or missing count for {', '.join(wrong)}"


@check(NB, "challenge-status", points=1, hidden=True,
       hint="the status code of Asterisk's first answer to a REGISTER")
def _challenge_status(ns):
    truth = first_register_answer(ns["session"])
    return int(ns["challenge_status"]) == truth, ""
