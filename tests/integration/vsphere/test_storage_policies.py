"""`dockvols-admin policy` reaches vSphere: the admin API, the volume layer and the vsphere
backend on vcsim (vCenter model), PBM looked at with plain pyVmomi.

A policy the admin creates is a PBM storage policy that `vsan-policy-name` can name; one the
admin removes is gone from PBM; a refused request leaves neither PBM nor the admin DB changed.
vcsim has no PbmUpdate: an update is a delete + create there, refused for a policy in use.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import pbm

from bench.processes import Daemon, python_daemon
from esx_service.admin.admin_api import AdminApi
from esx_service.admin.db import AdminDb
from esx_service.admin.importer import Importer
from esx_service.admin.service import AdminService
from esx_service.backends.vsphere import VsphereBackend
from esx_service.errors import InvalidOption
from esx_service.volumes import VolumeService
from plugin.errors import ServiceError
from plugin.esx_client import HttpEsxClient

from .conftest import Vcsim

pytestmark = pytest.mark.integration

VM0 = "DC0_H0_VM0"
GOLD = '(("hostFailuresToTolerate" i1) ("forceProvisioning" i0))'
DEFAULT_POLICY = "vSAN Default Storage Policy"  # one of vcsim's built-in policies


def admin_api(service: VolumeService, db: AdminDb) -> AdminApi:
    """The admin routes wired as main() wires them: the backend's own policy service."""
    backend = service.backend
    assert backend.storage_policies is not None  # the vsphere backend has one
    return AdminApi(AdminService(service, db, backend.storage_policies),
                    Importer(service, backend, db))


@pytest.fixture
def admin(service: VolumeService, tmp_path: Path) -> Iterator[AdminApi]:
    db = AdminDb(str(tmp_path / "dockvols.db"))
    yield admin_api(service, db)
    db.close()


@pytest.fixture
def policy() -> str:
    """A policy name no other test uses (vcsim's PBM is shared by the session)."""
    return f"gold-{uuid.uuid4().hex[:8]}"


def call(admin: AdminApi, method: str, path: str, body: dict | None = None
         ) -> tuple[int, dict]:
    raw = json.dumps(body).encode() if body is not None else b""
    return admin.handle(method, f"/v1/admin/{path}", raw, VM0)


def in_pbm(backend: VsphereBackend) -> dict[str, Any]:
    """Storage policies as PBM has them now (name -> profile), read with plain pyVmomi."""
    manager = backend.session.pbm_content().profileManager
    ids = manager.PbmQueryProfile(resourceType=pbm.profile.ResourceType(resourceType="STORAGE"),
                                  profileCategory="REQUIREMENT")
    return {p.name: p for p in manager.PbmRetrieveContent(profileIds=ids)}


def rules_of(profile: Any) -> list[tuple[str, str, object]]:
    return [(cap.id.namespace, cap.id.id, cap.constraint[0].propertyInstance[0].value)
            for sub in profile.constraints.subProfiles for cap in sub.capability]


def db_policies(admin: AdminApi) -> dict[str, dict]:
    status, reply = call(admin, "GET", "policies")
    assert status == 200, reply
    return {p["name"]: p for p in reply["policies"]}


def create_policy(admin: AdminApi, name: str, content: str = GOLD) -> None:
    status, reply = call(admin, "POST", "policies", {"name": name, "content": content})
    assert status == 201, reply


def test_a_policy_the_admin_creates_is_in_pbm_and_a_new_volume_can_name_it(
        admin: AdminApi, backend: VsphereBackend, service: VolumeService, name: str,
        policy: str, soap_calls: list[tuple[str, tuple]]) -> None:
    create_policy(admin, policy)
    profile = in_pbm(backend)[policy]
    assert rules_of(profile) == [("VSAN", "hostFailuresToTolerate", 1),
                                 ("VSAN", "forceProvisioning", 0)]
    created = service.create(VM0, name, {"vsan-policy-name": policy})
    assert created["vsan_policy_name"] == policy
    [(_, _, spec)] = [args for method, args in soap_calls if method == "CreateVirtualDisk_Task"]
    assert [p.profileId for p in spec.profile] == [profile.profileId.uniqueId]
    assert service.get(VM0, name)["vsan_policy_name"] == policy  # the volume records it
    assert db_policies(admin)[policy]["volumes"] == [created["name"]]
    service.remove(VM0, name)
    assert call(admin, "DELETE", f"policies/{policy}")[0] == 200


