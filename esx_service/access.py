"""Tenant access rules: which vmgroup a VM is in and what it may create there (quotas).

The seam through which vmgroups and quotas reach volume operations. (Not to be confused with
VSAN *storage* policies, ``vsan-policy-name``: those are ``esx_service.vsphere.storage_policies``.)

``OpenAccess`` puts every VM in ``_DEFAULT`` and allows everything; the admin DB provides a
stricter implementation of the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

DEFAULT_VMGROUP = "_DEFAULT"


class AccessRules(Protocol):
    def vmgroup_of(self, vm: str) -> str:
        """The vmgroup (tenant) a VM belongs to."""

    def default_datastore(self, vmgroup: str) -> str | None:
        """The vmgroup's default datastore, if one is set."""

    def check_create(self, vmgroup: str, datastore: str, size_mb: int,
                     used_mb: Callable[[], int]) -> None:
        """Raise AccessDenied or QuotaExceeded if the create is not allowed; ``used_mb``
        computes the vmgroup's current use on the datastore (costly: call only if needed)."""

    def counts_use(self, vmgroup: str, datastore: str) -> bool:
        """Whether ``check_create`` there weighs the vmgroup's current use (a total quota):
        only then must creates and grows in the vmgroup exclude each other across hosts
        while they check and record (the quota lease)."""


class OpenAccess:
    def vmgroup_of(self, vm: str) -> str:
        return DEFAULT_VMGROUP

    def default_datastore(self, vmgroup: str) -> str | None:
        return None

    def check_create(self, vmgroup: str, datastore: str, size_mb: int,
                     used_mb: Callable[[], int]) -> None:
        return None

    def counts_use(self, vmgroup: str, datastore: str) -> bool:
        return False
