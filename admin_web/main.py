"""``dockvols-web``: the read-only admin page and the host side's ``/metrics``, served by
gunicorn on loopback (default http://127.0.0.1:9440/), reading esx_service's admin socket.

A separate process because it needs flask and prometheus_client, which ESXi's Python does
not have; esx_service itself stays standard library + pyVmomi. On an ESXi host, run it on
another machine against the admin socket forwarded over ssh (``ssh -L``).
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys

from flask import Flask

from esx_service import __version__

from .app import create_app
from .settings import SettingsError, WebSettings, load_settings
from .source import SocketSource

log = logging.getLogger("dockvols.web")


def serve(settings: WebSettings) -> None:
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def load_config(self) -> None:
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            self.cfg.set("bind", [f"{host}:{settings.port}"])
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("timeout", 60)
            self.cfg.set("loglevel", settings.log_level.lower())
            self.cfg.set("accesslog", None)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn 23+
                self.cfg.set("control_socket_disable", True)
            if settings.tls:
                self.cfg.set("certfile", settings.tls_cert)
                self.cfg.set("keyfile", settings.tls_key)
                if settings.client_ca:
                    self.cfg.set("ca_certs", settings.client_ca)
                    self.cfg.set("cert_reqs", ssl.CERT_REQUIRED)

        def load(self) -> Flask:
            return create_app(settings, SocketSource(settings.admin_socket))

    _Server().run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dockvols-web",
        description="dockvols admin web page (volumes per datastore, vmgroups and quotas, "
                    "recent operations, health) and Prometheus /metrics of the host side.",
        epilog="Environment: DOCKVOLS_WEB_LISTEN (127.0.0.1:9440), DOCKVOLS_ADMIN_SOCKET "
               "(/run/dockvols/admin.sock), DOCKVOLS_WEB_TLS_CERT, DOCKVOLS_WEB_TLS_KEY, "
               "DOCKVOLS_WEB_CLIENT_CA, DOCKVOLS_WEB_TOKEN_FILE, DOCKVOLS_LOG_LEVEL. An address "
               "other than loopback needs TLS and client certificates or a token.")
    parser.add_argument("--listen", help="HOST:PORT (default $DOCKVOLS_WEB_LISTEN or "
                                         "127.0.0.1:9440)")
    parser.add_argument("--version", action="version", version=f"dockvols {__version__}")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(listen=args.listen)
    except SettingsError as exc:
        print(f"dockvols-web: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("dockvols web %s: %s reading %s%s%s", __version__, settings.url,
             settings.admin_socket, " (client certificates)" if settings.client_ca else "",
             " (bearer token)" if settings.token else "")
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
