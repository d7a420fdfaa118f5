"""`dockvols-admin volume import` (--path and --from-vdvs) against the in-process admin
stack: LocalBackend on tmp datastores, the admin DB and its quota rules."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from esx_service.file_names import file_stem
from esx_service.vmdk import describe_vmdk

SECTORS = 131072  # 64 MiB
QEMU_DESCRIPTOR = """# Disk DescriptorFile
version=1
CID=d3b7247a
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW {sectors} FLAT "{extent}" 0

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.adapterType = "ide"
{extra}"""


def make_disk(folder: Path, stem: str, extra: str = "", sectors: int = SECTORS) -> Path:
    """A flat VMDK as qemu-img writes one (descriptor padded with NULs to 512 bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = QEMU_DESCRIPTOR.format(sectors=sectors, extent=f"{stem}-flat.vmdk", extra=extra)
    (folder / f"{stem}.vmdk").write_bytes(text.encode().ljust(512, b"\0"))
    with open(folder / f"{stem}-flat.vmdk", "wb") as f:
        f.truncate(sectors * 512)
        f.seek(1024)
        f.write(b"data the import must keep")
    return folder / f"{stem}.vmdk"


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_import_moves_the_disk_into_place_with_metadata_from_its_descriptor(stack, run):
    make_disk(stack.datastore("ds1") / "elsewhere", "disk")
    result = run("volume", "import", "--path", "[ds1] elsewhere/disk.vmdk", "--name", "my data")
    assert result.code == 0, result.err
    assert "as volume my data@ds1 of vmgroup _DEFAULT (64mb" in result.out
    folder = stack.datastore("ds1") / "dockvols" / "_DEFAULT"
    stem = file_stem("my data")
    assert sorted(os.listdir(folder)) == [f"{stem}-flat.vmdk", f"{stem}.json", f"{stem}.vmdk"]
    assert not (stack.datastore("ds1") / "elsewhere" / "disk-flat.vmdk").exists()
    facts = describe_vmdk((folder / f"{stem}.vmdk").read_bytes())
    assert facts.extents == (("FLAT", f"{stem}-flat.vmdk"),) and facts.uuid
    assert b"data the import must keep" in (folder / f"{stem}-flat.vmdk").read_bytes()
    view = stack.service.get("host1", "my data")
    assert (view["volume"], view["capacity_mb"], view["diskformat"]) == ("my data", 64,
                                                                         "zeroedthick")
    assert view["formatted"] is False  # the guest probes before any mkfs
    assert "my data" in run("volume", "ls").out


def test_import_into_a_vmgroup_counts_against_its_quota(stack, run):
    stack.db.create_vmgroup("g1", default_datastore="ds1")
    stack.db.set_access("g1", "ds1", volume_totalsize_mb=50)
    make_disk(stack.datastore("ds1") / "x", "big")
    before = files_under(stack.datastore("ds1"))
    result = run("volume", "import", "--path", "[ds1] x/big.vmdk", "--name", "big",
                 "--vmgroup", "g1")
    assert result.code == 1 and "QuotaExceeded" in result.err and "64mb" in result.err
    assert files_under(stack.datastore("ds1")) == before
    stack.db.set_access("g1", "ds1", volume_totalsize_mb=100)
    assert run("volume", "import", "--path", "[ds1] x/big.vmdk", "--name", "big",
               "--vmgroup", "g1").code == 0
    assert (stack.datastore("ds1") / "dockvols" / "g1" / "big.vmdk").exists()


def test_import_refuses_what_it_cannot_adopt_and_moves_nothing(stack, run):
    ds = stack.datastore("ds1")
    make_disk(ds / "x", "ok")
    (ds / "x" / "notes.vmdk").write_text("hello, not a disk\n")
    (ds / "x" / "hosted.vmdk").write_bytes(b"KDMV" + bytes(508))
    make_disk(ds / "x", "child", extra="")
    child = (ds / "x" / "child.vmdk").read_bytes().replace(b"parentCID=ffffffff",
                                                           b"parentCID=1234abcd")
    (ds / "x" / "child.vmdk").write_bytes(child)
    stack.service.create("host1", "taken", {})
    before = files_under(ds)
    for path, name, want in [
        ("[ds1] x/notes.vmdk", "a", "not a VMDK descriptor"),
        ("[ds1] x/ok-flat.vmdk", "a", "not a VMDK descriptor"),
        ("[ds1] x/hosted.vmdk", "a", "monolithicFlat"),
        ("[ds1] x/child.vmdk", "a", "delta disk"),
        ("[ds1] x/none.vmdk", "a", "no such file"),
        ("[nowhere] x/ok.vmdk", "a", "unknown datastore 'nowhere'"),
        ("x/ok.vmdk", "a", "[datastore] folder/disk.vmdk"),
        ("[ds1] x/ok.vmdk", "taken", "VolumeExists"),
        ("[ds1] x/ok.vmdk", "a@ds2", "on its own datastore"),
        ("[ds1] x/ok.vmdk", "a/b", "path separator"),
        ("[ds1] x/ok.vmdk", "a", None),  # attached: set up below
    ]:
        if want is None:
            stack.losetup.devices["/dev/loop9"] = (str(ds / "x" / "ok-flat.vmdk"), False)
            want = "attached to this host"
        result = run("volume", "import", "--path", path, "--name", name)
        assert result.code == 1, (path, name, result.out)
        assert want in result.err, (path, name, result.err)
    assert files_under(ds) == before


def test_import_needs_path_and_name_or_from_vdvs(stack, run):
    assert run("volume", "import", "--name", "x").code == 2
    assert run("volume", "import", "--from-vdvs", "--path", "[ds1] a.vmdk").code == 2


# -- vDVS --------------------------------------------------------------------------------
VDVS_DEFAULT = "11111111-1111-1111-1111-111111111111"
TEAM_UUID = "9c4e8f30-2d1b-4f3a-8a55-0123456789ab"
ORPHAN_UUID = "00000000-dead-beef-0000-000000000000"


def vdvs_tree(ds: Path) -> None:
    """What vDVS leaves on a datastore: tenant folders by UUID, _DEFAULT linked to the
    default tenant's, disks named as typed, options in .vmfd side-cars, tenants in its DB."""
    root = ds / "dockvols"
    default = root / VDVS_DEFAULT
    make_disk(default, "db", extra='ddb.sidecars = "docker-volume-vsphere,db-1a2b3c.vmfd"\n')
    side = json.dumps({"status": "detached", "volOpts": {
        "size": "64mb", "access": "read-only", "fstype": "xfs", "diskformat": "thin"}})
    (default / "db-1a2b3c.vmfd").write_text(side.ljust(4095) + "\n")
    make_disk(default, "my logs")  # no side-car
    (root / "_DEFAULT").symlink_to(VDVS_DEFAULT)
    make_disk(root / TEAM_UUID, "web")
    (root / TEAM_UUID / "web-99ff.vmfd").write_text('{"volOpts": {"attach-as": "persistent"')
    make_disk(root / ORPHAN_UUID, "lost")
    conn = sqlite3.connect(root / "vmdkops_config.db")
    conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT, description TEXT)")
    conn.executemany("INSERT INTO tenants VALUES (?, ?, '')",
                     [(VDVS_DEFAULT, "_DEFAULT"), (TEAM_UUID, "team")])
    conn.commit()
    conn.close()


