"""Checks of ``notebooks/03-tls.ipynb`` (SIP over TLS).

The student's *answers* (JSON data) and where each truth comes from, computed here:

* exercise 1, the certificate: ``pbx_crt`` and ``pbx_key`` (the PEM text of the files the
  student's openssl commands wrote) are verified against the exercise's CA, which the
  grader makes again from the student's id (:func:`labkit.teaching.session.workshop_ca`:
  the same key the student's kernel made) — never a CA the notebook hands over — for the
  name the lab's phones dial (the lab file);
* exercise 2, predictions: ``tls10_alert`` and ``tls13_only`` against what the recorded
  lab answered (the session ``03-tls``: its TLS probes, before and after
  ``configure_tls(versions=["1.2"])``);
* exercise 3, the TLS lines (``sip_tls`` / ``pjsip_tls``): *configure* exercises, the text
  of the graded track applied to a fresh ``tls-office`` lab by a live probe that measures
  both phones registered over TLS, and TLS 1.2 and 1.3 clients verifying the PBX; the other
  generation's text (hidden) is read against the exercise's rules;
* exercise 4, the wire: ``via_sent_by`` and ``rport`` against Bob's first REGISTER and its
  answer in the recorded capture with the TLS keys;
* exercise 5, the diagnosis: ``fault`` against the fault the student's id picks
  (:func:`labkit.teaching.session.pick_fault`), the recording of that lab confirming it;
  ``fix`` (lab-file lines of ``pbx.tls``) is a configure exercise: applied to a fresh lab
  *with the student's fault* by a live probe, which measures that both phones register.
"""
from __future__ import annotations

import copy
import json
import re
import time
from types import SimpleNamespace

from labkit import pki
from labkit.errors import LabkitError
from labkit.grading import diagnosis, probes
from labkit.grading.answer_values import whole_number
from labkit.grading.checks import check, configure, recording
from labkit.services.tlsprobe import ALERTS
from labkit.spec import merge_overrides, stanza
from labkit.teaching.session import DEFAULT_STUDENT, TLS_FAULTS, pick_fault, tls_settings, workshop_ca

NB = "03-tls"
LAB = "tls-office"
SESSION = recording(NB, "03-tls", LAB).name
#: one recording per fault a student may get (Session.diagnosis: "<name>-<number>")
DIAGNOSIS = {fault: recording(NB, f"03-diagnose-{n}", LAB, overrides={"pbx": {"tls": change}}).name
             for n, (fault, change) in enumerate(TLS_FAULTS.items(), 1)}
#: The variable holding the student's lines for each track's SIP configuration file.
STANZA_VARIABLE = {"sip.conf": "sip_tls", "pjsip.conf": "pjsip_tls"}
MAX_DAYS = 366
#: how long the phones of a probe's lab get to register
REGISTER_WITHIN = 20.0
PROBE_TIMEOUT = 150


# -- truths ------------------------------------------------------------------------------------
def pbx_name(session) -> str:
    """The name the phones dial (their registrar): what the PBX's certificate must hold."""
    return session.spec.phones[0].registrar


def entries(session) -> list[dict]:
    return session.recorder.entries


def probe_after(items: list[dict], start: int, version: str, stop_at_configure: bool = False):
    """(index, result) of the first tls-probe with ``version`` after entry ``start``."""
    for i in range(start + 1, len(items)):
        entry = items[i]
        if stop_at_configure and entry["kind"] == "configure-tls":
            return None, None
        if entry["kind"] == "tls-probe" and entry["args"].get("version") == version:
            return i, entry["result"]
    return None, None


def outcome(result: dict):
    """What a probe ended with: the protocol it connected with, or the alert that stopped it."""
    if result.get("connected"):
        return result.get("protocol")
    return result.get("alert")


def tls10_outcome(session):
    """What a TLS 1.0 client got from the lab as it started."""
    _, result = probe_after(entries(session), -1, "1.0")
    if result is None:
        raise AssertionError("the recording holds no TLS 1.0 probe")
    return outcome(result)


def tls13_only_outcome(session):
    """What a TLS 1.3 client got once the lab was configured with versions=['1.2']."""
    items = entries(session)
    for start, entry in enumerate(items):
        if entry["kind"] == "configure-tls" and (entry["args"].get("tls") or {}).get("versions") == ["1.2"]:
            _, result = probe_after(items, start, "1.3", stop_at_configure=True)
            if result is not None:
                return outcome(result)
    raise AssertionError("the recording holds no TLS 1.3 probe of the lab configured with versions=['1.2']")


def fault_of(session) -> str | None:
    """The fault a diagnosis lab was started with (its overrides), or None."""
    tls = (getattr(session, "overrides", None) or {}).get("pbx", {}).get("tls")
    return next((name for name, change in TLS_FAULTS.items() if tls == change), None)


