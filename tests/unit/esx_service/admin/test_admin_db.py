from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from esx_service.access import DEFAULT_VMGROUP
from esx_service.admin.db import ALL_DATASTORES, SCHEMA_VERSION, AccessRule, AdminDb
from esx_service.errors import BadRequest, ConfigError, NotFound


def test_new_db_has_default_vmgroup_that_may_create_everywhere(db: AdminDb) -> None:
    assert [g.name for g in db.vmgroups()] == [DEFAULT_VMGROUP]
    assert db.access_rules(DEFAULT_VMGROUP) == [
        AccessRule(DEFAULT_VMGROUP, ALL_DATASTORES, True, 0, 0)]


def test_reopening_keeps_data_and_records_schema_version(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    first = AdminDb(path)
    first.create_vmgroup("g1", "team one")
    first.close()
    again = AdminDb(path)
    assert again.vmgroup("g1").description == "team one"
    assert len(again.vmgroups()) == 2  # _DEFAULT was not created twice
    assert again.info()["schema_version"] == SCHEMA_VERSION
    again.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_db_from_a_newer_dockvols_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    AdminDb(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="upgrade dockvols"):
        AdminDb(path)


def test_a_file_that_is_not_a_db_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    path.write_text("not sqlite at all, but long enough to have a header" * 10)
    with pytest.raises(ConfigError, match="cannot open the dockvols DB"):
        AdminDb(str(path))


def test_local_db_uses_wal_and_shared_db_keeps_the_rollback_journal(tmp_path: Path) -> None:
    local = AdminDb(str(tmp_path / "local.db"))
    shared = AdminDb(str(tmp_path / "shared.db"), shared=True)
    assert (local.journal_mode, local.shared) == ("wal", False)
    assert (shared.journal_mode, shared.shared) == ("delete", True)
    shared.close()
    # the mode is the DB's own: a later open without the flag keeps it shared
    assert AdminDb(str(tmp_path / "shared.db")).journal_mode == "delete"


def test_vmgroup_names_are_unique_whatever_their_case(db: AdminDb) -> None:
    db.create_vmgroup("Team")
    with pytest.raises(BadRequest, match="already exists"):
        db.create_vmgroup("team")
    assert db.vmgroup("TEAM").name == "Team"


@pytest.mark.parametrize("name", ["", "_DEFAULT", "_mine", "a/b", "a b", "x" * 101, "..", None])
def test_invalid_and_reserved_vmgroup_names_are_refused(db: AdminDb, name: object) -> None:
    with pytest.raises(BadRequest, match="invalid vmgroup name"):
        db.create_vmgroup(name)  # type: ignore[arg-type]


def test_a_vm_is_in_one_vmgroup_at_a_time(db: AdminDb) -> None:
    db.create_vmgroup("g1")
    db.create_vmgroup("g2")
    db.add_vms("g1", ["vm1"])
    db.add_vms("g1", ["vm1"])  # again into the same vmgroup: nothing to do
    with pytest.raises(BadRequest, match="already in vmgroup 'g1'"):
        db.add_vms("g2", ["vm1"])
    assert db.vmgroup_of("vm1") == "g1"
    assert db.vmgroup_of("vm-elsewhere") == DEFAULT_VMGROUP


def test_removing_a_vmgroup_sends_its_vms_back_to_default(db: AdminDb) -> None:
    db.create_vmgroup("g1", default_datastore="ds1")
    db.add_vms("g1", ["vm1"])
    db.remove_vmgroup("g1")
    assert db.vmgroup_of("vm1") == DEFAULT_VMGROUP
    assert db.info()["access_rules"] == 1  # only _DEFAULT's: g1's rule went with it
    with pytest.raises(NotFound):
        db.vmgroup("g1")


def test_default_vmgroup_can_be_neither_removed_nor_renamed_nor_joined(db: AdminDb) -> None:
    with pytest.raises(BadRequest, match="cannot be removed"):
        db.remove_vmgroup(DEFAULT_VMGROUP)
    with pytest.raises(BadRequest, match="cannot be renamed"):
        db.update_vmgroup(DEFAULT_VMGROUP, new_name="other")
    with pytest.raises(BadRequest, match="no other vmgroup"):
        db.add_vms(DEFAULT_VMGROUP, ["vm1"])


def test_default_datastore_grants_create_there_unless_a_rule_exists(db: AdminDb) -> None:
    db.create_vmgroup("g1", default_datastore="ds1")
    assert db.access_rules("g1") == [AccessRule("g1", "ds1", True, 0, 0)]
    db.add_access("g1", "ds2", allow_create=False, volume_maxsize_mb=10)
    db.update_vmgroup("g1", default_datastore="DS2")
    assert db.rule_for("g1", "ds2") == AccessRule("g1", "ds2", False, 10, 0)
    assert db.vmgroup("g1").default_datastore == "DS2"
    db.update_vmgroup("g1", default_datastore="")
    assert db.vmgroup("g1").default_datastore is None


def test_a_datastore_rule_wins_over_the_all_datastores_rule(db: AdminDb) -> None:
    db.create_vmgroup("g1")
    assert db.rule_for("g1", "ds1") is None
    db.add_access("g1", ALL_DATASTORES, allow_create=True, volume_totalsize_mb=100)
    db.add_access("g1", "ds1", allow_create=False)
    assert db.rule_for("g1", "DS1") == AccessRule("g1", "ds1", False, 0, 0)
    assert db.rule_for("g1", "ds2") == AccessRule("g1", ALL_DATASTORES, True, 0, 100)


def test_setting_an_access_rule_changes_only_the_given_fields(db: AdminDb) -> None:
    db.create_vmgroup("g1")
    db.add_access("g1", "ds1", True, 100, 1000)
    assert db.set_access("g1", "DS1", volume_totalsize_mb=0) == AccessRule(
        "g1", "ds1", True, 100, 0)
    assert db.set_access("g1", "ds1", allow_create=False).allow_create is False
    with pytest.raises(NotFound, match="no access rule for datastore ds2"):
        db.set_access("g1", "ds2", allow_create=True)
    with pytest.raises(BadRequest, match="already has an access rule"):
        db.add_access("g1", "ds1")


def test_a_maxsize_over_the_totalsize_is_refused(db: AdminDb) -> None:
    db.create_vmgroup("g1")
    with pytest.raises(BadRequest, match="no volume of that size could ever be created"):
        db.add_access("g1", "ds1", True, 2000, 1000)
    db.add_access("g1", "ds1", True, 500, 1000)
    with pytest.raises(BadRequest, match="over volume-totalsize"):
        db.set_access("g1", "ds1", volume_totalsize_mb=100)


def test_the_rule_of_the_default_datastore_cannot_be_removed(db: AdminDb) -> None:
    db.create_vmgroup("g1", default_datastore="ds1")
    db.add_access("g1", "ds2")
    with pytest.raises(BadRequest, match="is the default datastore"):
        db.remove_access("g1", "DS1")
    db.remove_access("g1", "ds2")
    with pytest.raises(NotFound):
        db.remove_access("g1", "ds2")


def test_the_db_serves_many_threads_at_once(db: AdminDb) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            db.create_vmgroup(f"g{n}")
            db.add_vms(f"g{n}", [f"vm{n}"])
            assert db.vmgroup_of(f"vm{n}") == f"g{n}"
        except BaseException as exc:  # collected: a thread's assert would vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(db.vmgroups()) == 21


def test_policies_are_created_updated_and_removed(db: AdminDb) -> None:
    db.create_policy("gold", '(("hostFailuresToTolerate" i1))')
    with pytest.raises(BadRequest, match="already exists"):
        db.create_policy("GOLD", "x")
    assert db.update_policy("gold", '(("hostFailuresToTolerate" i2))').content.endswith("i2))")
    assert [p.name for p in db.policies()] == ["gold"]
    db.remove_policy("gold")
    with pytest.raises(NotFound):
        db.policy("gold")
