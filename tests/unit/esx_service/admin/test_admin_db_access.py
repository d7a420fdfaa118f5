"""Tenant access rules from the admin DB (DbAccess): vmgroup membership, default datastore,
allow-create and the size quotas."""

from __future__ import annotations

import pytest

from esx_service.access import DEFAULT_VMGROUP
from esx_service.admin.db import ALL_DATASTORES, AdminDb
from esx_service.admin.db_access import DbAccess
from esx_service.errors import AccessDenied, QuotaExceeded


def never() -> int:
    raise AssertionError("used_mb was computed although no total size is set")


@pytest.fixture
def access(db: AdminDb) -> DbAccess:
    db.create_vmgroup("g1", default_datastore="datastore1")
    db.add_vms("g1", ["vm1"])
    return DbAccess(db)


def test_vms_in_no_vmgroup_belong_to_default(access: DbAccess) -> None:
    assert access.vmgroup_of("vm1") == "g1"
    assert access.vmgroup_of("vm2") == DEFAULT_VMGROUP


def test_default_datastore_comes_from_the_vmgroup(access: DbAccess) -> None:
    assert access.default_datastore("g1") == "datastore1"
    assert access.default_datastore(DEFAULT_VMGROUP) is None
    assert access.default_datastore("gone") is None


def test_a_datastore_without_a_rule_is_denied_with_the_command_that_grants_it(
        access: DbAccess) -> None:
    with pytest.raises(AccessDenied) as exc:
        access.check_create("g1", "datastore2", 10, never)
    assert exc.value.message == (
        "vmgroup g1 has no access to datastore datastore2; an admin can grant it: "
        "dockvols-admin vmgroup access add --name g1 --datastore datastore2 --allow-create")


def test_allow_create_off_is_denied(access: DbAccess, db: AdminDb) -> None:
    db.set_access("g1", "datastore1", allow_create=False)
    with pytest.raises(AccessDenied, match="may not create volumes on datastore datastore1: "
                                           "allow-create is off"):
        access.check_create("g1", "datastore1", 10, never)


def test_a_volume_over_maxsize_is_refused_naming_limit_and_ask(access: DbAccess,
                                                              db: AdminDb) -> None:
    db.set_access("g1", "datastore1", volume_maxsize_mb=500)
    access.check_create("g1", "datastore1", 500, never)
    with pytest.raises(QuotaExceeded) as exc:
        access.check_create("g1", "datastore1", 501, never)
    assert exc.value.message == ("volume-maxsize of vmgroup g1 on datastore1 is 500mb; "
                                 "501mb was asked")


def test_a_create_over_totalsize_is_refused_naming_limit_use_and_ask(access: DbAccess,
                                                                    db: AdminDb) -> None:
    db.set_access("g1", "datastore1", volume_totalsize_mb=1000)
    access.check_create("g1", "datastore1", 200, lambda: 800)  # exactly full is allowed
    with pytest.raises(QuotaExceeded) as exc:
        access.check_create("g1", "datastore1", 300, lambda: 800)
    assert exc.value.message == ("volume-totalsize of vmgroup g1 on datastore1 is 1000mb; "
                                 "800mb is used and 300mb was asked")


def test_the_all_datastores_rule_applies_and_is_named(access: DbAccess, db: AdminDb) -> None:
    db.add_access("g1", ALL_DATASTORES, allow_create=True, volume_maxsize_mb=50)
    access.check_create("g1", "datastore2", 50, never)
    with pytest.raises(QuotaExceeded, match=r"on datastore2 \(rule _ALL_DS\) is 50mb"):
        access.check_create("g1", "datastore2", 60, never)


def test_an_admin_change_applies_to_the_next_check(access: DbAccess, db: AdminDb) -> None:
    access.check_create("g1", "datastore1", 10, never)
    db.set_access("g1", "datastore1", allow_create=False)
    with pytest.raises(AccessDenied):
        access.check_create("g1", "datastore1", 10, never)
