"""What every notebook test shares: paths, limits, volatile strings, running a notebook."""
from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from labkit import tracks

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
DATA = ROOT / "data"
TRACKS = ["modern", "legacy"]
MAX_CELL_OUTPUT = 200_000      # bytes of JSON per cell, images included
MAX_NOTEBOOK = 1_500_000       # bytes per notebook file
MAX_CAPTURE = 1 << 20          # bytes per recorded capture

# Strings that may differ between two runs of the same recording (none should, in replay
# mode, but a re-recording must not turn every stored output into a diff).
DIFF_REPLACE = (
    ("/cells/*/outputs", r"0x[0-9a-fA-F]{4,}", "0xADDR"),
    ("/cells/*/outputs", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "UUID"),
    ("/cells/*/outputs", r"\b[0-9a-f]{16,40}(@[\w.:]+)?\b", "CALLID"),
    ("/cells/*/outputs", r"z9hG4bK[\w.~-]+", "BRANCH"),
    ("/cells/*/outputs", r"tag=[\w.~-]+", "tag=TAG"),
    ("/cells/*/outputs", r'nonce="[^"]*"', 'nonce="NONCE"'),
    ("/cells/*/outputs", r"\b\d{4}-\d{2}-\d{2}\b", "DATE"),
    ("/cells/*/outputs", r"\b\d{2}:\d{2}:\d{2}(\.\d+)?\b", "TIME"),
    # The clone itself may live anywhere (CI clones under /check/...): its root first.
    ("/cells/*/outputs", re.escape(str(ROOT)) + r"/[\w./-]*", "/PATH"),
    ("/cells/*/outputs", r"(?<![\w.])/(?:var|tmp|home|root|work|srv|opt)/[\w./-]*", "/PATH"),
    ("/cells/*/outputs", r"at 0x[0-9a-fA-F]+>", "at 0xADDR>"),
)
DIFF_IGNORE = (
    "/cells/*/outputs/*/data/image/png",
    "/cells/*/outputs/*/data/image/svg+xml",
    "/cells/*/metadata/execution",
    "/cells/*/outputs/*/metadata",
    "/metadata/language_info",
)


def path_of(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def read(name: str):
    return nbformat.read(path_of(name), as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def notebook_id(nb) -> str:
    """The check namespace the notebook's check cells use (e.g. ``01-first-call``)."""
    ids = set(re.findall(r'checks\.run\(\s*"([^"]+)"', "\n".join(c.source for c in code_cells(nb))))
    assert len(ids) == 1, ids
    return ids.pop()


def execute(name: str, env: dict[str, str], *, report_checks: bool = False, timeout: int = 120,
            nb=None, allow_errors: bool = False):
    """Run a notebook in a fresh kernel with ``env`` added; optionally append a cell printing
    every check's result (hidden ones included) as JSON (read back by :func:`check_results`)."""
    nb = nb if nb is not None else read(name)
    if report_checks:
        nb.cells.append(nbformat.v4.new_code_cell(
            "import json as _json\n"
            f"print('CHECKS=' + _json.dumps([[r.id, r.passed, r.message] for r in "
            f"checks.run_all({notebook_id(nb)!r})]))"))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env={**os.environ, "LABKIT_RECORD": "0", **env})
    return nb


def assert_metadata_clean(nb) -> None:
    """No noisy notebook, cell or output metadata: only what nbgrader and tags need."""
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    for cell in nb.cells:
        assert set(cell.metadata) <= {"nbgrader", "tags"}, cell.metadata
        for out in cell.get("outputs", []):
            assert not out.get("metadata"), out.get("metadata")
            assert "transient" not in out


def assert_execution_counts_clean(nb) -> None:
    """Run top to bottom once (counts 1, 2, 3 … or none at all, each result numbered as its
    cell), and no noisy metadata."""
    counts = [c.execution_count for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)) or all(c is None for c in counts), counts
    for cell in code_cells(nb):
        for out in cell.outputs:
            if out.output_type == "execute_result":
                assert out.execution_count == cell.execution_count
    assert_metadata_clean(nb)


def assert_outputs_small(name: str) -> None:
    """The notebook file under MAX_NOTEBOOK, each code cell's outputs under MAX_CELL_OUTPUT."""
    assert path_of(name).stat().st_size < MAX_NOTEBOOK
    for i, cell in enumerate(code_cells(read(name))):
        size = len(json.dumps(cell.get("outputs", [])))
        assert size <= MAX_CELL_OUTPUT, f"code cell {i}: {size} bytes of output"


def outputs_text(nb) -> str:
    parts = []
    for cell in code_cells(nb):
        for out in cell.outputs:
            data = out.get("data", {})
            parts += [out.get("text", ""), data.get("text/plain", ""), data.get("text/markdown", "")]
    return "\n".join(parts)


def errors(nb) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]


def check_results(nb) -> list[list]:
    for cell in reversed(code_cells(nb)):
        for out in cell.outputs:
            if "CHECKS=" in out.get("text", ""):
                return json.loads(out["text"].split("CHECKS=", 1)[1].strip())
    raise AssertionError("the check report cell printed nothing")


