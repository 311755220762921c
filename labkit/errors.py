"""The exception tree of labkit.

Every error a user can meet says three things (in the manner of pyshark's and httpx's
errors): what happened, why it probably happened, and what to try.  The CLI prints them
without a traceback; Python callers can catch the precise class.

    LabkitError
    ├── LabFileError        a lab YAML file is missing, malformed or invalid
    ├── EnvironmentProblem  the machine cannot run labs (not root, missing tool, …)
    │   └── ImageError      a lab image is missing or cannot be built
    ├── LabStateError       a lab is already running, not running, or left over
    ├── NetworkError        a namespace, link or address could not be set up
    ├── DaemonError         a daemon failed to start, become ready or stop
    │   ├── PortInUse       a port a daemon needs is taken
    │   └── ReadyTimeout    … it did not become ready in time          (LabTimeout)
    ├── AsteriskError       the Asterisk CLI/AMI refused or failed a command
    │   └── AsteriskTimeout … it did not answer in time                 (LabTimeout)
    ├── PhoneError          a softphone refused a command or an event did not come
    │   └── PhoneTimeout    … a call or registration event did not come (LabTimeout)
    ├── CaptureError        a capture file cannot be read or a capture failed
    ├── GradingError        releasing or grading cannot proceed
    ├── AuditError          a configuration given to `labkit audit` cannot be read
    └── LabTimeout          anything that did not happen in time: catch this one class

Every timeout of the kit is a :class:`LabTimeout` *and* an error of its own part, so a
caller can catch either "the phone failed" or "something timed out".
"""
from __future__ import annotations


class LabkitError(Exception):
    """Base class: a message, an optional likely cause and an optional hint."""

    def __init__(self, message: str, *, cause: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.cause = cause
        self.hint = hint

    def explain(self) -> str:
        """The full text a person should read: what, why, what to do."""
        lines = [self.message]
        if self.cause:
            lines.append(f"Probable cause: {self.cause}")
        if self.hint:
            lines.append(f"What to do: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:  # so that a plain traceback also teaches
        return self.explain()


class LabFileError(LabkitError):
    """A lab file cannot be read or does not describe a valid lab."""


class EnvironmentProblem(LabkitError):
    """The machine lacks something labs need (root, a tool, a kernel feature)."""


class ImageError(EnvironmentProblem):
    """A lab image is missing, corrupt, or cannot be built from the mirrors."""


class LabStateError(LabkitError):
    """The recorded state of labs does not allow the operation."""


class NetworkError(LabkitError):
    """Setting up namespaces, links, addresses or routes failed."""


class DaemonError(LabkitError):
    """A daemon did not start, did not become ready, or did not stop."""


class PortInUse(DaemonError):
    """A port a daemon must bind is already taken."""


class AsteriskError(LabkitError):
    """Asterisk answered a CLI or AMI request with an error."""


class CaptureError(LabkitError):
    """A capture could not be made or a capture file cannot be read."""


class PhoneError(LabkitError):
    """A softphone command failed or an expected call event did not come."""


class GradingError(LabkitError):
    """Releasing or grading cannot proceed (bad layout, unfinished markers, leaks…)."""


class AuditError(LabkitError):
    """A file given to ``labkit audit`` is missing, unreadable, binary or of an unknown kind."""


class LabTimeout(LabkitError):
    """Something the kit waited for did not happen in time (the one class to catch)."""


class ReadyTimeout(DaemonError, LabTimeout):
    """A daemon did not become ready (or a lab's phones did not register) in time."""


class AsteriskTimeout(AsteriskError, LabTimeout):
    """Asterisk did not answer a CLI command, an AMI action or an awaited event in time."""


class PhoneTimeout(PhoneError, LabTimeout):
    """A softphone did not report the awaited event (answer, registration, hang-up) in time."""
