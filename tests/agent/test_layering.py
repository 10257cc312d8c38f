"""The packages import one way: perception at the bottom, then dialogue, then voice, agent on top.

Every import statement is read from the source (module level, inside functions and under
``TYPE_CHECKING`` alike), so a lazy import cannot hide an upward dependency. Library modules read no
environment: only ``agent.config`` builds settings from ``EMO_*``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("perception", "dialogue", "voice", "agent")
# What each package may import of the others.
ALLOWED: dict[str, set[str]] = {
    "perception": set(),
    "dialogue": {"perception"},
    "voice": {"perception", "dialogue"},
    "agent": {"perception", "dialogue", "voice"},
}
MAX_MODULE_LINES = 420


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


def import_graph() -> dict[str, set[str]]:
    """Package → the other packages its modules import."""
    return {
        package: set().union(*(imported_packages(p) for p in modules(package))) - {package}
        for package in PACKAGES
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package: str) -> None:
    offending = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) - ALLOWED[package] - {package})
        for path in modules(package)
    }
    assert not {k: v for k, v in offending.items() if v}


def test_the_check_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from agent.config import Settings\n"
        "def f():\n    import dialogue.llm\n"
    )
    assert imported_packages(module) == {"agent", "dialogue"}


def test_no_library_module_reads_the_environment() -> None:
    readers = []
    for package in ("perception", "dialogue", "voice"):
        for path in modules(package):
            text = path.read_text()
            if re.search(r"os\.environ|os\.getenv|(?<![A-Za-z])Settings\(", text):
                readers.append(str(path.relative_to(REPO)))
    assert not readers


def test_modules_stay_small() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for package in PACKAGES
        for path in modules(package)
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long