def wire_truth(session) -> tuple[str, int]:
    """(Via sent-by, rport Asterisk answered) of Bob's first REGISTER, from the capture with keys."""
    sip = session.table("sip", decrypt="keylog")
    bob = session.address("bob")
    registers = sip[(sip.method == "REGISTER") & (sip.src == bob)].sort_values("frame")
    if registers.empty:
        raise AssertionError("this capture holds no REGISTER from Bob")
    first = registers.iloc[0]
    via = str(first.via).split("\x1f")[0].split(",")[0].strip()
    if not via.upper().startswith("SIP/2.0/TLS "):
        raise AssertionError(f"Bob's REGISTER in this capture did not travel over TLS ({via.split(';')[0]})")
    sent_by = via.split()[1].split(";")[0]
    answers = sip[~sip.is_request.astype(bool) & (sip.call_id == first.call_id)
                  & (sip.cseq_num == first.cseq_num)].sort_values("frame")
    if answers.empty or str(answers.iloc[0].via_rport) in ("", "<NA>", "nan"):
        raise AssertionError("no answer with an rport to Bob's first REGISTER in this capture")
    return sent_by, int(answers.iloc[0].via_rport)


def student_certificate(answer):
    """The student's certificate and key, from the PEM text they handed in."""
    texts = {}
    for name in ("pbx_crt", "pbx_key"):
        value = answer[name]
        if not isinstance(value, str) or "-----BEGIN" not in value:
            raise AssertionError(f"`{name}` should be the text of the file (PEM, -----BEGIN …), not {value!r:.60}")
        texts[name] = value
    try:
        cert = pki.load_certificate(texts["pbx_crt"].encode())
    except Exception:
        raise AssertionError("`pbx_crt` is not a certificate (PEM) that can be read") from None
    try:
        key = pki.load_key(texts["pbx_key"].encode())
    except Exception:
        raise AssertionError("`pbx_key` is not a private key (PEM, unencrypted) that can be read") from None
    return cert, key


def certificate_of(answer):
    value = answer["pbx_crt"]
    if not isinstance(value, str) or "-----BEGIN" not in value:
        raise AssertionError(f"`pbx_crt` should be the text of pbx.crt (PEM, -----BEGIN …), not {value!r:.60}")
    try:
        return pki.load_certificate(value.encode())
    except Exception:
        raise AssertionError("`pbx_crt` is not a certificate (PEM) that can be read") from None


# -- reading answers ---------------------------------------------------------------------------
_ALERT_NUMBERS = {name: number for number, name in ALERTS.items()}


