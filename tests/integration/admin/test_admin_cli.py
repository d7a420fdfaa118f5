"""The real service (`python -m esx_service`, or the launcher beside this file until main.py
wires the admin socket) and the real `dockvols-admin`, as subprocesses: every command, and
every rule both through the CLI and through the VM-facing HTTP API of two VM identities."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvols_common.http_client import UnixHTTPConnection, request

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _service_argv() -> list[str]:
    return [sys.executable, "-m", "esx_service"]


def _admin_argv() -> list[str]:
    # the console script pyproject.toml installs, as an admin would run it
    return [str(Path(sys.executable).parent / "dockvols-admin")]


class Service:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.vm_a, self.vm_b = str(root / "a.sock"), str(root / "b.sock")
        self.admin_sock = str(root / "admin.sock")
        self.db = str(root / "db" / "dockvols.db")
        self.ds1, self.ds2 = root / "ds1", root / "ds2"
        self.env = {**os.environ, "DOCKVOLS_CONFIG": "", "DOCKVOLS_BACKEND": "local",
                    "DOCKVOLS_SOCKET": self.vm_a, "DOCKVOLS_VM_NAME": "vm-a",
                    "DOCKVOLS_EXTRA_VM_SOCKETS": f"{self.vm_b}=vm-b",
                    "DOCKVOLS_DATASTORES": f"ds1={self.ds1},ds2={self.ds2}",
                    "DOCKVOLS_DEFAULT_DATASTORE": "ds1", "DOCKVOLS_DATA_DIR": str(root),
                    "DOCKVOLS_ADMIN_SOCKET": self.admin_sock, "DOCKVOLS_DB": self.db,
                    "DOCKVOLS_LOG_FILE": str(root / "esx.log")}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(_service_argv(), env=self.env, cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.admin_sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"esx_service did not start: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(40)

    def log(self) -> str:
        path = self.root / "esx.log"
        return path.read_text() if path.exists() else "(no log)"

    def admin(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*_admin_argv(), *argv], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    def ok(self, *argv: str) -> str:
        done = self.admin(*argv)
        assert done.returncode == 0, f"dockvols-admin {' '.join(argv)}: {done.stderr}"
        return done.stdout

    def vm(self, sock: str, method: str, path: str, body: dict | None = None) -> tuple[int,
                                                                                      dict]:
        response, raw = request(UnixHTTPConnection(sock, 600), method, path,
                                json.dumps(body).encode() if body else None)
        return response.status, json.loads(raw or b"{}")

    def create(self, sock: str, name: str, size: str = "10mb") -> tuple[int, dict]:
        return self.vm(sock, "POST", "/v1/volumes", {"name": name, "opts": {"size": size}})

    def names(self, sock: str) -> list[str]:
        status, reply = self.vm(sock, "GET", "/v1/volumes")
        assert status == 200, reply
        return sorted(v["name"] for v in reply["volumes"])


@pytest.fixture(scope="module")
def esx() -> Iterator[Service]:
    root = Path(tempfile.mkdtemp(prefix="dvadm-", dir="/tmp"))  # short: unix socket paths
    service = Service(root)
    # as an admin would: prepare the DB first, then start the service on it
    init = service.admin("config", "init", "--db", service.db)
    assert init.returncode == 0, init.stderr
    service.start()
    yield service
    service.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def team_b(esx: Service) -> Iterator[str]:
    """vmgroup team-b holding VM vm-b, default datastore ds1; removed with its volumes."""
    esx.ok("vmgroup", "create", "--name", "team-b", "--default-datastore", "ds1",
           "--vm-list", "vm-b", "--description", "team B")
    yield "team-b"
    esx.ok("vmgroup", "rm", "--name", "team-b", "--remove-volumes")


def test_status_describes_the_running_service(esx: Service) -> None:
    status = json.loads(esx.ok("status", "--json"))
    assert status["pid"] == esx.proc.pid  # type: ignore[union-attr]
    assert status["backend"] == "local" and status["datastores"] == ["ds1", "ds2"]
    assert status["listeners"] == [f"unix:{esx.vm_a} vm=vm-a", f"unix:{esx.vm_b} vm=vm-b",
                                   f"unix:{esx.admin_sock} vm=admin"]
    assert status["log_file"] == str(esx.root / "esx.log")
    assert status["db_path"] == esx.db
    assert "Uptime:" in esx.ok("status")


def test_config_status_shows_the_db_that_config_init_prepared(esx: Service) -> None:
    out = esx.ok("config", "status")
    assert "DB:" in out and esx.db in out and "wal" in out
    again = esx.ok("config", "init", "--db", esx.db)
    assert again.startswith(f"{esx.db} already holds a dockvols DB; left as it is")


def test_the_admin_socket_is_root_only_and_vm_sockets_serve_no_admin_route(esx: Service) -> None:
    assert stat.S_IMODE(os.stat(esx.admin_sock).st_mode) == 0o600
    for sock in (esx.vm_a, esx.vm_b):
        status, reply = esx.vm(sock, "GET", "/v1/admin/status")
        assert (status, reply["error"]["code"]) == (404, "NotFound")


def test_vmgroups_isolate_volumes_between_two_vms(esx: Service, team_b: str) -> None:
    assert esx.create(esx.vm_a, "iso-db", "10mb")[0] == 201
    assert esx.create(esx.vm_b, "iso-db", "20mb")[0] == 201  # the same name, another vmgroup
    assert esx.create(esx.vm_a, "iso-only-a")[0] == 201
    assert "iso-only-a@ds1" not in esx.names(esx.vm_b)
    assert esx.vm(esx.vm_b, "GET", "/v1/volumes/iso-only-a")[0] == 404
    assert esx.vm(esx.vm_b, "DELETE", "/v1/volumes/iso-only-a")[0] == 404
    assert esx.vm(esx.vm_b, "POST", "/v1/volumes/iso-only-a/attach")[0] == 404
    assert esx.vm(esx.vm_b, "GET", "/v1/volumes/iso-db")[1]["volume"]["capacity_mb"] == 20
    assert esx.vm(esx.vm_b, "DELETE", "/v1/volumes/iso-db")[0] == 200
    assert esx.vm(esx.vm_a, "GET", "/v1/volumes/iso-db")[1]["volume"]["capacity_mb"] == 10
    rows = json.loads(esx.ok("volume", "ls", "--json"))["volumes"]
    assert {(v["vmgroup"], v["name"]) for v in rows} >= {("_DEFAULT", "iso-db@ds1"),
                                                          ("_DEFAULT", "iso-only-a@ds1")}
    for name in ("iso-db", "iso-only-a"):
        assert esx.vm(esx.vm_a, "DELETE", f"/v1/volumes/{name}")[0] == 200


def test_quotas_refuse_creates_through_the_vm_api(esx: Service, team_b: str) -> None:
    esx.ok("vmgroup", "access", "set", "--name", team_b, "--datastore", "ds1",
           "--volume-maxsize", "50mb", "--volume-totalsize", "100mb")
    status, reply = esx.create(esx.vm_b, "q-big", "60mb")
    assert (status, reply["error"]) == (403, {
        "code": "QuotaExceeded",
        "message": "volume-maxsize of vmgroup team-b on ds1 is 50mb; 60mb was asked"})
    assert esx.create(esx.vm_b, "q1", "50mb")[0] == 201
    assert esx.create(esx.vm_b, "q2", "40mb")[0] == 201
    status, reply = esx.create(esx.vm_b, "q3", "20mb")
    assert (status, reply["error"]["message"]) == (403, (
        "volume-totalsize of vmgroup team-b on ds1 is 100mb; 90mb is used and 20mb was asked"))
    assert esx.names(esx.vm_b) == ["q1@ds1", "q2@ds1"]
    access = esx.ok("vmgroup", "access", "ls", "--name", team_b).splitlines()
    assert access[2].split() == ["ds1", "yes", "50mb", "100mb", "90mb"]
    out = esx.ok("volume", "ls", "--vmgroup", team_b, "-c", "volume,capacity")
    assert out.splitlines()[2:4] == ["q1      50mb", "q2      40mb"]
    assert out.split("\n\n")[1].splitlines()[2].split()[:3] == ["ds1", "2", "90mb"]


def test_allow_create_is_needed_on_a_datastore(esx: Service, team_b: str) -> None:
    status, reply = esx.create(esx.vm_b, "ac@ds2")
    assert (status, reply["error"]["code"]) == (403, "AccessDenied")
    assert "vmgroup team-b has no access to datastore ds2" in reply["error"]["message"]
    esx.ok("vmgroup", "access", "add", "--name", team_b, "--datastore", "ds2")
    status, reply = esx.create(esx.vm_b, "ac@ds2")
    assert reply["error"]["message"] == ("vmgroup team-b may not create volumes on datastore "
                                         "ds2: allow-create is off")
    esx.ok("vmgroup", "access", "set", "--name", team_b, "--datastore", "ds2",
           "--allow-create", "true")
    assert esx.create(esx.vm_b, "ac@ds2")[0] == 201
    esx.ok("vmgroup", "access", "rm", "--name", team_b, "--datastore", "ds2")
    assert esx.create(esx.vm_b, "ac2@ds2")[1]["error"]["code"] == "AccessDenied"
    done = esx.admin("vmgroup", "access", "rm", "--name", team_b, "--datastore", "ds1")
    assert done.returncode == 1 and "is the default datastore of vmgroup" in done.stderr


def test_removing_a_vmgroup_never_deletes_volumes_silently(esx: Service) -> None:
    esx.ok("vmgroup", "create", "--name", "rm-me", "--default-datastore", "ds2",
           "--vm-list", "vm-b")
    assert esx.create(esx.vm_b, "keep")[0] == 201
    done = esx.admin("vmgroup", "rm", "--name", "rm-me")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "dockvols-admin: BadRequest: vmgroup 'rm-me' owns 1 volume(s): keep@ds2; remove them "
        "first, or pass --remove-volumes to remove them with it")
    assert (esx.ds2 / "dockvols" / "rm-me" / "keep.vmdk").exists()
    out = esx.ok("vmgroup", "rm", "--name", "rm-me", "--remove-volumes")
    assert out.strip() == "vmgroup rm-me removed with 1 volume(s): keep@ds2"
    assert not (esx.ds2 / "dockvols" / "rm-me" / "keep.vmdk").exists()
    assert "vm-b" not in esx.ok("vmgroup", "ls")


def test_vm_add_and_rm_move_a_vm_between_vmgroups(esx: Service, team_b: str) -> None:
    assert esx.create(esx.vm_a, "mv-default")[0] == 201
    assert esx.ok("vmgroup", "vm", "ls", "--name", team_b).splitlines()[2:] == ["vm-b"]
    assert "mv-default@ds1" not in esx.names(esx.vm_b)
    esx.ok("vmgroup", "vm", "rm", "--name", team_b, "--vm-list", "vm-b")
    assert "mv-default@ds1" in esx.names(esx.vm_b)  # back in _DEFAULT with vm-a
    esx.ok("vmgroup", "vm", "add", "--name", team_b, "--vm-list", "vm-b")
    assert "mv-default@ds1" not in esx.names(esx.vm_b)
    assert esx.vm(esx.vm_a, "DELETE", "/v1/volumes/mv-default")[0] == 200


def test_vmgroup_update_and_ls(esx: Service, team_b: str) -> None:
    esx.ok("vmgroup", "update", "--name", team_b, "--description", "the B team",
           "--default-datastore", "ds2")
    group = next(g for g in json.loads(esx.ok("vmgroup", "ls", "--json"))["vmgroups"]
                 if g["name"] == team_b)
    assert (group["description"], group["default_datastore"], group["vms"]) == (
        "the B team", "ds2", ["vm-b"])
    assert esx.create(esx.vm_b, "upd")[1]["volume"]["name"] == "upd@ds2"  # the new default


def test_volume_set_changes_what_the_vm_sees(esx: Service, team_b: str) -> None:
    assert esx.create(esx.vm_b, "ro")[0] == 201
    out = esx.ok("volume", "set", "--volume", "ro@ds1", "--vmgroup", team_b, "--options",
                 "access=read-only")
    assert out.strip() == "volume ro@ds1 of vmgroup team-b: access=read-only"
    assert esx.vm(esx.vm_b, "GET", "/v1/volumes/ro")[1]["volume"]["access"] == "read-only"


def test_policy_commands_need_the_vsphere_backend(esx: Service) -> None:
    done = esx.admin("policy", "create", "--name", "gold", "--content",
                     '(("hostFailuresToTolerate" i1))')
    assert (done.returncode, done.stderr.strip()) == (1, (
        "dockvols-admin: BadRequest: VSAN storage policies need the vsphere backend; this "
        "service runs the local backend"))
    assert esx.ok("policy", "ls").splitlines()[0].split() == ["Name", "Content", "Volumes",
                                                             "Created"]
    assert esx.admin("policy", "rm", "--name", "gold").returncode == 1


def test_usage_errors_exit_2_and_help_exits_0(esx: Service) -> None:
    assert esx.admin("vmgroup", "access", "add", "--name", "x").returncode == 2
    done = esx.admin("volume", "ls", "--help")
    assert done.returncode == 0 and "--vmgroup" in done.stdout


def test_rules_survive_a_service_restart(esx: Service) -> None:
    esx.ok("vmgroup", "create", "--name", "durable", "--vm-list", "vm-x")
    esx.stop()
    esx.start()
    try:
        assert "vm-x" in esx.ok("vmgroup", "vm", "ls", "--name", "durable")
    finally:
        esx.ok("vmgroup", "rm", "--name", "durable")
