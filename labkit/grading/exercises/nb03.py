"""Checks of ``notebooks/03-tls.ipynb`` (SIP over TLS).

The notebook's labs: ``ns["session"]`` (tls-office: the certificate exercise's folder, the
predictions and the probes that reveal them, the capture read on the wire), ``ns["mine"]``
(tls-office run with the student's own TLS lines) and ``ns["broken"]`` (tls-office with a
fault picked for the student, :func:`labkit.teaching.session.pick_fault`).

Every truth comes from artifacts: the files the student's openssl commands wrote, checked
against the exercise's CA; the session's ordered log of what the lab answered (a prediction
counts only if it was noted before the probe that shows the outcome; a configuration only
if the lab then measured the phones registered over TLS); the capture with the lab's TLS
keys.  A lab that was not fixed fails the fix's check, whatever the answer.
"""
from __future__ import annotations

import re
import stat
from pathlib import Path

from labkit import pki, tracks
from labkit.grading.checks import check
from labkit.services.tlsprobe import ALERTS
from labkit.spec import stanza
from labkit.teaching.session import STANZA_FIELD, TLS_FAULTS, normalise_stanza

NB = "03-tls"
#: The variable holding the student's lines for each lab-file field.
STANZA_VARIABLE = {"sip_conf": "sip_tls", "pjsip_conf": "pjsip_tls"}
MAX_DAYS = 366


# -- truths ------------------------------------------------------------------------------------
def pbx_name(session) -> str:
    """The name the phones dial (their registrar): what the PBX's certificate must hold."""
    return session.spec.phones[0].registrar


def entries(session) -> list[dict]:
    return session.recorder.entries


def student_certificate(session):
    """The certificate and key the student wrote in the exercise's folder."""
    folder = getattr(session, "workshop", None)
    if folder is None or getattr(session, "workshop_ca", None) is None:
        raise AssertionError("no certificate folder: run the cell with session.certificate_workshop()")
    cert_path, key_path = Path(folder) / "pbx.crt", Path(folder) / "pbx.key"
    for path in (cert_path, key_path):
        if not path.is_file():
            raise AssertionError(f"{path.name} is not in the certificate folder: your openssl commands "
                                 f"must write {path.name} there")
    return pki.load_certificate(cert_path), key_path


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


def noted_prediction(items: list[dict], before: int, name: str):
    """The last prediction of ``name`` noted before entry ``before`` (None if there is none)."""
    for i in range(before - 1, -1, -1):
        entry = items[i]
        if entry["kind"] == "prediction" and name in entry["args"]:
            return entry["args"][name]
    return None


def fault_of(session) -> str | None:
    """The fault the diagnosis lab was started with (its overrides), or None."""
    tls = (getattr(session, "overrides", None) or {}).get("pbx", {}).get("tls")
    return next((name for name, change in TLS_FAULTS.items() if tls == change), None)


def stanza_field(session) -> str:
    return STANZA_FIELD[tracks.get(session.track).sip_config]


def with_your_lines(ns) -> tuple[list[dict], int, int]:
    """The log of ``mine``, the entry where the lab was configured with the student's lines,
    and where that configuration ended (the next configure_tls, or the end)."""
    mine = ns["mine"]
    field = stanza_field(mine)
    text = ns[STANZA_VARIABLE[field]]
    rules = stanza.CHAN_SIP_TLS if field == "sip_conf" else stanza.PJSIP_TLS
    _, problems = stanza.parse(text, rules)
    if problems:
        raise AssertionError("your lines do not parse: " + "; ".join(f"line {n}: {m}" for n, m in problems[:3]))
    wanted = normalise_stanza(text, field)
    items = entries(mine)
    found = [i for i, e in enumerate(items)
             if e["kind"] == "configure-tls" and (e["args"].get("tls") or {}).get(field) == wanted]
    if not found:
        raise AssertionError(f"the lab never ran with your {STANZA_VARIABLE[field]}: run "
                             "mine.configure_tls(...) with it (after your last change to it)")
    start = found[-1]
    end = next((i for i in range(start + 1, len(items)) if items[i]["kind"] == "configure-tls"), len(items))
    return items, start, end


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


# -- reading answers ---------------------------------------------------------------------------
_ALERT_NUMBERS = {name: number for number, name in ALERTS.items()}


