"""Settings of the admin web page: one frozen object from the environment (and --listen),
validated at start. Loopback by default; any other address must be protected."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:9440"
DEFAULT_ADMIN_SOCKET = "/run/dockvols/admin.sock"


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 9440
    admin_socket: str = DEFAULT_ADMIN_SOCKET
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None  # with it, only clients with a certificate it signed get in
    token: str | None = None      # with it, every request needs Authorization: Bearer <token>
    log_level: str = "INFO"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"invalid listen address {value!r}: use HOST:PORT, e.g. "
                            f"{DEFAULT_LISTEN} or [::1]:9440")
    return host, int(port)


def load_settings(env: Mapping[str, str] | None = None,
                  listen: str | None = None) -> WebSettings:
    env = os.environ if env is None else env
    host, port = parse_listen(listen or env.get("DOCKVOLS_WEB_LISTEN") or DEFAULT_LISTEN)
    cert = env.get("DOCKVOLS_WEB_TLS_CERT") or None
    key = env.get("DOCKVOLS_WEB_TLS_KEY") or None
    client_ca = env.get("DOCKVOLS_WEB_CLIENT_CA") or None
    token = None
    token_file = env.get("DOCKVOLS_WEB_TOKEN_FILE") or None
    if token_file:
        try:
            with open(token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read DOCKVOLS_WEB_TOKEN_FILE {token_file!r}: "
                                f"{exc.strerror}") from exc
        if len(token) < 16:
            raise SettingsError(f"the token in {token_file} is {len(token)} characters; use "
                                "at least 16 random ones (e.g. openssl rand -hex 32)")
    if bool(cert) != bool(key):
        raise SettingsError("TLS needs both DOCKVOLS_WEB_TLS_CERT and DOCKVOLS_WEB_TLS_KEY")
    if client_ca and not cert:
        raise SettingsError("DOCKVOLS_WEB_CLIENT_CA needs TLS: set DOCKVOLS_WEB_TLS_CERT and "
                            "DOCKVOLS_WEB_TLS_KEY too")
    if not is_loopback(host) and not (cert and (client_ca or token)):
        raise SettingsError(
            f"refusing to serve the admin page on {host}, which is not a loopback address, "
            "without protection: set DOCKVOLS_WEB_TLS_CERT and DOCKVOLS_WEB_TLS_KEY, and "
            "DOCKVOLS_WEB_CLIENT_CA (client certificates) or DOCKVOLS_WEB_TOKEN_FILE (a "
            f"bearer token); or listen on {DEFAULT_LISTEN}")
    level = (env.get("DOCKVOLS_LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"invalid DOCKVOLS_LOG_LEVEL {level!r}: DEBUG, INFO, WARNING, ERROR")
    return WebSettings(
        host=host, port=port,
        admin_socket=env.get("DOCKVOLS_ADMIN_SOCKET") or DEFAULT_ADMIN_SOCKET,
        tls_cert=cert, tls_key=key, client_ca=client_ca, token=token, log_level=level)
