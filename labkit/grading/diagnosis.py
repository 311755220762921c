"""What every *diagnose* check does alike: find the fault the student's lab hides, judge its name.

A diagnosis exercise draws a fault per student (:func:`labkit.teaching.faults.pick`) and the
kit records one lab per fault.  The grader never trusts the draw alone: the recording of the
student's lab must have been started with that fault's overrides (a lab recorded with another
fault, or none, is a bug of the kit, not the student's).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from labkit.teaching.faults import student_id


def students_fault(truth, pick: Callable[[str], tuple[int, str]], recordings: Mapping[str, str],
                   overrides_of: Callable[[str], dict]) -> str:
    """The fault ``pick`` gives the graded student, confirmed by its recording: ``recordings``
    maps each fault to its recording's name, ``overrides_of`` each fault to the lab-file
    overrides that make it."""
    _, fault = pick(student_id(truth.student))
    started = getattr(truth.session(recordings[fault]), "overrides", None) or {}
    recorded = next((name for name in recordings if started == overrides_of(name)), None)
    if recorded != fault:
        raise AssertionError(f"the recording of the {fault} lab hides {recorded or 'no fault'}: a bug in the kit")
    return fault


def judge_name(said, expected: str, faults) -> tuple[bool, str]:
    """The student's name of the fault against the expected one (one of ``faults``)."""
    said = str(said).strip().lower()
    if said not in faults:
        return False, f"{said!r} is not one of: {', '.join(faults)}"
    return said == expected, f"you said {said}"
