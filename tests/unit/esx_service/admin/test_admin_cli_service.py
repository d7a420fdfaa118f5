"""`dockvols-admin policy|config|status`, help, usage and transport errors."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from esx_service.admin import cli
from esx_service.admin.db import AdminDb
from esx_service.errors import BackendError
from tests.fakes import FakeStoragePolicies

GOLD = '(("hostFailuresToTolerate" i1) ("forceProvisioning" i0))'

COMMANDS = [
    ["volume", "ls"], ["volume", "set"], ["vmgroup", "create"], ["vmgroup", "update"],
    ["vmgroup", "rm"], ["vmgroup", "ls"], ["vmgroup", "vm", "add"], ["vmgroup", "vm", "rm"],
    ["vmgroup", "vm", "ls"], ["vmgroup", "access", "add"], ["vmgroup", "access", "set"],
    ["vmgroup", "access", "rm"], ["vmgroup", "access", "ls"], ["policy", "create"],
    ["policy", "update"], ["policy", "rm"], ["policy", "ls"], ["config", "init"],
    ["config", "status"], ["status"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*command, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: dockvols-admin {' '.join(command)}")


@pytest.mark.parametrize("argv", [[], ["vmgroup"], ["vmgroup", "create"], ["volume", "frob"],
                                  ["vmgroup", "access", "set", "--name", "g", "--datastore",
                                   "d", "--allow-create", "maybe"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage: dockvols-admin" in capsys.readouterr().err


def test_an_unreachable_service_is_one_clear_line_and_exit_1(
        short_dir: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKVOLS_ADMIN_SOCKET", os.path.join(short_dir, "none.sock"))
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dockvols-admin: ServiceUnreachable: cannot reach the dockvols admin "
                          f"socket {short_dir}/none.sock")
    assert len(err.splitlines()) == 1


def test_the_socket_comes_from_the_environment_and_json_goes_anywhere(
        stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKVOLS_ADMIN_SOCKET", stack.socket)
    assert cli.main(["--json", "vmgroup", "ls"]) == 0
    assert json.loads(capsys.readouterr().out)["vmgroups"][0]["name"] == "_DEFAULT"
    assert cli.main(["vmgroup", "ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vmgroups"][0]["name"] == "_DEFAULT"


def test_status_shows_version_pid_uptime_listeners_backend_log_and_db(stack, run) -> None:
    result = run("status")
    assert result.code == 0
    lines = dict(line.split(":", 1) for line in result.out.splitlines())
    assert lines["Version"].strip() == "dockvols 0.1.0"
    assert lines["PID"].strip() == str(os.getpid())
    assert lines["Uptime"].strip().startswith("0h 0m ")
    assert lines["Backend"].strip() == "local (datastores: ds1, ds2)"
    assert lines["Listeners"].strip() == "/run/dockvols/esx.sock (VM host1)"
    assert lines["Log file"].strip() == "/var/log/dockvols.log"
    assert lines["DB"].strip() == stack.db.path
    data = json.loads(run("status", "--json").out)
    assert set(data) >= {"version", "pid", "uptime_s", "listeners", "backend", "log_file",
                         "db_path"}


def test_config_status_describes_the_services_db(stack, run) -> None:
    stack.db.create_vmgroup("g1", default_datastore="ds1")
    result = run("config", "status")
    lines = dict((k, v.strip()) for k, v in (line.split(":", 1)
                                             for line in result.out.splitlines()))
    assert lines["DB"] == stack.db.path
    assert (lines["Mode"], lines["Journal"], lines["VMGroups"], lines["Access rules"]) == (
        "local", "wal", "2", "2")


def test_config_init_creates_a_db_and_then_leaves_it_as_it_is(
        short_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(short_dir, "sub", "dockvols.db")
    assert cli.main(["config", "init", "--db", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dockvols DB created at {path} (local to this host, schema v1, "
                          "journal wal)")
    assert f"db_path = {path}" in out
    db = AdminDb(path)
    db.create_vmgroup("g1")
    db.close()
    assert cli.main(["config", "init", "--db", path, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["created"], data["config"]["vmgroups"]) == (False, 2)
    assert cli.main(["config", "init", "--db", path, "--shared"]) == 1
    assert "already holds a local (not shared) dockvols DB" in capsys.readouterr().err


def test_config_init_shared_uses_the_rollback_journal_for_every_host(
        short_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(short_dir, "shared.db")
    assert cli.main(["config", "init", "--db", path, "--shared"]) == 0
    assert "shared by the hosts of a cluster" in capsys.readouterr().out
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_config_init_refuses_a_file_that_is_not_a_db(
        short_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(short_dir, "notes.txt")
    with open(path, "w") as f:
        f.write("precious notes, not a database\n" * 20)
    assert cli.main(["config", "init", "--db", path]) == 1
    assert capsys.readouterr().err.startswith("dockvols-admin: ConfigError: cannot open")
    assert open(path).read().startswith("precious notes")


def test_policies_need_the_vsphere_backend(run) -> None:
    result = run("policy", "create", "--name", "gold", "--content", GOLD)
    assert result.code == 1
    assert result.err.strip() == ("dockvols-admin: BadRequest: VSAN storage policies need the "
                                  "vsphere backend; this service runs the local backend")
    assert run("policy", "ls", "--json").out.strip().startswith('{\n  "policies": []')


@pytest.mark.parametrize("storage_policies", [FakeStoragePolicies()])
def test_policy_create_ls_update_rm_through_the_storage_policy_service(
        stack, run, storage_policies: FakeStoragePolicies) -> None:
    """Unit test only, with a fake policy service on the local backend: the same commands run
    against vcsim's PBM through the real one in tests/integration/vsphere/
    test_storage_policies.py; the in-place update of a policy in use needs PbmUpdate, which
    vcsim 0.24 lacks, so this is where it is proven at all."""
    assert run("policy", "create", "--name", "gold", "--content", GOLD).code == 0
    assert storage_policies.policies["gold"][1] == GOLD
    result = run("policy", "create", "--name", "bad", "--content", "hostFailuresToTolerate=1")
    assert result.code == 1
    assert "InvalidOption: invalid policy rules 'hostFailuresToTolerate=1'" in result.err
    assert "bad" not in storage_policies.policies
    assert [p["name"] for p in json.loads(run("policy", "ls", "--json").out)["policies"]] \
        == ["gold"]  # the refused one left no DB row
    stack.service.create("host1", "db", {"size": "10mb"})
    meta_path = stack.datastore("ds1") / "dockvols" / "_DEFAULT" / "db.json"
    meta = json.loads(meta_path.read_text())
    meta["options"]["vsan_policy_name"] = "gold"  # the local backend refuses to make one
    meta_path.write_text(json.dumps(meta))
    new = '(("hostFailuresToTolerate" i2))'
    assert run("policy", "update", "--name", "gold", "--content", new).code == 0
    assert storage_policies.policies["gold"][1] == new  # updated in place, though in use
    rows = run("policy", "ls").out.splitlines()
    assert rows[2].split("  ")[0] == "gold" and '"hostFailuresToTolerate" i2' in rows[2]
    assert rows[2].split()[-2] == "db@ds1"
    result = run("policy", "rm", "--name", "gold")
    assert result.code == 1 and "is used by volume(s) db@ds1" in result.err
    assert "gold" in storage_policies.policies
    stack.service.remove("host1", "db")
    assert run("policy", "rm", "--name", "gold").code == 0
    assert storage_policies.policies == {}
    assert "NotFound: policy 'gold' does not exist" in run("policy", "rm", "--name",
                                                           "gold").err
    assert [c for c in storage_policies.calls if c[0] != "policy_id"] == [
        ("create_policy", "gold"), ("create_policy", "bad"), ("update_policy", "gold"),
        ("delete_policy", "gold")]


@pytest.mark.parametrize("storage_policies", [FakeStoragePolicies()])
def test_a_policy_the_policy_service_fails_to_make_leaves_no_db_row(
        stack, run, storage_policies: FakeStoragePolicies) -> None:
    storage_policies.fail["create_policy"] = BackendError("PBM at vc1 is unreachable")
    result = run("policy", "create", "--name", "gold", "--content", GOLD)
    assert result.code == 1 and "BackendError: PBM at vc1 is unreachable" in result.err
    assert stack.db.policies() == []


def test_removing_a_policy_without_a_policy_service_removes_only_its_db_row(stack, run) -> None:
    stack.db.create_policy("gold", GOLD)  # e.g. a DB shared with hosts that run vsphere
    assert run("policy", "rm", "--name", "gold").code == 0
    assert stack.db.policies() == []
