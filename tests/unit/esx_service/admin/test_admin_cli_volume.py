"""`dockvols-admin volume ls|set` against an AdminApi on a real unix socket."""

from __future__ import annotations

import json


def make(stack, vm: str, name: str, size: str = "10mb", **opts: str) -> None:
    stack.service.create(vm, name, {"size": size, **opts})


def test_volume_ls_shows_every_vmgroup_with_all_columns_and_totals(stack, run) -> None:
    stack.db.create_vmgroup("g1", default_datastore="ds2")
    stack.db.add_vms("g1", ["vm1"])
    make(stack, "vm1", "db", "20mb", fstype="ext4", access="read-only")
    make(stack, "host1", "web")
    make(stack, "host1", "logs@ds2", "1gb", diskformat="zeroedthick")
    result = run("volume", "ls")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split("  ")[0] == "Volume"
    for header in ("Volume", "Datastore", "VMGroup", "Capacity", "Used", "Filesystem",
                   "Policy", "Disk Format", "Attached To", "Access", "Attach As",
                   "Created By", "Created"):
        assert header in lines[0]
    rows = [line.split() for line in lines[2:5]]
    assert [r[:4] for r in rows] == [["web", "ds1", "_DEFAULT", "10mb"],
                                     ["logs", "ds2", "_DEFAULT", "1gb"],
                                     ["db", "ds2", "g1", "20mb"]]
    assert "read-only" in lines[4] and "vm1" in lines[4]
    assert "zeroedthick" in lines[3] and rows[1][4] == "1gb"  # thick: all of it allocated
    assert rows[0][4] == "0mb"  # thin: nothing written yet
    totals = result.out.split("\n\n")[1].splitlines()
    assert totals[0].split() == ["Datastore", "Volumes", "Capacity", "Used", "Free"]
    assert totals[2].split()[:3] == ["ds1", "1", "10mb"]
    assert totals[3].split()[:3] == ["ds2", "2", "1gb"]


def test_volume_ls_shows_a_capacity_exactly_and_a_total_rounded(stack, run) -> None:
    make(stack, "host1", "odd", "1536mb", diskformat="zeroedthick")
    result = run("volume", "ls")
    assert result.code == 0, result.err
    row = result.out.splitlines()[2].split()
    assert row[:5] == ["odd", "ds1", "_DEFAULT", "1536mb", "1.5gb"]  # capacity, used
    totals = result.out.split("\n\n")[1].splitlines()
    assert totals[2].split()[:4] == ["ds1", "1", "1.5gb", "1.5gb"]


def test_volume_ls_filters_by_datastore_and_vmgroup(stack, run) -> None:
    stack.db.create_vmgroup("g1", default_datastore="ds1")
    stack.db.add_vms("g1", ["vm1"])
    make(stack, "vm1", "a")
    make(stack, "host1", "b")
    make(stack, "host1", "c@ds2")
    data = json.loads(run("volume", "ls", "--datastore", "DS1", "--json").out)
    assert sorted(v["name"] for v in data["volumes"]) == ["a@ds1", "b@ds1"]
    assert [t["datastore"] for t in data["totals"]] == ["ds1"]
    data = json.loads(run("volume", "ls", "--vmgroup", "G1", "--json").out)
    assert [v["name"] for v in data["volumes"]] == ["a@ds1"]
    assert [t["volumes"] for t in data["totals"]] == [1, 0]


def test_volume_ls_of_an_unknown_datastore_names_the_known_ones(run) -> None:
    result = run("volume", "ls", "--datastore", "nope")
    assert result.code == 1
    assert result.err.strip() == ("dockvols-admin: UnknownDatastore: unknown datastore 'nope'; "
                                  "known datastores: ds1, ds2")


def test_volume_ls_columns_are_chosen_with_c(stack, run) -> None:
    make(stack, "host1", "web")
    result = run("volume", "ls", "-c", "volume,capacity,attached-to")
    assert result.out.splitlines()[:3] == ["Volume  Capacity  Attached To",
                                           "------  --------  -----------",
                                           "web     10mb      detached"]
    assert result.out.split("\n\n")[1].startswith("Datastore")  # totals still at the foot


def test_an_unknown_column_is_a_usage_error_listing_the_valid_ones(run) -> None:
    result = run("volume", "ls", "-c", "volume,colour")
    assert result.code == 2
    assert "unknown column colour; valid columns: volume,datastore," in result.err


def test_volume_ls_shows_attachment_and_half_made_volumes(stack, run) -> None:
    make(stack, "host1", "web")
    make(stack, "host1", "db")
    stack.service.attach("host1", "web")
    meta_path = stack.datastore("ds1") / "dockvols" / "_DEFAULT" / "db.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "removing"}))
    out = run("volume", "ls", "-c", "volume,attached-to").out.splitlines()
    assert out[2:4] == ["db      (removing)", "web     host1"]


