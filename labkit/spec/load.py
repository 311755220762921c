"""Loading a lab file: YAML in, a validated :class:`~labkit.spec.model.LabSpec` out.

Validation runs in two passes, as containerlab and netlab do: the *shape* with pydantic
(unknown keys rejected), then the *references* (:mod:`labkit.spec.references`).  Every
problem is reported with its place (``phones[1].extension``), its line in the user's file,
and what would be valid.  Overrides (a notebook's variant of a lab) are merged into the
file's data before validation; a problem in an overridden value says so, since it has no
line in the file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from labkit import resources
from labkit.errors import LabFileError
from labkit.spec.model import LabSpec
from labkit.spec.references import check_references

#: Where ``Lab.load("first-call")`` looks for lab files.
LABS_DIR = resources.labs_dir()


def find_lab_file(name_or_path: str | Path) -> Path:
    """A lab name (``first-call``) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path = candidate
    else:
        path = LABS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in LABS_DIR.glob("*.yaml"))) or "none"
        raise LabFileError(
            f"No lab file {path}.",
            cause="the lab name is misspelt, or the path is wrong",
            hint=f"use one of the labs shipped in {LABS_DIR}: {known}; or give a path to a .yaml file",
        )
    return path


def load_spec(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> LabSpec:
    """Read, parse and validate a lab file; raise LabFileError listing every problem.

    ``overrides`` is merged into the file's data before validation (nested dicts merge,
    other values replace), e.g. ``{"pbx": {"direct_media": True}}`` for a notebook's
    variant of a lab.  Problems keep the lines of the user's file.
    """
    path = find_lab_file(name_or_path)
    return parse_spec(path.read_text(encoding="utf-8"), source=str(path), overrides=overrides)


def merge_overrides(base: Any, extra: Any) -> Any:
    """Nested dicts merge key by key; any other value in ``extra`` replaces the base's.

    A ``None`` is kept as it is: merged into a lab file's data (:func:`apply_overrides`)
    it removes the key, so overrides merged into overrides keep saying so.
    """
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: merge_overrides(base.get(k), v) for k, v in extra.items()}}
    return extra


def apply_overrides(data: Any, overrides: Any) -> Any:
    """``overrides`` merged into a lab file's ``data``; a ``None`` removes the key, which
    takes it back to its default (``{"dns": {"records": {"sip.carrier.example": None}}}``
    drops one DNS record, ``{"pbx": {"trunk": {"proxy": None}}}`` the trunk's proxy)."""
    if isinstance(overrides, dict):
        base = data if isinstance(data, dict) else {}
        merged = dict(base)
        for key, value in overrides.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = apply_overrides(base.get(key), value)
        return merged
    return overrides


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses repeated keys (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in the same mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class YamlTextError(ValueError):
    """A student's lab-file lines that are not YAML; the message says where and why."""


def yaml_text(text: str) -> Any:
    """A student's lab-file lines as data: YAML's safe loader only (no tags that build Python
    objects), and an error saying the line and the problem (``not valid YAML at line N: …``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise YamlTextError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def parse_spec(text: str, source: str = "<lab>", overrides: dict[str, Any] | None = None) -> LabSpec:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LabFileError(
            f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}.",
            cause="a missing colon, a bad indentation or an unclosed quote or bracket",
            hint="check the line shown (and the one above it); indent with spaces, not tabs",
        ) from None
    if not isinstance(data, dict):
        raise LabFileError(
            f"{source}: a lab file must be a mapping (name:, networks:, hosts:, pbx:, phones:).",
            hint="start from configs/labs/first-call.yaml",
        )
    file_data = data
    if overrides:
        data = apply_overrides(data, overrides)
    problems = _problems_of(data)
    if problems:
        raise _problems_error(source, problems, root, overrides)
    problems = _variant_problems(file_data)
    if problems:
        raise _problems_error(source, problems, root)
    return LabSpec.model_validate(data)


def _problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a lab's data: its shape (pydantic), then its cross-references."""
    try:
        spec = LabSpec.model_validate(data)
    except ValidationError as exc:
        return [(_loc(err["loc"]), _describe(err)) for err in exc.errors()]
    return check_references(spec)


def _variant_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Each named variant must make a valid lab too: its problems are reported in the file,
    at the variant's overrides (or at the variant, with the place it breaks)."""
    problems = []
    variants = data.get("variants") or {}
    if not isinstance(variants, dict):
        return []
    base = {k: v for k, v in data.items() if k != "variants"}
    for name, variant in variants.items():
        overrides = variant.get("overrides") if isinstance(variant, dict) else None
        if not isinstance(overrides, dict):
            continue  # the shape check of the file itself reports it
        merged = apply_overrides(base, {k: v for k, v in overrides.items() if k != "variants"})
        for place, message in _problems_of(merged):
            if _overridden(place, overrides):
                problems.append((f"variants.{name}.overrides.{place}", message))
            else:
                problems.append((f"variants.{name}", f"{place}: {message}"))
    return problems


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; see configs/lab.schema.json for valid keys)"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{err['msg'].lower()} (got {err.get('input')!r})"
    if kind == "value_error":
        return f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
    if kind == "string_type" and isinstance(err.get("input"), int):
        return f"must be text: write it in quotes, \"{err['input']}\""
    if kind == "string_pattern_mismatch":
        return (f"{err.get('input')!r} does not match the pattern "
                f"{err.get('ctx', {}).get('pattern')}")
    return f"{err['msg']} (got {err.get('input')!r})"


def _line_of(root: yaml.Node | None, place: str) -> int | None:
    """Follow a place such as ``phones[1].extension`` in the YAML node tree to its line."""
    node = root
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", place):
        if node is None:
            return None
        if token.startswith("["):
            index = int(token[1:-1])
            if isinstance(node, yaml.SequenceNode) and index < len(node.value):
                node = node.value[index]
            else:
                return node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == token]
            if not match:
                return node.start_mark.line + 1
            key, node = match[0]
            if node is None:
                return key.start_mark.line + 1
        else:
            return node.start_mark.line + 1
    return node.start_mark.line + 1 if node is not None else None


def _overridden(place: str, overrides: dict[str, Any] | None) -> bool:
    """Whether ``place`` (or a parent of it) was set by the overrides, not by the file."""
    node: Any = overrides
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", place):
        if not isinstance(node, dict) or token not in node:
            return False
        node = node[token]
        if not isinstance(node, dict):
            return True  # a value or a whole list replaced by the override
    return True


def _problems_error(source: str, problems: list[tuple[str, str]], root: yaml.Node | None,
                    overrides: dict[str, Any] | None = None):
    lines = []
    for place, message in problems:
        if _overridden(place, overrides):
            where = " (set by the overrides, not the file)"
        else:
            line = _line_of(root, place)
            where = f" (line {line})" if line else ""
        lines.append(f"  - {place}{where}: {message}")
    count = len(problems)
    return LabFileError(
        f"{source}: {count} problem{'s' if count > 1 else ''} in the lab file:\n" + "\n".join(lines),
        hint="fix each place listed; `labkit schema` prints every valid key",
    )
