"""The house rules that keep the layout (ARCHITECTURE.md) true: import contracts, no private names
imported across modules, command bodies that stay thin."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "reidkit"


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out.append((name, ast.parse(p.read_text(), str(p))))
    return out


def test_import_contracts_hold() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        exe = Path(shutil.which("lint-imports") or "lint-imports")
    root = SRC.parents[1]
    res = subprocess.run([str(exe), "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "broken" in res.stdout and " 0 broken" in res.stdout


def test_no_private_name_is_imported_from_another_module() -> None:
    bad = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reidkit"):
                if node.module == name:
                    continue
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                bad += [f"{name}: from {node.module} import {n}" for n in private]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", ["cli"])
def test_command_bodies_stay_thin(package: str) -> None:
    """A command parses, calls the API and prints: none over about 60 lines (its signature aside)."""
    long = []
    for name, tree in _modules():
        if not name.startswith(f"reidkit.{package}"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_cmd"):
                first = node.body[0]
                start = node.body[1].lineno if isinstance(first, ast.Expr) and len(node.body) > 1 else first.lineno
                lines = (node.end_lineno or start) - start + 1
                if lines > 60:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)
