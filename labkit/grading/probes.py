"""Live probes: a *configure* exercise's answer is text the grader applies to a fresh lab.

An exercise module registers one with :func:`labkit.grading.checks.configure`::

    @configure("04-tls", "tls-transport", answer="tls_lines", lab="tls-office",
               apply=probes.tls_lines, points=2, timeout=120)
    def _tls_transport(lab):                       # a running lab, built from the text
        missing = {"6000", "6001"} - set(lab.pbx.registered())
        return not missing, "both phones registered over TLS" if not missing else …

The student's text (the value of ``tls_lines``: a string) is *data*:

1. ``apply(text, track)`` turns it into lab-file overrides — :func:`tls_lines` puts it in
   ``pbx.tls.sip_conf`` or ``pbx.tls.pjsip_conf`` (the track's SIP configuration file);
   :func:`yaml_override` reads a YAML mapping and accepts only the keys the exercise names;
2. the lab model validates the result (:func:`labkit.spec.load_spec`): a stanza is parsed
   against the exercise's options and refuses ``#include``/``#exec``, unknown options and
   files outside ``/etc/asterisk/tls``; a lab-file error is a failed check whose message is
   the error (no lab is started);
3. the grader builds a fresh lab from the declared lab file and the overrides
   (``Lab.load(lab, track=…, name=<unique>, overrides=…)``), brings it up
   (``wait_registered`` as declared), calls the measuring function, takes the lab down —
   always — and checks that nothing of it is left (:func:`labkit.lab.leftovers`).

Step 3 runs in a child process of the grader (``python -m labkit.grading.probes``, root,
never the notebook's sandbox; no student code runs there: only the exercise's own code on
a lab built from validated data), within the probe's deadline: at the deadline the child
unwinds through ``lab.down()`` (SIGALRM), 20 s later it is killed and the lab removed
through its record, as ``labkit clean`` would.  ``answer`` may also map each track's SIP
configuration file to its own variable (``{"sip.conf": "sip_tls", "pjsip.conf":
"pjsip_tls"}``), and ``apply`` may take a ``student`` keyword (a lab of the student's own:
a fault picked for them, to fix).  Every probe has a lab
name of its own (``gp`` + 10 random hex digits), so parallel gradings never collide.  Where
the machine cannot run labs (not root, tools or images missing: :func:`can_run_here`), a
probe is *not run* — never a pass; ``labkit grade --unprobed`` says how that scores.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabFileError, LabkitError

__all__ = ["Probe", "ProbeResult", "Refused", "tls_lines", "yaml_override", "can_run_here",
           "validate", "measure", "run", "lab_name", "refusal"]

DEFAULT_TIMEOUT = 180.0
#: seconds the child gets after its deadline to take its lab down, before it is killed
_GRACE = 20.0


class Refused(LabFileError):
    """The student's text is not acceptable for this exercise (the message says why)."""


@dataclass(frozen=True)
class Probe:
    """How a configure exercise's answer is applied and measured."""
    lab: str                                         # the lab file (name or path)
    #: (the track's SIP configuration file, or "" for every track) -> the variable holding the text
    variables: tuple[tuple[str, str], ...]
    apply: Callable[[str, Any], dict]                # (text, Track) -> lab-file overrides
    timeout: float = DEFAULT_TIMEOUT                 # seconds: validate + up + measure + down
    wait_registered: bool = False                    # up() waits for every phone to register

    def answer(self, track: str) -> str:
        """The variable holding the text on *track*."""
        from labkit import tracks
        config = tracks.get(track).sip_config
        by_config = dict(self.variables)
        return by_config.get(config) or by_config.get("") or self.variables[0][1]


@dataclass
class ProbeResult:
    status: str          # "pass", "fail" or "not-run"
    message: str
    seconds: float = 0.0
    leftovers: list[str] = field(default_factory=list)  # what could not be removed (never, normally)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


# ------------------------------------------------------------------------ applying the text


def tls_lines(text: str, track) -> dict:
    """TLS lines for the track's SIP configuration file: ``pbx.tls.sip_conf`` (sip.conf
    ``[general]`` lines) or ``pbx.tls.pjsip_conf`` (a pjsip.conf transport section)."""
    field = track.sip_config.replace(".", "_")  # sip.conf -> sip_conf, pjsip.conf -> pjsip_conf
    return {"pbx": {"tls": {field: text}}}


