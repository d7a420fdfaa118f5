"""scripts/debian_mirror.py: `make plugin` debootstraps from the mirror apt already uses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "debian_mirror.py"
spec = importlib.util.spec_from_file_location("debian_mirror", SCRIPT)
assert spec and spec.loader
debian_mirror = importlib.util.module_from_spec(spec)
spec.loader.exec_module(debian_mirror)


@pytest.fixture
def etc_apt(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    return tmp_path


def test_deb822_sources_give_the_release_archive_not_security(etc_apt: Path) -> None:
    (etc_apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\n# a comment\nURIs: http://proxy.local:3142/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main contrib\n")
    assert debian_mirror.find_mirror(etc_apt) == "http://proxy.local:3142/debian"


def test_one_line_entries_with_options_are_read(etc_apt: Path) -> None:
    (etc_apt / "sources.list").write_text(
        "# deb http://commented.out/debian bookworm main\n"
        "deb-src http://src.only/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.lan/debian "
        "trixie main non-free-firmware\n")
    assert debian_mirror.find_mirror(etc_apt) == "http://mirror.lan/debian"


def test_third_party_and_disabled_repositories_are_skipped(etc_apt: Path) -> None:
    (etc_apt / "sources.list.d" / "nodesource.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.example/node_20.x\nSuites: nodistro\n"
        "Components: main\n")
    (etc_apt / "sources.list.d" / "old.list.disabled").write_text(
        "deb http://disabled.example/debian bookworm main\n")
    (etc_apt / "sources.list.d" / "off.sources").write_text(
        "Types: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\n"
        "Components: main\n")
    assert debian_mirror.find_mirror(etc_apt) is None
    assert debian_mirror.main(["debian_mirror.py", str(etc_apt)]) == 1
