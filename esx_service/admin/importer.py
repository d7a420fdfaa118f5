"""Adopting disks dockvols did not make: one VMDK (``volume import --path``), or every
volume vDVS left on the datastores (``volume import --from-vdvs``).

A disk is *moved* into dockvols' layout (``dockvols/<vmgroup>/<stem>.vmdk`` on its own
datastore: a rename, nothing is copied) and from then on is an ordinary volume. Its
metadata comes from its descriptor (capacity, thin or thick); its filesystem is not
recorded as known, so the guest probes the disk at the first mount and never formats one
that holds a filesystem.

vDVS's layout: ``dockvols/<tenant UUID>/<name>.vmdk``, ``_DEFAULT`` a link to
``11111111-1111-1111-1111-111111111111``, tenant names in its config DB
(``dockvols/vmdkops_config.db`` on a datastore, or ``/etc/vmware/vmdkops/auth-db``), volume
options in a JSON side-car ``<name>-<hex>.vmfd`` named in the descriptor.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from typing import Any

from ..access import DEFAULT_VMGROUP
from ..backends.base import Backend, DiskLocation
from ..errors import BadRequest, DockvolsError, InvalidName, NotFound, VolumeInUse
from ..names import check_mountable, parse_volume_name
from ..options import ACCESS_MODES, ATTACH_AS, FSTYPES, MB, VolumeOptions
from ..vmdk import DESCRIPTOR_LIMIT, DiskFacts, describe_vmdk
from ..volumes import VolumeService
from ..vsphere.paths import split_ds_path
from .db import AdminDb

log = logging.getLogger("dockvols.import")

VDVS_DEFAULT_TENANT_UUID = "11111111-1111-1111-1111-111111111111"
VDVS_DB_PATHS = ("dockvols/vmdkops_config.db", "/etc/vmware/vmdkops/auth-db")
# A VMDK's companion files: never a disk of its own (vDVS's rule too).
_COMPANION = re.compile(r"-(\d{6}|flat|delta|ctk|sesparse|digest)\.vmdk$", re.IGNORECASE)
IMPORTER_VM = "dockvols-admin"


@dataclass(frozen=True)
class Adoption:
    """One disk to adopt: where it is, what it becomes, what was assumed on the way."""

    datastore: str
    source: str  # path on the datastore
    loc: DiskLocation
    options: VolumeOptions
    notes: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        return f"[{self.datastore}] {self.source}"


def options_from_facts(facts: DiskFacts) -> VolumeOptions:
    return VolumeOptions(size_mb=max(1, math.ceil(facts.capacity_bytes / MB)),
                         diskformat=facts.diskformat)


def parse_vdvs_sidecar(raw: bytes) -> dict[str, str]:
    """The options vDVS kept for a volume (``volOpts`` of its side-car JSON, padded with
    spaces to 4 KiB): only those dockvols has, with values it accepts."""
    data = json.loads(raw.rstrip(b"\x00 \n").decode("utf-8"))
    opts = data.get("volOpts") if isinstance(data, dict) else None
    if not isinstance(opts, dict):
        return {}
    allowed = {"access": ACCESS_MODES, "fstype": FSTYPES, "attach-as": ATTACH_AS}
    return {key: opts[key] for key, values in allowed.items() if opts.get(key) in values}


class Importer:
    """The rules of adopting disks; its routes (``imports``, ``imports/vdvs``) are in
    ``admin_api``."""

    def __init__(self, volumes: VolumeService, backend: Backend, db: AdminDb) -> None:
        # volumes adopts (metadata, locks, quotas); backend reads and finds the disk files
        self.volumes, self.backend, self.db = volumes, backend, db

    # -- one disk ---------------------------------------------------------------------
    def _datastore(self, asked: str) -> str:
        known = [d.name for d in self.volumes.datastores()]
        for name in known:
            if name.casefold() == asked.casefold():
                return name
        raise NotFound(f"unknown datastore {asked!r} in the import path; known datastores: "
                       f"{', '.join(known)}")

    def _vmgroup(self, name: str) -> str:
        found = self.db.vmgroups(name)
        if not found:
            raise NotFound(f"vmgroup {name!r} does not exist; see `dockvols-admin vmgroup ls`")
        return found[0].name

    def inspect(self, datastore: str, source: str) -> DiskFacts:
        """The disk's facts, or an error saying why it cannot be adopted."""
        where = f"[{datastore}] {source}"
        if not source.endswith(".vmdk") or _COMPANION.search(source):
            raise BadRequest(f"cannot import {where}: not a VMDK descriptor; name the "
                             "disk's <name>.vmdk file (not -flat, -delta, -ctk, -NNNNNN)")
        head = self.backend.read_file(datastore, source, DESCRIPTOR_LIMIT)
        if head is None:
            raise NotFound(f"cannot import {where}: no such file")
        try:
            facts = describe_vmdk(head)
        except ValueError as exc:
            raise BadRequest(f"cannot import {where}: {exc}") from exc
        users = self.backend.disk_users(datastore, source)
        if users:
            raise VolumeInUse(f"cannot import {where}: it is attached to {', '.join(users)}; "
                              "detach it from the VM first")
        return facts

    def import_disk(self, path: str, name: str, vmgroup: str | None) -> dict:
        try:
            ds_asked, source = split_ds_path(path)
        except ValueError as exc:
            raise BadRequest(f"invalid --path {path!r}: write it as \"[datastore] "
                             "folder/disk.vmdk\"") from exc
        datastore = self._datastore(ds_asked)
        ref = parse_volume_name(name)
        if ref.datastore and ref.datastore.casefold() != datastore.casefold():
            raise BadRequest(f"cannot import {path} as {name}: a disk is imported on its own "
                             f"datastore ({datastore}); name it {ref.name} or "
                             f"{ref.name}@{datastore}")
        check_mountable(ref.name, datastore)
        group = self._vmgroup(vmgroup or DEFAULT_VMGROUP)
        facts = self.inspect(datastore, source)
        adoption = Adoption(datastore, source, DiskLocation(datastore, group, ref.name),
                            options_from_facts(facts))
        return self.volumes.adopt(IMPORTER_VM, adoption.loc, source, adoption.options,
                                  adoption.origin)

    # -- everything vDVS left ---------------------------------------------------------
    def from_vdvs(self, datastore: str | None, dry_run: bool) -> list[dict]:
        stores = ([self._datastore(datastore)] if datastore
                  else [d.name for d in self.volumes.datastores()])
        lines = []
        for ds in stores:
            tenants = self._vdvs_tenants(ds)
            for source in self.backend.find_files(ds, "dockvols", "*.vmdk"):
                if not _COMPANION.search(source):  # extents and deltas go with their disk
                    lines.append(self._adopt_one(ds, source, tenants, dry_run))
        return lines

    def _adopt_one(self, ds: str, source: str, tenants: dict[str, str],
                   dry_run: bool) -> dict:
        line: dict[str, object] = {"path": f"[{ds}] {source}", "datastore": ds}
        try:
            adoption = self._plan(ds, source, tenants)
        except _Skip as skip:
            return {**line, "outcome": "skipped", "reason": str(skip)}
        except DockvolsError as exc:
            return {**line, "outcome": "skipped", "reason": exc.message}
        line.update(volume=adoption.loc.name, vmgroup=adoption.loc.vmgroup,
                    options=adoption.options.to_dict(), notes=list(adoption.notes))
        if dry_run:
            return {**line, "outcome": "would adopt"}
        try:
            self.volumes.adopt(IMPORTER_VM, adoption.loc, source, adoption.options,
                               adoption.origin)
        except DockvolsError as exc:
            return {**line, "outcome": "skipped", "reason": exc.message}
        return {**line, "outcome": "adopted"}

    def _plan(self, ds: str, source: str, tenants: dict[str, str]) -> Adoption:
        parts = source.split("/")
        if len(parts) != 3 or _COMPANION.search(source):
            raise _Skip("not a volume disk of vDVS's layout (dockvols/<vmgroup>/<name>.vmdk)")
        folder, file_name = parts[1], parts[2]
        stem = file_name[:-len(".vmdk")]
        meta_file = f"dockvols/{folder}/{stem}.json"
        if self.backend.read_file(ds, meta_file, 1) is not None:
            raise _Skip("already a dockvols volume")
        if folder in (DEFAULT_VMGROUP, VDVS_DEFAULT_TENANT_UUID):
            group = DEFAULT_VMGROUP
        elif folder in tenants:
            group = tenants[folder]
            if not self.db.vmgroups(group):
                raise _Skip(f"vDVS vmgroup {group!r} (folder {folder}) has no dockvols "
                            f"vmgroup; create it (dockvols-admin vmgroup create --name "
                            f"{group}) and run the import again")
            group = self.db.vmgroups(group)[0].name
        else:
            raise _Skip(f"folder {folder} is no vDVS vmgroup known from its config DB "
                        f"({' or '.join(VDVS_DB_PATHS)}); adopt its disks one by one with "
                        "volume import --path ... --vmgroup G")
        try:
            name = parse_volume_name(stem).name  # vDVS wrote names as files, unencoded
        except InvalidName as exc:
            if "@" in stem:
                raise _Skip(f"file name {stem!r} holds '@': import it with --path and a "
                            "--name of your choice") from exc
            raise
        check_mountable(name, ds)
        facts = self.inspect(ds, source)
        options, notes = self._vdvs_options(ds, source, name, facts)
        return Adoption(ds, source, DiskLocation(ds, group, name), options, notes)

    def _vdvs_options(self, ds: str, source: str, name: str,
                      facts: DiskFacts) -> tuple[VolumeOptions, tuple[str, ...]]:
        options = options_from_facts(facts)
        folder = source.rpartition("/")[0]
        candidates = [f"{folder}/{s}" for s in facts.sidecars]
        pattern = re.compile(re.escape(name) + r"-[0-9A-Za-z]+\.vmfd")
        candidates += [p for p in self.backend.find_files(ds, folder, "*.vmfd")
                       if p.count("/") == 2 and pattern.fullmatch(p.rpartition("/")[2])]
        kept: dict[str, str] = {}
        read_from = None
        for side in dict.fromkeys(candidates):
            raw = self.backend.read_file(ds, side)
            if raw is None:
                continue
            try:
                kept = parse_vdvs_sidecar(raw)
                read_from = side
                break
            except (ValueError, UnicodeDecodeError) as exc:
                log.warning("unreadable vDVS side-car [%s] %s: %s", ds, side, exc)
        notes = []
        changes: dict[str, Any] = {k.replace("-", "_"): v for k, v in kept.items()}
        options = replace(options, **changes)
        for key, default in (("access", "read-write"), ("fstype", "ext4"),
                             ("attach-as", "persistent")):
            if key in kept:
                notes.append(f"{key}={kept[key]} from vDVS side-car {read_from}")
            else:
                notes.append(f"{key}={default} assumed (no readable vDVS side-car)"
                             if read_from is None else
                             f"{key}={default} assumed (not in the side-car)")
        return options, tuple(notes)

    def _vdvs_tenants(self, ds: str) -> dict[str, str]:
        """vDVS tenant UUID -> name, from its config DB when one can be read."""
        for path in VDVS_DB_PATHS:
            raw = (self.backend.read_file(ds, path) if not path.startswith("/")
                   else _read_local(path))
            if raw:
                try:
                    return _tenants_from_db(raw)
                except sqlite3.Error as exc:
                    log.warning("vDVS config DB %s on %s unreadable: %s", path, ds, exc)
        return {}

class _Skip(Exception):
    """Why a file found in vDVS's layout is not adopted (not an error: reported)."""


def _read_local(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _tenants_from_db(raw: bytes) -> dict[str, str]:
    # sqlite3 opens files only: a copy of what the datastore holds
    with tempfile.NamedTemporaryFile(suffix=".db") as tmp:
        tmp.write(raw)
        tmp.flush()
        conn = sqlite3.connect(f"file:{tmp.name}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT id, name FROM tenants").fetchall()
        finally:
            conn.close()
    return {str(i): str(n) for i, n in rows}

