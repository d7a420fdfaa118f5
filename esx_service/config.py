"""esx_service configuration: one frozen object per process, from an INI file and the
environment (environment wins), validated once at start."""

from __future__ import annotations

import configparser
import os
import socket as _socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigError, InvalidName
from .names import check_datastore_name

DEFAULT_CONFIG_FILE = "/etc/dockvols/dockvols.conf"
BACKENDS = ("local", "vsphere")
LEASE_MODES = ("datastore", "process")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# setting -> (INI section, INI key, environment variable)
_SOURCES = {
    "backend": ("service", "backend", "DOCKVOLS_BACKEND"),
    "data_dir": ("service", "data_dir", "DOCKVOLS_DATA_DIR"),
    "socket": ("service", "socket", "DOCKVOLS_SOCKET"),
    "vm_name": ("service", "vm_name", "DOCKVOLS_VM_NAME"),
    "extra_vm_sockets": ("service", "extra_vm_sockets", "DOCKVOLS_EXTRA_VM_SOCKETS"),
    "default_datastore": ("service", "default_datastore", "DOCKVOLS_DEFAULT_DATASTORE"),
    "log_level": ("service", "log_level", "DOCKVOLS_LOG_LEVEL"),
    "log_file": ("service", "log_file", "DOCKVOLS_LOG_FILE"),
    "admin_socket": ("service", "admin_socket", "DOCKVOLS_ADMIN_SOCKET"),
    "db_path": ("service", "db_path", "DOCKVOLS_DB"),
    "host_id": ("service", "host_id", "DOCKVOLS_HOST_ID"),
    "lease_seconds": ("service", "lease_seconds", "DOCKVOLS_LEASE_SECONDS"),
    "leases": ("service", "leases", "DOCKVOLS_LEASES"),
    "lease_wait": ("service", "lease_wait_seconds", "DOCKVOLS_LEASE_WAIT_SECONDS"),
    "lease_keep": ("service", "lease_keep_seconds", "DOCKVOLS_LEASE_KEEP_SECONDS"),
    "datastores": ("local", "datastores", "DOCKVOLS_DATASTORES"),
    "vsock_port": ("vsock", "port", "DOCKVOLS_VSOCK_PORT"),
    "vsock_vms": ("vsock", "vms", "DOCKVOLS_VSOCK_VMS"),
    "tls_listen": ("tls", "listen", "DOCKVOLS_TLS_LISTEN"),
    "tls_cert": ("tls", "cert_file", "DOCKVOLS_TLS_CERT"),
    "tls_key": ("tls", "key_file", "DOCKVOLS_TLS_KEY"),
    "tls_client_ca": ("tls", "client_ca_file", "DOCKVOLS_TLS_CLIENT_CA"),
    "vsphere_host": ("vsphere", "host", "DOCKVOLS_VSPHERE_HOST"),
    "vsphere_port": ("vsphere", "port", "DOCKVOLS_VSPHERE_PORT"),
    "vsphere_user": ("vsphere", "user", "DOCKVOLS_VSPHERE_USER"),
    "vsphere_password": ("vsphere", "password", "DOCKVOLS_VSPHERE_PASSWORD"),
    "vsphere_insecure": ("vsphere", "insecure", "DOCKVOLS_VSPHERE_INSECURE"),
    "vsphere_ca_file": ("vsphere", "ca_file", "DOCKVOLS_VSPHERE_CA_FILE"),
    "vsphere_datacenter": ("vsphere", "datacenter", "DOCKVOLS_VSPHERE_DATACENTER"),
    "vsphere_datastores": ("vsphere", "datastores", "DOCKVOLS_VSPHERE_DATASTORES"),
}


@dataclass(frozen=True)
class VsphereSettings:
    host: str = "localhost"
    port: int = 443
    user: str = "root"
    password: str = ""
    insecure: bool = False
    ca_file: str | None = None
    datacenter: str | None = None
    datastores: tuple[str, ...] = ()  # empty: every datastore the host or vCenter sees


