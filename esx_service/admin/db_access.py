"""The tenant ``AccessRules`` the volume layer calls, answered from the admin DB.

Every answer is read from the DB at the time of the call, never cached: an admin's change
applies to the next request, and hosts sharing one DB agree.
"""

from __future__ import annotations

from collections.abc import Callable

from dockvols_common.sizes import size_text

from ..errors import AccessDenied, QuotaExceeded
from .db import ALL_DATASTORES, AccessRule, AdminDb


class DbAccess:
    def __init__(self, db: AdminDb) -> None:
        self.db = db

    def vmgroup_of(self, vm: str) -> str:
        return self.db.vmgroup_of(vm)

    def default_datastore(self, vmgroup: str) -> str | None:
        return self.db.default_datastore_of(vmgroup)

    def check_create(self, vmgroup: str, datastore: str, size_mb: int,
                     used_mb: Callable[[], int]) -> None:
        rule = self.db.rule_for(vmgroup, datastore)
        if rule is None:
            raise AccessDenied(
                f"vmgroup {vmgroup} has no access to datastore {datastore}; an admin can "
                f"grant it: dockvols-admin vmgroup access add --name {vmgroup} "
                f"--datastore {datastore} --allow-create")
        check_rule(rule, datastore, size_mb, used_mb)

    def counts_use(self, vmgroup: str, datastore: str) -> bool:
        rule = self.db.rule_for(vmgroup, datastore)
        return rule is not None and bool(rule.volume_totalsize_mb)


def check_rule(rule: AccessRule, datastore: str, size_mb: int,
               used_mb: Callable[[], int]) -> None:
    """Raise unless ``rule`` lets its vmgroup create a volume of ``size_mb`` on ``datastore``.
    Messages name the limit, the current use and the asked size, as an admin needs them."""
    which = "" if rule.datastore != ALL_DATASTORES else f" (rule {ALL_DATASTORES})"
    if not rule.allow_create:
        raise AccessDenied(f"vmgroup {rule.vmgroup} may not create volumes on datastore "
                           f"{datastore}: allow-create is off{which}")
    if rule.volume_maxsize_mb and size_mb > rule.volume_maxsize_mb:
        raise QuotaExceeded(f"volume-maxsize of vmgroup {rule.vmgroup} on {datastore}{which} is "
                            f"{size_text(rule.volume_maxsize_mb)}; {size_text(size_mb)} was asked")
    if rule.volume_totalsize_mb:
        used = used_mb()  # a scan of the datastore's metadata: only when a total is set
        if used + size_mb > rule.volume_totalsize_mb:
            raise QuotaExceeded(
                f"volume-totalsize of vmgroup {rule.vmgroup} on {datastore}{which} is "
                f"{size_text(rule.volume_totalsize_mb)}; {size_text(used)} is used and "
                f"{size_text(size_mb)} was asked")
