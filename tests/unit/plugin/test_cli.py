"""`dockvols volume resize` against fake plugin and engine sockets (real unix sockets)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator

import pytest

from esx_service.server import UnixApiServer
from plugin import cli


class Recorder:
    """Answers like the plugin (or the engine) would; remembers each request."""

    def __init__(self, replies: dict[str, tuple[int, dict]]) -> None:
        self.replies = replies
        self.requests: list[tuple[str, str, dict]] = []

    def handle(self, method: str, path: str, body: bytes, vm: str) -> tuple[int, dict]:
        self.requests.append((method, path, json.loads(body or b"{}")))
        return self.replies.get(path, (404, {"message": "no such path"}))


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dvc-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serve(path: str, recorder: Recorder) -> UnixApiServer:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    server = UnixApiServer(path, recorder, "x")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


GROWN = (200, {"Err": "", "Name": "db", "Previous": "100mb", "Filesystem": "ext4 filesystem "
               "grown online to fill its 2048 mb device",
               "Status": {"capacity": {"size": "2048mb", "allocated": "3mb"}}})


def test_resize_asks_the_plugin_of_make_run_on_its_legacy_socket(short_dir, capsys):
    plugin = Recorder({"/Dockvols.Resize": GROWN})
    server = serve(os.path.join(short_dir, "plugins", "dv.sock"), plugin)
    try:
        code = cli.main(["volume", "resize", "db", "2gb", "--driver", "dv",
                         "--plugins-dir", os.path.join(short_dir, "plugins")])
    finally:
        server.stop()
    assert code == 0
    assert plugin.requests == [("POST", "/Dockvols.Resize", {"Name": "db", "Size": "2gb"})]
    assert capsys.readouterr().out.strip() == (
        "volume db grown from 100mb to 2048mb; ext4 filesystem grown online to fill its "
        "2048 mb device")


def test_resize_finds_a_managed_plugins_socket_through_the_engine(short_dir, capsys):
    plugins = os.path.join(short_dir, "plugins")
    engine = Recorder({"/plugins/vsphere%3Alatest/json": (200, {
        "Id": "abc123", "Enabled": True, "Config": {"Interface": {"Socket": "vsphere.sock"}}})})
    plugin = Recorder({"/Dockvols.Resize": GROWN})
    servers = [serve(os.path.join(short_dir, "docker.sock"), engine),
               serve(os.path.join(plugins, "abc123", "vsphere.sock"), plugin)]
    try:
        code = cli.main(["volume", "resize", "db", "2gb", "--json", "--plugins-dir", plugins,
                         "--docker-socket", os.path.join(short_dir, "docker.sock")])
    finally:
        for server in servers:
            server.stop()
    assert code == 0
    assert json.loads(capsys.readouterr().out)["Status"]["capacity"]["size"] == "2048mb"
    assert len(plugin.requests) == 1


def test_the_plugins_refusal_is_printed_and_exits_1(short_dir, capsys):
    plugin = Recorder({"/Dockvols.Resize": (500, {"Err": "cannot shrink volume db@ds1 to "
                                                         "50mb: its size is 100mb"})})
    path = os.path.join(short_dir, "p.sock")
    server = serve(path, plugin)
    try:
        code = cli.main(["volume", "resize", "db", "50mb", "--socket", path])
    finally:
        server.stop()
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "dockvols: cannot shrink volume db@ds1 to 50mb: its size is 100mb")


def test_no_plugin_anywhere_says_where_it_looked(short_dir, capsys):
    code = cli.main(["volume", "resize", "db", "1gb", "--driver", "nope",
                     "--plugins-dir", short_dir,
                     "--docker-socket", os.path.join(short_dir, "none.sock")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"no dockvols plugin named 'nope' on this host: neither {short_dir}/nope.sock" in err


def test_usage_errors_exit_2():
    assert cli.main(["volume", "resize", "db"]) == 2
