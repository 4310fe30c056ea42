"""ARCHITECTURE.md's layer list is true: every import in batchmap/ runs down it, and none loops.

The list is the code block under "## Layers": one line a layer, top first, naming the modules
of that layer (`runner.py`, `report*.py, timeline.py`, `fakeserver/`). A module may import
modules of its own layer or of layers below, never above; imports inside functions and under
TYPE_CHECKING count too (they are how a cycle hides). The package's `__init__` is the public
facade above everything (it imports lazily) and no module may import it.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "batchmap"


def module_name(path: Path) -> str:
    """batchmap/fakeserver/http.py -> 'fakeserver.http'; the package itself is ''."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The batchmap modules `path` imports, anywhere in it (relative to the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from batchmap import timeline` names a module; `from batchmap.x import y` a
            # module or a name in x: graph() keeps whichever exists.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "batchmap" or name.startswith("batchmap."):
                found.add(name.removeprefix("batchmap").removeprefix("."))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the batchmap modules it imports (only those that exist as modules)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target in imports_of(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # a name inside a module
            if target not in modules:
                target = ""  # a name of the package itself: `from batchmap import __version__`
            if target in modules and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def layers() -> list[list[str]]:
    """The patterns of each line of ARCHITECTURE.md's layer list, top first."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    found: list[list[str]] = []
    for line in block.strip("\n").splitlines():
        if line.startswith(" "):
            continue  # the description of the line above, continued
        head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        patterns = [p.strip() for p in head.split(",")]
        found.append([p.removesuffix(".py").replace("/", "") for p in patterns if p])
    return found


def layer_of(module: str, listed: list[list[str]]) -> int | None:
    """The line of the layer list a module belongs to (a subpackage by its first part)."""
    top = module.split(".", 1)[0]
    for index, patterns in enumerate(listed):
        if any(fnmatch.fnmatchcase(top, pattern) for pattern in patterns):
            return index
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert cycles(graph()) == []


def test_every_module_is_in_the_layer_list() -> None:
    listed = layers()
    unlisted = [m for m in graph() if m and m != "__main__" and layer_of(m, listed) is None]
    assert unlisted == [], "add these to ARCHITECTURE.md's layer list"


def test_imports_only_run_down_the_layer_list() -> None:
    listed = layers()
    upward = []
    for module, targets in sorted(graph().items()):
        if module in ("", "__main__"):
            continue
        here = layer_of(module, listed)
        for target in sorted(targets):
            if target == "":
                upward.append(f"{module} imports the package facade `batchmap`")
                continue
            there = layer_of(target, listed)
            same_package = module.split(".")[0] == target.split(".")[0]
            if here is not None and there is not None and there < here and not same_package:
                upward.append(f"{module} (line {here + 1}) imports {target} (line {there + 1})")
    assert upward == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    # The checks themselves can fail: a loop and an import up the list are both found.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    listed = [["cli"], ["store"]]
    assert layer_of("store", listed) == 1 and layer_of("cli", listed) == 0
    assert layer_of("fakeserver.http", [["fakeserver"]]) == 0


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    # pyproject names only what batchmap imports (its optional extras included).
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["images"]]
    modules = {"python-backoff": "backoff", "sqlite-utils": "sqlite_utils", "pillow": "PIL"}
    imported: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    names = [re.split(r"[<>=\[; ]", spec, maxsplit=1)[0].lower() for spec in declared]
    unused = [n for n in names if modules.get(n, n.replace("-", "_")) not in imported]
    assert names and unused == []
