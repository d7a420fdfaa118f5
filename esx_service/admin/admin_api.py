"""The admin HTTP/JSON API under ``/v1/admin/``: a pure function of (method, path, body).

It is served on its own unix socket (mode 0600), never on a VM-facing listener: whoever can
reach it is the host's administrator. Like ``api.Api`` it is the one place where errors
become HTTP statuses for its routes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs, unquote

from .. import __version__
from ..access import DEFAULT_VMGROUP
from ..api import Text, _json_body
from ..backends.base import DiskLocation
from ..errors import (
    BadRequest,
    DockvolsError,
    InvalidOption,
    NotFound,
    UnknownDatastore,
    VolumeInUse,
)
from ..metadata import ATTACHED, VolumeMeta, utc_now
from ..names import match_datastore, parse_volume_name
from ..options import MB, parse_options, parse_size_mb
from ..telemetry import Telemetry
from ..volumes import VolumeService
from .db import ALL_DATASTORES, AdminDb, check_vmgroup_name
from .importer import Importer
from .observe import ObserveRoutes

log = logging.getLogger("dockvols.admin")
Reply = tuple[int, dict | Text]
Handler = Callable[[list[str], dict[str, str], bytes, str], Reply]
SETTABLE_OPTIONS = ("access", "attach-as")  # take effect at the next attach
# A VSAN rule set as vDVS wrote them: (("hostFailuresToTolerate" i1) ("forceProvisioning" i0))
_POLICY_CONTENT = re.compile(r'\(\s*(\(\s*"[^"()]+"\s+[^()\s]+\s*\)\s*)+\)')


class AdminApi:
    def __init__(self, service: VolumeService, db: AdminDb, log_file: str | None = None,
                 config_source: str = "", listeners: list[str] | None = None,
                 telemetry: Telemetry | None = None) -> None:
        self.service = service
        self.db = db
        self.log_file = log_file
        self.config_source = config_source
        # Filled by whoever starts the servers: this API is made before they exist.
        self.listeners: list[str] = list(listeners or [])
        self._started = time.time()
        self._started_at = utc_now()
        W = "*"
        self._routes: list[tuple[str, tuple[str, ...], Handler]] = [
            ("GET", ("status",), self._status),
            ("GET", ("config",), self._config),
            ("GET", ("volumes",), self._volumes),
            ("PUT", ("vmgroups", W, "volumes", W), self._volume_set),
            ("POST", ("vmgroups", W, "volumes", W, "resize"), self._volume_resize),
            ("GET", ("vmgroups",), self._vmgroup_ls),
            ("POST", ("vmgroups",), self._vmgroup_create),
            ("GET", ("vmgroups", W), self._vmgroup_get),
            ("PUT", ("vmgroups", W), self._vmgroup_update),
            ("DELETE", ("vmgroups", W), self._vmgroup_rm),
            ("GET", ("vmgroups", W, "vms"), self._vm_ls),
            ("POST", ("vmgroups", W, "vms"), self._vm_add),
            ("DELETE", ("vmgroups", W, "vms", W), self._vm_rm),
            ("GET", ("vmgroups", W, "access"), self._access_ls),
            ("POST", ("vmgroups", W, "access"), self._access_add),
            ("PUT", ("vmgroups", W, "access", W), self._access_set),
            ("DELETE", ("vmgroups", W, "access", W), self._access_rm),
            ("GET", ("policies",), self._policy_ls),
            ("POST", ("policies",), self._policy_create),
            ("PUT", ("policies", W), self._policy_update),
            ("DELETE", ("policies", W), self._policy_rm),
        ]
        self._routes += Importer(service, db).routes()  # volume import (--path, --from-vdvs)
        if telemetry is not None:  # metrics, operations, inventory
            self._routes += ObserveRoutes(service, db, telemetry).routes()

    def handle(self, method: str, path: str, body: bytes, vm: str) -> Reply:
        try:
            route, _, query = path.partition("?")
            parts = [unquote(p) for p in route.strip("/").split("/")]
            if parts[:2] != ["v1", "admin"]:
                raise NotFound(f"no such admin API path {route!r}; it is under /v1/admin/")
            rest = parts[2:]
            for want_method, pattern, handler in self._routes:
                if want_method == method and _matches(pattern, rest):
                    args = [p for p, want in zip(rest, pattern, strict=True) if want == "*"]
                    params = {k: v[-1] for k, v in parse_qs(query).items()}
                    return handler(args, params, body, vm)
            raise NotFound(f"no admin route for {method} {route}")
        except DockvolsError as exc:
            return exc.http_status, exc.to_wire()
        except Exception:  # the error boundary: log the traceback, answer without it
            log.exception("internal error on admin %s %s", method, path)
            return 500, {"error": {"code": "InternalError",
                                   "message": f"internal error on {method} {path}; "
                                              "see the dockvols service log"}}

    # -- service ----------------------------------------------------------------------
    def _status(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        backend = self.service.backend
        return 200, {
            "version": __version__, "pid": os.getpid(), "started_at": self._started_at,
            "uptime_s": round(time.time() - self._started), "listeners": self.listeners,
            "backend": backend.name, "datastores": [d.name for d in backend.datastores()],
            "log_file": self.log_file, "db_path": os.path.abspath(self.db.path),
            "config_source": self.config_source}

    def _config(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"config": self.db.info()}

    # -- volumes ----------------------------------------------------------------------
    def _datastore(self, asked: str, allow_all: bool = False) -> str:
        if allow_all and asked.upper() == ALL_DATASTORES:
            return ALL_DATASTORES
        known = [d.name for d in self.service.datastores()]
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

    def _metas(self, datastore: str | None = None, vmgroup: str | None = None) -> list[VolumeMeta]:
        names = [datastore] if datastore else [d.name for d in self.service.datastores()]
        return [m for ds in names for m in self.service.volumes_in(ds, vmgroup)]

    def _volumes(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        svc = self.service
        infos = svc.datastores()
        if q.get("datastore"):
            wanted = self._datastore(q["datastore"])
            infos = [d for d in infos if d.name == wanted]
        group = self._group_name(q["vmgroup"]) if q.get("vmgroup") else None
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
        return 200, {"volumes": volumes, "totals": totals}

    def _volume_set(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        group, name = self._group_name(_vmgroup_arg(args[0])), args[1]
        ref = parse_volume_name(name)
        if ref.datastore is None:
            raise BadRequest(f"name the volume with its datastore: {name}@DATASTORE")
        changes = _json_body(body).get("options")
        if not isinstance(changes, dict) or not changes:
            raise BadRequest(f"give the options to set, e.g. access=read-only; settable: "
                             f"{', '.join(SETTABLE_OPTIONS)}")
        unknown = sorted(set(changes) - set(SETTABLE_OPTIONS))
        if unknown:
            raise InvalidOption(f"option {', '.join(unknown)} cannot be changed on an existing "
                                f"volume; settable: {', '.join(SETTABLE_OPTIONS)}")
        parsed = parse_options(changes)  # validates the values against the same rules
        loc = DiskLocation(self._datastore(ref.datastore), group, ref.name)
        svc = self.service
        fields = [k.replace("-", "_") for k in changes]
        meta = svc.update_options(vm, loc, {f: getattr(parsed, f) for f in fields})
        note = ("the change applies at the next attach" if meta.status == ATTACHED else "")
        return 200, {"volume": svc.view(meta), "note": note}

    def _volume_resize(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        group = self._group_name(_vmgroup_arg(args[0]))
        _, loc = self.service.locate_in(group, args[1])
        return 200, self.service.resize_at(vm, loc, _json_body(body).get("size"))

    # -- vmgroups ---------------------------------------------------------------------
    def _group_view(self, name: str, volumes: dict[str, int] | None = None) -> dict:
        group = self.db.vmgroup(name)
        view = dataclasses.asdict(group)
        view["vms"] = list(group.vms)
        if volumes is not None:
            view["volumes"] = volumes.get(group.name, 0)
        return view

    def _vmgroup_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        counts: dict[str, int] = {}
        for meta in self._metas():
            counts[meta.vmgroup] = counts.get(meta.vmgroup, 0) + 1
        return 200, {"vmgroups": [self._group_view(g.name, counts) for g in self.db.vmgroups()]}

    def _vmgroup_get(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"vmgroup": self._group_view(args[0])}

    def _vmgroup_create(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        default = req.get("default_datastore")
        vms = _str_list(req["vms"], "vms") if req.get("vms") else []
        group = self.db.create_vmgroup(
            check_vmgroup_name(req.get("name")), _text(req.get("description") or ""),
            self._datastore(_str(default, "default_datastore")) if default else None)
        if vms:
            try:
                self._check_movable(vms)
                self.db.add_vms(group.name, vms)
            except DockvolsError:
                self.db.remove_vmgroup(group.name)  # all or nothing for the admin
                raise
        return 201, {"vmgroup": self._group_view(group.name)}

    def _vmgroup_update(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        name = self.db.vmgroup(args[0]).name
        new_name = req.get("new_name")
        if new_name is not None and new_name != name and self._metas(vmgroup=name):
            raise BadRequest(f"vmgroup {name!r} owns volumes, whose folders are named after it; "
                             "it cannot be renamed while it has volumes")
        default = req.get("default_datastore")
        group = self.db.update_vmgroup(
            name, None if new_name is None else _str(new_name, "new_name"),
            None if req.get("description") is None else _text(req["description"]),
            None if default is None else (self._datastore(_str(default, "default_datastore"))
                                          if default else ""))
        return 200, {"vmgroup": self._group_view(group.name)}

    def _vmgroup_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        name = self.db.vmgroup(args[0]).name
        if name == DEFAULT_VMGROUP:
            self.db.remove_vmgroup(name)  # raises the DB's explanation; nothing touched first
        owned = sorted(self._metas(vmgroup=name), key=lambda m: m.full_name)
        listed = ", ".join(m.full_name for m in owned[:10]) + (", ..." if len(owned) > 10 else "")
        if owned and q.get("remove_volumes", "").lower() not in ("1", "true", "yes"):
            raise BadRequest(f"vmgroup {name!r} owns {len(owned)} volume(s): {listed}; remove "
                             "them first, or pass --remove-volumes to remove them with it")
        attached = [m for m in owned if m.status == ATTACHED]
        if attached:
            raise VolumeInUse(f"vmgroup {name!r} has attached volumes: " + ", ".join(
                f"{m.full_name} (VM {m.attached_to})" for m in attached) + "; detach them first")
        removed = []
        for meta in owned:
            self.service.remove_at(vm, DiskLocation(meta.datastore, meta.vmgroup, meta.name))
            removed.append(meta.full_name)
        self.db.remove_vmgroup(name)
        log.info("vmgroup %s removed with %d volume(s)", name, len(removed))
        return 200, {"removed_volumes": removed}

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

    def _vm_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"vms": list(self.db.vmgroup(args[0]).vms)}

    def _vm_add(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        vms = _str_list(_json_body(body).get("vms"), "vms")
        name = self.db.vmgroup(args[0]).name
        self._check_movable([v for v in vms if self.db.vmgroup_of(v) != name])
        return 200, {"vmgroup": dataclasses.asdict(self.db.add_vms(name, vms))}

    def _vm_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        self.db.vmgroup(args[0])
        if self.db.vmgroup_of(args[1]).lower() == args[0].lower():
            self._check_movable([args[1]])
        return 200, {"vmgroup": dataclasses.asdict(self.db.remove_vm(args[0], args[1]))}

    # -- access rules -----------------------------------------------------------------
    def _access_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        rules = self.db.access_rules(args[0])
        used: dict[str, int] = {}
        for meta in self._metas(vmgroup=self.db.vmgroup(args[0]).name):
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
        return 200, {"access": views}

    def _access_add(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        rule = self.db.add_access(
            args[0], self._datastore(_str(req.get("datastore"), "datastore"), allow_all=True),
            _bool(req.get("allow_create", False), "allow_create"),
            _size(req.get("volume_maxsize"), "volume_maxsize") or 0,
            _size(req.get("volume_totalsize"), "volume_totalsize") or 0)
        return 201, {"access": dataclasses.asdict(rule)}

    def _access_set(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        allow = req.get("allow_create")
        rule = self.db.set_access(
            args[0], self._datastore(args[1], allow_all=True),
            None if allow is None else _bool(allow, "allow_create"),
            _size(req.get("volume_maxsize"), "volume_maxsize"),
            _size(req.get("volume_totalsize"), "volume_totalsize"))
        return 200, {"access": dataclasses.asdict(rule)}

    def _access_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        self.db.remove_access(args[0], self._datastore(args[1], allow_all=True))
        return 200, {}

    # -- VSAN policies ----------------------------------------------------------------
    def _policy_users(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for meta in self._metas():
            if meta.options.vsan_policy_name:
                users.setdefault(meta.options.vsan_policy_name.lower(), []).append(
                    meta.full_name)
        return users

    def _policy_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        users = self._policy_users()
        return 200, {"policies": [{**dataclasses.asdict(p), "volumes": users.get(p.name.lower(),
                                                                                  [])}
                                  for p in self.db.policies()]}

    def _policy_content(self, req: dict) -> str:
        backend = self.service.backend
        if backend.name != "vsphere":
            raise BadRequest(f"VSAN storage policies need the vsphere backend; this service "
                             f"runs the {backend.name} backend")
        content = _str(req.get("content"), "content").strip()
        # a backend that makes policies parses the rules itself, naming the bad part
        if not hasattr(backend, "create_policy") and not _POLICY_CONTENT.fullmatch(content):
            raise BadRequest(f"invalid policy content {content!r}: use VSAN rules like "
                             '(("hostFailuresToTolerate" i1) ("forceProvisioning" i0))')
        return content

    def _policy_create(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        content = self._policy_content(req)
        policy = self.db.create_policy(_str(req.get("name"), "name"), content)
        create = getattr(self.service.backend, "create_policy", None)
        try:
            if create is not None:
                create(policy.name, content)  # PBM: vSphere's storage policies
        except Exception:
            self.db.remove_policy(policy.name)  # all or nothing
            raise
        return 201, {"policy": dataclasses.asdict(policy)}

    def _policy_update(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        content = self._policy_content(_json_body(body))
        name = self.db.policy(args[0]).name
        update = getattr(self.service.backend, "update_policy", None)
        if update is not None:  # the DB changes only once PBM has
            update(name, content, in_use=bool(self._policy_users().get(name.lower())))
        return 200, {"policy": dataclasses.asdict(self.db.update_policy(name, content))}

    def _policy_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        name = self.db.policy(args[0]).name
        users = self._policy_users().get(name.lower())
        if users:
            raise BadRequest(f"policy {name!r} is used by volume(s) {', '.join(users)}; "
                             "remove them first")
        delete = getattr(self.service.backend, "delete_policy", None)
        if delete is not None:
            delete(name)
        self.db.remove_policy(name)
        return 200, {}


def _matches(pattern: tuple[str, ...], parts: list[str]) -> bool:
    return len(pattern) == len(parts) and all(
        want == "*" and bool(got) or want == got for want, got in zip(pattern, parts, strict=True))


def _vmgroup_arg(name: str) -> str:
    return name if name == DEFAULT_VMGROUP else check_vmgroup_name(name)


def _str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty string, got {value!r}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"description must be a string, got {value!r}")
    return value


def _str_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{what} must be a non-empty list of names, got {value!r}")
    return [_str(v, what) for v in value]


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{what} must be true or false, got {value!r}")
    return value


def _size(value: object, what: str) -> int | None:
    """A limit in mb: None to leave it, 0 / "unlimited" for none, else X[mb|gb|tb]."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().lower() in ("0", "unlimited"):
        return 0
    if isinstance(value, str):
        try:
            return parse_size_mb(value)
        except InvalidOption as exc:
            raise InvalidOption(f"{what}: {exc.message}; or 0/unlimited for no limit") from exc
    raise BadRequest(f"{what} must be X[mb|gb|tb] or unlimited, got {value!r}")
