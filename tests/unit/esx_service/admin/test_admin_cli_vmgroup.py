"""`dockvols-admin vmgroup ...` against an AdminApi on a real unix socket, and the rules it
sets as the volume service then enforces them."""

from __future__ import annotations

import json

import pytest

from esx_service.errors import AccessDenied, QuotaExceeded, VolumeNotFound


def table(out: str) -> list[list[str]]:
    """Rows of a table (header and rule dropped), cells split on runs of 2+ spaces."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[2:]]


def test_vmgroup_create_ls_update_rm(stack, run) -> None:
    result = run("vmgroup", "create", "--name", "g1", "--description", "team one",
                 "--default-datastore", "DS2", "--vm-list", "vm1,vm2")
    assert (result.code, result.out.strip()) == (0, "vmgroup g1 created")
    stack.service.create("vm1", "db", {"size": "10mb"})
    rows = table(run("vmgroup", "ls").out)
    assert [r[:5] for r in rows] == [["_DEFAULT", "VMs in no other vmgroup", "-", "-", "0"],
                                     ["g1", "team one", "ds2", "vm1,vm2", "1"]]
    assert run("vmgroup", "update", "--name", "g1", "--description", "team 1").code == 0
    assert json.loads(run("vmgroup", "ls", "--json").out)["vmgroups"][1]["description"] == \
        "team 1"
    stack.service.remove("vm1", "db")
    assert run("vmgroup", "update", "--name", "g1", "--new-name", "g2").code == 0
    assert run("vmgroup", "rm", "--name", "g2").out.strip() == "vmgroup g2 removed"
    assert [g["name"] for g in json.loads(run("vmgroup", "ls", "--json").out)["vmgroups"]] == \
        ["_DEFAULT"]


def test_vmgroup_create_with_an_unknown_default_datastore_creates_nothing(run) -> None:
    result = run("vmgroup", "create", "--name", "g1", "--default-datastore", "nope")
    assert result.code == 1
    assert "UnknownDatastore: unknown datastore 'nope'; known datastores: ds1, ds2" in result.err
    assert "g1" not in run("vmgroup", "ls").out


def test_vmgroup_create_with_a_vm_of_another_vmgroup_creates_nothing(run) -> None:
    run("vmgroup", "create", "--name", "g1", "--vm-list", "vm1")
    result = run("vmgroup", "create", "--name", "g2", "--vm-list", "vm2,vm1")
    assert "VM 'vm1' is already in vmgroup 'g1'" in result.err
    assert "g2" not in run("vmgroup", "ls").out


def test_a_vmgroup_with_volumes_is_not_renamed(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1", "--default-datastore", "ds1", "--vm-list", "vm1")
    stack.service.create("vm1", "db", {"size": "10mb"})
    result = run("vmgroup", "update", "--name", "g1", "--new-name", "g2")
    assert result.code == 1 and "cannot be renamed while it has volumes" in result.err


def test_removing_a_vmgroup_that_owns_volumes_needs_remove_volumes(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1", "--default-datastore", "ds1", "--vm-list", "vm1")
    stack.service.create("vm1", "db", {"size": "10mb"})
    stack.service.create("vm1", "web", {"size": "10mb"})
    result = run("vmgroup", "rm", "--name", "g1")
    assert result.code == 1
    assert result.err.strip() == (
        "dockvols-admin: BadRequest: vmgroup 'g1' owns 2 volume(s): db@ds1, web@ds1; remove "
        "them first, or pass --remove-volumes to remove them with it")
    folder = stack.datastore("ds1") / "dockvols" / "g1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "db-flat.vmdk", "db.json", "db.vmdk", "web-flat.vmdk", "web.json", "web.vmdk"]
    result = run("vmgroup", "rm", "--name", "g1", "--remove-volumes")
    assert result.out.strip() == "vmgroup g1 removed with 2 volume(s): db@ds1, web@ds1"
    assert list(folder.iterdir()) == []


def test_removing_a_vmgroup_with_attached_volumes_deletes_nothing(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1", "--default-datastore", "ds1", "--vm-list", "vm1")
    stack.service.create("vm1", "a", {"size": "10mb"})
    stack.service.create("vm1", "b", {"size": "10mb"})
    stack.service.attach("vm1", "b")
    result = run("vmgroup", "rm", "--name", "g1", "--remove-volumes")
    assert result.code == 1
    assert "VolumeInUse: vmgroup 'g1' has attached volumes: b@ds1 (VM vm1)" in result.err
    assert len(stack.service.list("vm1")) == 2


def test_the_default_vmgroup_is_not_removed(run) -> None:
    result = run("vmgroup", "rm", "--name", "_DEFAULT", "--remove-volumes")
    assert result.code == 1 and "cannot be removed" in result.err


def test_vmgroup_vm_add_ls_rm(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1")
    assert run("vmgroup", "vm", "add", "--name", "g1", "--vm-list", "vm1,vm2").code == 0
    assert table(run("vmgroup", "vm", "ls", "--name", "g1").out) == [["vm1"], ["vm2"]]
    assert stack.service.access.vmgroup_of("vm2") == "g1"
    assert run("vmgroup", "vm", "rm", "--name", "g1", "--vm-list", "vm2").code == 0
    assert json.loads(run("vmgroup", "vm", "ls", "--name", "g1", "--json").out) == \
        {"vms": ["vm1"]}
    assert stack.service.access.vmgroup_of("vm2") == "_DEFAULT"
    result = run("vmgroup", "vm", "rm", "--name", "g1", "--vm-list", "vm2")
    assert "NotFound: VM 'vm2' is not in vmgroup 'g1'" in result.err


def test_a_vm_holding_attached_volumes_cannot_change_vmgroup(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1", "--default-datastore", "ds1")
    stack.service.create("vm1", "db", {"size": "10mb"})  # vm1 is still in _DEFAULT
    stack.service.attach("vm1", "db")
    result = run("vmgroup", "vm", "add", "--name", "g1", "--vm-list", "vm1")
    assert result.code == 1
    assert "db@ds1 (_DEFAULT, VM vm1); detach them before moving the VM" in result.err
    stack.service.detach("vm1", "db")
    assert run("vmgroup", "vm", "add", "--name", "g1", "--vm-list", "vm1").code == 0


def test_access_add_ls_set_rm(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1", "--default-datastore", "ds1", "--vm-list", "vm1")
    assert run("vmgroup", "access", "add", "--name", "g1", "--datastore", "ds2",
               "--allow-create", "--volume-maxsize", "500MB", "--volume-totalsize",
               "1gb").code == 0
    stack.service.create("vm1", "db@ds2", {"size": "100mb"})
    assert table(run("vmgroup", "access", "ls", "--name", "g1").out) == [
        ["ds1", "yes", "unlimited", "unlimited", "0mb"],
        ["ds2", "yes", "500mb", "1gb", "100mb"]]
    assert run("vmgroup", "access", "set", "--name", "g1", "--datastore", "ds2",
               "--allow-create", "false", "--volume-totalsize", "unlimited").code == 0
    assert json.loads(run("vmgroup", "access", "ls", "--name", "g1", "--json").out)[
        "access"][1] == {"vmgroup": "g1", "datastore": "ds2", "allow_create": False,
                         "volume_maxsize_mb": 500, "volume_totalsize_mb": 0, "used_mb": 100}
    assert run("vmgroup", "access", "rm", "--name", "g1", "--datastore", "ds2").code == 0
    assert [r[0] for r in table(run("vmgroup", "access", "ls", "--name", "g1").out)] == ["ds1"]


def test_access_rules_take_all_ds_and_refuse_unknown_datastores_and_bad_sizes(run) -> None:
    run("vmgroup", "create", "--name", "g1")
    assert run("vmgroup", "access", "add", "--name", "g1", "--datastore", "_all_ds").code == 0
    result = run("vmgroup", "access", "add", "--name", "g1", "--datastore", "ds9")
    assert "or _ALL_DS (every datastore without a rule)" in result.err
    result = run("vmgroup", "access", "add", "--name", "g1", "--datastore", "ds1",
                 "--volume-maxsize", "lots")
    assert result.code == 1
    assert "InvalidOption: volume_maxsize: invalid size 'lots'" in result.err


def test_access_rules_are_enforced_on_create(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1", "--default-datastore", "ds1", "--vm-list", "vm1")
    run("vmgroup", "access", "set", "--name", "g1", "--datastore", "ds1",
        "--volume-maxsize", "500mb", "--volume-totalsize", "1000mb")
    stack.service.create("vm1", "a", {"size": "500mb"})
    stack.service.create("vm1", "b", {"size": "300mb"})
    with pytest.raises(QuotaExceeded, match=r"^volume-maxsize of vmgroup g1 on ds1 is 500mb; "
                                            r"600mb was asked$"):
        stack.service.create("vm1", "c", {"size": "600mb"})
    with pytest.raises(QuotaExceeded, match=r"^volume-totalsize of vmgroup g1 on ds1 is "
                                            r"1000mb; 800mb is used and 300mb was asked$"):
        stack.service.create("vm1", "c", {"size": "300mb"})
    stack.service.create("vm1", "c", {"size": "200mb"})  # exactly to the total
    with pytest.raises(AccessDenied, match="vmgroup g1 has no access to datastore ds2"):
        stack.service.create("vm1", "d@ds2", {"size": "10mb"})
    run("vmgroup", "access", "add", "--name", "g1", "--datastore", "ds2")
    with pytest.raises(AccessDenied, match="allow-create is off"):
        stack.service.create("vm1", "d@ds2", {"size": "10mb"})
    assert sorted(v["name"] for v in stack.service.list("vm1")) == ["a@ds1", "b@ds1", "c@ds1"]


def test_vmgroups_see_only_their_own_volumes_under_the_same_names(stack, run) -> None:
    run("vmgroup", "create", "--name", "g1", "--default-datastore", "ds1", "--vm-list", "vm1")
    stack.service.create("vm1", "db", {"size": "10mb"})
    stack.service.create("host1", "db", {"size": "20mb"})  # _DEFAULT's own db
    assert [v["capacity_mb"] for v in stack.service.list("vm1")] == [10]
    assert [v["capacity_mb"] for v in stack.service.list("host1")] == [20]
    stack.service.remove("host1", "db")
    with pytest.raises(VolumeNotFound):
        stack.service.get("host1", "db")
    assert stack.service.get("vm1", "db")["capacity_mb"] == 10
    vols = json.loads(run("volume", "ls", "--json").out)["volumes"]
    assert [(v["vmgroup"], v["name"]) for v in vols] == [("g1", "db@ds1")]
