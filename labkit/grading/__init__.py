"""Exercises and grading: checks, student copies, grading of submissions in a sandbox.

``checks`` (what an exercise module registers; ``checks.run`` in a notebook), ``answers``
(what a student's kernel hands over: JSON data), ``truth`` (the recordings a check opens
itself), ``probes`` (configure exercises measured on a fresh lab), ``release`` (student
copies), ``collect`` (what there is to grade), ``execute`` (one notebook in a kernel),
``sandbox`` (where that kernel runs), ``limits``, ``report`` (CSVs and feedback), ``grade``
(the whole, and the ``labkit release``/``labkit grade`` commands).
"""
from labkit.errors import GradingError
from labkit.grading.grade import grade, grade_main, release_main
from labkit.grading.release import release
from labkit.grading.report import GradeReport, Row

__all__ = ["GradingError", "GradeReport", "Row", "grade", "grade_main", "release", "release_main"]