def as_outcome(value):
    """An alert number (70, "70", "protocol_version") or a TLS version ("TLSv1.3", "1.3")."""
    if isinstance(value, bool):
        raise TypeError(f"expected an alert number or a TLS version, not {value!r}")
    if hasattr(value, "item"):
        value = value.item()
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
@check(NB, "cert-verifies", points=1,
       hint="sign your CSR with the workshop's CA (-CA ca.crt -CAkey ca.key), not with -signkey; "
            "write pbx.key and pbx.crt in the workshop folder")
def _cert_verifies(ns):
    session = ns["session"]
    cert, key_path = student_certificate(session)
    name = pbx_name(session)
    verdict = pki.verify(cert, session.workshop_ca, name)
    if not verdict.ok:
        return False, f"a phone trusting the lab CA and dialling {name} says: {verdict.openssl_line}"
    if not pki.key_matches(cert, pki.load_key(key_path)):
        return False, "pbx.key is not the private key of pbx.crt"
    if stat.S_IMODE(key_path.stat().st_mode) & 0o077:
        return False, (f"pbx.key is mode {stat.S_IMODE(key_path.stat().st_mode):04o}: other users may read it "
                       "(chmod 600)")
    return True, f"verify return code 0 for {name}; the key matches and is private"


@check(NB, "cert-san-lifetime", points=1,
       hint="-addext 'subjectAltName=DNS:…' on the request and -copy_extensions copy when signing; "
            "-days 365 or less (the option is -days)")
def _cert_san_lifetime(ns):
    session = ns["session"]
    cert, _ = student_certificate(session)
    info = pki.describe(cert)
    name = pbx_name(session)
    if name not in info["san_dns"]:
        return False, (f"its subjectAltName holds {info['san_dns'] or 'no DNS name'}: phones check the name "
                       f"they dial ({name}) there")
    if info["days_total"] > MAX_DAYS:
        return False, f"it is valid for {info['days_total']:g} days: at most a year for a lab certificate"
    if "SHA1" in info["signature_algorithm"].upper().replace("-", ""):
        return False, f"it is signed with {info['signature_algorithm']}: SHA-1 is refused"
    return True, f"subjectAltName DNS:{name}, valid {info['days_total']:g} days"


# -- exercise 2: predictions --------------------------------------------------------------------
def _predicted(ns, variable: str, reveal: int | None, truth) -> tuple[bool, str]:
    session = ns["session"]
    answer = as_outcome(ns[variable])
    if reveal is None:
        return False, "the probe that shows the outcome has not run yet: run the cells after the prediction"
    noted = noted_prediction(entries(session), reveal, variable)
    if noted is None:
        return False, (f"no prediction of {variable} was noted before the probe ran: run the prediction cell "
                       "(session.predict) before the probe")
    if as_outcome(noted) != answer:
        return False, f"{variable} is {_shown(answer)} now, but you predicted {_shown(as_outcome(noted))}"
    return answer == truth, f"you predicted {_shown(answer)}"


@check(NB, "predict-tls10-alert", points=1,
       hint="RFC 8996 forbids TLS 1.0; which alert of RFC 8446 §6.2 says 'not this version'?")
def _predict_tls10(ns):
    items = entries(ns["session"])
    reveal, result = probe_after(items, -1, "1.0")
    return _predicted(ns, "tls10_alert", reveal, outcome(result) if result else None)


@check(NB, "predict-tls13-only", points=1,
       hint="is pjproject's method a minimum or one exact version? does chan_sip have a switch for TLS 1.3?")
def _predict_tls13_only(ns):
    items = entries(ns["session"])
    configured = [i for i, e in enumerate(items) if e["kind"] == "configure-tls"
                  and (e["args"].get("tls") or {}).get("versions") == ["1.2"]]
    reveal = result = None
    for start in configured:
        reveal, result = probe_after(items, start, "1.3", stop_at_configure=True)
        if reveal is not None:
            break
    if not configured:
        return False, "the lab was never configured with versions=['1.2']: run the cells of this section"
    return _predicted(ns, "tls13_only", reveal, outcome(result) if result else None)


# -- exercise 3: your own TLS lines ------------------------------------------------------------
@check(NB, "stanza-registers", points=2,
       hint="both phones must register again after configure_tls (mine.register(...)), and the PBX must "
            "say TLS for them (mine.transport_of)")
