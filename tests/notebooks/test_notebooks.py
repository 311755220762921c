"""The student notebooks: stored outputs, replay on both tracks, live on both tracks, hygiene.

* regression: each notebook re-executed in **replay** mode (modern track) must reproduce the
  outputs committed with it (pytest-notebook; images and volatile strings ignored).
  Regenerate them with ``.venv/bin/python scripts/record_notebooks.py --store-replay-outputs``.
* replay on the **legacy** track runs top to bottom, its check cells pass.
* **live** (``-m live``, root): each notebook drives real labs on both tracks; no error, every
  check — hidden ones included — passes with the solutions that the source notebooks contain.
* hygiene: short cells, no function definitions, objectives first, clean metadata, small outputs,
  recordings present for every session of every notebook on both tracks.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from . import nbtools
from .nbtools import (
    DATA,
    MAX_CAPTURE,
    MAX_CELL_OUTPUT,
    MAX_NOTEBOOK,
    TRACKS,
    assert_metadata_clean,
    assert_student_version_degrades_gracefully,
    check_results,
    code_cells,
    errors,
    execute,
    notebook_id,
    outputs_text,
    path_of,
    read,
)

NAMES = ["00-orientation", "01-first-call"]


def session_names(nb) -> list[str]:
    """Every recording a notebook's sessions read: a diagnosis has one per fault (every
    student's lab replays)."""
    from labkit.teaching.first_call import CALL_FAULTS
    source = "\n".join(c.source for c in code_cells(nb))
    names = re.findall(r'Session\.start\(\s*"([^"]+)"', source)
    for diagnosis in re.findall(r'Session\.call_diagnosis\(\s*"([^"]+)"', source):
        names += [f"{diagnosis}-{n}" for n in range(1, len(CALL_FAULTS) + 1)]
    return names


# -- (1) regression: stored outputs == a fresh replay run (modern track) -----------------------
@pytest.mark.parametrize("name", NAMES)
def test_stored_outputs_match_replay(name, monkeypatch):
    nbtools.check_stored_outputs(monkeypatch, path_of(name), 120)