def test_an_unknown_policy_name_is_still_refused_listing_the_known_ones(
        admin: AdminApi, backend: VsphereBackend, service: VolumeService, name: str,
        policy: str) -> None:
    create_policy(admin, policy)
    with pytest.raises(InvalidOption) as raised:
        service.create(VM0, name, {"vsan-policy-name": f"{policy}-nope"})
    message = raised.value.message
    assert f"{policy + '-nope'!r}" in message
    known = message.split("known storage policies: ", 1)[1].split(", ")
    assert policy in known and DEFAULT_POLICY in known
    assert call(admin, "DELETE", f"policies/{policy}")[0] == 200


def test_removing_a_policy_in_use_is_refused_and_leaves_it_in_pbm_and_the_db(
        admin: AdminApi, backend: VsphereBackend, service: VolumeService, name: str,
        policy: str) -> None:
    create_policy(admin, policy)
    created = service.create(VM0, name, {"vsan-policy-name": policy})
    status, reply = call(admin, "DELETE", f"policies/{policy}")
    assert status == 400, reply
    assert f"used by volume(s) {created['name']}" in reply["error"]["message"]
    assert policy in in_pbm(backend)
    assert policy in db_policies(admin)
    service.remove(VM0, name)
    assert call(admin, "DELETE", f"policies/{policy}")[0] == 200


def test_removing_an_unused_policy_removes_it_from_pbm_and_new_volumes_cannot_name_it(
        admin: AdminApi, backend: VsphereBackend, service: VolumeService, name: str,
        policy: str) -> None:
    create_policy(admin, policy)
    service.create(VM0, name, {"vsan-policy-name": policy})  # the backend now knows its id
    service.remove(VM0, name)
    status, reply = call(admin, "DELETE", f"policies/{policy}")
    assert status == 200, reply
    assert policy not in in_pbm(backend)
    assert policy not in db_policies(admin)
    with pytest.raises(InvalidOption, match=f"unknown vsan-policy-name '{policy}'"):
        service.create(VM0, name, {"vsan-policy-name": policy})
    status, reply = call(admin, "DELETE", f"policies/{policy}")
    assert (status, reply["error"]["code"]) == (404, "NotFound")


@pytest.mark.parametrize("content,bad", [
    ('(("hostFailuresToTolerate" x1))', "'x1'"),
    ('(("hostFailuresToTolerate" i1) ("stripeWidth" (i1 i2)))', """'("stripeWidth" (i1 i2))'"""),
    ("hostFailuresToTolerate=1", "'hostFailuresToTolerate=1'"),
])
def test_bad_rules_are_refused_naming_the_bad_part_and_nothing_is_created(
        admin: AdminApi, backend: VsphereBackend, policy: str, content: str, bad: str,
        soap_calls: list[tuple[str, tuple]]) -> None:
    before = set(in_pbm(backend))
    status, reply = call(admin, "POST", "policies", {"name": policy, "content": content})
    assert (status, reply["error"]["code"]) == (400, "InvalidOption")
    assert bad in reply["error"]["message"]
    assert set(in_pbm(backend)) == before
    assert not [m for m, _ in soap_calls if m == "PbmCreate"]
    assert policy not in db_policies(admin)


def test_a_name_pbm_already_has_is_refused_naming_it_and_no_db_row_is_left(
        admin: AdminApi, backend: VsphereBackend) -> None:
    status, reply = call(admin, "POST", "policies",
                         {"name": DEFAULT_POLICY.upper(), "content": GOLD})
    assert (status, reply["error"]["code"]) == (400, "BadRequest")
    assert f"storage policy named {DEFAULT_POLICY!r} already exists" in reply["error"]["message"]
    assert db_policies(admin) == {}
    assert [n for n in in_pbm(backend) if n.lower() == DEFAULT_POLICY.lower()] == [DEFAULT_POLICY]


