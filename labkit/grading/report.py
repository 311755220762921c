"""What grading writes: a CSV row per student and check, a summary per student, feedback.

``grades.csv``            one row per (student, notebook, check): points, status, message
``grades.summary.csv``    one row per student: total, status, notes
``feedback/<student>.md`` per notebook: each check with its message and hint, why checks
                          were not reached, what the grader's limits and sandbox stopped or
                          refused, and the errors of the student's cells

A check that was not reached (the kernel died, a limit stopped the notebook, the answers
file is missing) scores 0: never a false pass.  A live probe that could not run here is
``not-run``: 0 points out of its points (``unprobed="zero"``) or out of 0 (``"exclude"``).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STATUSES", "CSV_COLUMNS", "SUMMARY_COLUMNS", "Row", "GradeReport", "Outcome",
           "rows", "summary", "feedback", "paths", "write", "num"]

STATUSES = ("pass", "fail", "not-reached", "invalid-notebook", "not-run")
#: how a live probe that this machine could not run scores (``labkit grade --unprobed``)
UNPROBED = ("zero", "exclude")
CSV_COLUMNS = ("student", "notebook", "check", "points", "max_points", "status", "message")
SUMMARY_COLUMNS = ("student", "points", "max_points", "status", "notes")


def num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass
class Row:
    student: str
    notebook: str
    check: str
    points: float
    max_points: float
    status: str
    message: str
    hint: str = ""

    def csv(self) -> dict[str, str]:
        return {"student": self.student, "notebook": self.notebook, "check": self.check,
                "points": num(self.points), "max_points": num(self.max_points),
                "status": self.status, "message": self.message}


@dataclass
class GradeReport:
    rows: list[Row]
    summary: list[dict[str, str]]
    out_csv: Path
    summary_csv: Path
    feedback_dir: Path
    notes: list[str] = field(default_factory=list)

    def total(self, student: str) -> tuple[float, float]:
        mine = [r for r in self.rows if r.student == student]
        return sum(r.points for r in mine), sum(r.max_points for r in mine)

    def table(self) -> str:
        width = max([len("student"), *(len(s["student"]) for s in self.summary)])
        lines = [f"{'student':<{width}}  {'points':>12}  status"]
        for s in self.summary:
            pts = f"{s['points']}/{s['max_points']}"
            lines.append(f"{s['student']:<{width}}  {pts:>12}  {s['status']}"
                         + (f"  ({s['notes']})" if s["notes"] else ""))
        return "\n".join(lines)


@dataclass
class Outcome:
    """What running one submitted notebook gave."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # check id -> judged
    reason: str = ""          # why some checks may not have been reached
    invalid: str = ""         # the notebook could not be read
    cell_errors: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # what a limit or the sandbox stopped


def rows(student: str, nb_id: str, expected: list, outcome: Outcome, *, unprobed: str = "zero") -> list[Row]:
    """One row per expected check (anything with ``id``, ``points``, ``hint``)."""
    found = []
    for exp in expected:
        if outcome.invalid:
            found.append(Row(student, nb_id, exp.id, 0.0, exp.points, "invalid-notebook",
                             outcome.invalid, exp.hint))
        elif exp.id in outcome.results and outcome.results[exp.id].get("status") == "not-run":
            res = outcome.results[exp.id]
            found.append(Row(student, nb_id, exp.id, 0.0, 0.0 if unprobed == "exclude" else exp.points,
                             "not-run", res["message"], exp.hint))
        elif exp.id in outcome.results:
            res = outcome.results[exp.id]
            found.append(Row(student, nb_id, exp.id, exp.points if res["passed"] else 0.0,
                             exp.points, "pass" if res["passed"] else "fail", res["message"], exp.hint))
        else:
            found.append(Row(student, nb_id, exp.id, 0.0, exp.points, "not-reached",
                             outcome.reason or "the check did not report", exp.hint))
    return found


def summary(student: str, items: list[tuple[str, Outcome, list[Row]]]) -> dict[str, str]:
    all_rows = [r for _, _, nb_rows in items for r in nb_rows]
    statuses = {r.status for r in all_rows}
    status = ("invalid-notebook" if "invalid-notebook" in statuses
              else "not-reached" if "not-reached" in statuses
              else "not-run" if "not-run" in statuses else "ok")
    notes = []
    for nb_id, outcome, _ in items:
        if outcome.invalid:
            notes.append(f"{nb_id}: {outcome.invalid}")
        elif outcome.reason:
            notes.append(f"{nb_id}: {outcome.reason}")
    return {"student": student, "points": num(sum(r.points for r in all_rows)),
            "max_points": num(sum(r.max_points for r in all_rows)), "status": status,
            "notes": "; ".join(notes)}


def feedback(student: str, items: list[tuple[str, Outcome, list[Row]]]) -> str:
    rows_all = [r for _, _, nb_rows in items for r in nb_rows]
    lines = [f"# Feedback for {student}", "",
             f"**Total: {num(sum(r.points for r in rows_all))}/"
             f"{num(sum(r.max_points for r in rows_all))}**", ""]
    for nb_id, outcome, nb_rows in items:
        lines += [f"## {nb_id} — {num(sum(r.points for r in nb_rows))}/"
                  f"{num(sum(r.max_points for r in nb_rows))}", ""]
        if outcome.invalid:
            lines += [f"Your notebook could not be read: {outcome.invalid}", ""]
        elif outcome.reason:
            lines += [f"Not every check could be reached: {outcome.reason}.", ""]
        for r in nb_rows:
            mark = "✓" if r.status == "pass" else "✗"
            text = f"- {mark} {num(r.points)}/{num(r.max_points)} `{r.check}`"
            if r.status == "not-reached":
                text += " — not reached"
            elif r.status == "not-run":
                text += f" — {r.message}" + (" (not counted)" if not r.max_points else "")
            elif r.status != "invalid-notebook" and r.message:
                text += f" — {r.message}"
            if r.status != "pass" and r.hint:
                text += f" — hint: {r.hint}"
            lines.append(text)
        if outcome.stopped:
            lines += ["", "What the grading sandbox stopped or refused:"]
            lines += [f"- {s}" for s in outcome.stopped[:20]]
        if outcome.cell_errors:
            lines += ["", "Errors in your notebook:"]
            lines += [f"- {e}" for e in outcome.cell_errors[:20]]
        lines.append("")
    return "\n".join(lines)


def paths(out_csv: Path) -> tuple[Path, Path]:
    """The summary CSV and the feedback folder that go beside *out_csv*."""
    summary_csv = (out_csv.with_name(out_csv.stem + ".summary.csv") if out_csv.suffix == ".csv"
                   else out_csv.with_name(out_csv.name + ".summary.csv"))
    return summary_csv, out_csv.parent / "feedback"


def write(out_csv: Path, per_student: dict[str, list[tuple[str, Outcome, list[Row]]]],
          notes: list[str]) -> GradeReport:
    """Write the grades CSV, the summary CSV and the feedback files."""
    all_rows = [r for items in per_student.values() for _, _, nb_rows in items for r in nb_rows]
    table = [summary(student, items) for student, items in per_student.items()]
    summary_csv, feedback_dir = paths(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.csv() for r in all_rows)
    with open(summary_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    feedback_dir.mkdir(parents=True, exist_ok=True)
    for student, items in per_student.items():
        (feedback_dir / f"{student}.md").write_text(feedback(student, items), encoding="utf-8")
    return GradeReport(all_rows, table, out_csv, summary_csv, feedback_dir, notes)