def as_outcome(value):
    """An alert number (70, "70", "protocol_version") or a TLS version ("TLSv1.3", "1.3")."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"expected an alert number or a TLS version, not {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if text.lower() in _ALERT_NUMBERS:
        return _ALERT_NUMBERS[text.lower()]
    version = re.fullmatch(r"(?i)(?:tls\s*v?\s*)?(1\.[0-3])", text)
    if version:
        return f"TLSv{version.group(1)}"
    return text


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


# -- exercise 1: a certificate that passes -----------------------------------------------------
@check(NB, "cert-verifies", points=1, answers=("pbx_crt", "pbx_key"),
       hint="sign your CSR with the workshop's CA (-CA ca.crt -CAkey ca.key), not with -signkey; "
            "write pbx.key and pbx.crt in the workshop folder")
def _cert_verifies(answer, truth):
    cert, key = student_certificate(answer)
    name = pbx_name(truth.session(SESSION))
    ca = workshop_ca(truth.student or DEFAULT_STUDENT)
    verdict = pki.verify(cert, ca.cert, name)
    if not verdict.ok:
        return False, f"a phone trusting the workshop's CA and dialling {name} says: {verdict.openssl_line}"
    if not pki.key_matches(cert, key):
        return False, "pbx.key is not the private key of pbx.crt"
    return True, f"verify return code 0 for {name}; the key matches"


@check(NB, "cert-san-lifetime", points=1, answers=("pbx_crt",),
       hint="-addext 'subjectAltName=DNS:…' on the request and -copy_extensions copy when signing; "
            "-days 365 or less (the option is -days)")
def _cert_san_lifetime(answer, truth):
    info = pki.describe(certificate_of(answer))
    name = pbx_name(truth.session(SESSION))
    if name not in info["san_dns"]:
        return False, (f"its subjectAltName holds {info['san_dns'] or 'no DNS name'}: phones check the name "
                       f"they dial ({name}) there")
    if info["days_total"] > MAX_DAYS:
        return False, f"it is valid for {info['days_total']:g} days: at most a year for a lab certificate"
    if "SHA1" in info["signature_algorithm"].upper().replace("-", ""):
        return False, f"it is signed with {info['signature_algorithm']}: SHA-1 is refused"
    return True, f"subjectAltName DNS:{name}, valid {info['days_total']:g} days"


# -- exercise 2: predictions --------------------------------------------------------------------
def _predicted(answer, variable: str, expected) -> tuple[bool, str]:
    said = as_outcome(answer[variable])
    return said == expected, f"you predicted {_shown(said)}"


@check(NB, "predict-tls10-alert", points=1, answers=("tls10_alert",),
       hint="RFC 8996 forbids TLS 1.0; which alert of RFC 8446 §6.2 says 'not this version'?")
def _predict_tls10(answer, truth):
    return _predicted(answer, "tls10_alert", tls10_outcome(truth.session(SESSION)))


@check(NB, "predict-tls13-only", points=1, answers=("tls13_only",),
       hint="is pjproject's method a minimum or one exact version? does chan_sip have a switch for TLS 1.3?")
def _predict_tls13_only(answer, truth):
    return _predicted(answer, "tls13_only", tls13_only_outcome(truth.session(SESSION)))


# -- exercise 3: your own TLS lines (live probes) -----------------------------------------------
def _wait_registered(lab, within: float = REGISTER_WITHIN) -> tuple[set[str], set[str]]:
    """(extensions wanted, extensions registered) once all registered or *within* seconds."""
    wanted = {p.extension for p in lab.spec.phones}
    deadline = time.monotonic() + within
    registered = set(lab.pbx.registered())
    while not wanted <= registered and time.monotonic() < deadline:
        time.sleep(0.5)
        registered = set(lab.pbx.registered())
    return wanted, registered


def _over_tls(lab, extension: str) -> bool:
    """Whether the PBX says it reaches *extension* over TLS (sip show peer / pjsip show aor)."""
    legacy = lab.pbx.sip_config_name == "sip.conf"
    out = lab.pbx.cli(f"sip show peer {extension}" if legacy else f"pjsip show aor {extension}")
    return bool(re.search(r"Prim\.Transp\.\s*:\s*TLS|transport=TLS", out, re.I))


@configure(NB, "stanza-registers", answer=STANZA_VARIABLE, lab=LAB, apply=probes.tls_lines, points=2,
           timeout=PROBE_TIMEOUT,
           hint="TLS on 0.0.0.0:5061 with the PBX's certificate and key under /etc/asterisk/tls/; on chan_sip "
                "the phones need transport = udp,tls")
def _stanza_registers(lab):
    wanted, registered = _wait_registered(lab)
    if not wanted <= registered:
        missing = ", ".join(sorted(wanted - registered))
        return False, f"with your lines, {missing} did not register over TLS within {REGISTER_WITHIN:g} s"
    not_tls = [ext for ext in sorted(wanted) if not _over_tls(lab, ext)]
    if not_tls:
        return False, f"the PBX does not say TLS for {', '.join(not_tls)}: it reaches them another way"
    return True, "both phones registered over TLS with your lines"


@configure(NB, "stanza-versions", answer=STANZA_VARIABLE, lab=LAB, apply=probes.tls_lines, points=1,
           timeout=PROBE_TIMEOUT,
           hint="a TLS 1.2 client and a TLS 1.3 client must both connect and verify: on PJSIP, method= is one "
                "exact version, sslv23 means every version OpenSSL allows")
def _stanza_versions(lab):
    name = lab.spec.phones[0].registrar
    said = []
    for version in ("1.2", "1.3"):
        seen = lab.tls_probe("alice", name=name, version=version)
        if not (seen.connected and seen.verify_code == 0):
            why = (f"alert {seen.alert} {seen.alert_name or ''}".strip() if seen.alert
                   else seen.verify_error or "no handshake")
            return False, f"a TLS {version} client was refused ({why})"
        said.append(f"TLS {version}: {seen.cipher}")
    return True, "; ".join(said)


def _static_requirements(field: str, text) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        return ["it should be the lines you wrote, as text"]
    rules = stanza.CHAN_SIP_TLS if field == "sip_conf" else stanza.PJSIP_TLS
    parsed, problems = stanza.parse(text, rules)
    if problems:
        return [f"line {n}: {m}" for n, m in problems[:3]]
    wrong = []
    if field == "sip_conf":
        options = parsed.options()
        if options.get("tlsenable", "").lower() not in ("yes", "true", "1"):
            wrong.append("tlsenable = yes is missing")
        if not options.get("tlsbindaddr", "").endswith(":5061"):
            wrong.append("tlsbindaddr must end in :5061")
        if not options.get("tlscertfile"):
            wrong.append("tlscertfile is missing")
        if options.get("tlscipher", "").upper() == "ALL":
            wrong.append("tlscipher = ALL admits ciphers without forward secrecy")
        if options.get("tlsdisablev12", "no").lower() in ("yes", "true", "1"):
            wrong.append("tlsdisablev12 = yes leaves chan_sip with TLS 1.3 only (old phones)")
    else:
        sections = [s for s in parsed.sections() if parsed.options(s).get("protocol", "").lower() == "tls"]
        if not sections:
            wrong.append("no section with protocol = tls")
        else:
            options = parsed.options(sections[0])
            if options.get("type", "") != "transport":
                wrong.append("type = transport is missing")
            if not options.get("bind", "").endswith(":5061"):
                wrong.append("bind must end in :5061")
            if not options.get("cert_file") or not options.get("priv_key_file"):
                wrong.append("cert_file and priv_key_file are both needed")
            if options.get("method", "") != "sslv23":
                wrong.append(f"method = {options.get('method') or '(unset: TLS 1.0 in pjproject)'} is one version; "
                             "sslv23 lets TLS 1.2 and 1.3 phones in")
    return wrong


@check(NB, "stanza-other-generation", points=1, hidden=True, answers=tuple(STANZA_VARIABLE.values()),
       hint="the other generation's lines: TLS on 5061, a certificate and its key, TLS 1.2 and 1.3")
def _stanza_other_generation(answer, truth):
    from labkit import tracks
    mine = tracks.get(truth.track).sip_config
    other = next(config for config in STANZA_VARIABLE if config != mine)
    variable = STANZA_VARIABLE[other]
    wrong = _static_requirements(other.replace(".", "_"), answer[variable])
    if wrong:
        return False, f"your {variable}: " + "; ".join(wrong)
    return True, f"your {variable} enables TLS on 5061 with a certificate, TLS 1.2 and 1.3"


# -- exercise 4: read the wire ------------------------------------------------------------------
@check(NB, "wire-via-sent-by", points=1, answers=("via_sent_by",),
       hint="the Via line of Bob's first REGISTER: SIP/2.0/TLS host:port;branch=… — store host:port")
def _wire_via(answer, truth):
    expected, _ = wire_truth(truth.session(SESSION))
    said = str(answer["via_sent_by"]).strip()
    return said == expected, f"you said {said}"


@check(NB, "wire-rport", points=1, answers=("rport",),
       hint="the Via of the 401 that answered Bob's first REGISTER: rport=…")
def _wire_rport(answer, truth):
    _, expected = wire_truth(truth.session(SESSION))
    said = whole_number(answer["rport"])
    return said == expected, f"you said {said}"


# -- exercise 5: diagnose and fix ----------------------------------------------------------------
def students_fault(truth) -> str:
    """The fault the student's lab hides (their id), as its recording confirms."""
    _, fault = pick_fault(truth.student or DEFAULT_STUDENT)
    session = truth.session(DIAGNOSIS[fault])
    try:  # what the recording says it was started with (a live session's log does not say)
        started = json.loads((session.recorded_dir / "session.json").read_text()).get("overrides")
    except (OSError, ValueError):
        started = None
    recorded = fault_of(session) if started is None else fault_of(SimpleNamespace(overrides=started))
    if recorded != fault:
        raise AssertionError(f"the recording of the {fault} lab hides {recorded or 'no fault'}: "
                             "not the lab your id gives")
    return fault


