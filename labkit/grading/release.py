"""Student copies of instructor notebooks: ``release(source, out)``.

Solution regions become stubs, cells tagged ``hidden`` disappear, cells tagged ``solution``
become an empty exercise cell, outputs and noisy metadata go.  The copy is verified to
contain no solution text before it is kept.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labkit.errors import GradingError

__all__ = ["release"]

CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "*Your answer here.*"

_BEGIN = re.compile(r"^(\s*)#{1,3}\s*BEGIN SOLUTION\b.*$")
_END = re.compile(r"^\s*#{1,3}\s*END SOLUTION\b.*$")
_MD_REGION = re.compile(r"<!--\s*BEGIN SOLUTION\s*-->(.*?)<!--\s*END SOLUTION\s*-->", re.S)
_ANY_MARKER = re.compile(r"(BEGIN|END) SOLUTION")
_KEEP_CELL_META = ("tags", "editable", "deletable")
#: Solution lines that carry no answer of their own, so that the exercise's template may show
#: them: a variable opening a multi-line string (``carol_sip = """``, whose text follows on the
#: next lines) and a bare YAML/INI key (``allow:``).
_OPENS_TEXT = re.compile(r"""^[A-Za-z_]\w*\s*=\s*[rbfuRBFU]{0,2}(\"\"\"|\'\'\')$""")
_BARE_KEY = re.compile(r"^[\w.-]+:$")
_TRIVIAL = {"pass", "return", "break", "continue", "else:", "try:", "finally:", "except:",
            "raise", "return None", "None", "True", "False", "...", *CODE_STUB, MARKDOWN_STUB}


def release(source: Path, out: Path) -> list[Path]:
    """Write student copies of *source* (a notebook or a folder of them) into *out*.

    *out* is a folder (created if needed), or a ``.ipynb`` path when *source* is one
    notebook.  Nothing is written if any notebook is malformed; returns the written paths.
    """
    source, out = Path(source), Path(out)
    if not source.exists():
        raise GradingError(f"{source} does not exist", hint="give a notebook or a folder of notebooks")
    if source.is_dir():
        notebooks = sorted(p for p in source.glob("*.ipynb") if p.is_file())
        if not notebooks:
            raise GradingError(f"no notebooks (*.ipynb) in {source}")
        if out.suffix == ".ipynb":
            raise GradingError(f"{out} is a notebook path but {source} is a folder",
                               hint="give an output folder")
        targets = [out / p.name for p in notebooks]
    else:
        notebooks = [source]
        targets = [out if out.suffix == ".ipynb" else out / source.name]
    for src, dst in zip(notebooks, targets):
        if dst.resolve() == src.resolve():
            raise GradingError(f"releasing {src} would overwrite it with the student copy",
                               hint="choose another output folder (e.g. release/)")
    prepared = [(dst, *_student_copy(src)) for src, dst in zip(notebooks, targets)]
    written = []
    import nbformat
    for dst, nb, removed in prepared:
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(dst))
        try:
            _verify_no_leak(dst, removed)
        except GradingError:
            dst.unlink(missing_ok=True)
            raise
        written.append(dst)
    return written