# -- (2) replay on the legacy track ------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_replay_legacy_runs(name):
    nb = execute(name, {"LABKIT_MODE": "replay", "LABKIT_TRACK": "legacy"}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Track: **legacy**, Asterisk 16 with chan_sip" in text
    assert "✗" not in text, "a check cell failed"
    assert "PJSIP" not in "\n".join(line for line in text.splitlines() if "Dial(" in line)
    if name == "00-orientation":
        assert "chan_sip.so" in text and "Asterisk 16." in text
    else:
        assert "Dial(SIP/${EXTEN},20)" in text
    # The configure exercises' probes need a live lab: in replay they say so and count nothing.
    failed = [r for r in check_results(nb) if not r[1] and "checked on a live lab" not in r[2]]
    assert failed == []


# -- (3) live, both tracks ---------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("name", NAMES)
def test_live_runs_and_checks_pass(name, track):
    nb = execute(name, {"LABKIT_MODE": "live", "LABKIT_TRACK": track}, report_checks=True)
    assert errors(nb) == []
    text = outputs_text(nb)
    assert "Mode: **live**" in text and f"Track: **{track}**" in text
    assert "✗" not in text, "a check cell failed"
    results = check_results(nb)
    assert results, "no checks registered"
    assert [r for r in results if not r[1]] == []


# -- (4) hygiene -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_execution_counts_in_order(name):
    counts = [c.execution_count for c in code_cells(read(name))]
    assert counts == list(range(1, len(counts) + 1)) or all(c is None for c in counts), counts
    for cell in code_cells(read(name)):
        for out in cell.outputs:
            if out.output_type == "execute_result":
                assert out.execution_count == cell.execution_count


@pytest.mark.parametrize("name", NAMES)
def test_outputs_small(name):
    assert path_of(name).stat().st_size < MAX_NOTEBOOK
    for i, cell in enumerate(code_cells(read(name))):
        size = len(json.dumps(cell.get("outputs", [])))
        assert size <= MAX_CELL_OUTPUT, f"code cell {i}: {size} bytes of output"


@pytest.mark.parametrize("name", NAMES)
def test_cells_short_and_without_functions(name):
    nbtools.assert_cells_short_and_plain(read(name))


@pytest.mark.parametrize("name", NAMES)
def test_structure(name):
    nb = read(name)
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert nb.cells[0].cell_type == "markdown" and "Objectives" in markdown[0].source
    cells = code_cells(nb)
    first, last = cells[0].source, cells[-1].source
    assert "from labkit.teaching import Session" in first and "from labkit.grading import checks" in first
    assert f'session = Session.start("{name}")' in first and "session.banner()" in first
    assert "session.close()" in last
    # every exercise: nbgrader solution markers + metadata; every check has a check cell
    exercises = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert exercises, "no exercise"
    for cell in exercises:
        assert "### END SOLUTION" in cell.source
        assert cell.metadata.get("nbgrader", {}).get("solution") is True
    from labkit.grading import checks
    ids = {c.id for c in checks.registered(notebook_id(nb))}
    shown = set(re.findall(r'checks\.run\(\s*"[^"]+",\s*"([^"]+)"', "\n".join(c.source for c in cells)))
    assert shown == ids
    assert any(c.hidden for c in checks.registered(notebook_id(nb))), "no hidden check"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_clean(name):
    assert_metadata_clean(read(name))


@pytest.mark.parametrize("name", NAMES)
def test_recordings_present(name):
    for session in session_names(read(name)):
        for track in TRACKS:
            assert (DATA / "recorded" / f"{session}-{track}").is_dir(), (session, track)
            capture = DATA / "captures" / f"{session}-{track}.pcap"
            assert capture.exists() and 0 < capture.stat().st_size < MAX_CAPTURE, capture


# -- the checks judge answers, not code: right answers pass, wrong ones fail -------------------
@pytest.mark.parametrize("track", TRACKS)
def test_checks_tell_right_from_wrong(track, tmp_path):
    """The answers as the grader receives them (plain values, JSON round trip), the truth from
    the recordings the checks open themselves (checks.evaluate: what labkit grade does)."""
    from labkit.grading import checks
    from labkit.teaching.session import Session
    session = Session.start("00-orientation", track=track, mode="replay")  # the test's, for the answers
    right = {"sip_port": 5060,
             "asterisk_rtp_ports": set(session.streams[session.streams.src == "192.168.0.10"].sport),
             "rtp_range": [10000, 20000], "register_counts": {"alice": 2, "bob": 2}, "challenge_status": 401}
    wrong = {"sip_port": 5061, "asterisk_rtp_ports": {5060},
             "rtp_range": "yes", "register_counts": {"alice": 1, "bob": 1}, "challenge_status": 407}
    assert all(r.passed for r in checks.evaluate("00-orientation", right, track=track))
    assert not any(r.passed for r in checks.evaluate("00-orientation", wrong, track=track))
    # a missing variable is a readable failure, not a crash
    missing = checks.evaluate("00-orientation", {"session": session}, track=track)
    assert not any(r.passed for r in missing) and "is not defined" in missing[0].message
    # the same right answers against another lab's capture (a swapped artifact): Asterisk's RTP
    # ports of the first call are not those of 00-orientation
    swapped = nbtools.recordings_folder(tmp_path / "swapped", track, ["00-orientation"],
                                        {"00-orientation": "01-first-call"})
    failed = {r.id for r in checks.evaluate("00-orientation", right, track=track, data=swapped) if not r.passed}
    assert "asterisk-rtp-ports" in failed

    anchored = Session.start("01-first-call", track=track, mode="replay")
    direct = Session.start("01-direct-media", track=track, mode="replay", overrides={"pbx": {"direct_media": True}})
    to_alice = anchored.streams[anchored.streams.dst == "192.168.0.11"].sort_values("packets").iloc[-1]
    from_bob = direct.streams[direct.streams.src == "192.168.0.12"].sort_values("packets").iloc[-1]
    right = {"alice_audio_from": f"{to_alice.src}:{to_alice.sport}", "n_streams": len(anchored.streams),
             "n_legs": 2, "reinvite_sdp_addr": f"{from_bob.dst}:{from_bob.dport}",
             "bob_rtp_to": f"{from_bob.dst}:{from_bob.dport}", "n_reinvites": 3}
    wrong = {"alice_audio_from": "192.168.0.10", "n_streams": 2, "n_legs": 1,   # the address alone: not enough
             "reinvite_sdp_addr": "192.168.0.11", "bob_rtp_to": f"192.168.0.10:{to_alice.sport}",
             "n_reinvites": 0}
    from labkit.teaching.first_call import CALL_FAULTS, pick_call_fault
    fault = pick_call_fault()[1]
    right |= {"fault": fault, "fix": RIGHT_CALL_FIX[fault]}
    wrong |= {"fault": next(f for f in CALL_FAULTS if f != fault), "fix": "secret: Qv7-sample-42"}
    results = checks.evaluate("01-first-call", right, track=track)
    # The probe measures a live lab (the live tests run it); here it is not run.
    assert {r.id for r in results if r.not_run} == {"diagnose-fixed"}
    assert [r.id for r in results if not r.passed and not r.not_run] == []
    assert [r.id for r in checks.evaluate("01-first-call", wrong, track=track) if r.passed] == []
    # The fix's text is read as data before any lab: the right one passes, a wrong one is refused.
    from labkit.errors import LabkitError
    from labkit.grading import probes
    probe = checks.find("01-first-call", "diagnose-fixed").probe
    assert probes.validate(probe, right["fix"], track)
    with pytest.raises(LabkitError, match="not a key this exercise lets you change"):
        probes.validate(probe, wrong["fix"], track)
    # the direct-media answers against the anchored call (a swapped artifact) fail
    swapped = nbtools.recordings_folder(tmp_path / "swapped01", track, ["01-first-call", "01-direct-media"],
                                        {"01-direct-media": "01-first-call"})
    failed = {r.id for r in checks.evaluate("01-first-call", right, track=track, data=swapped) if not r.passed}
    assert {"direct-path", "reinvite"} <= failed


# -- the diagnosis of notebook 01: a fault of the first call per student ---------------------------
RIGHT_CALL_FIX = {"asterisk-on-another-port": "sip_port: 5060", "bob-in-lobby-context": "context: work",
                  "asterisk-insists-on-srtp": 'encryption: "no"'}


def call_student_ids() -> dict[str, str]:
    """A student id per first-call fault (the default student's first)."""
    from labkit.teaching.faults import ids_drawing_each
    from labkit.teaching.first_call import CALL_FAULTS, pick_call_fault
    return ids_drawing_each(pick_call_fault, CALL_FAULTS)


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("fault", ["asterisk-on-another-port", "bob-in-lobby-context", "asterisk-insists-on-srtp"])
def test_each_call_diagnosis_lab_replays_and_its_solution_passes(fault, track):
    """The fault's recording (made with a student id that draws it) replays the diagnosis
    section of notebook 01; the solution names that fault; after the fix, Bob's call is two-way."""
    import nbformat
    nb = read("01-first-call")
    cells = code_cells(nb)
    start = next(i for i, c in enumerate(cells) if "Session.call_diagnosis(" in c.source)
    end = next(i for i, c in enumerate(cells) if "broken.close()" in c.source)
    imports = "from labkit.teaching import Session\nfrom labkit.grading import checks"
    part = [imports, *(c.source for c in cells[start:end + 1])]
    small = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in part], metadata=nb.metadata)
    small.cells.append(nbformat.v4.new_code_cell(
        "import json as _json\n"
        "print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in checks.run_all('01-first-call') "
        "if r.id.startswith('diagnose')]))"))
    out = execute("01-first-call", {"LABKIT_MODE": "replay", "LABKIT_TRACK": track,
                                    "LABKIT_STUDENT": call_student_ids()[fault]}, nb=small)
    assert errors(out) == [], (fault, errors(out))
    results = {r[0]: r for r in check_results(out)}
    assert results["diagnose-name"][1] is True, (fault, results)
    text = outputs_text(out)
    assert "heard_the_other" in text
    after = next(c for c in code_cells(out) if 'broken.register("alice"), broken.register("bob")' in c.source)
    heard = outputs_text(nbformat.v4.new_notebook(cells=[after]))
    assert "(True,\n True," in heard and heard.count("True") == 4, heard  # registered, both heard


