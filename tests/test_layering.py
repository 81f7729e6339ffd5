"""The house plan's import rules that issue 10 fixed, read from the source (every import statement,
also those inside functions): no cycle inside the engine, leaves import no other layer, generator
modules carry no CLI, and no CLI module borrows another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fovea"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, imported names) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out.append((base, tuple(a.name for a in node.names)))
    return out


def _fovea_imports(path: Path) -> set[str]:
    return {m for m, _ in _imports(path) if m == "fovea" or m.startswith("fovea.")}


def test_engine_modules_import_each_other_without_a_cycle():
    modules = {_module_name(p): p for p in (SRC / "engine").glob("*.py")}
    graph = {m: {i for i in _fovea_imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail(f"import cycle: {' -> '.join(stack[stack.index(n):] + [n])}")
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert "fovea.engine.train" not in graph["fovea.engine._lightning"]


@pytest.mark.parametrize("leaf", ["weights.py", "io"])
def test_leaves_import_no_other_fovea_layer(leaf):
    files = [SRC / leaf] if leaf.endswith(".py") else sorted((SRC / leaf).glob("*.py"))
    for path in files:
        upward = {m for m in _fovea_imports(path)
                  if m not in ("fovea.errors", "fovea.core") and not m.startswith("fovea.io")}
        assert not upward, f"{path.relative_to(SRC)} imports {sorted(upward)}"


def test_generators_define_no_cli():
    for path in sorted((SRC / "synth").glob("*.py")):
        mods = {m for m, _ in _imports(path)}
        assert "click" not in mods and not any(m.startswith("fovea.cli") for m in mods), path.name


def test_cli_modules_use_only_public_names_of_each_other():
    for path in sorted((SRC / "cli").glob("*.py")):
        for module, names in _imports(path):
            if module.startswith("fovea.cli"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"cli/{path.name} imports private {private} from {module}"


def test_nothing_below_the_cli_imports_it():
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(SRC / "cli"):
            continue
        assert not any(m.startswith("fovea.cli") for m in _fovea_imports(path)), path.relative_to(SRC)


def test_modules_that_build_backbones_register_foveas_models():
    """weights.create_backbone no longer imports fovea.models (bottom layer), so every module that calls
    it imports fovea.models itself, which registers fovea's backbones (vmamba_*, sparx_*) in timm."""
    callers = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "weights.py" or path.is_relative_to(SRC / "models"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        calls = any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == "create_backbone"
                    for n in ast.walk(tree))
        if calls:
            callers.append(path.relative_to(SRC))
            assert "fovea.models" in _fovea_imports(path), f"{path.relative_to(SRC)} builds backbones without " \
                "importing fovea.models"
    assert len(callers) >= 3, callers  # anomaly features, classify and segment models at least
