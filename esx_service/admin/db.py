"""The admin DB (sqlite3): vmgroups, their VMs, per-datastore access rules and VSAN policies.

One connection shared by the service's threads under a lock (``check_same_thread=False``);
writes take ``BEGIN IMMEDIATE`` so two hosts sharing the file never deadlock upgrading a read
lock. A DB on local disk uses WAL; a DB initialised as *shared* (on a datastore, opened by
every host of a cluster) keeps the rollback journal, because WAL needs shared memory that
processes on different hosts do not have. The schema version is ``PRAGMA user_version``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dockvols_common.sizes import size_text

from ..access import DEFAULT_VMGROUP
from ..errors import BadRequest, ConfigError, NotFound
from ..metadata import utc_now

SCHEMA_VERSION = 1
ALL_DATASTORES = "_ALL_DS"  # an access rule for every datastore without a rule of its own
BUSY_TIMEOUT_S = 10.0  # another host may hold the shared DB's write lock for a moment

# Names the admin picks become folder names (dockvols/<vmgroup>/) on every datastore, so
# they are kept to portable characters; a leading '_' is reserved for _DEFAULT and _ALL_DS.
_VMGROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_SCHEMA_V1 = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE vmgroups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT NOT NULL DEFAULT '',
    default_datastore TEXT,
    created_at TEXT NOT NULL);
CREATE TABLE vmgroup_vms (
    vm TEXT PRIMARY KEY,  -- a VM is in at most one vmgroup
    vmgroup_id INTEGER NOT NULL REFERENCES vmgroups(id) ON DELETE CASCADE);
CREATE TABLE access (
    vmgroup_id INTEGER NOT NULL REFERENCES vmgroups(id) ON DELETE CASCADE,
    datastore TEXT NOT NULL COLLATE NOCASE,
    allow_create INTEGER NOT NULL,
    volume_maxsize_mb INTEGER NOT NULL,    -- 0: unlimited
    volume_totalsize_mb INTEGER NOT NULL,  -- 0: unlimited
    PRIMARY KEY (vmgroup_id, datastore));
CREATE TABLE policies (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    content TEXT NOT NULL,
    created_at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class VmGroup:
    name: str
    description: str
    default_datastore: str | None
    created_at: str
    vms: tuple[str, ...]


@dataclass(frozen=True)
class AccessRule:
    vmgroup: str
    datastore: str
    allow_create: bool
    volume_maxsize_mb: int  # 0: unlimited
    volume_totalsize_mb: int  # 0: unlimited


@dataclass(frozen=True)
class Policy:
    name: str
    content: str
    created_at: str


def check_vmgroup_name(name: object) -> str:
    if not isinstance(name, str) or not _VMGROUP_NAME.fullmatch(name):
        raise BadRequest(f"invalid vmgroup name {name!r}: use 1-100 letters, digits, '_', '.' "
                         "and '-', starting with a letter or digit")
    return name


def check_vm_name(vm: object) -> str:
    if not isinstance(vm, str) or not vm.strip() or len(vm) > 255 or _CONTROL.search(vm):
        raise BadRequest(f"invalid VM name {vm!r}: use 1-255 printable characters")
    return vm


class AdminDb:
    def __init__(self, path: str, shared: bool = False) -> None:
        """Open (creating and migrating if needed) the DB at ``path``. ``shared`` only
        matters when the file is new: it is recorded in the DB, and later opens follow it."""
        self.path = path
        self._lock = threading.RLock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(shared)
            self.shared = self._setting("shared") == "1"
            mode = "DELETE" if self.shared else "WAL"
            self.journal_mode = self._conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the dockvols DB {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _migrate(self, shared: bool) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(f"the dockvols DB {self.path} has schema version {version}; this "
                              f"dockvols knows up to {SCHEMA_VERSION}: upgrade dockvols")
        if version == SCHEMA_VERSION:
            return
        with self._write() as cur:
            # Another host sharing the file may have migrated while we waited for the lock.
            if cur.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in filter(str.strip, _SCHEMA_V1.split(";")):
                    cur.execute(statement)
                cur.execute("INSERT INTO settings VALUES ('shared', ?)", ("1" if shared else "0",))
                cur.execute("INSERT INTO vmgroups (name, description, created_at) VALUES "
                            "(?, 'VMs in no other vmgroup', ?)", (DEFAULT_VMGROUP, utc_now()))
                # Until an admin restricts it, _DEFAULT may create anywhere: a fresh install
                # behaves like one without access control.
                cur.execute("INSERT INTO access VALUES (last_insert_rowid(), ?, 1, 0, 0)",
                            (ALL_DATASTORES,))
                cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _setting(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def _group_id(self, cur: sqlite3.Cursor, name: str) -> tuple[int, str]:
        row = cur.execute("SELECT id, name FROM vmgroups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"vmgroup {name!r} does not exist; see `dockvols-admin vmgroup ls`")
        return row

    def info(self) -> dict:
        counts = {table: self._read(f"SELECT count(*) FROM {table}")[0][0]
                  for table in ("vmgroups", "vmgroup_vms", "access", "policies")}
        return {"db_path": os.path.abspath(self.path), "schema_version": SCHEMA_VERSION,
                "shared": self.shared, "journal_mode": self.journal_mode,
                "size_bytes": os.path.getsize(self.path), "vmgroups": counts["vmgroups"],
                "vms": counts["vmgroup_vms"], "access_rules": counts["access"],
                "policies": counts["policies"]}

    # -- vmgroups ---------------------------------------------------------------------
    def vmgroups(self, name: str | None = None) -> list[VmGroup]:
        where, args = ("WHERE g.name = ?", (name,)) if name is not None else ("", ())
        rows = self._read(
            "SELECT g.name, g.description, g.default_datastore, g.created_at, v.vm "
            f"FROM vmgroups g LEFT JOIN vmgroup_vms v ON v.vmgroup_id = g.id {where} "
            "ORDER BY g.name = ? DESC, g.name COLLATE NOCASE, v.vm", (*args, DEFAULT_VMGROUP))
        groups: dict[str, VmGroup] = {}
        for gname, desc, ds, created, vm in rows:
            group = groups.get(gname) or VmGroup(gname, desc, ds, created, ())
            groups[gname] = group if vm is None else VmGroup(
                gname, desc, ds, created, (*group.vms, vm))
        return list(groups.values())

    def vmgroup(self, name: str) -> VmGroup:
        found = self.vmgroups(name)
        if not found:
            raise NotFound(f"vmgroup {name!r} does not exist; see `dockvols-admin vmgroup ls`")
        return found[0]

    def create_vmgroup(self, name: str, description: str = "",
                       default_datastore: str | None = None) -> VmGroup:
        check_vmgroup_name(name)
        with self._write() as cur:
            existing = cur.execute("SELECT name FROM vmgroups WHERE name = ?", (name,)).fetchone()
            if existing:
                raise BadRequest(f"vmgroup {existing[0]!r} already exists")
            cur.execute("INSERT INTO vmgroups (name, description, default_datastore, created_at)"
                        " VALUES (?, ?, ?, ?)", (name, description, default_datastore, utc_now()))
            if default_datastore:
                _grant_default(cur, cur.lastrowid or 0, default_datastore)
        return self.vmgroup(name)

    def update_vmgroup(self, name: str, new_name: str | None = None,
                       description: str | None = None,
                       default_datastore: str | None = None) -> VmGroup:
        """None leaves a field as it is; an empty ``default_datastore`` clears it."""
        with self._write() as cur:
            gid, name = self._group_id(cur, name)
            if new_name is not None and new_name != name:
                if name == DEFAULT_VMGROUP:
                    raise BadRequest(f"vmgroup {DEFAULT_VMGROUP} cannot be renamed")
                check_vmgroup_name(new_name)
                if cur.execute("SELECT 1 FROM vmgroups WHERE name = ? AND id != ?",
                               (new_name, gid)).fetchone():
                    raise BadRequest(f"vmgroup {new_name!r} already exists")
                cur.execute("UPDATE vmgroups SET name = ? WHERE id = ?", (new_name, gid))
                name = new_name
            if description is not None:
                cur.execute("UPDATE vmgroups SET description = ? WHERE id = ?", (description, gid))
            if default_datastore is not None:
                cur.execute("UPDATE vmgroups SET default_datastore = ? WHERE id = ?",
                            (default_datastore or None, gid))
                if default_datastore:
                    _grant_default(cur, gid, default_datastore)
        return self.vmgroup(name)

    def remove_vmgroup(self, name: str) -> None:
        """Forget the vmgroup, its VM list and its access rules (volumes are not touched)."""
        with self._write() as cur:
            gid, name = self._group_id(cur, name)
            if name == DEFAULT_VMGROUP:
                raise BadRequest(f"vmgroup {DEFAULT_VMGROUP} holds every VM in no other vmgroup "
                                 "and cannot be removed; restrict its access rules instead")
            cur.execute("DELETE FROM vmgroups WHERE id = ?", (gid,))

    # -- VMs --------------------------------------------------------------------------
    def default_datastore_of(self, vmgroup: str) -> str | None:
        """The vmgroup's default datastore (None: unset, or no such vmgroup); one row, not
        the vmgroup with all its VMs (every Get asks it)."""
        rows = self._read("SELECT default_datastore FROM vmgroups WHERE name = ?", (vmgroup,))
        return rows[0][0] if rows else None

    def vmgroup_of(self, vm: str) -> str:
        rows = self._read("SELECT g.name FROM vmgroup_vms v JOIN vmgroups g "
                          "ON g.id = v.vmgroup_id WHERE v.vm = ?", (vm,))
        return rows[0][0] if rows else DEFAULT_VMGROUP

    def add_vms(self, name: str, vms: list[str]) -> VmGroup:
        with self._write() as cur:
            gid, name = self._group_id(cur, name)
            if name == DEFAULT_VMGROUP:
                raise BadRequest(f"VMs join {DEFAULT_VMGROUP} by being in no other vmgroup; "
                                 "remove them from their vmgroup instead")
            for vm in vms:
                check_vm_name(vm)
                row = cur.execute("SELECT g.name FROM vmgroup_vms v JOIN vmgroups g ON g.id = "
                                  "v.vmgroup_id WHERE v.vm = ?", (vm,)).fetchone()
                if row and row[0] != name:
                    raise BadRequest(f"VM {vm!r} is already in vmgroup {row[0]!r}; a VM is in "
                                     "one vmgroup at a time: remove it from there first")
                cur.execute("INSERT OR IGNORE INTO vmgroup_vms VALUES (?, ?)", (vm, gid))
        return self.vmgroup(name)

    def remove_vm(self, name: str, vm: str) -> VmGroup:
        with self._write() as cur:
            gid, name = self._group_id(cur, name)
            if not cur.execute("DELETE FROM vmgroup_vms WHERE vm = ? AND vmgroup_id = ?",
                               (vm, gid)).rowcount:
                raise NotFound(f"VM {vm!r} is not in vmgroup {name!r}")
        return self.vmgroup(name)

    # -- access rules -----------------------------------------------------------------
    def access_rules(self, name: str) -> list[AccessRule]:
        self.vmgroup(name)  # NotFound for an unknown vmgroup rather than an empty list
        rows = self._read(
            "SELECT g.name, a.datastore, a.allow_create, a.volume_maxsize_mb, "
            "a.volume_totalsize_mb FROM access a JOIN vmgroups g ON g.id = a.vmgroup_id "
            "WHERE g.name = ? ORDER BY a.datastore = ?, a.datastore", (name, ALL_DATASTORES))
        return [AccessRule(g, ds, bool(c), mx, tot) for g, ds, c, mx, tot in rows]

    def rule_for(self, name: str, datastore: str) -> AccessRule | None:
        """The rule that governs ``datastore``: its own, else the vmgroup's _ALL_DS rule."""
        rows = self._read(
            "SELECT g.name, a.datastore, a.allow_create, a.volume_maxsize_mb, "
            "a.volume_totalsize_mb FROM access a JOIN vmgroups g ON g.id = a.vmgroup_id "
            "WHERE g.name = ? AND a.datastore IN (?, ?) ORDER BY a.datastore = ?",
            (name, datastore, ALL_DATASTORES, ALL_DATASTORES))
        return AccessRule(rows[0][0], rows[0][1], bool(rows[0][2]), rows[0][3],
                          rows[0][4]) if rows else None

    def add_access(self, name: str, datastore: str, allow_create: bool = False,
                   volume_maxsize_mb: int = 0, volume_totalsize_mb: int = 0) -> AccessRule:
        _check_limits(volume_maxsize_mb, volume_totalsize_mb)
        with self._write() as cur:
            gid, name = self._group_id(cur, name)
            if cur.execute("SELECT 1 FROM access WHERE vmgroup_id = ? AND datastore = ?",
                           (gid, datastore)).fetchone():
                raise BadRequest(f"vmgroup {name!r} already has an access rule for datastore "
                                 f"{datastore}; change it with `vmgroup access set`")
            cur.execute("INSERT INTO access VALUES (?, ?, ?, ?, ?)", (
                gid, datastore, int(allow_create), volume_maxsize_mb, volume_totalsize_mb))
        return self._rule(name, datastore)

    def set_access(self, name: str, datastore: str, allow_create: bool | None = None,
                   volume_maxsize_mb: int | None = None,
                   volume_totalsize_mb: int | None = None) -> AccessRule:
        """Change the given fields of an existing rule; None leaves a field as it is."""
        current = self._rule(name, datastore)
        maxsize = current.volume_maxsize_mb if volume_maxsize_mb is None else volume_maxsize_mb
        total = current.volume_totalsize_mb if volume_totalsize_mb is None else volume_totalsize_mb
        _check_limits(maxsize, total)
        allow = current.allow_create if allow_create is None else allow_create
        with self._write() as cur:
            gid, name = self._group_id(cur, name)
            cur.execute("UPDATE access SET allow_create = ?, volume_maxsize_mb = ?, "
                        "volume_totalsize_mb = ? WHERE vmgroup_id = ? AND datastore = ?",
                        (int(allow), maxsize, total, gid, datastore))
        return self._rule(name, datastore)

    def remove_access(self, name: str, datastore: str) -> None:
        with self._write() as cur:
            gid, name = self._group_id(cur, name)
            default = cur.execute("SELECT default_datastore FROM vmgroups WHERE id = ?",
                                  (gid,)).fetchone()[0]
            if default and default.lower() == datastore.lower():
                raise BadRequest(f"datastore {datastore} is the default datastore of vmgroup "
                                 f"{name!r}; change the default (vmgroup update "
                                 "--default-datastore) before removing its access rule")
            if not cur.execute("DELETE FROM access WHERE vmgroup_id = ? AND datastore = ?",
                               (gid, datastore)).rowcount:
                raise NotFound(f"vmgroup {name!r} has no access rule for datastore {datastore}")

    def _rule(self, name: str, datastore: str) -> AccessRule:
        for rule in self.access_rules(name):
            if rule.datastore.lower() == datastore.lower():
                return rule
        raise NotFound(f"vmgroup {name!r} has no access rule for datastore {datastore}; add "
                       "one with `vmgroup access add`")

    # -- VSAN policies ----------------------------------------------------------------
    def policies(self) -> list[Policy]:
        return [Policy(*row) for row in self._read(
            "SELECT name, content, created_at FROM policies ORDER BY name")]

    def create_policy(self, name: str, content: str) -> Policy:
        if not _POLICY_NAME.fullmatch(name):
            raise BadRequest(f"invalid policy name {name!r}: use 1-100 letters, digits, spaces, "
                             "'_', '.' and '-', starting with a letter or digit")
        with self._write() as cur:
            if cur.execute("SELECT 1 FROM policies WHERE name = ?", (name,)).fetchone():
                raise BadRequest(f"policy {name!r} already exists; change it with policy update")
            cur.execute("INSERT INTO policies VALUES (?, ?, ?)", (name, content, utc_now()))
        return self.policy(name)

    def policy(self, name: str) -> Policy:
        rows = self._read("SELECT name, content, created_at FROM policies WHERE name = ?",
                          (name,))
        if not rows:
            raise NotFound(f"policy {name!r} does not exist; see `dockvols-admin policy ls`")
        return Policy(*rows[0])

    def update_policy(self, name: str, content: str) -> Policy:
        with self._write() as cur:
            if not cur.execute("UPDATE policies SET content = ? WHERE name = ?",
                               (content, name)).rowcount:
                raise NotFound(f"policy {name!r} does not exist; see `dockvols-admin policy ls`")
        return self.policy(name)

    def remove_policy(self, name: str) -> None:
        with self._write() as cur:
            if not cur.execute("DELETE FROM policies WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"policy {name!r} does not exist; see `dockvols-admin policy ls`")


def _grant_default(cur: sqlite3.Cursor, gid: int, datastore: str) -> None:
    # A default datastore the vmgroup could not create on would make every plain
    # `docker volume create` fail; an existing rule for it is left as the admin set it.
    cur.execute("INSERT OR IGNORE INTO access VALUES (?, ?, 1, 0, 0)", (gid, datastore))


def _check_limits(maxsize_mb: int, totalsize_mb: int) -> None:
    if maxsize_mb < 0 or totalsize_mb < 0:
        raise BadRequest("volume-maxsize and volume-totalsize must not be negative")
    if maxsize_mb and totalsize_mb and maxsize_mb > totalsize_mb:
        raise BadRequest(f"volume-maxsize {size_text(maxsize_mb)} is over volume-totalsize "
                         f"{size_text(totalsize_mb)}: no volume of that size could ever be "
                         "created")
