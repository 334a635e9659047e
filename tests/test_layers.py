"""The layers hold: imports point one way, no module cycles, the CLI on top, no torch when live.

Every import counts, the ones inside functions too (a lazy import is not a way around the layers),
and so do ``importlib.import_module("...")`` calls with a literal name.

Rules (``docs/DESIGN.md``, "Layers"):

- ``acquisition`` imports none of ``bci_app``, ``gui``, ``models``;
- ``models`` never imports ``gui``; ``gui`` never imports ``models``;
- in ``bci_app``, only ``bci_app.cli`` may import ``gui`` or ``models``;
- only ``bci_app.cli`` imports ``bci_app.cli`` (the CLI is a shell on top, nothing builds on it);
- no two modules import each other, however indirectly (no cycle in the module graph).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("acquisition", "bci_app", "gui", "models")


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a source file (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body (lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(dotted: str) -> None:
        # the deepest project module named by ``dotted`` (``a.b.c`` may be a name in ``a.b``)
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                found.add(candidate)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                target = _resolve_relative(name, is_package, node.level, node.module)
            if target is None:
                continue
            for alias in node.names:
                # ``from pkg import submodule`` imports the submodule; ``from mod import name``
                # imports the module
                if f"{target}.{alias.name}" in modules:
                    add(f"{target}.{alias.name}")
                else:
                    add(target)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value)
    found.discard(name)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that break the one-way rules, as readable lines."""

    def top(module: str) -> str:
        return module.split(".")[0]

    def in_cli(module: str) -> bool:
        return module == "bci_app.cli" or module.startswith("bci_app.cli.")

    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            src, dst = top(source), top(target)
            if src == "acquisition" and dst in ("bci_app", "gui", "models"):
                reason = "acquisition imports nothing above it"
            elif src == "models" and dst == "gui":
                reason = "models never imports gui"
            elif src == "gui" and dst == "models":
                reason = "gui never imports models"
            elif src == "bci_app" and dst in ("gui", "models") and not in_cli(source):
                reason = "only bci_app.cli may import gui and models"
            elif in_cli(target) and not in_cli(source):
                reason = "only bci_app.cli imports bci_app.cli (the CLI is on top)"
            else:
                continue
            bad.append(f"{source} imports {target}: {reason}")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        # iterative depth-first search: deep import chains must not hit the recursion limit
        work = [(node, iter(sorted(graph.get(node, ()))))]
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[current] = min(low[current], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[current])
                if low[current] == index[current]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == current:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


# --------------------------------------------------------------------------------- the project
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_imports_point_one_way(graph):
    assert layer_violations(graph) == []


def test_no_import_cycles(graph):
    assert import_cycles(graph) == []


def test_the_graph_sees_lazy_imports(graph):
    """The CLI's lazy imports of models and gui are edges (the checker is not blind to them)."""
    cli_targets = set().union(*(t for m, t in graph.items() if m.startswith("bci_app.cli")))
    assert any(t.startswith("models.") for t in cli_targets)
    assert any(t.startswith("gui.") for t in cli_targets)


def test_live_path_needs_no_torch():
    code = (
        "import sys, bci_app.cli.main, bci_app.cli.run, bci_app.live, bci_app.typing.evaluate,"
        " bci_app.speech.decoder;"
        "print(sorted(m for m in ('torch', 'models') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------- the checker
def _tree(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, code in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code))
    return import_graph(root)


def test_checker_catches_a_lazy_upward_import(tmp_path):
    graph = _tree(
        tmp_path,
        {
            "acquisition/__init__.py": "",
            "acquisition/stream.py": """
                def connect():
                    from bci_app.decoders import bundle  # lazy, inside a function
                    return bundle
            """,
            "bci_app/__init__.py": "",
            "bci_app/decoders/__init__.py": "",
            "bci_app/decoders/bundle.py": "import acquisition.stream\n",
            "bci_app/live.py": "def f():\n    import importlib\n"
            "    return importlib.import_module('models.train')\n",
            "bci_app/cli/__init__.py": "",
            "bci_app/cli/run.py": "def main():\n    import gui.app\n",
            "gui/__init__.py": "",
            "gui/app.py": "from bci_app.cli import run\n",
            "models/__init__.py": "",
            "models/train.py": "",
        },
    )
    assert layer_violations(graph) == [
        "acquisition.stream imports bci_app.decoders.bundle: acquisition imports nothing above it",
        "bci_app.live imports models.train: only bci_app.cli may import gui and models",
        "gui.app imports bci_app.cli.run: only bci_app.cli imports bci_app.cli (the CLI is on top)",
    ]
    assert import_cycles(graph) == [
        ["acquisition.stream", "bci_app.decoders.bundle"],
        ["bci_app.cli.run", "gui.app"],
    ]


def test_checker_catches_indirect_and_relative_cycles(tmp_path):
    graph = _tree(
        tmp_path,
        {
            "acquisition/__init__.py": "",
            "acquisition/a.py": "from . import b\n",
            "acquisition/b.py": "from acquisition.c import thing\n",
            "acquisition/c.py": "def thing():\n    from .a import x\n",
            "acquisition/d.py": "import acquisition.a\n",
        },
    )
    assert import_cycles(graph) == [["acquisition.a", "acquisition.b", "acquisition.c"]]
    assert graph["acquisition.d"] == {"acquisition.a"}
