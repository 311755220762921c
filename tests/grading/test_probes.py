"""Live probes of a configure exercise (the toy fixture's ``toy-tls``): the student's TLS lines
applied to a fresh ``tls-office`` lab by the grader, measured, taken down — on both tracks.

A right and a wrong text per track (four labs at once: parallel probes never collide), a
deadline that stops a probe half-way without leaving anything, and the whole path through
``labkit grade`` (right, wrong, refused; probes switched off: not run, never a pass).
"""
from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from labkit.grading import checks, probes
from labkit.grading.grade import grade, release
from labkit.net import netns
from labkit.state import recorded_labs

from .conftest import SOURCE
from .test_grading import _kernels_left, _rows, _write

RIGHT = {
    "modern": "[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0:5061\n"
              "cert_file = /etc/asterisk/tls/pbx.crt\npriv_key_file = /etc/asterisk/tls/pbx.key\nmethod = sslv23\n",
    "legacy": "tlsenable = yes\ntlsbindaddr = 0.0.0.0:5061\ntlscertfile = /etc/asterisk/tls/pbx.pem\n"
              "transport = udp,tls\n",
}
#: valid lines that do not work: TLS on a port the phones do not dial
WRONG = {track: text.replace("0.0.0.0:5061", "0.0.0.0:5062") for track, text in RIGHT.items()}


def _nothing_left() -> list[str]:
    """Probe labs still recorded, or their namespaces, on this machine."""
    left = [f"record {r.name}" for r in recorded_labs() if r.name.startswith("gp")]
    left += [f"namespace {n}" for n in netns.existing_namespaces() if n.startswith("lk-gp")]
    return left


@pytest.fixture(scope="module")
def tls_check():
    return checks.find("toy-tls", "tls-registers")


@pytest.mark.live
def test_right_and_wrong_text_on_both_tracks_scored_from_the_live_lab(tls_check):
    cases = [(track, kind, text) for track in ("modern", "legacy")
             for kind, text in (("right", RIGHT[track]), ("wrong", WRONG[track]))]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        done = dict(zip(cases, pool.map(lambda c: probes.run(tls_check, c[2], c[0]), cases)))
    elapsed = time.monotonic() - started
    for (track, kind, _), result in done.items():
        assert result.leftovers == [], (track, kind, result)
        if kind == "right":
            assert (result.status, result.passed) == ("pass", True), (track, result)
            assert result.message.startswith("both phones registered over TLS; a client sees TLSv1."), result
        else:
            assert (result.status, result.passed) == ("fail", False), (track, result)
            assert "did not register over TLS" in result.message, result
    assert elapsed < 120, elapsed
    assert _nothing_left() == []


@pytest.mark.live
def test_a_probe_past_its_deadline_fails_and_leaves_nothing(tls_check):
    started = time.monotonic()
    result = probes.run(tls_check, RIGHT["modern"], "modern", timeout=2)
    assert (result.status, result.passed) == ("fail", False)
    assert result.message.startswith("the probe did not finish within its 2 s"), result
    assert time.monotonic() - started < 40
    assert result.leftovers == [] and _nothing_left() == []


def _tls_submission(released, text: str):
    nb = copy.deepcopy(nbformat.read(str(released), as_version=4))
    for cell in nb.cells:
        if "raise NotImplementedError()" in cell.source:
            cell.source = f"pjsip_tls = {text!r}"
    return nb


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    (path,) = release(SOURCE / "toy-tls.ipynb", tmp_path_factory.mktemp("release-tls"))
    return path


@pytest.mark.live
def test_grading_runs_the_probes_after_the_kernels(released, tmp_path):
    subs = tmp_path / "subs"
    _write(subs, "right", _tls_submission(released, RIGHT["modern"]), "toy-tls.ipynb")
    _write(subs, "wrong", _tls_submission(released, WRONG["modern"]), "toy-tls.ipynb")
    _write(subs, "execer", _tls_submission(released, RIGHT["modern"] + "#exec /usr/bin/id\n"), "toy-tls.ipynb")
    _write(subs, "blank", nbformat.read(str(released), as_version=4), "toy-tls.ipynb")
    report = grade(subs, tmp_path / "g" / "g.csv", source=SOURCE, jobs=2)
    rows = _rows(tmp_path / "g" / "g.csv")

    def got(student):
        row = rows[(student, "tls-registers")]
        return row["points"], row["max_points"], row["status"]

    assert got("right") == ("2", "2", "pass")
    assert got("wrong") == ("0", "2", "fail") and "did not register" in rows[("wrong", "tls-registers")]["message"]
    assert got("execer") == ("0", "2", "fail")
    assert "directives (#include, #exec …) are not allowed" in rows[("execer", "tls-registers")]["message"]
    assert got("blank") == ("0", "2", "fail")
    assert rows[("blank", "tls-registers")]["message"] == "`pjsip_tls` is not defined: run the exercise cell first"
    assert report.notes == []
    assert _nothing_left() == [] and _kernels_left() == []


def test_probes_switched_off_are_not_run_never_a_pass(released, tmp_path, capsys):
    from labkit.grading.grade import grade_main
    subs = tmp_path / "subs"
    _write(subs, "right", _tls_submission(released, RIGHT["modern"]), "toy-tls.ipynb")
    _write(subs, "execer", _tls_submission(released, RIGHT["modern"] + "#exec /usr/bin/id\n"), "toy-tls.ipynb")
    out = tmp_path / "g" / "g.csv"
    assert grade_main([str(subs), "-o", str(out), "--no-probes", "--unprobed", "exclude"]) == 0
    printed = capsys.readouterr().out
    assert "configure checks not run: live probes were switched off (--no-probes)" in printed
    rows = _rows(out)
    right = rows[("right", "tls-registers")]
    assert (right["points"], right["max_points"], right["status"]) == ("0", "0", "not-run")
    # a refused text is refused all the same: no lab is needed to say so
    execer = rows[("execer", "tls-registers")]
    assert (execer["points"], execer["max_points"], execer["status"]) == ("0", "2", "fail")
    feedback = (out.parent / "feedback" / "right.md").read_text()
    assert "not run: live probes were switched off (--no-probes) (not counted)" in feedback
    assert grade(subs, tmp_path / "h.csv", probes=False).total("right") == (0, 2)  # unprobed="zero"
    assert _nothing_left() == []
