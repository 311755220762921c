"""Checks of the toy notebook used by the grading tests (tests/grading/fixtures/source/toy.ipynb).

Loaded through ``LABKIT_EXERCISES=toy_exercises`` with ``tests/grading`` on ``PYTHONPATH``,
exactly as a course would add its own exercise modules.  The hidden check
``hidden-positive`` is not here: it lives in a ``hidden``-tagged cell of the notebook.
"""
from labkit.grading.checks import check


@check("toy", "answer-42", points=1, hint="the answer to everything")
def _answer(ns):
    answer = ns["answer"]
    return answer == 42, "" if answer == 42 else f"`answer` is {answer!r}"


@check("toy", "sum-list", points=2, hint="add up every element of `numbers`")
def _sum_list(ns):
    numbers = ns["numbers"]
    truth = sum(numbers)
    total = ns["total"]
    return total == truth, "" if total == truth else f"`total` is {total!r}, not the sum of `numbers`"
