#!/usr/bin/env python3
"""Write the managed plugin's own Python project, from this tree, into an empty directory.

The repository is one project (pyproject.toml) holding both halves, so its wheel would put
esx_service, admin_web and the host's admin tools into the plugin image. `make plugin`
instead builds this smaller project: the guest's packages only (plugin/ and the
dockvols_common/ it shares with the host), the ``plugin`` extra's dependencies as its own, and
the console scripts that run its code. Name, version and dependencies are read from
pyproject.toml (the version, as there, from dockvols_common), so the two cannot drift apart.

    plugin_project.py REPO OUT_DIR     # then: pip wheel OUT_DIR
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

PACKAGES = ("plugin", "dockvols_common")  # what the guest runs; nothing of the host
EXTRA = "plugin"


def plugin_pyproject(project: dict) -> str:
    """The TOML of the plugin-only project, from the repository's parsed pyproject."""
    meta = project["project"]
    deps = meta["optional-dependencies"][EXTRA]
    scripts = {name: target for name, target in meta.get("scripts", {}).items()
               if target.split(":")[0].split(".")[0] in PACKAGES}
    lines = [
        "[build-system]",
        f"requires = {_toml_list(project['build-system']['requires'])}",
        f"build-backend = \"{project['build-system']['build-backend']}\"",
        "",
        "[project]",
        f"name = \"{meta['name']}-plugin\"",
        "dynamic = [\"version\"]",
        f"description = \"{meta['description']} (the managed plugin's half)\"",
        f"requires-python = \"{meta['requires-python']}\"",
        f"dependencies = {_toml_list(deps)}",
        "",
        "[project.scripts]",
        *(f"{name} = \"{target}\"" for name, target in sorted(scripts.items())),
        "",
        "[tool.setuptools.dynamic]",
        f"version = {{attr = \"{project['tool']['setuptools']['dynamic']['version']['attr']}\"}}",
        "",
        "[tool.setuptools.packages.find]",
        f"include = {_toml_list([f'{p}*' for p in PACKAGES])}",
        "",
    ]
    return "\n".join(lines)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f"\"{item}\"" for item in items) + "]"


def write_project(repo: Path, out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"plugin_project: {out} is not empty; give an empty or new directory")
    out.mkdir(parents=True, exist_ok=True)
    with open(repo / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    (out / "pyproject.toml").write_text(plugin_pyproject(project), encoding="utf-8")
    for package in PACKAGES:
        shutil.copytree(repo / package, out / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    write_project(Path(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