@check(NB, "diagnose-name", points=1, answers=("fault",),
       hint="the probe's verify code, the socket error, whether 5061 listens and Asterisk's TLS log tell "
            "the faults apart")
def _diagnose_name(answer, truth):
    return diagnosis.judge_name(answer["fault"], students_fault(truth), TLS_FAULTS)


def fix_lines(text: str, track, student: str | None = None) -> dict:
    """The student's fix (lab-file lines of ``pbx.tls``: ``certificate:`` …) over the fault of
    their own lab: the overrides of the lab the probe builds."""
    try:
        fix = tls_settings(text)
    except LabkitError as exc:
        raise probes.Refused(exc.message) from None
    _, fault = pick_fault(student or DEFAULT_STUDENT)
    return {"pbx": {"tls": merge_overrides(copy.deepcopy(TLS_FAULTS[fault]), fix)}}


@configure(NB, "diagnose-fixed", answer="fix", lab=LAB, apply=fix_lines, points=2, timeout=PROBE_TIMEOUT,
           hint="the lab file's certificate settings that undo the fault you found (variant, owner, key_mode), "
                "as lines: certificate: then the settings, indented")
def _diagnose_fixed(lab):
    wanted, registered = _wait_registered(lab)
    if not wanted <= registered:
        missing = ", ".join(sorted(wanted - registered))
        return False, f"with your fix on your lab, {missing} still did not register within {REGISTER_WITHIN:g} s"
    return True, "with your fix, both phones of your lab registered over TLS"
