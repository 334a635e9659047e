"""Imports point one way (acquisition <- bci_app <- gui; models beside); no torch when live."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {
    "acquisition": {"bci_app", "gui", "models"},
    "bci_app": {"gui", "models"},
    "gui": {"models"},
}


def _top_level_imports(path: Path) -> set[str]:
    """Packages imported at module level (imports inside functions are lazy and allowed)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(_top_level_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_live_path_needs_no_torch():
    code = (
        "import sys, bci_app.cli, bci_app.live, bci_app.session, bci_app.evaluate;"
        "print(sorted(m for m in ('torch', 'models') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