def _student_copy(src: Path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell

    raw = src.read_bytes()
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as exc:
        raise GradingError(f"{src} is not a readable notebook", cause=f"{type(exc).__name__}: {exc}") from None
    if (nb.metadata.get("labkit") or {}).get("student_copy"):
        raise GradingError(f"{src} is already a student copy", hint="release the instructor notebook")
    removed: list[tuple[str, str]] = []  # (where, line) of every line taken out
    cells = []
    for n, cell in enumerate(nb.cells, 1):
        where = f"{src.name} cell {n}"
        tags = list(cell.get("metadata", {}).get("tags", []))
        source = cell.get("source", "")
        if "hidden" in tags:
            continue
        if "solution" in tags:
            removed += [(where, line) for line in source.splitlines()]
            new = (new_markdown_cell(MARKDOWN_STUB) if cell.cell_type == "markdown"
                   else new_code_cell("\n".join(CODE_STUB)))
        elif cell.cell_type == "code":
            text, gone = _strip_code(source, where)
            removed += [(where, line) for line in gone]
            new = new_code_cell(text)
        elif cell.cell_type == "markdown":
            text, gone = _strip_markdown(source, where)
            removed += [(where, line) for line in gone]
            new = new_markdown_cell(text)
            if "attachments" in cell:
                new["attachments"] = cell["attachments"]
        else:
            new = new_raw_cell(source)
        if cell.get("id"):
            new["id"] = cell["id"]
        meta = {k: v for k, v in cell.get("metadata", {}).items() if k in _KEEP_CELL_META}
        if "tags" in meta:
            meta["tags"] = [t for t in meta["tags"] if t not in ("solution", "hidden")]
            if not meta["tags"]:
                del meta["tags"]
        new["metadata"] = meta
        if _ANY_MARKER.search(new["source"]):
            raise GradingError(f"{where}: a solution marker was not recognised",
                               cause="markers must be on their own line: `### BEGIN SOLUTION` / "
                                     "`### END SOLUTION` (code), `<!-- BEGIN SOLUTION -->` … "
                                     "`<!-- END SOLUTION -->` (markdown)")
        cells.append(new)
    meta: dict[str, Any] = {}
    if "kernelspec" in nb.metadata:
        meta["kernelspec"] = nb.metadata["kernelspec"]
    if "language_info" in nb.metadata:
        meta["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    meta["labkit"] = {"student_copy": True, "source": src.name,
                      "source_sha256": hashlib.sha256(raw).hexdigest()}
    out = new_notebook(cells=cells, metadata=meta)
    nbformat.validate(out)
    return out, removed


def _strip_code(source: str, where: str) -> tuple[str, list[str]]:
    out: list[str] = []
    removed: list[str] = []
    begin_line: int | None = None
    # Lines inside a multi-line string of a solution are configuration text the student writes
    # (sip.conf, YAML): the prose teaches that syntax on purpose and a probe judges the text, so
    # they are taken out of the copy but not looked for elsewhere.
    in_text = False
    for i, line in enumerate(source.splitlines(), 1):
        begin = _BEGIN.match(line)
        if begin:
            if begin_line is not None:
                raise GradingError(f"{where}, line {i}: BEGIN SOLUTION inside another solution "
                                   f"region (opened line {begin_line})",
                                   hint="close the first region with `### END SOLUTION`")
            begin_line = i
            out += [begin.group(1) + stub for stub in CODE_STUB]
        elif _END.match(line):
            if begin_line is None:
                raise GradingError(f"{where}, line {i}: END SOLUTION without BEGIN SOLUTION")
            begin_line, in_text = None, False
        elif begin_line is not None:
            if not in_text:
                removed.append(line)
            if line.count('"""') % 2 or line.count("'''") % 2:
                in_text = not in_text
        else:
            out.append(line)
    if begin_line is not None:
        raise GradingError(f"{where}, line {begin_line}: BEGIN SOLUTION has no END SOLUTION",
                           cause="the rest of the cell would be released as the solution",
                           hint="add `### END SOLUTION` where the solution ends")
    return "\n".join(out), removed


def _strip_markdown(source: str, where: str) -> tuple[str, list[str]]:
    removed: list[str] = []

    def replace(match: re.Match) -> str:
        removed.extend(match.group(1).splitlines())
        return MARKDOWN_STUB

    text = _MD_REGION.sub(replace, source)
    if "BEGIN SOLUTION" in text:
        raise GradingError(f"{where}: <!-- BEGIN SOLUTION --> has no <!-- END SOLUTION -->")
    if "END SOLUTION" in text:
        raise GradingError(f"{where}: <!-- END SOLUTION --> without <!-- BEGIN SOLUTION -->")
    return text, removed


def _meaningful(line: str) -> bool:
    s = line.strip()
    return (bool(s) and not s.startswith("#") and s not in _TRIVIAL and re.search(r"\w", s) is not None
            and not _OPENS_TEXT.match(s) and not _BARE_KEY.match(s))


def _verify_no_leak(path: Path, removed: Iterable[tuple[str, str]]) -> None:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    text = "\n".join(cell.source for cell in nb.cells)
    for where, line in removed:
        if not _meaningful(line):
            continue
        s = line.strip()
        if re.search(r"(?<!\w)" + re.escape(s) + r"(?!\w)", text):
            raise GradingError(f"the student copy {path.name} would still contain solution text "
                               f"from {where}: {s!r}",
                               cause="that line is also written outside the solution region",
                               hint="reword it outside the region, or move it out of the solution")
    for cell in nb.cells:
        if "hidden" in cell.metadata.get("tags", []) or cell.get("outputs"):
            raise GradingError(f"the student copy {path.name} still has hidden cells or outputs")