def yaml_override(*allowed: str) -> Callable[[str, Any], dict]:
    """An ``apply`` reading the text as a YAML mapping of lab-file overrides, refusing every
    key outside *allowed* (dotted paths: ``"pbx.codecs"``, ``"pbx.nat"``…): a lab file can say
    more than an exercise should let a student change (a dialplan line runs applications)."""
    if not allowed:
        raise ValueError("yaml_override: name the keys the exercise lets students set")

    def apply(text: str, track) -> dict:
        from labkit.spec.load import YamlTextError, yaml_text
        try:
            data = yaml_text(text)
        except YamlTextError as exc:
            raise Refused(f"your text is {exc}") from None
        if not isinstance(data, dict):
            raise Refused("your text must be a YAML mapping, e.g. `pbx: {codecs: [alaw]}`")
        bad = [path for path in _paths(data) if not any(path == a or path.startswith(a + ".") for a in allowed)]
        if bad:
            raise Refused(f"{', '.join(bad)}: not a key this exercise lets you set "
                          f"(allowed: {', '.join(allowed)})")
        return data

    apply.allowed = allowed  # type: ignore[attr-defined]
    return apply


def _paths(data: dict, prefix: str = "") -> list[str]:
    """The dotted paths of a mapping's leaves (a leaf: anything but a non-empty mapping)."""
    out = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += _paths(value, path + ".")
        else:
            out.append(path)
    return out


def validate(probe: Probe, text: Any, track: str, student: str | None = None) -> dict:
    """The lab-file overrides the student's *text* makes, validated by the lab model
    (raises :class:`Refused` / :class:`LabFileError` with the reason).  Pure data: no lab.

    ``apply(text, track)`` — or ``apply(text, track, student=…)`` when it takes a
    ``student`` (an exercise that gives each student a lab of their own: a fault to fix)."""
    from labkit import tracks
    from labkit.spec import load_spec
    if not isinstance(text, str):
        raise Refused(f"`{probe.answer(track)}` should be text (the lines you wrote), not "
                      f"{type(text).__name__ if text is not None else 'None'}")
    if not text.strip():
        raise Refused(f"`{probe.answer(track)}` is empty")
    try:
        if "student" in inspect.signature(probe.apply).parameters:
            overrides = probe.apply(text, tracks.get(track), student=student)
        else:
            overrides = probe.apply(text, tracks.get(track))
    except LabFileError:
        raise
    except LabkitError as exc:
        # The kit's readers of student text (labkit.teaching.nat, .hardening …) say what is
        # wrong with it in their own error: that is the refusal, whatever its class.
        raise Refused(exc.message) from None
    if not isinstance(overrides, dict):
        raise TypeError(f"apply() gave {type(overrides).__name__}, not lab-file overrides (a dict)")
    load_spec(probe.lab, overrides)
    return overrides


def can_run_here() -> tuple[bool, str]:
    """Whether this machine can bring labs up (root, tools, images), and why not."""
    from labkit.teaching.session import can_run_live
    if os.geteuid() != 0:
        return False, "live probes need root (labs use network namespaces)"
    if not can_run_live():
        return False, "this machine cannot run labs (a tool or a lab image is missing: `labkit doctor`)"
    return True, ""


def registered_at_its_phone(lab, phone: str) -> tuple[bool, str]:
    """``phone`` registers again (its REGISTER answered ``200 OK``) and Asterisk holds its
    extension's contact at the phone's own address."""
    if not lab.phone(phone).register_again():
        return False, f"{phone}'s REGISTER was not accepted"
    ours = lab.spec.phone(phone).extension
    contact = lab.pbx.registered().get(ours)
    if contact is None or str(lab.spec.address_of(lab.spec.phone(phone).host)) not in contact:
        return False, f"Asterisk has no registration of {phone}'s phone for {ours}"
    return True, f"{phone} registered: Asterisk has {ours} at {phone}'s phone"


