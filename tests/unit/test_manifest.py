"""data/manifest.json: every capture's entry says the truth about it (track, scenario, notebook),
and a recording run names only its own notebook's captures (labkit.teaching.manifest.owns)."""
from __future__ import annotations

import re
from pathlib import Path

from labkit.teaching import manifest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_each_entry_matches_its_file_and_its_notebook():
    sessions = {nb.stem: manifest.notebook_sessions(nb) for nb in NOTEBOOKS.glob("*.ipynb")}
    for entry in manifest.load()["captures"]:
        stem = Path(entry["file"]).stem
        track = entry["track"]
        assert f"-{track}" in stem, entry["file"]
        assert entry["scenario"] == stem.split(f"-{track}")[0], entry["file"]
        assert (entry["software"]["image"] or track).startswith(track), entry["file"]
        named = re.match(r"The live run of notebook (\S+) that", entry["what_it_shows"])
        if named:  # a notebook's recording: that notebook starts the session
            assert manifest.owns(sessions[named.group(1)], entry["scenario"]), entry["file"]


def test_owns_a_session_and_its_numbered_diagnoses_only():
    names = {"02-vps", "02-diagnose"}
    assert manifest.owns(names, "02-vps") and manifest.owns(names, "02-diagnose-3")
    assert not manifest.owns(names, "02-vps-alg") and not manifest.owns(names, "00-diagnose-1")


def test_notebook_sessions_reads_the_calls(tmp_path):
    notebook = tmp_path / "x.ipynb"
    notebook.write_text('{"source": ["vps = Session.start(\\"02-vps\\", \\"vps-pbx\\")\\n", '
                        '"broken = Session.nat_diagnosis(\\"02-diagnose\\", \\"home-pbx\\")"]}')
    assert manifest.notebook_sessions(notebook) == {"02-vps", "02-diagnose"}
