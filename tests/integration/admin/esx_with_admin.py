"""Run esx_service with the admin socket and the DB-backed policy wired, as the proposed
esx_service/main.py patch does; used by the admin integration test until main.py does it.

Settings as the patch reads them: DOCKVOLS_ADMIN_SOCKET and DOCKVOLS_DB, besides the usual.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from esx_service import __version__
from esx_service.admin.admin_api import AdminApi
from esx_service.admin.db import AdminDb
from esx_service.admin.db_policy import DbPolicy
from esx_service.api import Api
from esx_service.config import load_config
from esx_service.main import DRAIN_SECONDS, make_backend, setup_logging
from esx_service.server import UnixApiServer
from esx_service.volumes import VolumeService

log = logging.getLogger("dockvols.main")


def main() -> int:
    config = load_config()
    setup_logging(config)
    admin_socket = os.environ.get("DOCKVOLS_ADMIN_SOCKET", "/run/dockvols/admin.sock")
    db_path = os.environ.get("DOCKVOLS_DB") or os.path.join(config.data_dir, "dockvols.db")
    backend = make_backend(config)
    db = AdminDb(db_path)
    service = VolumeService(backend, config.default_datastore, DbPolicy(db))
    service.recover()
    api = Api(service)
    servers = [UnixApiServer(config.socket, api, config.vm_name)]
    servers += [UnixApiServer(path, api, vm) for path, vm in config.extra_vm_sockets]
    admin = AdminApi(service, db, log_file=config.log_file, config_source=config.source)
    servers.append(UnixApiServer(admin_socket, admin, "admin", mode=0o600))
    admin.listeners.extend(s.describe() for s in servers)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for server in servers:
        server.start()
    log.info("dockvols %s serving backend=%s sockets=%s db=%s", __version__, backend.name,
             ",".join(admin.listeners), db_path)
    stop.wait()
    service.gate.drain(DRAIN_SECONDS)
    for server in servers:
        server.stop()
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
