"""The shape the code holds (docs/architecture.md): layered imports with no circle, no import hidden in a function
to dodge one, and every action of one shape (one request type, checked once at its door, one recipe)."""

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
     "tiny.analyse", "tiny.toolkit", "deploy", "exercises", "attention"],
    ["preprocessors", "limits"],
    ["schema"],
    ["attention.sources"],
    ["validation"],
    ["attention.capture", "views", "parts", "outputs", "links"],
    ["families.conditioning", "families.sd"],
    ["families.sdxl", "families.sd3"],
    ["families", "components", "tiny.grounding"],
    ["sampling", "loading"],
    ["annotators", "batching", "walks"],
    ["engine", "tiny.stages", "tiny.export", "tiny.train", "tiny.untrained", "tiny.latents"],
    ["tiny.mmdit"],
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


# -- the shape of an action: one request, one door, one recipe ----------------------------------------------------
ACTIONS = {"generate", "grid", "grid_evaluations", "control", "inspect", "attention", "walk", "roundtrip",
           "preprocess", "detect_pose", "draw_pose", "count_tokens"}


def engine_methods() -> dict[str, ast.FunctionDef]:
    tree = ast.parse((ROOT / "engine.py").read_text())
    engine = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Engine")
    return {n.name: n for n in engine.body if isinstance(n, ast.FunctionDef)
            and "property" not in [ast.unparse(d) for d in n.decorator_list]}


def test_every_engine_action_has_one_request_and_one_door():
    """Each public Engine method that takes a request is an action: `@action(its validator)`, one validator each."""
    doors = {}
    for name, fn in engine_methods().items():
        if not name.startswith("_") and [a.arg for a in fn.args.args[1:2]] == ["req"]:
            doors[name] = [ast.unparse(d.args[0]) for d in fn.decorator_list
                           if isinstance(d, ast.Call) and ast.unparse(d.func) == "action"]
    assert set(doors) == ACTIONS
    assert {name: v for name, v in doors.items() if len(v) != 1 or not v[0].startswith("validate_")} == {}


def test_the_registry_lists_every_action_with_its_validator():
    from playground import engine, validation

    assert set(engine.ACTIONS) == ACTIONS
    for name, validate in engine.ACTIONS.items():
        assert getattr(engine.Engine, name).validate is validate is getattr(validation, validate.__name__)


def test_requests_are_validated_only_at_the_doors():
    """No code calls a validator but the validators themselves (which build on each other) and a link's check,
    which reads a page address before anything runs: every action's request is checked at its door, once."""
    called = {}
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "validation.py" or path.name == "links.py":
            continue
        calls = [ast.unparse(n.func) for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and ast.unparse(n.func).split(".")[-1].startswith("validate_")]
        if calls:
            called[module_name(path)] = calls
    assert called == {}


def test_no_helper_calls_back_into_the_engine():
    """No Engine method hands one of its own methods (bound: `self.run`) to a helper to be called back."""
    methods = engine_methods()
    handed = [(name, ast.unparse(arg)) for name, fn in methods.items() for call in ast.walk(fn)
              if isinstance(call, ast.Call)
              for arg in [*call.args, *(k.value for k in call.keywords)]
              if isinstance(arg, ast.Attribute) and ast.unparse(arg.value) == "self" and arg.attr in methods]
    assert handed == []


def test_the_app_never_imports_the_training_code():
    """The bundled models' facts come from their folders: nothing outside playground/tiny imports it."""
    reached = {m: [n for n, _ in deps if n == "tiny" or n.startswith("tiny.")] for m, deps in GRAPH.items()
               if m != "tiny" and not m.startswith("tiny.")}
    assert {m: n for m, n in reached.items() if n} == {}


def test_no_module_of_the_playground_is_imported_under_another_name():
    """Module names need no aliases: none shadows a library, an action or a ui/ module it is used beside."""
    aliased = {}
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("playground"):
                names = [f"{a.name} as {a.asname}" for a in node.names if a.asname
                         and f"{node.module.removeprefix('playground').lstrip('.')}.{a.name}".lstrip(".") in FLOOR]
                if names:
                    aliased[module_name(path)] = names
    assert aliased == {}
