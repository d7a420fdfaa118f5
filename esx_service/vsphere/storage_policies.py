"""Storage policies through PBM (vCenter's policy service): the name -> id lookup that
``vsan-policy-name`` uses, and the admin's create, update and delete of VSAN policies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pyVmomi import pbm, vmodl

from ..errors import BackendError, BadRequest, InvalidOption
from . import vsan_rules
from .faults import fault_name, translate
from .session import VsphereSession

log = logging.getLogger("dockvols.vsphere")
T = TypeVar("T")
POLICY_TTL = 60.0  # storage policies change rarely; an unknown name refreshes at once
# A policy service without PbmUpdate (vcsim) answers MethodNotFound.
NOT_UPDATABLE = (vmodl.fault.MethodNotFound, vmodl.fault.NotImplemented,
                 vmodl.fault.NotSupported)


class StoragePolicies:
    def __init__(self, session: VsphereSession) -> None:
        self.session = session
        self._policies: tuple[float, dict[str, str]] | None = None

    def _pbm(self, call: Callable[[pbm.profile.ProfileManager], T], what: str,
             passing: tuple[type[BaseException], ...] = ()) -> T:
        """One call on PBM's profile manager (vCenter only), faults but ``passing`` translated.
        The name cache is dropped after each call: ``policies`` refills it once done."""
        try:
            return self.session.invoke(lambda: call(self.session.pbm_content().profileManager))
        except passing:
            raise
        except vmodl.MethodFault as exc:
            raise translate(exc, what) from exc
        finally:
            self._policies = None

    def policies(self, fresh: bool = False) -> dict[str, str]:
        """Storage policy name -> profile id (PBM, vCenter only), cached for a minute."""
        cached = self._policies
        if not fresh and cached is not None and time.monotonic() - cached[0] < POLICY_TTL:
            return cached[1]

        def query(manager: pbm.profile.ProfileManager) -> dict[str, str]:
            ids = manager.QueryProfile(
                resourceType=pbm.profile.ResourceType(resourceType="STORAGE"),
                profileCategory="REQUIREMENT")
            return {p.name: p.profileId.uniqueId
                    for p in (manager.RetrieveContent(profileIds=ids) if ids else [])}
        found = self._pbm(query, "listing storage policies")
        self._policies = (time.monotonic(), found)
        return found

    def policy_id(self, name: str) -> str:
        for fresh in (False, True):
            known = self.policies(fresh)
            match = vsan_rules.find(known, name)
            if match:
                return match[1]
        raise InvalidOption(f"unknown vsan-policy-name {name!r}; known storage policies: "
                            f"{', '.join(sorted(known)) or 'none'}")

    def create_policy(self, name: str, content: str) -> str:
        """A VSAN policy ``name`` of the vDVS rules ``content``; its profile id."""
        # refuse bad rules before asking the server
        spec = vsan_rules.create_spec(name, vsan_rules.parse_rules(content))
        found = vsan_rules.find(self.policies(fresh=True), name)
        if found:
            raise BadRequest(f"a storage policy named {found[0]!r} already exists at "
                             f"{self.session.endpoint}; choose another name")
        made = self._pbm(lambda m: m.Create(createSpec=spec), f"creating policy {name!r}")
        log.info("storage policy %s created: %s (%s)", name, made.uniqueId, content)
        return made.uniqueId

    def delete_policy(self, name: str) -> None:
        """Removes the storage policy ``name``; one that does not exist is already removed."""
        found = vsan_rules.find(self.policies(fresh=True), name)
        if found is not None:
            what = f"deleting storage policy {found[0]!r}"
            outcomes = self._pbm(lambda m: m.Delete(
                profileId=[pbm.profile.ProfileId(uniqueId=found[1])]), what)
            failed = next((o.fault for o in outcomes or [] if o.fault is not None), None)
            if failed is not None:
                raise translate(failed, what)
            log.info("storage policy %s deleted (%s)", found[0], found[1])

    def update_policy(self, name: str, content: str, *, in_use: bool = True) -> None:
        """New rules for ``name`` (created if missing) through PbmUpdate. A server without it
        (vcsim) gets delete + create, which changes the profile id: refused while the policy
        is ``in_use``, as those volumes' disks keep the old id."""
        spec = vsan_rules.update_spec(vsan_rules.parse_rules(content))  # refuse bad rules first
        found = vsan_rules.find(self.policies(fresh=True), name)
        if found is None:
            self.create_policy(name, content)
            return
        pid = pbm.profile.ProfileId(uniqueId=found[1])
        try:
            self._pbm(lambda m: m.Update(profileId=pid, updateSpec=spec),
                      f"updating storage policy {found[0]!r}", passing=NOT_UPDATABLE)
        except NOT_UPDATABLE as exc:
            if in_use:
                raise BackendError(
                    f"storage policy {found[0]!r} is used by volumes and the policy service "
                    f"at {self.session.endpoint} cannot update it in place ({fault_name(exc)}); "
                    "replacing it would change its id under them") from exc
            self.delete_policy(found[0])
            self.create_policy(found[0], content)
