"""``dockvols-plugin``: wire the plugin together and serve it on the VolumeDriver socket
(plugin/server.py: one process, a thread per connection, so counts and locks live in one
process)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from flask import Flask
from prometheus_client import start_http_server

from dockvols_common.http_client import client_tls_context

from . import __version__
from .app import create_app
from .blockdev import SystemBlockDevices
from .devices import AttachedDeviceFinder
from .esx_client import HttpEsxClient
from .filesystem import SystemMounter
from .grow_check import start_grow_checks
from .metrics import PluginMetrics
from .recovery import DockerUsers, start_recovery
from .refcounts import RefCounts
from .server import PluginServer, serve_until_stopped
from .settings import PluginSettings, SettingsError, load_settings
from .volume_cache import VolumeCache
from .volume_manager import VolumeManager
from .volume_names import VolumeNames

log = logging.getLogger("dockvols.plugin.main")
# dockerd sends SIGKILL 10 s after SIGTERM; outside dockerd (make run) a Mount in flight
# gets this long to finish
DRAIN_SECONDS = 30.0


def build_app(settings: PluginSettings) -> Flask:
    tls = None
    if settings.tls_cert and settings.tls_key and settings.tls_ca:
        tls = client_tls_context(settings.tls_cert, settings.tls_key, settings.tls_ca)
    client = HttpEsxClient(settings.esx_address, timeout=settings.esx_timeout, tls=tls)
    refs = RefCounts(os.path.join(settings.state_dir, "refcounts.json"))
    cache = VolumeCache(os.path.join(settings.state_dir, "volumes-cache.json"))
    names = VolumeNames(client, refs, cache)
    docker_users = (DockerUsers(settings.docker_host, settings.driver_name, names.canonical)
                    if settings.recover_on_start else None)
    manager = VolumeManager(
        client=client,
        mounter=SystemMounter(),
        devices=AttachedDeviceFinder(timeout=settings.device_timeout),
        refs=refs,
        cache=cache,
        mount_root=settings.mount_root,
        blocks=SystemBlockDevices(),
        query_timeout=settings.query_timeout,
        users=docker_users,
        names=names,
    )
    os.makedirs(settings.mount_root, exist_ok=True)
    metrics = PluginMetrics(lambda: manager.mounter.mounts_under(settings.mount_root))
    if settings.metrics_address:
        host, port = settings.metrics_address
        start_http_server(port, host, registry=metrics.registry)
    if docker_users is not None:
        start_recovery(manager, docker_users, on_report=metrics.record_reconcile,
                       reconcile_period=settings.reconcile_period,
                       reconcile_grace=settings.reconcile_grace)
    else:
        manager.recovered.set()
    if settings.grow_check_interval > 0:
        start_grow_checks(manager, settings.grow_check_interval)
    return create_app(manager, metrics)


def serve(settings: PluginSettings) -> None:
    """Serve until SIGTERM. Building the app takes no network call (esx_service is reached
    lazily, recovery runs in the background), so the socket is up well within the 9.5 s
    dockerd gives a managed plugin."""
    app = build_app(settings)
    os.makedirs(os.path.dirname(settings.socket_path), exist_ok=True)
    server = PluginServer(settings.socket_path, app)
    try:
        serve_until_stopped(server, DRAIN_SECONDS)
    finally:
        server.server_close()  # idempotent: the socket file goes on every way out


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dockvols-plugin",
        description="dockvols Docker volume plugin: serves the VolumeDriver API on "
                    "/run/docker/plugins/<driver>.sock and forwards to dockvols-esx-service.",
        epilog="Settings (environment): DOCKVOLS_DRIVER_NAME (vsphere), DOCKVOLS_PLUGIN_SOCKET, "
               "DOCKVOLS_ESX_ADDRESS (unix:///run/dockvols/esx.sock), DOCKVOLS_MOUNT_ROOT "
               "(/mnt/vmdk), DOCKVOLS_STATE_DIR (/var/lib/dockvols/plugin), DOCKER_HOST, "
               "DOCKVOLS_LOG_LEVEL, DOCKVOLS_ESX_TIMEOUT, DOCKVOLS_QUERY_TIMEOUT, "
               "DOCKVOLS_DEVICE_TIMEOUT, DOCKVOLS_RECOVER (1), DOCKVOLS_GROW_CHECK_INTERVAL "
               "(2 s; 0 turns the check for disks grown by an admin off), "
               "DOCKVOLS_METRICS_ADDRESS (off; a loopback HOST:PORT for /metrics besides "
               "the plugin socket), DOCKVOLS_RECONCILE_PERIOD (30), "
               "DOCKVOLS_RECONCILE_GRACE (120).")
    parser.add_argument("--version", action="version", version=f"dockvols {__version__}")
    parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"dockvols-plugin: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    log.info("dockvols plugin %s: driver=%s socket=%s esx=%s mounts=%s", __version__,
             settings.driver_name, settings.socket_path, settings.esx_address,
             settings.mount_root)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
