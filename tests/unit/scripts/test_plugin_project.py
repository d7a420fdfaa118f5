"""scripts/plugin_project.py: the managed plugin's image installs the guest's half only."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "plugin_project.py"
spec = importlib.util.spec_from_file_location("plugin_project", SCRIPT)
assert spec and spec.loader
plugin_project = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin_project)


def test_the_plugin_project_holds_the_guest_packages_and_the_plugin_extra_only(
        tmp_path: Path) -> None:
    out = tmp_path / "project"
    plugin_project.write_project(REPO, out)
    with open(REPO / "pyproject.toml", "rb") as f:
        repo = tomllib.load(f)["project"]
    with open(out / "pyproject.toml", "rb") as f:
        made = tomllib.load(f)
    assert sorted(p.name for p in out.iterdir()) == ["dockvols_common", "plugin",
                                                     "pyproject.toml"]
    assert made["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "plugin*", "dockvols_common*"]
    assert made["project"]["dependencies"] == repo["optional-dependencies"]["plugin"]
    assert made["project"]["dynamic"] == ["version"]
    assert made["tool"]["setuptools"]["dynamic"] == {
        "version": {"attr": "dockvols_common.__version__"}}
    assert made["project"]["scripts"] == {"dockvols": "plugin.cli:main",
                                          "dockvols-plugin": "plugin.main:main"}
    copied = {p.relative_to(out).as_posix() for p in out.rglob("*.py")}
    assert "plugin/main.py" in copied and "dockvols_common/http_client.py" in copied
    assert not [p for p in out.rglob("*") if p.name == "__pycache__"]


def test_it_refuses_a_directory_that_holds_something(tmp_path: Path) -> None:
    (tmp_path / "left.txt").write_text("x")
    with pytest.raises(SystemExit, match="is not empty"):
        plugin_project.write_project(REPO, tmp_path)
