"""The package's shape holds: no import cycle, one track registry, services below the lab."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "labkit"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if {"configs", "data"} & set(path.relative_to(PACKAGE).parts):
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(path: Path, *, module_level: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_module_level_import_cycle():
    modules = _modules()
    graph = {m: {t for t in _imports(p, module_level=True) if t in modules and t != m}
             for m, p in modules.items()}
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph[module]):
            assert seen.get(target) != 1, "import cycle: " + " → ".join([*path, module, target])
            if target not in seen:
                visit(target, [*path, module])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [])


def test_track_names_appear_in_the_track_registry_only():
    pattern = re.compile(r"""["'](legacy|modern)["']""")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in _modules().values() if path.name != "tracks.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_services_know_nothing_of_the_running_lab():
    """A service gets a small context, never the Lab: the arrows point one way."""
    for name, path in _modules().items():
        if name.startswith("labkit.services"):
            assert not {i for i in _imports(path, module_level=False) if i.startswith("labkit.lab")}, name


def test_every_lab_file_service_is_one_module_with_provide():
    from labkit import services
    for module in services.PROVIDERS:
        assert callable(module.provide) and module.__name__.startswith("labkit.services.")