def test_a_policy_service_that_fails_leaves_no_db_row(fresh_vcsim: Vcsim, tmp_path: Path,
                                                      policy: str) -> None:
    with fresh_vcsim.backend() as backend:
        assert DEFAULT_POLICY in backend.storage_policies.policies()  # logged in, PBM found
        db = AdminDb(str(tmp_path / "dockvols.db"))
        admin = admin_api(VolumeService(backend), db)
        fresh_vcsim.stop()
        status, reply = call(admin, "POST", "policies", {"name": policy, "content": GOLD})
        assert (status, reply["error"]["code"]) == (502, "BackendError")
        assert db.policies() == []  # read directly: `policy ls` needs vSphere to count users
        db.close()


def test_an_unused_policy_is_updated_in_pbm_and_the_db(
        admin: AdminApi, backend: VsphereBackend, policy: str,
        soap_calls: list[tuple[str, tuple]]) -> None:
    create_policy(admin, policy)
    new = '(("hostFailuresToTolerate" i2) ("replicaPreference" "RAID-1 (Mirroring)"))'
    status, reply = call(admin, "PUT", f"policies/{policy}", {"content": new})
    assert status == 200, reply
    assert "PbmUpdate" in [m for m, _ in soap_calls]  # tried first: real vCenter has it
    assert rules_of(in_pbm(backend)[policy]) == [
        ("VSAN", "hostFailuresToTolerate", 2), ("VSAN", "replicaPreference", "RAID-1 (Mirroring)")]
    assert db_policies(admin)[policy]["content"] == new
    assert call(admin, "DELETE", f"policies/{policy}")[0] == 200


def test_a_policy_in_use_is_not_replaced_where_pbm_cannot_update_in_place(
        admin: AdminApi, backend: VsphereBackend, service: VolumeService, name: str,
        policy: str) -> None:
    create_policy(admin, policy)
    service.create(VM0, name, {"vsan-policy-name": policy})
    before = in_pbm(backend)[policy]
    status, reply = call(admin, "PUT", f"policies/{policy}",
                         {"content": '(("hostFailuresToTolerate" i2))'})
    assert (status, reply["error"]["code"]) == (502, "BackendError")
    assert f"storage policy {policy!r} is used by volumes" in reply["error"]["message"]
    after = in_pbm(backend)[policy]
    assert after.profileId.uniqueId == before.profileId.uniqueId
    assert rules_of(after) == rules_of(before)
    assert db_policies(admin)[policy]["content"] == GOLD
    service.remove(VM0, name)
    assert call(admin, "DELETE", f"policies/{policy}")[0] == 200


# -- dockvols-admin, against a real dockvols-esx-service on vcsim ---------------------------
@dataclass
class Service:
    daemon: Daemon
    admin_socket: str
    vm_client: HttpEsxClient  # the VM-facing socket, as the plugin of DC0_H0_VM0 calls it


@pytest.fixture
def esx_on_vcsim(vcsim: Vcsim) -> Iterator[Service]:
    """dockvols-esx-service with the vsphere backend on the session vcsim, wired by its own
    main(): the admin routes reach PBM through the backend's policy service, nothing faked."""
    short = tempfile.mkdtemp(prefix="dvp-", dir="/tmp")  # unix socket paths: 107 bytes at most
    sock, admin_sock = f"{short}/esx.sock", f"{short}/admin.sock"
    daemon = python_daemon("esx_service", "esx_service", {
        "DOCKVOLS_CONFIG": "", "DOCKVOLS_BACKEND": "vsphere", "DOCKVOLS_VM_NAME": VM0,
        "DOCKVOLS_VSPHERE_HOST": vcsim.host, "DOCKVOLS_VSPHERE_PORT": str(vcsim.port),
        "DOCKVOLS_VSPHERE_USER": vcsim.user, "DOCKVOLS_VSPHERE_PASSWORD": vcsim.password,
        "DOCKVOLS_VSPHERE_INSECURE": "true", "DOCKVOLS_SOCKET": sock,
        "DOCKVOLS_ADMIN_SOCKET": admin_sock, "DOCKVOLS_DB": f"{short}/dockvols.db",
        "DOCKVOLS_DATA_DIR": f"{short}/data", "DOCKVOLS_LOG_LEVEL": "DEBUG",
    }, Path(short) / "esx_service.log", admin_sock)
    daemon.start()
    try:
        yield Service(daemon, admin_sock, HttpEsxClient(f"unix://{sock}", timeout=30))
    finally:
        daemon.stop()
        shutil.rmtree(short, ignore_errors=True)