def test_from_vdvs_dry_run_reports_every_volume_and_changes_nothing(stack, run):
    ds = stack.datastore("ds1")
    vdvs_tree(ds)
    stack.db.create_vmgroup("team")
    before = files_under(ds)
    result = run("volume", "import", "--from-vdvs", "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert any(line.startswith(f"would adopt [ds1] dockvols/{VDVS_DEFAULT}/db.vmdk as db@ds1 "
                               "(vmgroup _DEFAULT; access=read-only from vDVS side-car")
               and "fstype=xfs from vDVS side-car" in line for line in lines), lines
    assert any("my logs@ds1" in line and "fstype=ext4 assumed (no readable vDVS side-car)"
               in line for line in lines), lines
    assert any("web@ds1 (vmgroup team" in line for line in lines), lines
    assert any(line.startswith(f"skipped [ds1] dockvols/{ORPHAN_UUID}/lost.vmdk: folder")
               for line in lines), lines
    assert lines[-1] == "would adopt 3, skipped 1 (of 4 VMDK files found in dockvols/ folders)"
    assert files_under(ds) == before


def test_from_vdvs_adopts_keeping_vdvs_options_and_a_second_run_skips_them(stack, run):
    ds = stack.datastore("ds1")
    vdvs_tree(ds)
    stack.db.create_vmgroup("team", default_datastore="ds1")  # with an allow-create rule
    result = run("volume", "import", "--from-vdvs", "--datastore", "DS1")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1].startswith("adopted 3, skipped 1")
    views = {v["volume"]: v for v in stack.service.list("host1")}
    assert sorted(views) == ["db", "my logs"]  # listed once, though _DEFAULT is a link
    assert (views["db"]["access"], views["db"]["fstype"]) == ("read-only", "xfs")
    assert views["my logs"]["fstype"] == "ext4" and views["db"]["formatted"] is False
    team = [m.name for m in stack.service.volumes_in("ds1", "team")]
    assert team == ["web"] and (ds / "dockvols" / "team" / "web.vmdk").exists()
    again = run("volume", "import", "--from-vdvs")
    assert "skipped [ds1] dockvols/_DEFAULT/db.vmdk" not in again.out  # the link is not walked
    assert f"skipped [ds1] dockvols/{VDVS_DEFAULT}/db.vmdk: already a dockvols volume" \
        in again.out