@dataclass(frozen=True)
class TlsSettings:
    """The VM-facing TCP listener with mutual TLS; the client certificate's CN is the VM."""

    host: str
    port: int
    cert_file: str
    key_file: str
    client_ca_file: str


@dataclass(frozen=True)
class ServiceConfig:
    backend: str = "local"
    data_dir: str = "/var/lib/dockvols"
    socket: str = "/run/dockvols/esx.sock"
    vm_name: str = field(default_factory=_socket.gethostname)
    extra_vm_sockets: tuple[tuple[str, str], ...] = ()
    default_datastore: str | None = None
    log_level: str = "INFO"
    log_file: str | None = None
    admin_socket: str = "/run/dockvols/admin.sock"
    db_path: str | None = None  # None: <data_dir>/dockvols.db
    # Leases on the datastore (esx_service.leases): this host's name in them, how long a
    # silent holder keeps one, how long an operation waits for another host's.
    host_id: str = field(default_factory=_socket.gethostname)
    lease_seconds: float = 15.0
    lease_wait_seconds: float = 90.0
    # How long a lease outlives its operation for the next on the same key (cluster_locks):
    # None = the lease store's own choice (2 s through the vSphere API, 0 on a mount).
    lease_keep_seconds: float | None = None
    # "datastore": locks hold across hosts (the default, and a must whenever two services
    # share a datastore); "process": this process's locks only, for the one service that
    # alone owns its datastores (vCenter mode), where remote leases cost round trips.
    leases: str = "datastore"
    datastores: tuple[tuple[str, str], ...] = ()
    vsphere: VsphereSettings = field(default_factory=VsphereSettings)
    tls: TlsSettings | None = None
    vsock_port: int | None = None
    vsock_vms: tuple[tuple[int, str], ...] = ()  # guest CID -> VM name
    source: str = "defaults"

    @property
    def local_datastores(self) -> dict[str, str]:
        if self.datastores:
            return dict(self.datastores)
        return {"datastore1": os.path.join(self.data_dir, "datastores", "datastore1")}

    @property
    def admin_db_path(self) -> str:
        return self.db_path or os.path.join(self.data_dir, "dockvols.db")


def _pairs(value: str, what: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, (p.strip() for p in value.split(","))):
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ConfigError(f"invalid {what} entry {item!r}: expected NAME=VALUE[,NAME=VALUE]")
        pairs.append((key.strip(), val.strip()))
    return tuple(pairs)


