"""The layering of the code: the core stands alone, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fedrobust", "clients", "server", "launcher")
OUTSIDE_THE_CORE = ("flwr", "server", "clients", "launcher")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, inside functions or for type checking alike."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_core_imports_neither_flower_nor_the_apps_nor_the_launcher():
    for path in (REPO / "fedrobust").rglob("*.py"):
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in OUTSIDE_THE_CORE)
        assert not bad, f"{path.relative_to(REPO)} imports {', '.join(bad)}"


def test_no_import_cycles():
    """Tarjan's strongly connected components: any component of two or more modules is a cycle."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# What differs between tasks lives behind fedrobust.tasks: these modules know labels, masks or MedMNIST.
TASK_SPECIFIC = ("fedrobust.tasks.classification", "fedrobust.tasks.segmentation", "fedrobust.tasks.mask_pictures",
                 "fedrobust.data", "fedrobust.train.prior")
# ... and these take a Task and never look behind it.
TASK_AGNOSTIC = ("fedrobust.federated", "fedrobust.augment", "fedrobust.attacks", "fedrobust.sweep", "fedrobust.export",
                 "fedrobust.report", "fedrobust.distill", "fedrobust.train", "fedrobust.edge", "fedrobust.models",
                 "fedrobust.config", "fedrobust.pipeline", "fedrobust.selection", "fedrobust.predict",
                 "fedrobust.rundir", "fedrobust.checkpoint", "server", "clients", "launcher.simulation")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_task_agnostic_modules_reach_tasks_only_through_the_seam():
    graph = _graph()
    for module, imported in sorted(graph.items()):
        if not _within(module, TASK_AGNOSTIC) or _within(module, TASK_SPECIFIC):
            continue
        bad = sorted(m for m in imported if _within(m, TASK_SPECIFIC))
        assert not bad, f"{module} imports the task-specific {', '.join(bad)}; go through fedrobust.tasks.registry"


def test_the_task_seam_imports_first_in_a_fresh_interpreter():
    """Package __init__ files run at import time: a module imported first must not meet a half-built package
    (the config package imports the task specs, which import the config schema)."""
    import subprocess
    import sys

    for module in ("fedrobust.tasks.specs", "fedrobust.tasks.registry", "fedrobust.config.validate"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, f"import {module} first fails: {done.stderr.strip().splitlines()[-1]}"
