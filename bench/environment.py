"""The environment the benchmarks run in: a VolumeDriver client that talks to the plugin
socket the way dockerd does, the raw floor of one HTTP hop, and ``BenchEnv``, which starts
esx_service, the plugin (driver ``dvbench``, so it never clashes with the test suite's
``vsphere``) and a private dockerd (with bench/processes.py, which the integration tests
share), and takes down everything it started even on failure."""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from dockvols_common.http_client import UnixHTTPConnection
from dockvols_common.loop_table import loops_under
from dockvols_common.mountinfo import mounts_under

from .processes import REPO, Daemon, python_daemon, wait_for

DRIVER = os.environ.get("DOCKVOLS_BENCH_DRIVER", "dvbench")
PLUGIN_SOCKET = f"/run/docker/plugins/{DRIVER}.sock"
VOLUME_SIZE = "100mb"  # every created volume, dockvols and floor alike


# -- the raw floor of one HTTP hop ---------------------------------------------------------
class _RawHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive, as dockerd's connections to a plugin are

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"Err":""}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _RawServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class RawHopServer:
    """A minimal stdlib HTTP server on a unix socket that answers ``{"Err":""}``: what one
    HTTP hop costs with nothing behind it. ``call()`` makes one hop over a kept-alive
    connection with the same client code the bench uses for the plugin."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._server = _RawServer(path, _RawHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._client: DriverClient | None = None

    def __enter__(self) -> RawHopServer:
        self._thread.start()
        self._client = DriverClient(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def call(self) -> dict:
        assert self._client is not None
        return self._client.call("Get", {"Name": "x"})


# -- talking to the plugin ------------------------------------------------------------------
class DriverError(RuntimeError):
    pass


class DriverClient:
    """VolumeDriver calls as dockerd makes them: POST, JSON body, no Content-Type, the
    plugin Accept header, one kept-alive connection (Go's transport keeps them too).
    One client per thread."""

    _HEADERS = {"Accept": "application/vnd.docker.plugins.v1.2+json"}

    def __init__(self, path: str = PLUGIN_SOCKET, timeout: float = 130.0) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None
        self._last = 0.0

    def _connection(self) -> UnixHTTPConnection:
        # reconnect after a pause: a server may drop an idle kept-alive connection (gunicorn,
        # which bench/control_path.py still measures beside the plugin, after 2 s)
        if self._conn is None or time.monotonic() - self._last > 1.0:
            self.close()
            self._conn = UnixHTTPConnection(self.path, self.timeout)
        return self._conn

    def call(self, endpoint: str, body: dict | None = None) -> dict:
        payload = json.dumps(body or {}).encode()
        conn = self._connection()
        try:
            conn.request("POST", f"/VolumeDriver.{endpoint}", body=payload,
                         headers=self._HEADERS)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        self._last = time.monotonic()
        if response.will_close:
            self.close()
        data = json.loads(raw or b"{}")
        if data.get("Err"):
            raise DriverError(f"{endpoint}: {data['Err']}")
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- processes ------------------------------------------------------------------------------
def run(argv: Sequence[str], check: bool = True, timeout: float = 180,
        env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()}")
    return done


def life_cycle(client: DriverClient, name: str) -> tuple[float, float]:
    """One volume's Create+Mount and then Unmount+Remove at the plugin socket, as dockerd
    calls them: the seconds each half took."""
    mount_id = uuid.uuid4().hex
    start = time.perf_counter()
    client.call("Create", {"Name": name, "Opts": {"size": VOLUME_SIZE}})
    client.call("Mount", {"Name": name, "ID": mount_id})
    middle = time.perf_counter()
    client.call("Unmount", {"Name": name, "ID": mount_id})
    client.call("Remove", {"Name": name})
    return middle - start, time.perf_counter() - middle


class BenchEnv:
    """esx_service (local backend) + plugin + (optionally) a private dockerd, all under one
    /tmp/dvb-* directory that is swept on close: containers, volumes, processes, mounts,
    loop devices, files."""

    def __init__(self, with_docker: bool = True) -> None:
        if os.geteuid() != 0:
            raise SystemExit("bench: needs root (dockerd, loop devices, mount)")
        self.with_docker = with_docker
        self.run_dir = Path(tempfile.mkdtemp(prefix="dvb-", dir="/tmp"))  # short socket paths
        self.datastore = self.run_dir / "ds1"
        self.mount_root = self.run_dir / "mnt"
        self.esx_socket = str(self.run_dir / "esx.sock")
        self.admin_socket = str(self.run_dir / "admin.sock")
        self.docker_host = f"unix://{self.run_dir / 'docker.sock'}"
        self.procs: list = []
        self.dockerd = self.esx = self.plugin = None
        self._closed = False
        atexit.register(self.close)

    # -- life cycle ---------------------------------------------------------------------
    def __enter__(self) -> BenchEnv:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.with_docker:
            self._start_dockerd()
        self.esx = python_daemon("esx_service", "esx_service", {
            "DOCKVOLS_SOCKET": self.esx_socket,
            "DOCKVOLS_DATA_DIR": str(self.run_dir / "data"),
            "DOCKVOLS_DATASTORES": f"datastore1={self.datastore}",
            "DOCKVOLS_DEFAULT_DATASTORE": "datastore1",
            "DOCKVOLS_VM_NAME": "bench-vm",
            # its own admin socket and DB, never those of a `make run` on the same host
            "DOCKVOLS_ADMIN_SOCKET": self.admin_socket,
            "DOCKVOLS_DB": str(self.run_dir / "dockvols.db"),
            "DOCKVOLS_LOG_LEVEL": "INFO",
            "DOCKVOLS_CONFIG": "",
        }, self.run_dir / "esx_service.log", self.esx_socket)
        self.procs.append(self.esx)
        self.esx.start()
        self._check_driver_socket_free()
        self.plugin = python_daemon("plugin", "plugin", {
            "DOCKVOLS_DRIVER_NAME": DRIVER,
            "DOCKVOLS_ESX_ADDRESS": f"unix://{self.esx_socket}",
            "DOCKVOLS_MOUNT_ROOT": str(self.mount_root),
            "DOCKVOLS_STATE_DIR": str(self.run_dir / "plugin-state"),
            "DOCKER_HOST": self.docker_host,
            "DOCKVOLS_LOG_LEVEL": "INFO",
            "DOCKVOLS_RECOVER": "1" if self.with_docker else "0",
        }, self.run_dir / "plugin.log", PLUGIN_SOCKET)
        self.procs.append(self.plugin)
        self.plugin.start()
        if self.with_docker:  # Remove is refused until the plugin has recounted its users
            wait_for(lambda: "recovery done" in self.plugin.log_path.read_text(errors="replace"),
                     60, "plugin recovery")
        wait_for(self._plugin_answers, 30, "plugin to answer")

    def _plugin_answers(self) -> bool:
        try:
            DriverClient().call("List")
            return True
        except (OSError, DriverError, http.client.HTTPException):
            return False

    def _check_driver_socket_free(self) -> None:
        if os.path.exists(PLUGIN_SOCKET) and self._plugin_answers():
            raise RuntimeError(f"another plugin already serves {PLUGIN_SOCKET}; set "
                               "DOCKVOLS_BENCH_DRIVER to another name or stop it")

    def _start_dockerd(self) -> None:
        sock = self.run_dir / "docker.sock"
        self.dockerd = Daemon("dockerd", [
            "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
            f"--data-root={self.run_dir / 'docker-root'}",
            f"--exec-root={self.run_dir / 'docker-exec'}",
            f"--pidfile={self.run_dir / 'docker.pid'}", f"--host=unix://{sock}",
        ], {}, self.run_dir / "dockerd.log", str(sock))
        self.procs.append(self.dockerd)
        self.dockerd.start()
        wait_for(lambda: self.docker("version", check=False).returncode == 0, 60,
                 "dockerd to answer")
        run([str(REPO / "scripts" / "busybox-image.sh"), "busybox:latest"],
            env=self.docker_env())

    def docker_env(self) -> dict:
        return {**os.environ, "DOCKER_HOST": self.docker_host}

    def docker(self, *args: str, check: bool = True, timeout: float = 180
               ) -> subprocess.CompletedProcess:
        return run(["docker", *args], check=check, timeout=timeout, env=self.docker_env())

    def docker_version(self) -> str:
        if self.dockerd is None:
            return "not started"
        return self.docker("version", "--format", "{{.Server.Version}}",
                           check=False).stdout.strip() or "unknown"

    def close(self) -> None:
        """Idempotent; best effort at every step so one failure does not leak the rest."""
        if self._closed:
            return
        self._closed = True
        root = str(self.run_dir)
        if self.dockerd is not None and self.dockerd.running:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
            # this bench's driver and `local` only: this dockerd also discovers every other
            # plugin socket in /run/docker/plugins (a test suite's), whose volumes are not ours
            for driver in (DRIVER, "local"):
                for name in self.docker("volume", "ls", "-q", "--filter", f"driver={driver}",
                                        check=False).stdout.split():
                    self.docker("volume", "rm", "-f", name, check=False)
        for proc in reversed(self.procs):  # plugin, esx_service, dockerd
            try:
                proc.stop(timeout=30)
            except Exception as exc:  # noqa: BLE001 - keep sweeping
                print(f"bench: stopping {proc.name} failed: {exc}", file=sys.stderr)
        for point in sorted({m.point for m in mounts_under(root)}, key=len, reverse=True):
            if run(["umount", point], check=False).returncode != 0:
                run(["umount", "-l", point], check=False)
        for device in loops_under(root):
            run(["losetup", "--detach", device], check=False)
        shutil.rmtree(root, ignore_errors=True)

    # -- volumes without the slow path ----------------------------------------------------
    def seed_volumes(self, count: int, prefix: str) -> list[str]:
        return seed_volumes(self.datastore, count, prefix)

    def unseed_volumes(self, names: Iterable[str]) -> None:
        unseed_volumes(self.datastore, names)
        # The plugin's volume cache still holds them until the next List: resync it, so
        # one benchmark's volumes do not weigh on the next one's writes of that cache.
        client = DriverClient()
        client.call("List")
        client.close()


def seed_volumes(datastore: Path, count: int, prefix: str) -> list[str]:
    """``count`` detached volumes written straight into a datastore folder in the format
    esx_service writes (metadata.py + vmdk.py), with sparse extents. Seeding skips the
    fsyncs: these files are fixtures, not the path being measured."""
    from esx_service.access import DEFAULT_VMGROUP
    from esx_service.backends.base import DiskLocation
    from esx_service.metadata import DETACHED, VolumeMeta
    from esx_service.options import MB, parse_options
    from esx_service.vmdk import build_descriptor, new_disk_uuid

    options = parse_options({"size": VOLUME_SIZE})
    names = []
    for i in range(count):
        name = f"{prefix}{i:05d}"
        loc = DiskLocation("datastore1", DEFAULT_VMGROUP, name)
        folder = datastore / loc.folder
        folder.mkdir(parents=True, exist_ok=True)
        disk_uuid = new_disk_uuid()
        extent = folder / f"{name}-flat.vmdk"
        with open(extent, "wb") as f:
            f.truncate(options.size_mb * MB)
        (datastore / loc.descriptor_path).write_text(
            build_descriptor(extent.name, options.size_mb * MB, True, disk_uuid))
        meta = VolumeMeta(name=name, datastore="datastore1", vmgroup=DEFAULT_VMGROUP,
                          options=options, created_by="bench-vm", status=DETACHED,
                          disk_uuid=disk_uuid, docker_name=name, generation=1)
        (datastore / loc.metadata_path).write_text(
            json.dumps(meta.to_dict(), indent=1, sort_keys=True) + "\n")
        names.append(name)
    return names


def unseed_volumes(datastore: Path, names: Iterable[str]) -> None:
    from esx_service.access import DEFAULT_VMGROUP

    folder = datastore / "dockvols" / DEFAULT_VMGROUP
    for name in names:
        for suffix in (".json", ".vmdk", "-flat.vmdk"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP become SystemExit so ``finally`` and ``atexit`` clean up."""
    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


def standalone(main: Callable[[BenchEnv | None], dict]) -> None:
    """``python -m bench.<module>``: run one benchmark and print its report."""
    install_signal_handlers()
    result = main(None)
    print(result.get("markdown") or json.dumps(result, indent=1, default=str))


def bench_main(measure: Callable[[BenchEnv], dict], render: Callable[[dict], str],
               env: BenchEnv | None, with_docker: bool) -> dict:
    """A benchmark's ``main(env)``: in run_all's shared environment, or in one of its own."""
    if env is None:
        with BenchEnv(with_docker=with_docker) as own:
            return bench_main(measure, render, own, with_docker)
    result = measure(env)
    result["markdown"] = render(result)
    return result
