"""vDVS's volume names through a real dockerd: symbols, spaces, other scripts, '@' inside the
name, datastores with spaces and mixed case; the name as typed everywhere a person looks,
file-safe names on the datastore."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from esx_service.file_names import SAFE_STEM, file_stem

from .conftest import Docker, make_volume


def run(dv: Docker, volume: str, script: str) -> str:
    return dv.out("run", "--rm", "--mount", f"type=volume,source={volume},target=/data,"
                  f"volume-driver={dv.driver}", "busybox", "sh", "-c", script)


@pytest.mark.parametrize("name", ["my vol #1", "données+é", "a*b!?卷"])
def test_a_vdvs_name_is_created_used_listed_and_inspected_as_typed(
        dv: Docker, datastore: Path, name: str) -> None:
    make_volume(dv, name, "size=120mb")
    run(dv, name, "echo kept > /data/f && sync")
    assert run(dv, name, "cat /data/f") == "kept"
    assert name in dv.out("volume", "ls", "-q", "--filter", f"driver={dv.driver}").splitlines()
    info = dv.inspect_volume(name)
    assert info["Name"] == name and info["Status"]["datastore"] == "datastore1"
    # the volume's files, not the lock folder (`.lease-<stem>`) its last operation kept
    files = [f for f in os.listdir(datastore / "dockvols" / "_DEFAULT") if f[0] != "."]
    assert f"{file_stem(name)}.vmdk" in files
    assert all(SAFE_STEM.fullmatch(f.split(".")[0]) for f in files)
    dv("volume", "rm", name)


def test_an_at_inside_the_name_and_a_datastore_with_spaces_and_other_case(
        dv: Docker, run_dir: Path) -> None:
    name = "team@db@my data store"
    make_volume(dv, name)
    run(dv, name, "echo x > /data/x && sync")
    info = dv.inspect_volume(name)
    assert info["Name"] == name
    assert info["Status"]["datastore"] == "My Data Store"
    assert (run_dir / "ds3" / "dockvols" / "_DEFAULT" / f"{file_stem('team@db')}.vmdk").exists()
    assert name in dv.out("volume", "ls", "-q").splitlines()
    dv("volume", "rm", name)


@pytest.mark.parametrize(("bad", "why"), [("a\\b", "path separator"),
                                          ("db-000001", "clashes with VMFS"),
                                          ("x\u202egnp", "invisible formatting")])
def test_what_vdvs_refused_is_refused_with_the_rule(dv: Docker, bad: str, why: str) -> None:
    done = dv("volume", "create", "-d", dv.driver, bad, check=False)
    assert done.returncode != 0
    assert why in done.stderr, done.stderr
