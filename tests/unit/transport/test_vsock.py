"""The vsock transport: the peer's CID names the VM, unknown CIDs are refused, and the
plugin dials the host over AF_VSOCK. This machine has AF_VSOCK but no loopback transport,
so the server is bound for real and its per-connection decisions are tested directly."""

from __future__ import annotations

import socket

import pytest

from dockvols_common.http_client import parse_vsock_address
from esx_service.config import load_config
from esx_service.errors import ConfigError
from esx_service.server import VsockApiServer
from plugin.esx_client import HttpEsxClient
from plugin.settings import SettingsError, load_settings


class EchoApi:
    def handle(self, method: str, path: str, body: bytes, vm: str) -> tuple[int, dict]:
        return 200, {"vm": vm}


class Peer:
    def __init__(self, cid: int) -> None:
        self.cid = cid

    def getpeername(self) -> tuple[int, int]:
        return (self.cid, 40000)


@pytest.fixture
def server():
    srv = VsockApiServer(socket.VMADDR_PORT_ANY, EchoApi(), {3: "web-1", 7: "db-1"})
    yield srv
    srv.server_close()


def test_the_server_binds_a_vsock_port(server: VsockApiServer) -> None:
    assert server.socket.family == socket.AF_VSOCK
    assert server.server_address[1] > 0
    assert server.describe().startswith("vsock:")


def test_the_peer_cid_names_the_vm(server: VsockApiServer) -> None:
    assert server.caller_vm(Peer(3)) == "web-1"  # type: ignore[arg-type]
    assert server.caller_vm(Peer(7)) == "db-1"  # type: ignore[arg-type]


def test_a_cid_that_maps_to_no_vm_is_refused(server: VsockApiServer) -> None:
    assert server.verify_request(None, (3, 40000)) is True
    assert server.verify_request(None, (99, 40000)) is False


def test_vsock_settings_map_cids_to_vms() -> None:
    config = load_config(env={"DOCKVOLS_CONFIG": "", "DOCKVOLS_VSOCK_PORT": "1019",
                              "DOCKVOLS_VSOCK_VMS": "3=web-1, 4=db-1"})
    assert config.vsock_port == 1019
    assert dict(config.vsock_vms) == {3: "web-1", 4: "db-1"}


@pytest.mark.parametrize("env, fragment", [
    ({"DOCKVOLS_VSOCK_PORT": "x"}, "invalid vsock port 'x'"),
    ({"DOCKVOLS_VSOCK_PORT": "1019"}, "map each guest CID"),
    ({"DOCKVOLS_VSOCK_PORT": "1019", "DOCKVOLS_VSOCK_VMS": "2=host"}, "invalid vsock CID '2'"),
    ({"DOCKVOLS_VSOCK_PORT": "1019", "DOCKVOLS_VSOCK_VMS": "web=3"}, "invalid vsock CID 'web'"),
])
def test_bad_vsock_settings_name_the_value(env: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(env={"DOCKVOLS_CONFIG": "", **env})


def test_the_plugin_parses_vsock_addresses() -> None:
    assert parse_vsock_address("vsock://2:1019") == (2, 1019)
    with pytest.raises(ValueError, match="vsock://CID:PORT"):
        parse_vsock_address("vsock://host:1019")
    with pytest.raises(SettingsError, match="vsock://CID:PORT"):
        load_settings({"DOCKVOLS_ESX_ADDRESS": "vsock://2"})
    assert load_settings({"DOCKVOLS_ESX_ADDRESS": "vsock://2:1019"}).esx_address \
        == "vsock://2:1019"


def test_the_plugin_dials_the_host_over_af_vsock(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled = []

    class FakeSocket:
        def __init__(self, family: int, kind: int) -> None:
            dialled.append(family)

        def settimeout(self, timeout: float) -> None:
            pass

        def connect(self, address: tuple[int, int]) -> None:
            dialled.append(address)
            raise ConnectionRefusedError("no vsock peer here")

        def close(self) -> None:
            pass

    monkeypatch.setattr("dockvols_common.http_client.socket.socket", FakeSocket)
    from plugin.errors import ServiceUnreachable

    with pytest.raises(ServiceUnreachable, match="vsock://2:1019"):
        HttpEsxClient("vsock://2:1019", timeout=1).list()
    assert dialled == [socket.AF_VSOCK, (2, 1019)]
