"""The admin's rules, beside ``VolumeService``: vmgroups and their VMs, access rules and
quotas, volume listing and settings, and VSAN storage policies.

The routes (``admin_api``) parse JSON and format answers; everything an admin may or may not
do is decided here. Backend capabilities come in as collaborators: ``storage_policies`` is
the backend's VSAN policy service, None where there is none (local), so this layer asks "is
there a storage-policy service?" and never which backend runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from ..access import DEFAULT_VMGROUP
from ..backends.base import DiskLocation, StoragePolicyService
from ..errors import BadRequest, DockvolsError, InvalidOption, UnknownDatastore, VolumeInUse
from ..metadata import ATTACHED, VolumeMeta
from ..names import match_datastore, parse_volume_name
from ..options import MB, parse_options
from ..volumes import VolumeService
from .db import ALL_DATASTORES, AdminDb, check_vmgroup_name

log = logging.getLogger("dockvols.admin")
SETTABLE_OPTIONS = ("access", "attach-as")  # take effect at the next attach


class AdminService:
    def __init__(self, volumes: VolumeService, db: AdminDb,
                 storage_policies: StoragePolicyService | None = None) -> None:
        self.volumes = volumes
        self.db = db
        self.storage_policies = storage_policies

    def describe(self) -> dict:
        """What ``status`` shows of the backend and the DB."""
        backend = self.volumes.backend
        return {"backend": backend.name, "datastores": [d.name for d in backend.datastores()],
                "db_path": os.path.abspath(self.db.path)}

    # -- names ------------------------------------------------------------------------
    def datastore(self, asked: str, allow_all: bool = False) -> str:
        """The datastore ``asked`` names (any case), or ALL_DATASTORES where allowed."""
        if allow_all and asked.upper() == ALL_DATASTORES:
            return ALL_DATASTORES
        known = [d.name for d in self.volumes.datastores()]
        matched = match_datastore(asked, known)
        if matched is None:
            every = f" or {ALL_DATASTORES} (every datastore without a rule)" if allow_all else ""
            raise UnknownDatastore(f"unknown datastore {asked!r}; known datastores: "
                                   f"{', '.join(known)}{every}")
        return matched

    def _group_name(self, name: str) -> str:
        """The DB's spelling of a vmgroup, or ``name`` for a folder the DB does not know."""
        found = self.db.vmgroups(name)
        return found[0].name if found else name

    def _volume_group(self, name: str) -> str:
        """A vmgroup named in a volume's path (``_DEFAULT`` or a valid vmgroup name)."""
        return self._group_name(name if name == DEFAULT_VMGROUP else check_vmgroup_name(name))

    def _metas(self, datastore: str | None = None, vmgroup: str | None = None) -> list[VolumeMeta]:
        names = [datastore] if datastore else [d.name for d in self.volumes.datastores()]
        return [m for ds in names for m in self.volumes.volumes_in(ds, vmgroup)]

    # -- volumes ----------------------------------------------------------------------
    def volume_list(self, datastore: str | None, vmgroup: str | None) -> dict:
        """Every volume (of ``datastore``, of ``vmgroup``) and per-datastore totals."""
        svc = self.volumes
        infos = svc.datastores()
        if datastore:
            wanted = self.datastore(datastore)
            infos = [d for d in infos if d.name == wanted]
        group = self._group_name(vmgroup) if vmgroup else None
        volumes, totals = [], []
        for info in infos:
            capacity = used = count = 0
            for meta in svc.volumes_in(info.name, group):
                view = svc.view(meta, DiskLocation(meta.datastore, meta.vmgroup, meta.name))
                volumes.append(view)
                count += 1
                capacity += view["capacity_mb"]
                used += view["allocated_mb"]
            totals.append({"datastore": info.name, "volumes": count, "capacity_mb": capacity,
                           "used_mb": round(used, 1), "free_mb": info.free_bytes // MB})
        volumes.sort(key=lambda v: (v["datastore"], v["vmgroup"], v["volume"]))
        return {"volumes": volumes, "totals": totals}

    def set_options(self, vm: str, vmgroup: str, name: str, changes: object) -> dict:
        """Change options that apply at the next attach (``SETTABLE_OPTIONS``)."""
        group = self._volume_group(vmgroup)
        ref = parse_volume_name(name)
        if ref.datastore is None:
            raise BadRequest(f"name the volume with its datastore: {name}@DATASTORE")
        if not isinstance(changes, dict) or not changes:
            raise BadRequest(f"give the options to set, e.g. access=read-only; settable: "
                             f"{', '.join(SETTABLE_OPTIONS)}")
        unknown = sorted(set(changes) - set(SETTABLE_OPTIONS))
        if unknown:
            raise InvalidOption(f"option {', '.join(unknown)} cannot be changed on an existing "
                                f"volume; settable: {', '.join(SETTABLE_OPTIONS)}")
        parsed = parse_options(changes)  # validates the values against the same rules
        loc = DiskLocation(self.datastore(ref.datastore), group, ref.name)
        fields = [k.replace("-", "_") for k in changes]
        meta = self.volumes.update_options(vm, loc, {f: getattr(parsed, f) for f in fields})
        note = ("the change applies at the next attach" if meta.status == ATTACHED else "")
        return {"volume": self.volumes.view(meta), "note": note}

    def resize(self, vm: str, vmgroup: str, name: str, size: object) -> dict:
        _, loc = self.volumes.locate_in(self._volume_group(vmgroup), name)
        return self.volumes.resize_at(vm, loc, size)

    # -- vmgroups ---------------------------------------------------------------------
    def _group_view(self, name: str, volumes: dict[str, int] | None = None) -> dict:
        group = self.db.vmgroup(name)
        view = dataclasses.asdict(group)
        view["vms"] = list(group.vms)
        if volumes is not None:
            view["volumes"] = volumes.get(group.name, 0)
        return view

    def vmgroups(self) -> list[dict]:
        """Every vmgroup with its VMs and how many volumes it owns."""
        counts: dict[str, int] = {}
        for meta in self._metas():
            counts[meta.vmgroup] = counts.get(meta.vmgroup, 0) + 1
        return [self._group_view(g.name, counts) for g in self.db.vmgroups()]

    def vmgroup(self, name: str) -> dict:
        return self._group_view(name)

    def create_vmgroup(self, name: object, description: str, default_datastore: str | None,
                       vms: list[str]) -> dict:
        """A new vmgroup with its VMs, all or nothing."""
        group = self.db.create_vmgroup(
            check_vmgroup_name(name), description,
            self.datastore(default_datastore) if default_datastore else None)
        if vms:
            try:
                self._check_movable(vms)
                self.db.add_vms(group.name, vms)
            except DockvolsError:
                self.db.remove_vmgroup(group.name)  # all or nothing for the admin
                raise
        return self._group_view(group.name)

    def update_vmgroup(self, name: str, new_name: object, description: str | None,
                       default_datastore: str | None) -> dict:
        """Rename (only while it owns no volume: folders are named after it), describe, or
        set the default datastore (``""`` clears it); None leaves a field as it is."""
        current = self.db.vmgroup(name).name
        if new_name is not None and new_name != current and self._metas(vmgroup=current):
            raise BadRequest(f"vmgroup {current!r} owns volumes, whose folders are named after "
                             "it; it cannot be renamed while it has volumes")
        if new_name is not None and (not isinstance(new_name, str) or not new_name):
            raise BadRequest(f"new_name must be a non-empty string, got {new_name!r}")
        group = self.db.update_vmgroup(
            current, new_name, description,
            None if default_datastore is None else (self.datastore(default_datastore)
                                                    if default_datastore else ""))
        return self._group_view(group.name)

    def remove_vmgroup(self, vm: str, name: str, remove_volumes: bool) -> list[str]:
        """Remove a vmgroup, with its (detached) volumes only if ``remove_volumes``; the
        volumes removed."""
        name = self.db.vmgroup(name).name
        if name == DEFAULT_VMGROUP:
            self.db.remove_vmgroup(name)  # raises the DB's explanation; nothing touched first
        owned = sorted(self._metas(vmgroup=name), key=lambda m: m.full_name)
        listed = ", ".join(m.full_name for m in owned[:10]) + (", ..." if len(owned) > 10 else "")
        if owned and not remove_volumes:
            raise BadRequest(f"vmgroup {name!r} owns {len(owned)} volume(s): {listed}; remove "
                             "them first, or pass --remove-volumes to remove them with it")
        attached = [m for m in owned if m.status == ATTACHED]
        if attached:
            raise VolumeInUse(f"vmgroup {name!r} has attached volumes: " + ", ".join(
                f"{m.full_name} (VM {m.attached_to})" for m in attached) + "; detach them first")
        removed = []
        for meta in owned:
            self.volumes.remove_at(vm, DiskLocation(meta.datastore, meta.vmgroup, meta.name))
            removed.append(meta.full_name)
        self.db.remove_vmgroup(name)
        log.info("vmgroup %s removed with %d volume(s)", name, len(removed))
        return removed

    # -- VMs --------------------------------------------------------------------------
    def _check_movable(self, vms: list[str]) -> None:
        """A VM that changes vmgroup could no longer see, detach or remove the volumes of
        its old vmgroup it holds attached: refuse until they are detached."""
        held = [m for m in self._metas() if m.status == ATTACHED and m.attached_to in vms
                and m.vmgroup == self.db.vmgroup_of(m.attached_to or "")]
        if held:
            raise VolumeInUse("VMs hold volumes of their current vmgroup attached: " + ", ".join(
                f"{m.full_name} ({m.vmgroup}, VM {m.attached_to})" for m in held) +
                "; detach them before moving the VM")

    def vms(self, vmgroup: str) -> list[str]:
        return list(self.db.vmgroup(vmgroup).vms)

    def add_vms(self, vmgroup: str, vms: list[str]) -> dict:
        name = self.db.vmgroup(vmgroup).name
        self._check_movable([v for v in vms if self.db.vmgroup_of(v) != name])
        return dataclasses.asdict(self.db.add_vms(name, vms))

    def remove_vm(self, vmgroup: str, vm: str) -> dict:
        self.db.vmgroup(vmgroup)
        if self.db.vmgroup_of(vm).lower() == vmgroup.lower():
            self._check_movable([vm])
        return dataclasses.asdict(self.db.remove_vm(vmgroup, vm))

    # -- access rules -----------------------------------------------------------------
    def access_rules(self, vmgroup: str) -> list[dict]:
        """The vmgroup's rules, each with what the vmgroup uses under it now."""
        rules = self.db.access_rules(vmgroup)
        used: dict[str, int] = {}
        for meta in self._metas(vmgroup=self.db.vmgroup(vmgroup).name):
            used[meta.datastore.lower()] = used.get(meta.datastore.lower(), 0) + \
                meta.reserved_mb
        own = {r.datastore.lower() for r in rules}
        views = []
        for rule in rules:
            view = dataclasses.asdict(rule)
            view["used_mb"] = (sum(mb for ds, mb in used.items() if ds not in own)
                               if rule.datastore == ALL_DATASTORES
                               else used.get(rule.datastore.lower(), 0))
            views.append(view)
        return views

    def add_access(self, vmgroup: str, datastore: str, allow_create: bool,
                   volume_maxsize_mb: int, volume_totalsize_mb: int) -> dict:
        rule = self.db.add_access(vmgroup, self.datastore(datastore, allow_all=True),
                                  allow_create, volume_maxsize_mb, volume_totalsize_mb)
        return dataclasses.asdict(rule)

    def set_access(self, vmgroup: str, datastore: str, allow_create: bool | None,
                   volume_maxsize_mb: int | None, volume_totalsize_mb: int | None) -> dict:
        """Change a rule; None leaves a field as it is."""
        rule = self.db.set_access(vmgroup, self.datastore(datastore, allow_all=True),
                                  allow_create, volume_maxsize_mb, volume_totalsize_mb)
        return dataclasses.asdict(rule)

    def remove_access(self, vmgroup: str, datastore: str) -> None:
        self.db.remove_access(vmgroup, self.datastore(datastore, allow_all=True))

    # -- VSAN storage policies --------------------------------------------------------
    def _policy_users(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for meta in self._metas():
            if meta.options.vsan_policy_name:
                users.setdefault(meta.options.vsan_policy_name.lower(), []).append(
                    meta.full_name)
        return users

    def _policy_service(self) -> StoragePolicyService:
        if self.storage_policies is None:
            raise BadRequest(f"VSAN storage policies need the vsphere backend; this service "
                             f"runs the {self.volumes.backend.name} backend")
        return self.storage_policies

    def storage_policy_list(self) -> list[dict]:
        """The policies the admin made (the DB's), each with the volumes naming it."""
        users = self._policy_users()
        return [{**dataclasses.asdict(p), "volumes": users.get(p.name.lower(), [])}
                for p in self.db.policies()]

    def create_storage_policy(self, name: object, content: object) -> dict:
        """A VSAN policy in the policy service and the DB, all or nothing; the service
        refuses bad rules (naming the bad part) before anything is made."""
        service = self._policy_service()
        rules = _text_arg(content, "content").strip()
        policy = self.db.create_policy(_text_arg(name, "name"), rules)
        try:
            service.create_policy(policy.name, rules)
        except Exception:
            self.db.remove_policy(policy.name)  # all or nothing
            raise
        return dataclasses.asdict(policy)

    def update_storage_policy(self, name: str, content: object) -> dict:
        """New rules; the DB changes only once the policy service has."""
        service = self._policy_service()
        rules = _text_arg(content, "content").strip()
        known = self.db.policy(name).name
        service.update_policy(known, rules, in_use=bool(self._policy_users().get(known.lower())))
        return dataclasses.asdict(self.db.update_policy(known, rules))

    def remove_storage_policy(self, name: str) -> None:
        """Remove an unused policy from the policy service (if there is one) and the DB."""
        known = self.db.policy(name).name
        users = self._policy_users().get(known.lower())
        if users:
            raise BadRequest(f"policy {known!r} is used by volume(s) {', '.join(users)}; "
                             "remove them first")
        if self.storage_policies is not None:
            self.storage_policies.delete_policy(known)
        self.db.remove_policy(known)


def _text_arg(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty string, got {value!r}")
    return value