def test_volume_set_makes_the_next_attach_read_only(stack, run) -> None:
    make(stack, "host1", "web")
    # a new disk attaches writable so it can be formatted; the detach reports the filesystem
    stack.service.attach("host1", "web")
    stack.service.detach("host1", "web", formatted=True)
    stack.losetup.devices.clear()
    result = run("volume", "set", "--volume", "web@ds1", "--vmgroup", "_DEFAULT",
                 "--options", "access=read-only")
    assert result.code == 0, result.err
    assert result.out.strip() == "volume web@ds1 of vmgroup _DEFAULT: access=read-only"
    stack.service.attach("host1", "web")
    assert [ro for _, ro in stack.losetup.devices.values()] == [True]


def test_volume_set_on_an_attached_volume_says_when_it_applies(stack, run) -> None:
    make(stack, "host1", "web")
    stack.service.attach("host1", "web")
    result = run("volume", "set", "--volume", "web@ds1", "--vmgroup", "_DEFAULT",
                 "--options", "attach-as=independent_persistent", "--json")
    data = json.loads(result.out)
    assert data["volume"]["attach_as"] == "independent_persistent"
    assert data["note"] == "the change applies at the next attach"


def test_volume_set_refuses_options_that_cannot_change(stack, run) -> None:
    make(stack, "host1", "web")
    result = run("volume", "set", "--volume", "web@ds1", "--vmgroup", "_DEFAULT",
                 "--options", "size=1gb")
    assert result.code == 1
    assert "InvalidOption: option size cannot be changed" in result.err
    result = run("volume", "set", "--volume", "web@ds1", "--vmgroup", "_DEFAULT",
                 "--options", "access=sometimes")
    assert "invalid value 'sometimes' for option 'access'" in result.err


def test_volume_set_needs_the_datastore_and_an_existing_volume_of_that_vmgroup(
        stack, run) -> None:
    stack.db.create_vmgroup("g1", default_datastore="ds1")
    make(stack, "host1", "web")
    result = run("volume", "set", "--volume", "web", "--vmgroup", "_DEFAULT",
                 "--options", "access=read-only")
    assert "BadRequest: name the volume with its datastore: web@DATASTORE" in result.err
    result = run("volume", "set", "--volume", "web@ds1", "--vmgroup", "g1",
                 "--options", "access=read-only")
    assert result.code == 1 and "VolumeNotFound" in result.err


def test_volume_resize_grows_a_volume_of_the_named_vmgroup(stack, run) -> None:
    stack.db.create_vmgroup("g1", default_datastore="ds2")
    stack.db.add_vms("g1", ["vm1"])
    make(stack, "vm1", "db", "100mb")
    result = run("volume", "resize", "--volume", "db", "--vmgroup", "g1", "--size", "1gb")
    assert result.code == 0, result.err
    assert result.out.strip() == ("volume db@ds2 of vmgroup g1 grown from 100mb to 1gb; "
                                  "the filesystem grows at the next mount")
    data = json.loads(run("volume", "resize", "--volume", "db@DS2", "--vmgroup", "g1",
                          "--size", "1gb", "--json").out)
    assert (data["volume"]["capacity_mb"], data["previous_capacity_mb"]) == (1024, 1024)
    listed = json.loads(run("volume", "ls", "--json").out)["volumes"]
    assert [v["capacity_mb"] for v in listed] == [1024]


def test_volume_resize_refusals_name_the_value_and_change_nothing(stack, run) -> None:
    make(stack, "host1", "web", "200mb")
    for size, expected in (("100mb", "InvalidOption: cannot shrink volume web@ds1 to 100mb: "
                                     "its size is 200mb"),
                           ("lots", "InvalidOption: invalid size 'lots'"),
                           ("60tb", "InsufficientSpace: cannot grow volume web@ds1")):
        result = run("volume", "resize", "--volume", "web", "--size", size)
        assert result.code == 1 and expected in result.err, result.err
    result = run("volume", "resize", "--volume", "ghost", "--size", "1gb")
    assert result.code == 1 and "VolumeNotFound: volume ghost@ds1 does not exist" in result.err
    stack.db.add_access("_DEFAULT", "ds1", True, 0, 300)  # volume-totalsize 300mb
    result = run("volume", "resize", "--volume", "web@ds1", "--size", "400mb")
    assert result.code == 1 and "QuotaExceeded: cannot grow volume web@ds1 from 200mb to " \
        "400mb: volume-totalsize" in result.err, result.err
    assert stack.service.get("host1", "web")["capacity_mb"] == 200
