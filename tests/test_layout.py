"""The layout by floors (DESIGN.md): a module imports only from its own floor or below.

Read from the source with ``ast``, so a new upward import fails here before
it tangles the packages: ``kmesh/net`` is the ground and imports nothing else
of kmesh; the lab, the benchmarks and the CLI sit on top and nothing below
them imports ``kmesh.lab``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "kmesh"

# Bottom to top, as DESIGN.md lists the packages; the root package (``kmesh.__version__``) is below all.
FLOORS = ["net", "api", "store", "client", "apiserver", "controllers", "dns", "proxy", "cni", "policy", "l7",
          "gateway", "mesh", "node", "packet", "lab", "bench", "cli"]
TOP = {"lab", "bench", "cli"}


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else ""


def _kmesh_imports(path: Path) -> list[tuple[int, str]]:
    """(line, first package under kmesh) of every absolute kmesh import in one file, nested ones included."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module] if node.module != "kmesh" else [f"kmesh.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        for mod in mods:
            parts = mod.split(".")
            if parts[0] == "kmesh" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
    return out


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_has_a_floor() -> None:
    packages = {_package(p) for p in _modules()} - {"", "__main__"}
    assert packages <= set(FLOORS), f"packages missing from FLOORS (and DESIGN.md): {sorted(packages - set(FLOORS))}"


def test_imports_go_down_or_sideways_only() -> None:
    wrong = []
    for path in _modules():
        own = _package(path)
        if own not in FLOORS:
            continue
        for line, dep in _kmesh_imports(path):
            if dep in FLOORS and FLOORS.index(dep) > FLOORS.index(own):
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({own}) imports kmesh.{dep}")
    assert not wrong, "imports from a higher floor:\n" + "\n".join(wrong)


def test_ground_floor_imports_nothing_of_kmesh() -> None:
    wrong = [f"{p.relative_to(ROOT.parent)}:{line} imports kmesh.{dep}"
             for p in _modules() if _package(p) == "net" for line, dep in _kmesh_imports(p) if dep != "net"]
    assert not wrong, "\n".join(wrong)


def test_only_the_top_floor_imports_the_lab() -> None:
    wrong = [f"{p.relative_to(ROOT.parent)}:{line}"
             for p in _modules() if _package(p) not in TOP for line, dep in _kmesh_imports(p) if dep == "lab"]
    assert not wrong, "modules below the top floor import kmesh.lab:\n" + "\n".join(wrong)


@pytest.mark.parametrize("source", [
    "from kmesh.lab import netns\n",
    "def f():\n    from kmesh.lab.topology import LabNames\n",
    "import kmesh.lab.supervisor\n",
    "from kmesh import lab\n",
])
def test_the_checker_sees_every_import_form(tmp_path: Path, source: str) -> None:
    f = tmp_path / "m.py"
    f.write_text(source)
    assert [dep for _, dep in _kmesh_imports(f)] == ["lab"]
