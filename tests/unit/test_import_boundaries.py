"""The house rules on imports, read from the source with ast (lazy imports inside functions
count too): the guest (plugin/) and the host (esx_service/) never import each other, and
dockvols_common, which both import, takes nothing but the standard library (esx_service runs
on ESXi's Python; the plugin image carries no host code)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# package -> the top-level names its modules must never import
FORBIDDEN = {
    "plugin": {"esx_service", "admin_web"},
    "esx_service": {"plugin", "admin_web"},
    "dockvols_common": {"plugin", "esx_service", "admin_web"},
}


def imported_tops(source: str) -> set[str]:
    """Top-level package names a module imports; relative imports (its own package) are
    left out."""
    tops = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def violations(package: str, allowed_only: frozenset[str] | None = None) -> list[str]:
    """``file: name`` for each forbidden import in ``package`` (and, given ``allowed_only``,
    each import outside it)."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for top in sorted(imported_tops(path.read_text(encoding="utf-8"))):
            outside = allowed_only is not None and top not in allowed_only
            if top in FORBIDDEN[package] or outside:
                found.append(f"{path.relative_to(REPO)}: {top}")
    return found


@pytest.mark.parametrize("package", ["plugin", "esx_service"])
def test_the_guest_and_the_host_never_import_each_other(package: str) -> None:
    assert violations(package) == []


def test_the_shared_package_imports_only_the_standard_library() -> None:
    allowed = frozenset(sys.stdlib_module_names) | {"dockvols_common", "__future__"}
    assert violations("dockvols_common", allowed) == []


def _dist_name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()


def test_the_plugin_imports_only_what_its_image_installs() -> None:
    """The managed plugin's venv holds plugin/, dockvols_common/ and the ``plugin`` extra's
    dependencies (scripts/plugin_project.py): an import of anything else works in .venv and
    fails in the image."""
    with open(REPO / "pyproject.toml", "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["plugin"]
    declared = {_dist_name(r) for r in extra}
    providers = importlib.metadata.packages_distributions()
    own = {"plugin", "dockvols_common", "__future__"}
    undeclared = []
    for package in ("plugin", "dockvols_common"):
        for path in sorted((REPO / package).rglob("*.py")):
            for top in imported_tops(path.read_text(encoding="utf-8")):
                if top in own or top in sys.stdlib_module_names:
                    continue
                dists = {_dist_name(d) for d in providers.get(top, [])}
                if not dists & declared:
                    undeclared.append(f"{path.relative_to(REPO)}: {top} ({sorted(dists)})")
    assert undeclared == [], "add their distributions to the plugin extra in pyproject.toml"


def test_the_import_reader_sees_absolute_lazy_and_dotted_imports_but_not_relative_ones() -> None:
    source = (
        "import os.path\n"
        "from esx_service.atomic import x\n"
        "from . import sibling\n"
        "from .errors import PluginError\n"
        "def later():\n"
        "    import pyVmomi.vim\n"
    )
    assert imported_tops(source) == {"os", "esx_service", "pyVmomi"}
