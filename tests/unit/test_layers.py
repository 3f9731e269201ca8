"""docs/architecture.md matches the tree: every package of reconciler/ is in its layout
table, every import between packages is one the table allows, no module is over 300
lines, and no code inspects `__cause__` or calls another module's private names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reconciler"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_LINES = 300


def layout() -> dict[str, set[str] | None]:
    """Package -> the packages it may import (None: any but those named after "but")."""
    text = ARCHITECTURE.read_text()
    table = text.split("## Layout", 1)[1].split("\n\n", 2)[1]
    allowed: dict[str, set[str] | None] = {}
    everything = {p.stem if p.is_file() else p.name for p in units()}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = [n.strip("`/").removesuffix(".py") for n in re.findall(r"`([^`]+)`", cells[0])]
        rule = cells[2]
        if rule.startswith("nothing"):
            may: set[str] | None = set()
        elif rule.startswith("everything"):
            but = {
                w.strip() for w in rule.removeprefix("everything").removeprefix(" but ").split(",")
            }
            may = everything - but if "but" in rule else set(everything)
        else:
            may = {w.strip() for w in rule.split(",")}
        for name in names:
            allowed[name] = may
    return allowed


def units() -> list[Path]:
    return [
        p
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem != "__init__")
    ]


def unit_of(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("reconciler")
        ):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from reconciler import failpoints / __version__
                found.update(a.name for a in node.names if not a.name.startswith("_"))
    return found


def test_every_package_is_in_the_layout_table() -> None:
    table = layout()
    tree = {unit_of(p) for p in units()}
    assert tree - set(table) == set(), "packages missing from docs/architecture.md"
    assert set(table) - tree == set(), "docs/architecture.md names packages that do not exist"


def test_imports_follow_the_layout_table() -> None:
    table = layout()
    units_ = {unit_of(p) for p in units()}
    broken = []
    for path in PACKAGE.rglob("*.py"):
        own = unit_of(path)
        if own == "__init__":  # the package's own facts (version, default namespace)
            continue
        may = table[own] or set()
        for used in imports(path) & units_:
            if used != own and used not in may:
                broken.append(f"{path.relative_to(ROOT)} imports {used}")
    assert broken == []


def test_no_module_is_over_300_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


# the standard library's public functions whose names begin with "_" (both documented)
DOCUMENTED_UNDERSCORE = {"os._exit", "sys._current_frames"}


def test_no_cause_inspection_and_no_private_names_of_other_modules() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "__cause__":
                found.append(f"{path.name}:{node.lineno} reads __cause__")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reconciler"):
                found += [
                    f"{path.name}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id not in ("self", "cls")
                and node.value.id in imported_modules(tree)
                and f"{node.value.id}.{node.attr}" not in DOCUMENTED_UNDERSCORE
            ):
                found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert found == []


def imported_modules(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names
