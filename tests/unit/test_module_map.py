"""docs/architecture.md is where a newcomer looks first: its module map must name every module
of the packages, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAP = REPO / "docs" / "architecture.md"
MAPPED = ("dockvols_common", "plugin", "esx_service", "admin_web", "bench", "scripts")


def modules_in_tree() -> set[str]:
    return {str(p.relative_to(REPO)) for pkg in MAPPED for p in (REPO / pkg).rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}


def modules_in_map() -> set[str]:
    """Rows of the map's tables, ``| module.py | job |``, under the heading that names the
    module's folder (``### plugin/ (guest)``, ``#### esx_service/backends/``)."""
    found, folder = set(), ""
    for line in MAP.read_text().splitlines():
        heading = re.match(r"#+ (\S+/)", line)
        if heading:
            folder = heading.group(1)
        row = re.match(r"\| ([\w/]+\.py) \|", line)
        if row:
            name = row.group(1)
            found.add(name if "/" in name else folder + name)
    return found


def test_every_module_has_a_line_in_the_architecture_map() -> None:
    missing = sorted(modules_in_tree() - modules_in_map())
    assert not missing, f"add a line for each to docs/architecture.md: {missing}"


def test_the_architecture_map_names_no_module_that_is_gone() -> None:
    gone = sorted(modules_in_map() - modules_in_tree())
    assert not gone, f"docs/architecture.md lists modules that no longer exist: {gone}"
