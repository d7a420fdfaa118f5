"""Plugin settings: one frozen object from the environment, validated at start."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dockvols_common.http_client import parse_vsock_address


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class PluginSettings:
    driver_name: str = "vsphere"
    socket_path: str = "/run/docker/plugins/vsphere.sock"
    esx_address: str = "unix:///run/dockvols/esx.sock"
    mount_root: str = "/mnt/vmdk"
    state_dir: str = "/var/lib/dockvols/plugin"
    docker_host: str = "unix:///var/run/docker.sock"
    log_level: str = "INFO"
    # Mount: dockerd gives up after 120 s (30 s for a managed plugin enabled with defaults).
    esx_timeout: float = 100.0
    # Get/List answer from the cache when esx_service is slower than this.
    query_timeout: float = 10.0
    device_timeout: float = 30.0
    # How often mounted volumes are checked for disks grown by an admin (0: never).
    grow_check_interval: float = 2.0
    recover_on_start: bool = True
    # how often the reconcile releases what no live container uses, and how long a fresh
    # mount ID without a live container is trusted (docker create/cp mount for non-running)
    reconcile_period: float = 30.0
    reconcile_grace: float = 120.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # also serve /metrics on this loopback HOST:PORT (it is always on the plugin's socket)
    metrics_address: tuple[str, int] | None = None


def _float(env: Mapping[str, str], var: str, default: float) -> float:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"invalid {var} {raw!r}: expected seconds, e.g. 30") from exc
    if value <= 0:
        raise SettingsError(f"invalid {var} {raw!r}: must be positive")
    return value


def _metrics_address(raw: str) -> tuple[str, int] | None:
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not port.isdigit() or not 0 < int(port) < 65536 or not loopback:
        raise SettingsError(f"invalid DOCKVOLS_METRICS_ADDRESS {raw!r}: a loopback HOST:PORT "
                            "such as 127.0.0.1:9441 (the plugin's metrics are not for the "
                            "network; a scraper on this host reads them)")
    return host, int(port)


def load_settings(env: Mapping[str, str] | None = None) -> PluginSettings:
    env = os.environ if env is None else env
    name = env.get("DOCKVOLS_DRIVER_NAME", "vsphere")
    if not name or "/" in name:
        raise SettingsError(f"invalid DOCKVOLS_DRIVER_NAME {name!r}: a plain name like vsphere")
    level = env.get("DOCKVOLS_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"invalid DOCKVOLS_LOG_LEVEL {level!r}: DEBUG, INFO, WARNING, ERROR")
    address = env.get("DOCKVOLS_ESX_ADDRESS", PluginSettings.esx_address)
    if not address.startswith(("unix://", "http://", "https://", "vsock://")):
        raise SettingsError(f"invalid DOCKVOLS_ESX_ADDRESS {address!r}: use "
                            "unix:///path/to.sock, vsock://2:PORT or https://host:port")
    if address.startswith("vsock://"):
        try:
            parse_vsock_address(address)
        except ValueError as exc:
            raise SettingsError(f"invalid DOCKVOLS_ESX_ADDRESS: {exc}") from exc
    tls = {k: env.get(f"DOCKVOLS_ESX_TLS_{k.upper()}") or None for k in ("cert", "key", "ca")}
    if address.startswith("https://") and not all(tls.values()):
        raise SettingsError("an https DOCKVOLS_ESX_ADDRESS needs DOCKVOLS_ESX_TLS_CERT, "
                            "DOCKVOLS_ESX_TLS_KEY and DOCKVOLS_ESX_TLS_CA (mutual TLS)")
    return PluginSettings(
        metrics_address=_metrics_address(env.get("DOCKVOLS_METRICS_ADDRESS") or ""),
        driver_name=name,
        socket_path=env.get("DOCKVOLS_PLUGIN_SOCKET", f"/run/docker/plugins/{name}.sock"),
        esx_address=address,
        mount_root=env.get("DOCKVOLS_MOUNT_ROOT", PluginSettings.mount_root),
        state_dir=env.get("DOCKVOLS_STATE_DIR", PluginSettings.state_dir),
        docker_host=env.get("DOCKER_HOST", PluginSettings.docker_host),
        log_level=level,
        esx_timeout=_float(env, "DOCKVOLS_ESX_TIMEOUT", PluginSettings.esx_timeout),
        query_timeout=_float(env, "DOCKVOLS_QUERY_TIMEOUT", PluginSettings.query_timeout),
        device_timeout=_float(env, "DOCKVOLS_DEVICE_TIMEOUT", PluginSettings.device_timeout),
        grow_check_interval=(0.0 if env.get("DOCKVOLS_GROW_CHECK_INTERVAL") in ("0", "0.0")
                             else _float(env, "DOCKVOLS_GROW_CHECK_INTERVAL",
                                         PluginSettings.grow_check_interval)),
        reconcile_period=_float(env, "DOCKVOLS_RECONCILE_PERIOD",
                                PluginSettings.reconcile_period),
        reconcile_grace=_float(env, "DOCKVOLS_RECONCILE_GRACE", PluginSettings.reconcile_grace),
        recover_on_start=env.get("DOCKVOLS_RECOVER", "1") not in ("0", "false", "no"),
        tls_cert=tls["cert"], tls_key=tls["key"], tls_ca=tls["ca"],
    )
