"""``dockvols-esx-service``: wire config, backend, volume service and transports; run until
SIGTERM/SIGINT, then let in-flight operations finish (bounded) and stop."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from dockvols_common.instance import Instance, set_default_instance
from dockvols_common.stop_signal import StopSignal

from . import __version__
from .admin.admin_api import AdminApi
from .admin.db import AdminDb
from .admin.db_access import DbAccess
from .admin.importer import Importer
from .admin.observe import ObserveRoutes
from .admin.service import AdminService
from .api import Api
from .backends.base import Backend
from .cluster_locks import ClusterLocks, LocalVolumeLocks, VolumeLocks
from .config import ServiceConfig, load_config
from .errors import DockvolsError
from .lease_store import LeaseStore, LocalLeaseStore
from .leases import LeaseManager
from .server import ApiServer, TlsApiServer, UnixApiServer, VsockApiServer, server_tls_context
from .telemetry import Telemetry
from .volumes import VolumeService

log = logging.getLogger("dockvols.main")
DRAIN_SECONDS = 30.0
# How long a thread may hold the GIL before another that waits for it is let in. pyVmomi's
# SOAP parsing is pure Python (an attach reads the devices of every VM on the datastore: 30
# ms of CPU for 16 VMs here); at the default 5 ms, 16 such requests at once take turns so
# often that each costs twice the CPU, and life cycles per second at 16 clients fell to
# half those at 4. At 20 ms, side by side, they doubled at 16 clients (bench/latency_model.py,
# issue 15; on 2 cores shared with vcsim, 16 clients can still make fewer than 4). Threads
# blocked in I/O (most of the local backend's) let go of the GIL anyway.
GIL_SWITCH_SECONDS = 0.02


def configure_interpreter() -> None:
    """Interpreter settings for the service process (the benches apply them too)."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def make_backend(config: ServiceConfig,
                 telemetry: Telemetry | None = None) -> tuple[Backend, LeaseStore]:
    """The backend, and the datastore operations its leases are built from."""
    if config.backend == "vsphere":
        from .backends.vsphere import VsphereBackend  # pyVmomi only where it is used

        vsphere = VsphereBackend.from_settings(
            config.vsphere, bound_vm=config.vm_name,
            on_api_call=telemetry.api_call if telemetry else None)
        return vsphere, vsphere.lease_store()
    from .backends.local import LocalBackend

    paths = config.local_datastores
    return LocalBackend(paths), LocalLeaseStore(lambda ds: paths[ds])


def setup_logging(config: ServiceConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file:
        os.makedirs(os.path.dirname(config.log_file) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(config.log_file))
    logging.basicConfig(level=config.log_level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dockvols-esx-service",
        description="dockvols host-side service: creates, attaches and removes volume disks "
                    "on datastores and serves the plugin's HTTP/JSON API on a unix socket.",
        epilog="Settings come from the config file (INI: [service], [local], [vsphere]) and "
               "DOCKVOLS_* environment variables, which win. See README.md for every key.")
    parser.add_argument("--config", help="config file (default: $DOCKVOLS_CONFIG or "
                                         "/etc/dockvols/dockvols.conf if it exists)")
    parser.add_argument("--version", action="version", version=f"dockvols {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except DockvolsError as exc:
        print(f"dockvols-esx-service: {exc.message}", file=sys.stderr)
        return 2
    setup_logging(config)
    configure_interpreter()
    try:
        telemetry = Telemetry(config.backend)
        instance = Instance(config.host_id)
        set_default_instance(instance)  # temp file names carry this host's id
        backend, store = make_backend(config, telemetry)
        leases = LeaseManager(store, instance, config.lease_seconds,
                              config.lease_wait_seconds)
        locks: VolumeLocks = LocalVolumeLocks()
        if config.leases == "datastore":
            leases.start()
            locks = ClusterLocks(leases, keep_seconds=config.lease_keep_seconds)
        else:
            log.warning("leases = process: locks hold in this process only; never let another "
                        "service use these datastores")
        db = AdminDb(config.admin_db_path)
        service = VolumeService(backend, config.default_datastore, DbAccess(db),
                                observer=telemetry, locks=locks)
        service.recover()
        api = Api(service)
        servers: list[ApiServer] = [UnixApiServer(config.socket, api, config.vm_name)]
        servers += [UnixApiServer(path, api, vm) for path, vm in config.extra_vm_sockets]
        if config.tls:
            context = server_tls_context(config.tls.cert_file, config.tls.key_file,
                                         config.tls.client_ca_file)
            servers.append(TlsApiServer((config.tls.host, config.tls.port), api, context))
        if config.vsock_port:
            servers.append(VsockApiServer(config.vsock_port, api, dict(config.vsock_vms)))
        # Admin routes live on their own root-only socket, never on a VM-facing listener.
        admin = AdminApi(AdminService(service, db, backend.storage_policies),
                         Importer(service, backend, db),
                         ObserveRoutes(service, backend, db, telemetry),
                         log_file=config.log_file, config_source=config.source)
        servers.append(UnixApiServer(config.admin_socket, admin, "admin", mode=0o600))
        admin.listeners.extend(s.describe() for s in servers)
    except DockvolsError as exc:
        log.error("cannot start: %s", exc.message)
        return 1
    except (OSError, ValueError) as exc:  # a socket in use, an unreadable certificate
        log.error("cannot start: %s", exc)
        return 1
    stop = StopSignal()
    for server in servers:
        server.start()
    log.info("dockvols %s serving backend=%s datastores=%s vm=%s sockets=%s db=%s config=%s "
             "host=%s leases=%s/%gs", __version__, backend.name,
             ",".join(d.name for d in backend.datastores()), config.vm_name,
             ",".join(s.describe() for s in servers), config.admin_db_path, config.source,
             instance.host, config.leases, config.lease_seconds)
    stop.wait()
    log.info("stopping: letting in-flight operations finish (up to %.0fs)", DRAIN_SECONDS)
    drained = service.gate.drain(DRAIN_SECONDS)
    for server in servers:
        server.stop()
    locks.close()  # kept leases go now, not after their holder's lease runs out
    leases.stop()
    db.close()
    backend.close()  # the vsphere backend logs its session out
    log.info("stopped%s", "" if drained else " with operations still running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
