"""The shape the code holds (docs/architecture.md): layered imports with no circle, no import hidden
in a function to dodge one, an Engine that stays small, tab builders that stay readable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "playground"

# Each module's floor: a module imports only from its own floor or below. The ground floor imports nothing of
# the playground; gradio lives only in ui/ (the top), torch nowhere under validation.
LAYERS = [
    ["errors", "settings", "gpu", "tiny", "weights", "threads"],
    ["metadata", "tokens", "axes", "schedulers", "poses", "latents", "tiny.world", "tiny.arch", "tiny.vocab",
     "tiny.analyse", "deploy", "exercises", "attention"],
    ["preprocessors", "limits"],
    ["schema"],
    ["attention.sources"],
    ["validation"],
    ["attention.capture", "views", "parts", "outputs", "links"],
    ["families", "tiny.grounding"],
    ["sampling", "loading"],
    ["annotators", "batching"],
    ["engine", "tiny.train", "tiny.untrained", "tiny.latents"],
    ["walks", "tiny.mmdit"],
    ["models"],
    ["tiny.evaluate"],
    ["ui.fairness", "ui.cache", "ui.sessions"],
    ["ui.common", "ui.fields"],
    ["ui.live"],
    ["ui.prompt", "ui.grid", "ui.control", "ui.attention", "ui.roundtrip", "ui.anatomy", "ui.walk", "ui.lesson"],
    ["ui.inspector"],
    ["ui"],  # assembles the tabs
]
FLOOR = {name: k for k, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(playground module imported, whether the import sits inside a function) for every import in `path`."""
    tree, found = ast.parse(path.read_text()), []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("playground"):
                base = child.module.removeprefix("playground").lstrip(".")
                for alias in child.names:  # `from playground import control` names a module
                    sub = f"{base}.{alias.name}".lstrip(".")
                    found.append((sub if sub in FLOOR else base, inside))
            elif isinstance(child, ast.Import):
                found.extend((a.name.removeprefix("playground.").removeprefix("playground"), inside)
                             for a in child.names if a.name.startswith("playground"))
            if not isinstance(child, ast.If) or "TYPE_CHECKING" not in ast.unparse(child.test):
                visit(child, inside)

    visit(tree, False)
    return [(name, inside) for name, inside in found if name]


GRAPH = {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_has_a_floor():
    assert sorted(set(GRAPH) - set(FLOOR) - {""}) == [], "add new modules to LAYERS"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m))
def test_no_import_reaches_up(module):
    up = [(name, FLOOR[name]) for name, _ in GRAPH[module] if FLOOR.get(name, -1) > FLOOR[module]]
    assert up == [], f"{module} (floor {FLOOR[module]}) imports from a higher floor: {up}"


def test_no_function_level_import_of_the_playground():
    hidden = {m: [n for n, inside in deps if inside] for m, deps in GRAPH.items()}
    assert {m: d for m, d in hidden.items() if d} == {}


def test_no_import_circle():
    edges = {m: {n for n, _ in deps if n in GRAPH and n != m} for m, deps in GRAPH.items()}
    seen, stack = set(), []

    def walk(m):
        if m in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in seen:
            return
        stack.append(m)
        for n in edges[m]:
            walk(n)
        stack.pop()
        seen.add(m)

    for m in edges:
        walk(m)


def lengths(path: Path, cls: str | None = None) -> dict[str, int]:
    """Lines of each top-level function of `path` (or each method of class `cls`), decorators included."""
    tree = ast.parse(path.read_text())
    body = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls) if cls else tree.body
    return {n.name: n.end_lineno - (n.decorator_list[0].lineno if n.decorator_list else n.lineno) + 1
            for n in body if isinstance(n, ast.FunctionDef)}


def test_the_engine_stays_small():
    tree = ast.parse((ROOT / "engine.py").read_text())
    engine = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Engine")
    assert engine.end_lineno - engine.lineno + 1 <= 250
    assert {name: n for name, n in lengths(ROOT / "engine.py", "Engine").items() if n > 30} == {}


@pytest.mark.parametrize("tab", ["prompt", "grid", "control", "inspector", "attention", "roundtrip", "anatomy"])
def test_tab_builders_stay_readable(tab):
    assert {name: n for name, n in lengths(ROOT / "ui" / f"{tab}.py").items() if n > 120} == {}