def _seconds(value: str, what: str, low: float, high: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:  # also refuses nan
        raise ConfigError(f"invalid {what} {value!r}: expected seconds from {low:g} to "
                          f"{high:g}")
    return seconds


def _bool(value: str, what: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"invalid {what} {value!r}: use true or false")


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> ServiceConfig:
    env = os.environ if env is None else env
    path = path or env.get("DOCKVOLS_CONFIG") or None
    parser = configparser.ConfigParser(interpolation=None)
    source = "defaults"
    explicit = path is not None
    path = path or DEFAULT_CONFIG_FILE
    if os.path.exists(path):
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
        source = path
    elif explicit:
        raise ConfigError(f"config file {path} does not exist")

    raw: dict[str, str] = {}
    for key, (section, option, _var) in _SOURCES.items():
        if parser.has_option(section, option):
            raw[key] = parser.get(section, option)
    from_env = {key: env[var] for key, (_, _, var) in _SOURCES.items() if var in env}
    raw.update(from_env)
    return _build(raw, f"{source} + environment" if from_env else source)


def _build(raw: dict[str, str], source: str) -> ServiceConfig:
    kwargs: dict = {"source": source}
    for key in ("backend", "data_dir", "socket", "vm_name", "default_datastore", "log_file",
                "admin_socket", "db_path", "host_id"):
        if raw.get(key):
            kwargs[key] = raw[key].strip()
    for key, attr, low, high in (("lease_seconds", "lease_seconds", 1.0, 600.0),
                                 ("lease_wait", "lease_wait_seconds", 0.0, 3600.0),
                                 ("lease_keep", "lease_keep_seconds", 0.0, 60.0)):
        if raw.get(key):
            kwargs[attr] = _seconds(raw[key], attr, low, high)
    if raw.get("leases"):
        kwargs["leases"] = raw["leases"].strip().lower()
        if kwargs["leases"] not in LEASE_MODES:
            raise ConfigError(f"invalid leases {raw['leases']!r}: allowed are "
                              f"{', '.join(LEASE_MODES)} (datastore unless this is the only "
                              "service using its datastores)")
    if kwargs.get("backend", "local") not in BACKENDS:
        raise ConfigError(f"invalid backend {kwargs['backend']!r}: allowed are "
                          f"{', '.join(BACKENDS)}")
    level = raw.get("log_level", "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"invalid log_level {level!r}: allowed are {', '.join(LOG_LEVELS)}")
    kwargs["log_level"] = level
    if raw.get("datastores"):
        kwargs["datastores"] = _pairs(raw["datastores"], "datastores")
        for name, _path in kwargs["datastores"]:
            try:  # spaces and any case are fine; what name@datastore cannot reach is not
                check_datastore_name(name, "local datastore name")
            except InvalidName as exc:
                raise ConfigError(exc.message) from exc
    if raw.get("extra_vm_sockets"):
        kwargs["extra_vm_sockets"] = _pairs(raw["extra_vm_sockets"], "extra_vm_sockets")
    vs: dict = {}
    for key in ("host", "user", "password", "ca_file", "datacenter"):
        if raw.get(f"vsphere_{key}"):
            vs[key] = raw[f"vsphere_{key}"].strip()
    if raw.get("vsphere_port"):
        try:
            vs["port"] = int(raw["vsphere_port"])
        except ValueError as exc:
            raise ConfigError(f"invalid vsphere port {raw['vsphere_port']!r}: "
                              "expected a number") from exc
    if raw.get("vsphere_insecure"):
        vs["insecure"] = _bool(raw["vsphere_insecure"], "vsphere insecure")
    if raw.get("vsphere_datastores"):
        vs["datastores"] = tuple(d.strip() for d in raw["vsphere_datastores"].split(",")
                                 if d.strip())
    kwargs["vsphere"] = VsphereSettings(**vs)
    if raw.get("tls_listen"):
        kwargs["tls"] = _tls(raw)
    if raw.get("vsock_port"):
        kwargs["vsock_port"], kwargs["vsock_vms"] = _vsock(raw)
    return ServiceConfig(**kwargs)


def _vsock(raw: dict[str, str]) -> tuple[int, tuple[tuple[int, str], ...]]:
    port = raw["vsock_port"].strip()
    if not port.isdigit() or not 0 < int(port) < 2**32:
        raise ConfigError(f"invalid vsock port {port!r}: expected a number, e.g. 1019")
    vms = []
    for cid, vm in _pairs(raw.get("vsock_vms", ""), "vsock vms"):
        if not cid.isdigit() or int(cid) < 3:
            raise ConfigError(f"invalid vsock CID {cid!r} for VM {vm!r}: guest CIDs are "
                              "numbers from 3 up (0-2 are the hypervisor and the host)")
        vms.append((int(cid), vm))
    if not vms:
        raise ConfigError("vsock port is set but vsock vms is not: map each guest CID to its "
                          "VM, e.g. 3=web-1,4=db-1")
    return int(port), tuple(vms)


def _tls(raw: dict[str, str]) -> TlsSettings:
    host, sep, port = raw["tls_listen"].strip().rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"invalid tls listen {raw['tls_listen']!r}: expected HOST:PORT, "
                          "e.g. 127.0.0.1:9443")
    files = {}
    for key in ("tls_cert", "tls_key", "tls_client_ca"):
        path = (raw.get(key) or "").strip()
        if not path:
            raise ConfigError(f"tls listen is set but {key} is not: mutual TLS needs a "
                              "certificate, its key and the CA that signs client certificates")
        if not os.path.isfile(path):
            raise ConfigError(f"{key} {path!r} does not exist")
        files[key] = path
    return TlsSettings(host.strip("[]"), int(port), files["tls_cert"], files["tls_key"],
                       files["tls_client_ca"])