def _stanza_registers(ns):
    items, start, end = with_your_lines(ns)
    mine = ns["mine"]
    after = items[start + 1:end]
    registered = {}
    for entry in after:
        if entry["kind"] == "register":
            registered[entry["args"]["phone"]] = bool(entry["result"])
    phones = [p.name for p in mine.spec.phones]
    missing = [p for p in phones if not registered.get(p)]
    if missing:
        state = {True: "registered", False: "not registered", None: "not asked"}
        said = ", ".join(f"{p}: {state[registered.get(p)]}" for p in phones)
        return False, f"with your lines the phones did not all register ({said})"
    transports = [str(e["result"]) for e in after if e["kind"] == "transport-of"]
    if not transports:
        return False, "the PBX was not asked how it reaches the phones (mine.transport_of) after your change"
    if not any(re.search(r"Prim\.Transp\.\s*:\s*TLS|transport=TLS", t, re.I) for t in transports):
        return False, "the PBX does not say TLS for the phone: it registered another way"
    return True, "both phones registered over TLS with your lines"


@check(NB, "stanza-versions", points=1,
       hint="a TLS 1.2 client and a TLS 1.3 client must both connect and verify: on PJSIP, method= is one "
            "exact version, sslv23 means every version OpenSSL allows")
def _stanza_versions(ns):
    items, start, end = with_your_lines(ns)
    said = []
    for version in ("1.2", "1.3"):
        _, result = probe_after(items[:end], start, version)
        if result is None:
            return False, f"no TLS {version} probe after your change: run the probe cell"
        if not (result.get("connected") and result.get("verify_code") == 0):
            why = (f"alert {result.get('alert')} {result.get('alert_name', '')}".strip() if result.get("alert")
                   else result.get("error") or "no answer")
            return False, f"a TLS {version} client was refused ({why})"
        said.append(f"TLS {version}: {result.get('cipher')}")
    return True, "; ".join(said)


def _static_requirements(field: str, text: str) -> list[str]:
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


@check(NB, "stanza-other-generation", points=1, hidden=True,
       hint="the other generation's lines: TLS on 5061, a certificate and its key, TLS 1.2 and 1.3")
def _stanza_other_generation(ns):
    mine = ns["mine"]
    field = next(f for f in STANZA_FIELD.values() if f != stanza_field(mine))
    wrong = _static_requirements(field, ns[STANZA_VARIABLE[field]])
    if wrong:
        return False, f"your {STANZA_VARIABLE[field]}: " + "; ".join(wrong)
    return True, f"your {STANZA_VARIABLE[field]} enables TLS on 5061 with a certificate, TLS 1.2 and 1.3"


# -- exercise 4: read the wire ------------------------------------------------------------------
@check(NB, "wire-via-sent-by", points=1,
       hint="the Via line of Bob's first REGISTER: SIP/2.0/TLS host:port;branch=… — store host:port")
def _wire_via(ns):
    truth, _ = wire_truth(ns["session"])
    answer = str(ns["via_sent_by"]).strip()
    return answer == truth, f"you said {answer}"


@check(NB, "wire-rport", points=1,
       hint="the Via of the 401 that answered Bob's first REGISTER: rport=…")
def _wire_rport(ns):
    _, truth = wire_truth(ns["session"])
    value = ns["rport"]
    if isinstance(value, bool):
        raise TypeError("expected a port number")
    answer = int(value)
    return answer == truth, f"you said {answer}"


# -- exercise 5: diagnose and fix ----------------------------------------------------------------
def _fault(ns) -> str:
    truth = fault_of(ns["broken"])
    if truth is None:
        raise AssertionError("this lab hides no fault: `broken` must be the lab of Session.diagnosis(...)")
    return truth


@check(NB, "diagnose-name", points=1,
       hint="the probe's verify code, the socket error, whether 5061 listens and Asterisk's TLS log tell "
            "the faults apart")
def _diagnose_name(ns):
    truth = _fault(ns)
    answer = str(ns["fault"]).strip().lower()
    if answer not in TLS_FAULTS:
        return False, f"{answer!r} is not one of: {', '.join(TLS_FAULTS)}"
    return answer == truth, f"you said {answer}"


@check(NB, "diagnose-fixed", points=2,
       hint="broken.configure_tls(...) with what repairs the fault, then broken.register('alice')")
def _diagnose_fixed(ns):
    _fault(ns)
    items = entries(ns["broken"])
    configured = [i for i, e in enumerate(items) if e["kind"] == "configure-tls"]
    if not configured:
        return False, "the lab was never reconfigured: the fault is still there"
    after = [e for e in items[configured[-1] + 1:] if e["kind"] == "register"]
    if not after:
        return False, "no phone registered after your last change: run broken.register('alice')"
    failed = [e["args"]["phone"] for e in after if not e["result"]]
    if failed:
        return False, f"after your last change {', '.join(failed)} still could not register"
    return True, f"{', '.join(sorted({e['args']['phone'] for e in after}))} registered after your fix"
