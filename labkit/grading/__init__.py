"""Exercises and grading: checks, student copies, grading of submissions."""
from labkit.grading.grade import GradingError, GradeReport, Row, grade, grade_main, release, release_main

__all__ = ["GradingError", "GradeReport", "Row", "grade", "grade_main", "release", "release_main"]
