"""StoragePolicies (the vsphere backend's VSAN policy service) against a PBM that HAS
PbmUpdate, as a real vCenter does.

Unit tests only: vcsim 0.24 answers PbmUpdate with MethodNotFound, so the in-place update
(the one a policy in use needs) cannot run there; tests/integration/vsphere/
test_storage_policies.py covers create, delete, lookup and the delete+create fallback on
vcsim through the same class.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from pyVmomi import pbm

from esx_service.vsphere.storage_policies import StoragePolicies

GOLD = '(("hostFailuresToTolerate" i1) ("forceProvisioning" i0))'


class FakeProfileManager:
    """PBM's profile manager with Update: name -> profile id, and what each call got."""

    def __init__(self, profiles: dict[str, str]) -> None:
        self.profiles = dict(profiles)
        self.calls: list[tuple[str, Any]] = []

    def QueryProfile(self, resourceType: Any, profileCategory: str) -> list[Any]:
        return [pbm.profile.ProfileId(uniqueId=pid) for pid in self.profiles.values()]

    def RetrieveContent(self, profileIds: list[Any]) -> list[Any]:
        return [SimpleNamespace(name=name, profileId=pbm.profile.ProfileId(uniqueId=pid))
                for name, pid in self.profiles.items()]

    def Update(self, profileId: Any, updateSpec: Any) -> None:
        self.calls.append(("Update", (profileId.uniqueId, updateSpec)))

    def Create(self, createSpec: Any) -> Any:
        self.calls.append(("Create", createSpec))
        self.profiles[createSpec.name] = f"new-{len(self.profiles)}"
        return pbm.profile.ProfileId(uniqueId=self.profiles[createSpec.name])

    def Delete(self, profileId: list[Any]) -> list[Any]:
        self.calls.append(("Delete", [p.uniqueId for p in profileId]))
        return []


class FakeSession:
    endpoint = "vc1.example:443"

    def __init__(self, manager: FakeProfileManager) -> None:
        self._content = SimpleNamespace(profileManager=manager)

    def invoke(self, call: Callable[[], Any]) -> Any:
        return call()

    def pbm_content(self) -> Any:
        return self._content


def test_a_policy_in_use_is_updated_in_place_keeping_its_id_where_pbm_can() -> None:
    manager = FakeProfileManager({"gold": "pid-1"})
    policies = StoragePolicies(FakeSession(manager))
    policies.update_policy("GOLD", '(("hostFailuresToTolerate" i2))', in_use=True)
    [(method, (pid, spec))] = manager.calls
    assert (method, pid) == ("Update", "pid-1")
    [sub] = spec.constraints.subProfiles
    assert [(c.id.namespace, c.id.id, c.constraint[0].propertyInstance[0].value)
            for c in sub.capability] == [("VSAN", "hostFailuresToTolerate", 2)]
    assert policies.policy_id("gold") == "pid-1"


def test_updating_a_policy_pbm_does_not_have_creates_it() -> None:
    manager = FakeProfileManager({})
    policies = StoragePolicies(FakeSession(manager))
    policies.update_policy("gold", GOLD)
    assert [method for method, _ in manager.calls] == ["Create"]
    assert policies.policy_id("gold") == manager.profiles["gold"]