@pytest.mark.live
@pytest.mark.parametrize("fault", ["asterisk-on-another-port", "bob-in-lobby-context", "asterisk-insists-on-srtp"])
def test_live_each_call_diagnosis_fault_breaks_the_call_and_only_its_own_fix_mends_it(fault):
    """On a fresh first-call lab with the fault (tracks alternate): another fault's fix leaves
    the call broken, the right one makes Bob register and his call to Alice two-way."""
    from labkit.grading import checks, probes
    from labkit.teaching.first_call import CALL_FAULTS
    student = call_student_ids()[fault]
    track = TRACKS[list(CALL_FAULTS).index(fault) % 2]
    check = checks.find("01-first-call", "diagnose-fixed")
    other = next(text for name, text in RIGHT_CALL_FIX.items() if name != fault)
    passed, detail = probes.measure(check, other, track, name=probes.lab_name(), student=student)
    assert not passed, detail
    passed, detail = probes.measure(check, RIGHT_CALL_FIX[fault], track, name=probes.lab_name(), student=student)
    assert passed, detail


# -- (5) the student version: solutions removed, the notebook still goes to the end -----------


@pytest.mark.parametrize("name", NAMES)
def test_student_version_fails_checks_gracefully(name, tmp_path):
    assert_student_version_degrades_gracefully(name)


# -- no personal data of the report anywhere in the tree ---------------------------------------
def test_the_report_detector_finds_each_form(monkeypatch):
    # Fictional stand-ins, digested like the report's own values: an address, a number in any
    # prefix form, a user name in any case.
    fakes = {"203.0.113.99", "199001111", "mallory"}
    monkeypatch.setattr(nbtools, "REPORT_DIGESTS", frozenset(nbtools._digest(f) for f in fakes))
    text = "host 203.0.113.99, line 0033199001111 (+33 199001111), user Mallory@sip.example"
    assert nbtools.report_data_in(text) == sorted(fakes)
    assert nbtools.report_data_in("203.0.113.990 1990011 mallor") == []


def test_no_personal_data_of_the_report_in_the_tree():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=nbtools.ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    found = {}
    for name in filter(None, files):
        path = nbtools.ROOT / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:          # captures, audio, images
            continue
        if hits := nbtools.report_data_in(text):
            found[name] = hits
    assert found == {}
