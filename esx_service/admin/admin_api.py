"""The admin HTTP/JSON routes under ``/v1/admin/``: a pure function of (method, path, body).

Served on its own unix socket (mode 0600), never on a VM-facing listener: whoever can reach
it is the host's administrator. Each route parses its JSON, calls the admin service
(``service.AdminService``, or the importer) and formats the answer; the rules live there.
Errors become HTTP statuses in one place, ``api.answer``, as for the VM-facing routes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from urllib.parse import parse_qs, unquote

from .. import __version__
from ..api import Text, _json_body, answer
from ..errors import BadRequest, InvalidOption, NotFound
from ..metadata import utc_now
from ..options import parse_size_mb
from .importer import Importer
from .observe import ObserveRoutes
from .service import AdminService

Reply = tuple[int, dict | Text]
Handler = Callable[[list[str], dict[str, str], bytes, str], Reply]
Route = tuple[str, tuple[str, ...], Handler]


class AdminApi:
    def __init__(self, admin: AdminService, importer: Importer,
                 observe: ObserveRoutes | None = None, log_file: str | None = None,
                 config_source: str = "", listeners: list[str] | None = None) -> None:
        self.admin = admin
        self.importer = importer
        self.log_file = log_file
        self.config_source = config_source
        # Filled by whoever starts the servers: this API is made before they exist.
        self.listeners: list[str] = list(listeners or [])
        self._started = time.time()
        self._started_at = utc_now()
        W = "*"
        self._routes: list[Route] = [
            ("GET", ("status",), self._status),
            ("GET", ("config",), self._config),
            ("GET", ("volumes",), self._volumes),
            ("PUT", ("vmgroups", W, "volumes", W), self._volume_set),
            ("POST", ("vmgroups", W, "volumes", W, "resize"), self._volume_resize),
            ("POST", ("imports",), self._import),  # volume import --path
            ("POST", ("imports", "vdvs"), self._import_vdvs),  # volume import --from-vdvs
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
        if observe is not None:  # metrics, operations, inventory
            self._routes += observe.routes()

    def handle(self, method: str, path: str, body: bytes, vm: str) -> Reply:
        return answer(lambda: self._route(method, path, body, vm), method, path, "(admin)")

    def _route(self, method: str, path: str, body: bytes, vm: str) -> Reply:
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

    # -- service ----------------------------------------------------------------------
    def _status(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        facts = self.admin.describe()
        return 200, {
            "version": __version__, "pid": os.getpid(), "started_at": self._started_at,
            "uptime_s": round(time.time() - self._started), "listeners": self.listeners,
            "backend": facts["backend"], "datastores": facts["datastores"],
            "log_file": self.log_file, "db_path": facts["db_path"],
            "config_source": self.config_source}

    def _config(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"config": self.admin.db.info()}

    # -- volumes ----------------------------------------------------------------------
    def _volumes(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, self.admin.volume_list(q.get("datastore") or None, q.get("vmgroup") or None)

    def _volume_set(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        changes = _json_body(body).get("options")
        return 200, self.admin.set_options(vm, args[0], args[1], changes)

    def _volume_resize(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, self.admin.resize(vm, args[0], args[1], _json_body(body).get("size"))

    def _import(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        path, name, group = req.get("path"), req.get("name"), req.get("vmgroup")
        if not isinstance(path, str) or not isinstance(name, str):
            raise BadRequest("an import needs \"path\" ([datastore] folder/disk.vmdk) and "
                             "\"name\" strings")
        if group is not None and not isinstance(group, str):
            raise BadRequest(f"vmgroup must be a name, got {group!r}")
        return 201, {"volume": self.importer.import_disk(path, name, group)}

    def _import_vdvs(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        datastore = req.get("datastore")
        if datastore is not None and not isinstance(datastore, str):
            raise BadRequest(f"datastore must be a name, got {datastore!r}")
        dry_run = req.get("dry_run") is True
        return 200, {"volumes": self.importer.from_vdvs(datastore, dry_run), "dry_run": dry_run}

    # -- vmgroups ---------------------------------------------------------------------
    def _vmgroup_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"vmgroups": self.admin.vmgroups()}

    def _vmgroup_get(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"vmgroup": self.admin.vmgroup(args[0])}

    def _vmgroup_create(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        default = req.get("default_datastore")
        vms = _str_list(req["vms"], "vms") if req.get("vms") else []
        group = self.admin.create_vmgroup(
            req.get("name"), _text(req.get("description") or ""),
            _str(default, "default_datastore") if default else None, vms)
        return 201, {"vmgroup": group}

    def _vmgroup_update(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        default = req.get("default_datastore")
        group = self.admin.update_vmgroup(
            args[0], req.get("new_name"),
            None if req.get("description") is None else _text(req["description"]),
            None if default is None else (_str(default, "default_datastore") if default
                                          else ""))
        return 200, {"vmgroup": group}

    def _vmgroup_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        with_volumes = q.get("remove_volumes", "").lower() in ("1", "true", "yes")
        return 200, {"removed_volumes": self.admin.remove_vmgroup(vm, args[0], with_volumes)}

    # -- VMs --------------------------------------------------------------------------
    def _vm_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"vms": self.admin.vms(args[0])}

    def _vm_add(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        vms = _str_list(_json_body(body).get("vms"), "vms")
        return 200, {"vmgroup": self.admin.add_vms(args[0], vms)}

    def _vm_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"vmgroup": self.admin.remove_vm(args[0], args[1])}

    # -- access rules -----------------------------------------------------------------
    def _access_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"access": self.admin.access_rules(args[0])}

    def _access_add(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        rule = self.admin.add_access(
            args[0], _str(req.get("datastore"), "datastore"),
            _bool(req.get("allow_create", False), "allow_create"),
            _size(req.get("volume_maxsize"), "volume_maxsize") or 0,
            _size(req.get("volume_totalsize"), "volume_totalsize") or 0)
        return 201, {"access": rule}

    def _access_set(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        allow = req.get("allow_create")
        rule = self.admin.set_access(
            args[0], args[1], None if allow is None else _bool(allow, "allow_create"),
            _size(req.get("volume_maxsize"), "volume_maxsize"),
            _size(req.get("volume_totalsize"), "volume_totalsize"))
        return 200, {"access": rule}

    def _access_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        self.admin.remove_access(args[0], args[1])
        return 200, {}

    # -- VSAN storage policies --------------------------------------------------------
    def _policy_ls(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        return 200, {"policies": self.admin.storage_policy_list()}

    def _policy_create(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        req = _json_body(body)
        policy = self.admin.create_storage_policy(req.get("name"), req.get("content"))
        return 201, {"policy": policy}

    def _policy_update(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        content = _json_body(body).get("content")
        return 200, {"policy": self.admin.update_storage_policy(args[0], content)}

    def _policy_rm(self, args: list[str], q: dict[str, str], body: bytes, vm: str) -> Reply:
        self.admin.remove_storage_policy(args[0])
        return 200, {}


def _matches(pattern: tuple[str, ...], parts: list[str]) -> bool:
    return len(pattern) == len(parts) and all(
        want == "*" and bool(got) or want == got for want, got in zip(pattern, parts, strict=True))


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
