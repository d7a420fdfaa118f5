"""The TCP listener with mutual TLS: only certificates from our CA get in, the certificate
names the VM, and no request body can claim another identity."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import Daemon, python_daemon, wait_for
from dockvols_common.http_client import client_tls_context
from plugin.errors import ServiceError, ServiceUnreachable
from plugin.esx_client import HttpEsxClient


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN={name}", "-keyout", str(key), "-out", str(crt))
    return crt, key


def make_cert(d: Path, ca: tuple[Path, Path], cn: str, server: bool = False) -> tuple[str, str]:
    key, csr, crt, ext = d / f"{cn}.key", d / f"{cn}.csr", d / f"{cn}.crt", d / f"{cn}.ext"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(key),
            "-out", str(csr))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else
                   "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))
    return str(crt), str(key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(run_dir: Path) -> dict:
    d = run_dir / "pki"
    d.mkdir(exist_ok=True)
    ca = make_ca(d, "dockvols-ca")
    (d / "rogue").mkdir(exist_ok=True)
    rogue = make_ca(d / "rogue", "rogue-ca")
    return {"ca": str(ca[0]), "server": make_cert(d, ca, "localhost", server=True),
            "vm-a": make_cert(d, ca, "vm-a"), "vm-b": make_cert(d, ca, "vm-b"),
            "rogue": make_cert(d / "rogue", rogue, "vm-a")}


@pytest.fixture(scope="module")
def tls_service(run_dir: Path, pki: dict) -> Iterator[str]:
    port = free_port()
    sock = str(run_dir / "esx-tls-unix.sock")
    daemon: Daemon = python_daemon("esx_service-tls", "esx_service", {
        "DOCKVOLS_SOCKET": sock,
        "DOCKVOLS_DATA_DIR": str(run_dir / "tls-data"),
        "DOCKVOLS_VM_NAME": "local-host",
        "DOCKVOLS_ADMIN_SOCKET": str(run_dir / "admin-tls.sock"),
        "DOCKVOLS_TLS_LISTEN": f"127.0.0.1:{port}",
        "DOCKVOLS_TLS_CERT": pki["server"][0], "DOCKVOLS_TLS_KEY": pki["server"][1],
        "DOCKVOLS_TLS_CLIENT_CA": pki["ca"], "DOCKVOLS_CONFIG": "",
    }, run_dir / "esx-tls.log", sock)
    daemon.start()

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, 10, "the TLS listener")
    yield f"https://127.0.0.1:{port}"
    daemon.stop()


def client(url: str, pki: dict, who: str) -> HttpEsxClient:
    return HttpEsxClient(url, timeout=10, tls=client_tls_context(*pki[who], pki["ca"]))


def test_client_without_certificate_is_refused(tls_service: str, pki: dict) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    with pytest.raises(ServiceUnreachable):
        HttpEsxClient(tls_service, timeout=10, tls=context).list()


def test_certificate_from_another_ca_is_refused(tls_service: str, pki: dict) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    context.load_cert_chain(*pki["rogue"])
    with pytest.raises(ServiceUnreachable):
        HttpEsxClient(tls_service, timeout=10, tls=context).list()


def test_certificate_names_the_vm_and_body_cannot_override_it(
        tls_service: str, pki: dict) -> None:
    a, b = client(tls_service, pki, "vm-a"), client(tls_service, pki, "vm-b")
    created = a.call("POST", "/v1/volumes", {"name": "tlsvol", "opts": {}, "vm": "vm-b",
                                              "created_by": "vm-b"})["volume"]
    assert created["created_by"] == "vm-a"
    attached = a.attach("tlsvol")
    try:
        assert attached["volume"]["attached_to"] == "vm-a"
        with pytest.raises(ServiceError) as refused:
            b.call("POST", "/v1/volumes/tlsvol/attach", {"vm": "vm-a"})
        assert refused.value.code == "VolumeInUse"
        assert "vm-a" in refused.value.message
        # vm-b's detach must not detach vm-a's disk
        assert b.detach("tlsvol")["attached_to"] == "vm-a"
    finally:
        a.detach("tlsvol")
        a.remove("tlsvol")


def test_admin_routes_are_not_served_on_the_vm_listener(tls_service: str, pki: dict) -> None:
    a = client(tls_service, pki, "vm-a")
    for path in ("/v1/admin/status", "/v1/admin/vmgroups", "/v1/admin/volumes"):
        with pytest.raises(ServiceError) as refused:
            a.call("GET", path)
        assert refused.value.status == 404


def test_status_reports_the_certificate_identity(tls_service: str, pki: dict) -> None:
    status = client(tls_service, pki, "vm-b").call("GET", "/v1/status")
    assert json.loads(json.dumps(status))["vm"] == "vm-b"