def admin_cli(service: Service, *argv: str) -> subprocess.CompletedProcess:
    """dockvols-admin as an admin runs it: its own process, over the admin socket."""
    return subprocess.run([sys.executable, "-m", "esx_service.admin.cli", *argv,
                           "--socket", service.admin_socket],
                          capture_output=True, text=True, timeout=60)


def test_dockvols_admin_policy_commands_reach_pbm_through_the_running_service(
        esx_on_vcsim: Service, backend: VsphereBackend, name: str, policy: str) -> None:
    svc = esx_on_vcsim
    made = admin_cli(svc, "policy", "create", "--name", policy, "--content", GOLD)
    assert made.returncode == 0, made.stderr + svc.daemon.log_tail()
    assert made.stdout.strip() == f"policy {policy} created"
    assert rules_of(in_pbm(backend)[policy]) == [("VSAN", "hostFailuresToTolerate", 1),
                                                 ("VSAN", "forceProvisioning", 0)]
    created = svc.vm_client.create(name, {"vsan-policy-name": policy.upper()})
    assert created["vsan_policy_name"] == policy.upper()
    listed = json.loads(admin_cli(svc, "policy", "ls", "--json").stdout)["policies"]
    assert [(p["name"], p["content"], p["volumes"]) for p in listed] == [
        (policy, GOLD, [created["name"]])]
    # in use: PBM here cannot update in place, and nothing may remove it
    update = admin_cli(svc, "policy", "update", "--name", policy, "--content",
                       '(("hostFailuresToTolerate" i2))')
    assert update.returncode == 1
    assert f"BackendError: storage policy {policy!r} is used by volumes" in update.stderr
    refused = admin_cli(svc, "policy", "rm", "--name", policy)
    assert refused.returncode == 1
    assert f"is used by volume(s) {created['name']}" in refused.stderr
    assert rules_of(in_pbm(backend)[policy])[0] == ("VSAN", "hostFailuresToTolerate", 1)
    svc.vm_client.remove(name)
    removed = admin_cli(svc, "policy", "rm", "--name", policy)
    assert removed.returncode == 0, removed.stderr
    assert policy not in in_pbm(backend)
    assert json.loads(admin_cli(svc, "policy", "ls", "--json").stdout)["policies"] == []
    with pytest.raises(ServiceError) as gone:
        svc.vm_client.create(name, {"vsan-policy-name": policy})
    assert gone.value.code == "InvalidOption"
    assert f"unknown vsan-policy-name {policy!r}" in gone.value.message


def test_dockvols_admin_refuses_bad_rules_before_pbm_or_the_db_changes(
        esx_on_vcsim: Service, backend: VsphereBackend, policy: str) -> None:
    before = set(in_pbm(backend))
    bad = admin_cli(esx_on_vcsim, "policy", "create", "--name", policy, "--content",
                    '(("hostFailuresToTolerate" x1))')
    assert bad.returncode == 1
    assert bad.stderr.startswith("dockvols-admin: InvalidOption: invalid value 'x1'")
    assert set(in_pbm(backend)) == before
    assert json.loads(admin_cli(esx_on_vcsim, "policy", "ls", "--json").stdout) == {
        "policies": []}