def test_from_vdvs_skips_a_vmgroup_dockvols_does_not_have_and_says_how(stack, run):
    vdvs_tree(stack.datastore("ds1"))
    result = run("volume", "import", "--from-vdvs")
    assert "vDVS vmgroup 'team'" in result.out
    assert "dockvols-admin vmgroup create --name team" in result.out


def test_a_failed_metadata_write_puts_the_disk_back_where_it_was(stack, run, monkeypatch):
    from esx_service.errors import BackendError

    ds = stack.datastore("ds1")
    make_disk(ds / "x", "disk")
    before = files_under(ds)

    def broken(loc, data, fence=None, attachment=False, before_disk=False):
        raise BackendError("disk full")
    monkeypatch.setattr(stack.service.backend, "write_metadata", broken)
    result = run("volume", "import", "--path", "[ds1] x/disk.vmdk", "--name", "d")
    assert result.code == 1 and "disk full" in result.err
    assert [f for f in files_under(ds) if not f.startswith("dockvols")] == \
        [f for f in before if not f.startswith("dockvols")]
    assert describe_vmdk((ds / "x" / "disk.vmdk").read_bytes()).extents[0][1] == \
        "disk-flat.vmdk"


def test_importing_a_volumes_own_disk_under_another_name_is_refused_and_moves_nothing(
        stack, run):
    # it moved the disk away and left the first volume a record without a disk
    ds = stack.datastore("ds1")
    stack.service.create("host1", "old db", {"size": "8mb"})
    stem = file_stem("old db")
    before = files_under(ds)
    result = run("volume", "import", "--path", f"[ds1] dockvols/_DEFAULT/{stem}.vmdk",
                 "--name", "new name")
    assert result.code == 1 and "VolumeExists" in result.err
    assert "it is the disk of old db@ds1" in result.err and "clone-from" in result.err
    assert files_under(ds) == before
    assert stack.service.get("host1", "old db")["status"] == "detached"
    # a record whose stem names no volume (written by hand) protects its disk all the same
    make_disk(ds / "dockvols" / "_DEFAULT", "odd~zz")
    (ds / "dockvols" / "_DEFAULT" / "odd~zz.json").write_text("{}")
    before = files_under(ds)
    result = run("volume", "import", "--path", "[ds1] dockvols/_DEFAULT/odd~zz.vmdk",
                 "--name", "other")
    assert result.code == 1 and "the volume recorded in dockvols/_DEFAULT/odd~zz.json" \
        in result.err
    assert files_under(ds) == before
