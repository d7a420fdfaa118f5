"""`dockvols volume resize` against the managed plugin: the command finds the plugin's socket
under /run/docker/plugins/<plugin id>/ by asking the engine, and the plugin (in its own
rootfs, with its own xfs_growfs) grows the mounted filesystem of a running container."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import Docker, make_volume
from .conftest import NAME, ManagedPlugin

BIN = Path(sys.executable).parent


def test_the_guest_command_grows_a_volume_of_the_managed_plugin_online(
        mdv: Docker, managed: ManagedPlugin, run_dir: Path) -> None:
    make_volume(mdv, "mgrow", "size=300mb", "fstype=xfs")
    mdv("run", "-d", "--name", "mg", "-v", "mgrow:/data", "busybox", "sh", "-c",
        "echo kept > /data/f; sleep 600")
    engine = mdv.host.removeprefix("unix://")
    done = subprocess.run([str(BIN / "dockvols"), "volume", "resize", "mgrow", "700mb",
                           "--driver", NAME, "--docker-socket", engine],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "grown from 300mb to 700mb; xfs filesystem grown online" in done.stdout
    df = mdv.out("exec", "mg", "df", "-k", "/data").splitlines()[-1].split()
    assert int(df[1]) > 600 * 1024
    assert mdv.out("exec", "mg", "cat", "/data/f") == "kept"
    assert mdv.inspect_volume("mgrow")["Status"]["capacity"]["size"] == "700mb"
