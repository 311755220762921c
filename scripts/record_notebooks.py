#!/usr/bin/env python3
"""Record the notebooks' real labs for replay mode, and store their replay outputs.

Recording (the default; needs root, lab images built)::

    sudo .venv/bin/python scripts/record_notebooks.py                 # every notebook, both tracks
    sudo .venv/bin/python scripts/record_notebooks.py 01-first-call --tracks legacy

Each notebook is executed top to bottom with nbclient in a fresh kernel, with
``LABKIT_MODE=live LABKIT_RECORD=1 LABKIT_TRACK=<track>`` and ``notebooks/`` as working
directory: every ``Session`` it starts writes ``data/recorded/<session>-<track>/`` (CLI
outputs, rendered configs, registrations, calls) and ``data/captures/<session>-<track>.pcap`` (and a
``…-with-keys.pcapng`` for labs with TLS).
The notebook file itself is not modified.  The script lists what was written and fails if a
capture reaches 1 MiB or a cell fails.

Stored outputs (no root needed)::

    .venv/bin/python scripts/record_notebooks.py --store-replay-outputs

executes each notebook in **replay** mode on the modern track and writes it back with its
outputs, cleaned (execution counts renumbered from 1, no volatile metadata): what a student
sees before running anything, and what ``tests/notebooks`` compares against.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkit.teaching import manifest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DATA = ROOT / "data"
TRACKS = ("modern", "legacy")
CELL_TIMEOUT = 120
MAX_CAPTURE = 1 << 20  # bytes
# cell metadata worth keeping (nbgrader marks exercise cells); everything else is noise
KEEP_CELL_METADATA = ("nbgrader", "tags")


def notebook_paths(names: list[str]) -> list[Path]:
    if not names:
        return sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    out = []
    for name in names:
        path = Path(name)
        if not path.suffix:
            path = NOTEBOOKS / f"{name}.ipynb"
        elif not path.is_absolute() and not path.exists():
            path = NOTEBOOKS / path.name
        if not path.exists():
            raise SystemExit(f"no notebook {name!r} (looked for {path})")
        out.append(path.resolve())
    return out


def execute(path: Path, env_overrides: dict[str, str], timeout: int = CELL_TIMEOUT):
    """Run the notebook in a fresh kernel with these environment variables; returns it executed."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, **env_overrides)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)
    return nb


def clean(nb):
    """Outputs as committed: counts renumbered from 1, no volatile metadata, no widget state."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for key in list(nb.metadata):
        if key not in ("kernelspec", "language_info"):
            nb.metadata.pop(key)
    if "language_info" in nb.metadata:
        nb.metadata["language_info"] = {"name": "python"}
    count = 0
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        for output in cell.outputs:
            output.pop("transient", None)
            if "metadata" in output:
                output["metadata"] = {}
            if output.get("output_type") == "execute_result":
                output["execution_count"] = count
    return nb


def errors_of(nb) -> list[str]:
    out = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                out.append(f"cell {i}: {output.get('ename')}: {output.get('evalue')}")
    return out


def failed_checks(nb) -> list[str]:
    """The ✗ lines of the check cells (the source notebooks hold the solutions: none expected)."""
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "checks.run(" in cell.source:
            for output in cell.outputs:
                text = output.get("data", {}).get("text/plain", "")
                out += [line for line in text.splitlines() if line.startswith("✗")]
    return out


def written_since(start: float) -> list[Path]:
    files = [p for p in (DATA / "recorded").rglob("*") if p.is_file() and p.stat().st_mtime >= start]
    files += [p for p in (DATA / "captures").glob("*.pcap*") if p.stat().st_mtime >= start]
    return sorted(files)


def record(paths: list[Path], tracks: list[str]) -> int:
    if os.geteuid() != 0:
        print("Recording runs the real labs: it needs root (network namespaces, sandboxes).\n"
              "Run it as: sudo .venv/bin/python scripts/record_notebooks.py", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        for track in tracks:
            start = time.time() - 1
            print(f"== {path.name} [{track}] live, recording …", flush=True)
            try:
                nb = execute(path, {"LABKIT_MODE": "live", "LABKIT_RECORD": "1", "LABKIT_TRACK": track})
            except CellExecutionError as exc:
                failed += 1
                print(f"   FAILED: {str(exc).strip().splitlines()[-1]}", flush=True)
                continue
            for line in failed_checks(nb):
                failed += 1
                print(f"   CHECK FAILED: {line}")
            files = written_since(start)
            dirs = sorted({p.parent.relative_to(DATA) for p in files if "recorded" in p.parts})
            top = sorted({Path(*d.parts[:2]) for d in dirs})
            for d in top:
                n = sum(1 for p in files if DATA / d in p.parents)
                print(f"   wrote data/{d}/ ({n} files)")
            # Only this notebook's captures: another recording may run at the same time.
            mine = manifest.notebook_sessions(path)
            captures = [p for p in files if p.suffix in (".pcap", ".pcapng")
                        and manifest.owns(mine, p.stem.split(f"-{track}")[0])]
            for p in captures:
                size = p.stat().st_size
                flag = "  ← TOO BIG (≥ 1 MiB)" if size >= MAX_CAPTURE else ""
                failed += bool(flag)
                print(f"   wrote data/{p.relative_to(DATA)} ({size / 1024:.0f} KiB){flag}")
            manifest.update([manifest.entry(
                p, scenario=p.stem.split(f"-{track}")[0], track=track,  # <session>-<track>[-<place>]
                lab="(see the notebook)", what=f"The live run of notebook {path.stem} that its replay "
                                               f"mode shows (session {p.stem}).")
                for p in captures])
            print(f"   done in {time.time() - start:.0f} s", flush=True)
    return 1 if failed else 0


def store_replay_outputs(paths: list[Path], track: str = "modern") -> int:
    failed = 0
    for path in paths:
        print(f"== {path.name}: replay [{track}] → stored outputs", flush=True)
        try:
            nb = execute(path, {"LABKIT_MODE": "replay", "LABKIT_TRACK": track})
        except CellExecutionError as exc:
            failed += 1
            print(f"   FAILED: {str(exc).strip().splitlines()[-1]}", flush=True)
            continue
        nb = clean(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"   wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="names (01-first-call) or paths; default: all")
    parser.add_argument("--tracks", nargs="+", choices=TRACKS, default=list(TRACKS))
    parser.add_argument("--store-replay-outputs", action="store_true",
                        help="execute in replay mode (modern track) and write the outputs back")
    args = parser.parse_args(argv)
    paths = notebook_paths(args.notebooks)
    if args.store_replay_outputs:
        return store_replay_outputs(paths)
    return record(paths, args.tracks)


if __name__ == "__main__":
    sys.exit(main())
