"""``dockvols``: the VM user's command. Docker has no verb to grow a volume, so this asks the
dockvols plugin on this host directly, on the plugin's own socket (the route
``/Dockvols.Resize`` beside the VolumeDriver ones); the plugin asks the host side, which
applies the vmgroup's quotas and access rules as for a create.

Standard library only. The socket is found the way dockerd finds it:
- ``--socket`` or ``$DOCKVOLS_PLUGIN_SOCKET``;
- a plugin run as a process (``make run``): ``/run/docker/plugins/<driver>.sock``;
- a managed plugin (``make plugin``): ``/run/docker/plugins/<plugin id>/<socket>``, its id
  and socket asked from the Docker engine (``$DOCKER_HOST``, a unix socket).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from urllib.parse import quote

from dockvols_common.cli import run_main
from dockvols_common.http_client import UnixHTTPConnection, request

PLUGINS_DIR = "/run/docker/plugins"
DOCKER_SOCKET = "/var/run/docker.sock"
TIMEOUT_S = 150.0  # the plugin waits for the host and for the device to show the new size


class CliError(Exception):
    pass


def _request(socket_path: str, method: str, path: str, body: dict | None,
             timeout: float) -> tuple[int, dict]:
    payload = json.dumps(body).encode() if body is not None else None
    try:
        response, raw = request(UnixHTTPConnection(socket_path, timeout), method, path, payload)
    except (OSError, http.client.HTTPException) as exc:
        raise CliError(f"cannot reach {socket_path}: {exc}") from exc
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise CliError(f"{socket_path} answered {method} {path} with non-JSON "
                       f"(HTTP {response.status})") from exc
    return response.status, data if isinstance(data, dict) else {}


def managed_plugin_socket(driver: str, docker_socket: str, plugins_dir: str) -> str | None:
    """The socket of the enabled managed plugin named ``driver`` (``vsphere`` means
    ``vsphere:latest``), from the engine's plugin list; None when there is none."""
    wanted = driver if ":" in driver else f"{driver}:latest"
    try:
        status, data = _request(docker_socket, "GET", f"/plugins/{quote(wanted, safe='')}/json",
                                None, 10.0)
    except CliError:
        return None
    if status != 200 or not data.get("Enabled"):
        return None
    socket_name = ((data.get("Config") or {}).get("Interface") or {}).get("Socket")
    if not data.get("Id") or not socket_name:
        return None
    return os.path.join(plugins_dir, data["Id"], socket_name)


def find_socket(explicit: str | None, driver: str, docker_socket: str,
                plugins_dir: str = PLUGINS_DIR) -> str:
    if explicit:
        return explicit
    legacy = os.path.join(plugins_dir, f"{driver}.sock")
    if os.path.exists(legacy):
        return legacy
    managed = managed_plugin_socket(driver, docker_socket, plugins_dir)
    if managed and os.path.exists(managed):
        return managed
    raise CliError(f"no dockvols plugin named {driver!r} on this host: neither {legacy} nor "
                   f"an enabled managed plugin {driver!r} known to the engine at "
                   f"{docker_socket}{f' ({managed} is missing)' if managed else ''}; "
                   "give --driver NAME or --socket PATH")


def resize(args: argparse.Namespace) -> tuple[dict, str]:
    socket_path = find_socket(args.socket, args.driver, args.docker_socket, args.plugins_dir)
    status, reply = _request(socket_path, "POST", "/Dockvols.Resize",
                             {"Name": args.name, "Size": args.size}, TIMEOUT_S)
    if reply.get("Err") or status != 200:
        raise CliError(reply.get("Err") or f"the plugin answered HTTP {status}")
    size = (reply.get("Status") or {}).get("capacity", {}).get("size", "?")
    previous = reply.get("Previous", "?")
    head = (f"volume {args.name} is already {size}" if previous == size
            else f"volume {args.name} grown from {previous} to {size}")
    return reply, f"{head}; {reply.get('Filesystem', '')}"


def _docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else DOCKER_SOCKET


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockvols", description="dockvols for VM users: ask this host's dockvols plugin "
                                     "for what Docker has no command for.")
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    volume = top.add_parser("volume", help="volumes of this VM's vmgroup")
    verbs = volume.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    p = verbs.add_parser("resize", help="grow a volume (never shrinks); a mounted one grows "
                                        "online, its filesystem too",
                         description="Grow a volume to SIZE. A volume mounted on this host "
                                     "grows online; one attached nowhere grows now and its "
                                     "filesystem at its next mount.")
    p.add_argument("name", metavar="VOLUME", help="the volume, as in docker volume ls")
    p.add_argument("size", metavar="SIZE", help="the new size, X[mb|gb|tb], e.g. 20gb")
    p.add_argument("--json", action="store_true", help="print the plugin's JSON answer")
    p.add_argument("--driver", default=os.environ.get("DOCKVOLS_DRIVER_NAME", "vsphere"),
                   help="the plugin's name, as given to docker volume create -d "
                        "(default: $DOCKVOLS_DRIVER_NAME or vsphere)")
    p.add_argument("--socket", default=os.environ.get("DOCKVOLS_PLUGIN_SOCKET"),
                   help="the plugin's socket, instead of finding it")
    p.add_argument("--docker-socket", default=_docker_socket(),
                   help="the engine's socket, asked for a managed plugin's id "
                        f"(default: $DOCKER_HOST or {DOCKER_SOCKET})")
    p.add_argument("--plugins-dir", default=PLUGINS_DIR,
                   help=f"where dockerd keeps plugin sockets (default {PLUGINS_DIR})")
    p.set_defaults(run=resize)
    return parser


def _explain(exc: Exception) -> tuple[int, str] | None:
    return (1, str(exc)) if isinstance(exc, CliError) else None


def main(argv: list[str] | None = None) -> int:
    return run_main("dockvols", build_parser(), argv, lambda args: args.run(args), _explain)


if __name__ == "__main__":
    sys.exit(main())