SOLUTION = re.compile(r"### BEGIN SOLUTION\n.*?### END SOLUTION", re.S)


def assert_student_version_degrades_gracefully(name: str, timeout: int = 120) -> None:
    """What nbgrader hands out (each solution replaced by ``raise NotImplementedError()``):
    only the exercise cells raise, every visible check cell shows ✗, nothing else breaks."""
    nb = read(name)
    exercise_ids = set()
    for cell in code_cells(nb):
        if "### BEGIN SOLUTION" in cell.source:
            cell.source = SOLUTION.sub("raise NotImplementedError()", cell.source)
            exercise_ids.add(cell.id)
    execute(name, {"LABKIT_MODE": "replay", "LABKIT_TRACK": "modern"}, nb=nb, allow_errors=True,
            timeout=timeout)
    for cell in code_cells(nb):
        errs = [o for o in cell.outputs if o.output_type == "error"]
        if cell.id in exercise_ids:
            assert [e.ename for e in errs] == ["NotImplementedError"], cell.source
        else:
            assert errs == [], (cell.source, [e.evalue for e in errs])
        if "checks.run(" in cell.source:
            text = "\n".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
            assert "✓" not in text, text
            assert "✗" in text or "hidden check" in text, text


def recordings_folder(root: Path, track: str, names: list[str], swap: dict[str, str] | None = None) -> Path:
    """A folder in the kit's data layout holding the recordings *names* of *track* (links to
    data/), where each name of *swap* holds another recording's files instead: a swapped
    artifact, as a submission graded from its own captures could hand in."""
    swap = swap or {}
    for name in names:
        source = swap.get(name, name)
        recorded = root / "recorded" / f"{name}-{track}"
        recorded.mkdir(parents=True, exist_ok=True)
        (recorded / "session.json").symlink_to(DATA / "recorded" / f"{source}-{track}" / "session.json")
        (root / "captures").mkdir(exist_ok=True)
        for pcap in (DATA / "captures").glob(f"{source}-{track}*"):
            rest = pcap.name[len(f"{source}-{track}"):]
            if rest == ".pcap" or rest.startswith("-"):
                (root / "captures" / f"{name}-{track}{rest}").symlink_to(pcap)
    return root



# -- the report's personal data ------------------------------------------------------------------
# The walkthrough this kit follows names real people, their phone numbers, public addresses and
# account (SEED-MAP.md: never copy them).  The tests look for them by SHA-256 digest (first 16
# hex digits) so that the list itself does not put them in the tree: addresses, the national
# significant number (last 9 digits, whatever the prefix: 0…, 0033…, +33…), user and account names.
REPORT_DIGESTS = frozenset({
    "7f30df00dacdd9cb", "f5389981f5476865", "fd3544bcf2a33b92",  # public IPv4 addresses
    "5911792fba91a1f1", "f974ba3a1c4d5238", "a748a7e9908277f4",
    "8895be6969a912d2", "062e26121a07544d", "81654bd9e05ba44b", "c588f155f7d2e2de",  # numbers
    "61c9b725a72fb160", "8c10c13b71677613", "9107477b7cdc2414", "1ac4dddeb716878b",  # names, account
})
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_DIGITS = re.compile(r"\d{9,}")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]{3,}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def report_data_in(text: str) -> list[str]:
    """The tokens of ``text`` that are personal data of the report (empty when there is none)."""
    tokens = set(_IPV4.findall(text))
    tokens |= {run[-9:] for run in _DIGITS.findall(text)}
    tokens |= {word.lower() for word in _WORD.findall(text)}
    return sorted(t for t in tokens if _digest(t) in REPORT_DIGESTS)


# -- what every notebook's tests check alike ----------------------------------------------------
def check_stored_outputs(monkeypatch, path: Path, timeout: int = 120) -> None:
    """The outputs committed with the notebook == a fresh replay run on the modern track
    (pytest-notebook; images and volatile strings ignored)."""
    from pytest_notebook.nb_regression import NBRegressionFixture

    env = {"LABKIT_MODE": "replay", "LABKIT_TRACK": tracks.MODERN.name, "LABKIT_RECORD": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LABKIT_STUDENT", raising=False)
    fixture = NBRegressionFixture(exec_timeout=timeout, exec_cwd=str(NOTEBOOKS), exec_env=env,
                                  diff_ignore=DIFF_IGNORE, diff_replace=DIFF_REPLACE, diff_use_color=False)
    fixture.check(str(path))


def assert_cells_short_and_plain(nb) -> None:
    """Short cells (median ≤ 3 lines) with no logic of their own: no function, lambda or class
    (that belongs in labkit), no subprocess or os (the Session does the driving)."""
    cells = code_cells(nb)
    lengths = [len(c.source.strip().splitlines()) for c in cells]
    assert statistics.median(lengths) <= 3, lengths
    for cell in cells:
        assert not re.search(r"(^|\s)(async\s+)?def\s", cell.source), cell.source
        assert "lambda" not in cell.source and "class " not in cell.source, cell.source
        assert "subprocess" not in cell.source and "import os" not in cell.source, cell.source
