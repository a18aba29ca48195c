"""The house rules, checked by reading the package's source (ast): layers, no import cycles, no private names
across modules, no attributes stuck onto other modules' objects. Lazy (in-function) and type-checking imports
count like any other; see docs/architecture.md."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "imagen4_jupyter"
NAME = "imagen4_jupyter"
# lowest first: a module may import its own layer and lower ones only
LAYERS = {"api": 0, "records": 1, "research": 2, "notebook": 3}
TOP = 9  # the package's public face (imagen4_jupyter/__init__.py) may import every layer
# protocol hooks that other libraries call by name (IPython's rich display, namedtuple helpers)
PROTOCOL_PREFIXES = ("_repr_", "_ipython_", "_render_traceback_", "_asdict", "_replace", "_fields", "_make")
# attributes of other libraries' objects that their APIs set by assignment (ipywidgets traits, requests.Session)
EXTERNAL_ATTRIBUTES = {"value", "disabled", "tooltip", "children", "format", "display", "selected_index",
                       "outputs", "description", "options", "placeholder", "icon", "button_style", "max", "min",
                       "bar_style", "titles", "width", "trust_env", "auth", "layout", "rows"}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(target module, imported names, line) for every import statement anywhere in the module."""
    found = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(NAME):
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            if not target.startswith(NAME):
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            plain = [n for n in names if f"{target}.{n}" not in MODULES]
            for sub in submodules:
                found.append((sub, [], node.lineno))
            if plain or not submodules:
                found.append((target, plain, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports(m) if t in MODULES and t != m} for m in MODULES}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    return LAYERS.get(parts[1])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def implicit_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS or parts[1] == "simulator", (
            f"{module} is outside the layers {sorted(LAYERS)} and simulator/; put it in one")


def test_the_top_folder_keeps_only_the_public_face():
    top = sorted(p.name for p in PKG.iterdir() if p.suffix == ".py")
    assert top == ["__init__.py"], top
    assert (PKG / "py.typed").is_file()


def test_no_import_cycles_lazy_and_type_checking_ones_included():
    edges = graph()
    # importing a.b.c runs a/__init__ and a/b/__init__ first: not an edge we draw (every package has it)
    edges = {m: {t for t in ts if t not in implicit_parents(m)} for m, ts in edges.items()}
    assert cycles(edges) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, targets in graph().items():
        mine = layer(module)
        sim = module.startswith(f"{NAME}.simulator")
        for target in targets:
            if target in implicit_parents(module):
                continue
            if sim:
                if not target.startswith(f"{NAME}.simulator"):
                    wrong.append(f"{module} -> {target} (the simulator imports nothing from the client side)")
                continue
            if target.startswith(f"{NAME}.simulator"):
                if mine is not None and mine < LAYERS["notebook"]:
                    wrong.append(f"{module} -> {target} (only the notebook front-end starts a simulator)")
                continue
            theirs = layer(target)
            if target == NAME:
                wrong.append(f"{module} -> {target} (nothing inside imports the public face)")
            elif mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and not name.startswith(PROTOCOL_PREFIXES)


def defined_private_names(module: str) -> set[str]:
    """Private names a module defines: functions, classes, assignments, attributes of self."""
    names = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if _private(n)}


def test_no_private_name_crosses_a_module_boundary():
    wrong = []
    for module in MODULES:
        for target, names, line in imports(module):
            wrong += [f"{module}:{line} imports {target}.{n}" for n in names if _private(n)]
        mine = defined_private_names(module)
        for node in ast.walk(TREES[module]):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in mine:
                wrong.append(f"{module}:{node.lineno} uses .{node.attr}, defined in another module")
    assert wrong == []


def declared_attributes() -> set[str]:
    """Every attribute name some class of the package declares: assigned on self or cls, class-level names
    and annotations (dataclass fields), methods and properties."""
    names = set()
    for tree in TREES.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        names |= {t.id for t in item.targets if isinstance(t, ast.Name)}
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                names.add(node.attr)
    return names


def test_no_attribute_is_stuck_onto_another_object():
    declared = declared_attributes() | EXTERNAL_ATTRIBUTES
    wrong = []
    for module in MODULES:
        for node in ast.walk(TREES[module]):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                if (isinstance(t, ast.Attribute) and not (isinstance(t.value, ast.Name)
                                                          and t.value.id in ("self", "cls"))
                        and t.attr not in declared):
                    wrong.append(f"{module}:{t.lineno} sets .{t.attr}, which no class declares")
        for node in ast.walk(TREES[module]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
                wrong.append(f"{module}:{node.lineno} calls setattr")
    assert wrong == []