def two_way_call(lab, caller: str, callee: str, *, capture: str | None = None,
                 register: bool = True) -> tuple[bool, str, Any]:
    """``caller`` registers again (unless ``register`` is False: done just before) and calls
    ``callee`` for 2 s: (two-way?, why, the capture file of network ``capture`` during the call,
    or None)."""
    from labkit.lab.conversation import talk
    if register and not lab.phone(caller).register_again():
        return False, f"{caller}'s REGISTER was not accepted", None
    if capture is None:
        conversation, pcap = talk(lab, caller, callee, seconds=2), None
    else:
        with lab.capture(capture, name=f"probe-{capture}") as running:
            conversation = talk(lab, caller, callee, seconds=2)
        pcap = running.files[capture]
    if not conversation.two_way:
        return False, f"the call {caller} → {callee} was not two-way: {conversation.summary()}", pcap
    return True, f"the call {caller} → {callee} was two-way", pcap


def registers_and_answers(lab, phone: str, extension: str, caller: str) -> tuple[bool, str]:
    """A probe for an account the student wrote: ``phone`` registers, Asterisk has its contact
    at the phone's address, and a call from ``caller`` to ``extension`` reaches it, two-way."""
    registered, why = registered_at_its_phone(lab, phone)
    if not registered:
        return False, why
    ours = lab.spec.phone(phone).extension
    if ours != extension:
        return False, f"{phone} registered as {ours}: a call to {extension} cannot reach her"
    two_way, why, _ = two_way_call(lab, caller, extension)  # the caller is not the one registered
    if not two_way:
        return False, why
    return True, f"{phone} registered, and the call {caller} → {extension} was answered, two-way"


def lab_name() -> str:
    """A lab name no other probe uses (checked against the labs recorded on this machine)."""
    from labkit.state import LabRecord
    while True:
        name = f"gp{secrets.token_hex(5)}"
        if LabRecord.load(name) is None:
            return name


# ------------------------------------------------------------------------ measuring


def measure(check, text: str, track: str, *, name: str, student: str | None = None) -> tuple[bool, str]:
    """Build the lab from *text*, bring it up, call the check's function, take it down
    (in the child process of :func:`run`)."""
    from labkit.lab import Lab
    probe: Probe = check.probe
    overrides = validate(probe, text, track, student)
    lab = Lab.load(probe.lab, track=track, name=name, overrides=overrides)
    try:
        try:
            lab.up(progress=False, build_images=False, wait_registered=probe.wait_registered)
        except LabFileError:
            raise
        except LabkitError as exc:
            return False, f"the lab did not come up with your configuration: {_one_line(exc.message)}"
        value = check.func(lab)
    finally:
        lab.down()
    detail = ""
    if isinstance(value, tuple):
        if len(value) != 2:
            return False, "the probe returned a tuple that is not (passed, detail): a bug in the check"
        value, detail = value
        detail = "" if detail is None else str(detail)
    if value is None:
        return False, "the probe returned nothing: a bug in the check"
    return bool(value), detail


