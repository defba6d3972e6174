"""The package's dependency rules, read from the source: CLI -> library -> synth, thin trainers, no import cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("nnunet_gen", "synth")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file, lazy imports included)."""
    modules = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                targets.update(n if n in modules else node.module for n in names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


GRAPH = _imports()


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("importer, forbidden", [
    ("synth", "nnunet_gen"),  # models work on arrays and know nothing of datasets
    ("nnunet_gen.training", "nnunet_gen.render"),  # trainers never import renderers ...
    ("nnunet_gen.training", "nnunet_gen.selftrain"),  # ... nor orchestrators ...
    ("nnunet_gen.training", "nnunet_gen.demo"),
    ("nnunet_gen.augment", "nnunet_gen.render"),  # transforms are used by renderers, not the other way round
    ("nnunet_gen.io", "nnunet_gen.render"),
    ("nnunet_gen.io", "nnunet_gen.training"),
])
def test_no_back_edges(importer, forbidden):
    edges = sorted((m, t) for m, targets in GRAPH.items() if _in(m, importer) for t in targets if _in(t, forbidden))
    assert edges == []


def test_only_the_cli_imports_the_cli():
    edges = sorted((m, t) for m, targets in GRAPH.items() if not _in(m, "nnunet_gen.cli")
                   for t in targets if _in(t, "nnunet_gen.cli"))
    assert edges == []


def test_no_import_cycles():
    visiting, done, cycles = set(), set(), []

    def visit(module: str, path: list[str]) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(path[path.index(module):] + [module])
            return
        visiting.add(module)
        for target in sorted(GRAPH[module]):
            # a package's __init__ re-exporting its own submodules is not a cycle of the data flow
            if not (target.startswith(module + ".")):
                visit(target, path + [target])
        visiting.discard(module)
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [module])
    assert cycles == []


def test_trainers_folder_only_re_exports():
    source = (REPO / "trainers" / "nnunet_gen_trainers.py").read_text()
    tree = ast.parse(source)
    assert all(isinstance(node, (ast.ImportFrom, ast.Expr)) for node in tree.body)