def run(check, text: Any, track: str, *, student: str | None = None, timeout: float | None = None,
        sources: Iterable[str] = (), env: dict[str, str] | None = None) -> ProbeResult:
    """Judge a configure answer on a fresh lab, in a child process, within the deadline.

    *student* is handed to ``apply`` when it wants it; *sources* are the code cells that
    registered the check if it is not in an exercise module (an instructor notebook's hidden
    cells); *env* the child's environment (default: this process's, with its
    ``LABKIT_EXERCISES`` and ``PYTHONPATH``).
    """
    started = time.monotonic()
    probe: Probe = check.probe
    try:
        validate(probe, text, track, student)
    except LabFileError as exc:
        return ProbeResult("fail", refusal(exc), time.monotonic() - started)
    except Exception as exc:  # the exercise's apply() broke on this text
        return ProbeResult("fail", f"your text cannot be applied ({type(exc).__name__}: {_one_line(str(exc))})",
                           time.monotonic() - started)
    able, why = can_run_here()
    if not able:
        return ProbeResult("not-run", f"not run here: {why}", time.monotonic() - started)
    deadline = float(timeout if timeout is not None else probe.timeout)
    name = lab_name()
    request = {"notebook": check.notebook, "id": check.id, "text": text, "track": track, "name": name,
               "student": student, "sources": list(sources), "deadline": deadline}
    out = tempfile.NamedTemporaryFile(prefix="labkit-probe-", suffix=".json", delete=False)
    out.close()
    child = subprocess.Popen([sys.executable, "-m", "labkit.grading.probes", out.name],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=dict(env if env is not None else os.environ), start_new_session=True,
                             cwd="/")
    timed_out = False
    try:
        try:
            _, err = child.communicate(json.dumps(request).encode(), timeout=deadline + _GRACE)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(child)
            _, err = child.communicate()
        raw = open(out.name, encoding="utf-8").read()
    except BaseException:
        _kill_group(child)
        child.wait()
        raise
    finally:
        os.unlink(out.name)
        left, kept = _remove_lab(name)
    seconds = time.monotonic() - started
    answer = None
    try:
        answer = json.loads(raw) if raw.strip() else None
    except ValueError:
        pass
    if timed_out or (answer or {}).get("status") == "timeout":
        result = ProbeResult("fail", f"the probe did not finish within its {deadline:g} s", seconds)
    elif not isinstance(answer, dict) or answer.get("status") not in ("pass", "fail", "not-run"):
        tail = " | ".join(ln for ln in err.decode(errors="replace").splitlines() if ln.strip())[-300:]
        result = ProbeResult("fail", f"the probe failed (exit status {child.returncode})"
                                     + (f": {tail}" if tail else ""), seconds)
    else:
        result = ProbeResult(answer["status"], str(answer.get("message", "")), seconds)
    if left:
        result.message += f" [the grader removed what the probe's lab left: {', '.join(left)}]"
    if kept:
        result.message += f" [left on this machine: {', '.join(kept)}]"
    result.leftovers = kept
    return result


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_lab(name: str) -> tuple[list[str], list[str]]:
    """Take away what the probe's lab *name* left, through its record: (what was left, what
    is still there after that — nothing, unless something resisted)."""
    from labkit.lab import clean_record, leftovers
    from labkit.state import LabRecord, lab_dir
    left = leftovers(name)
    record = LabRecord.load(name)
    if record is not None:
        clean_record(record)
    kept = leftovers(name)
    if not kept:
        shutil.rmtree(lab_dir(name), ignore_errors=True)
    return left, kept


def refusal(exc: LabkitError) -> str:
    """A lab-file error as one feedback line: its problems (not the lab file's path on the
    grader's machine, not the kit's hints)."""
    text = exc.message
    for marker in ("problems in the lab file:", "problem in the lab file:"):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = re.sub(r"(\(stanza line \d+\)) \(line \d+\)", r"\1", text)  # a line of the text, not of the file
    return "your configuration was refused: " + _one_line(text.strip().lstrip("- ").replace("\n  - ", "; "))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:600]


# ------------------------------------------------------------------------ the child process


def _child(result_path: str) -> int:
    """``python -m labkit.grading.probes RESULT``: the request on stdin, the result in RESULT."""
    request = json.loads(sys.stdin.read())
    deadline = float(request["deadline"])

    def write(status: str, message: str) -> None:
        with open(result_path, "w", encoding="utf-8") as fh:
            json.dump({"status": status, "message": message}, fh)

    def out_of_time(signum, frame):
        raise _OutOfTime()

    signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        from labkit.grading import checks
        check = checks.find(request["notebook"], request["id"], sources=request["sources"])
        if check is None or check.probe is None:
            write("fail", f"the grader has no probe {request['notebook']}/{request['id']}")
            return 0
        passed, message = measure(check, request["text"], request["track"], name=request["name"],
                                  student=request.get("student"))
        write("pass" if passed else "fail", message)
    except _OutOfTime:
        write("timeout", "")
    except LabFileError as exc:
        write("fail", refusal(exc))
    except Exception as exc:
        write("fail", f"the probe failed ({type(exc).__name__}: {_one_line(str(exc))})")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return 0


class _OutOfTime(BaseException):
    """The probe's deadline (SIGALRM): unwinds through ``lab.down()`` in :func:`measure`."""


if __name__ == "__main__":  # run from the imported module: one copy of every class
    from labkit.grading import probes as _probes
    raise SystemExit(_probes._child(sys.argv[1]))
