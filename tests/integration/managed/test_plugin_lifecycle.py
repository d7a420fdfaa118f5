"""Managed-plugin life cycle with volumes in use: `docker plugin disable -f`, enable again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.processes import REPO, wait_for

from ..conftest import Docker, loops_on
from .conftest import ManagedPlugin, volume_mounted


def test_disable_force_while_mounted_then_enable_loses_nothing(
        mdv: Docker, managed: ManagedPlugin, run_dir: Path) -> None:
    mdv("volume", "create", "-d", managed.full_name, "-o", "size=150mb", "keep")
    mdv("run", "-d", "--name", "early", "-v", "keep:/data", "busybox", "sleep", "600")
    mdv("exec", "early", "sh", "-c", "echo before > /data/f && sync")
    assert volume_mounted(managed, "keep@datastore1")

    managed.disable(force=True)  # refused without -f: the volume is in use
    assert not managed.enabled
    assert not managed.activate()
    # The container keeps its filesystem while the plugin is away.
    assert mdv.out("exec", "early", "cat", "/data/f") == "before"
    mdv("exec", "early", "sh", "-c", "echo during > /data/g && sync")

    managed.enable()
    # Recovery finds `early` in the Docker engine and mounts the volume again.
    wait_for(lambda: volume_mounted(managed, "keep@datastore1"), 30,
             "recovery to mount the in-use volume again")
    assert mdv.out("exec", "early", "cat", "/data/g") == "during"
    mdv("exec", "early", "sh", "-c", "echo after > /data/h && sync")

    mdv("run", "-d", "--name", "late", "-v", "keep:/data", "busybox", "sleep", "600")
    assert mdv.out("exec", "late", "cat", "/data/f", "/data/g", "/data/h").split() == [
        "before", "during", "after"]
    mdv("exec", "late", "sh", "-c", "echo from-late > /data/i")
    assert mdv.out("exec", "early", "cat", "/data/i") == "from-late"  # one filesystem

    # Reference counts survived: the first container to go leaves the volume mounted, the
    # last one unmounts and detaches it.
    mdv("rm", "-f", "early")
    assert volume_mounted(managed, "keep@datastore1")
    assert mdv.out("exec", "late", "cat", "/data/f") == "before"
    mdv("rm", "-f", "late")
    wait_for(lambda: not volume_mounted(managed, "keep@datastore1"), 10,
             "the volume to be unmounted after its last container")
    assert not [line for line in loops_on(run_dir) if "/keep-flat.vmdk" in line]
    out = mdv.out("run", "--rm", "-v", "keep:/data", "busybox", "cat", "/data/f", "/data/g",
                  "/data/h", "/data/i")
    assert out.split() == ["before", "during", "after", "from-late"]


def test_plugin_disable_without_force_is_refused_while_in_use(
        mdv: Docker, managed: ManagedPlugin) -> None:
    mdv("volume", "create", "-d", managed.full_name, "busyvol")
    mdv("run", "-d", "--name", "holder", "-v", "busyvol:/data", "busybox", "sleep", "600")
    refused = mdv("plugin", "disable", managed.name, check=False)
    assert refused.returncode != 0
    assert "in use" in refused.stderr
    assert managed.enabled
    mdv("exec", "holder", "sh", "-c", "echo ok > /data/x")


def test_plugin_asks_only_for_what_it_needs(managed: ManagedPlugin) -> None:
    plugin = json.loads(managed.docker.out("plugin", "inspect", managed.name))[0]
    config, settings = plugin["Config"], plugin["Settings"]
    assert config["Interface"]["Types"] == ["docker.volumedriver/1.0"]
    assert config["Interface"]["Socket"] == "vsphere.sock"
    assert config["Linux"]["Capabilities"] == ["CAP_SYS_ADMIN"]
    assert config["Network"]["Type"] == "host"
    assert config["PropagatedMount"] == "/mnt/vmdk"
    assert not config["PidHost"] and not config["IpcHost"]
    assert {m["Destination"] for m in settings["Mounts"]} == {
        "/dev", "/run/dockvols", "/var/lib/dockvols/plugin", "/run/docker.sock"}
    env = dict(item.split("=", 1) for item in settings["Env"])
    assert env["DOCKVOLS_DRIVER_NAME"] == managed.name  # set by build-plugin.sh for recovery


def test_the_plugin_image_holds_the_guest_half_only(managed: ManagedPlugin, mdir: Path) -> None:
    """The rootfs as dockerd unpacked it: the plugin's Python finds the plugin and the package
    it shares with the host, and none of the host's (scripts/plugin_project.py)."""
    rootfs = mdir / "root" / "plugins" / managed.id / "rootfs"
    wanted = ("plugin", "dockvols_common", "esx_service", "admin_web", "pyVmomi")
    probe = ("import importlib.util as u; "
             f"print(' '.join(m for m in {wanted!r} if u.find_spec(m)))")
    found = subprocess.run(["chroot", str(rootfs), "/opt/dockvols/bin/python", "-B", "-c", probe],
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True,
                           text=True, check=True, timeout=60).stdout.split()
    assert found == ["plugin", "dockvols_common"]


def build_plugin(docker: Docker, name: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "scripts" / "build-plugin.sh")],
                          env={**docker.env, "PLUGIN_NAME": name, **env}, capture_output=True,
                          text=True, timeout=600)


def test_make_plugin_again_refuses_in_one_line_while_a_volume_is_in_use(
        mdv: Docker, managed: ManagedPlugin) -> None:
    mdv("volume", "create", "-d", managed.full_name, "rebuilt")
    mdv("run", "-d", "--name", "rebuilder", "-v", "rebuilt:/data", "busybox", "sleep", "600")
    again = build_plugin(mdv, managed.name)
    assert again.returncode == 1
    last = again.stderr.strip().splitlines()[-1]
    assert f"plugin {managed.name} is in use" in last and "docker plugin disable -f" in last
    # Nothing was touched: same plugin, still enabled, the container still writes.
    assert mdv.out("plugin", "inspect", "-f", "{{.Id}}", managed.name) == managed.id
    assert managed.enabled
    mdv("exec", "rebuilder", "sh", "-c", "echo ok > /data/x && sync")


def test_make_plugin_again_replaces_the_plugin_keeping_its_settings(mdocker: Docker) -> None:
    name = "dvrebuild"  # a plugin of its own: the session's `managed` one stays as it is
    # Other file times than the session's plugin: dockerd refuses a second plugin whose
    # content (digest) equals one it has. Both builds here are alike, as a rebuild is.
    epoch = {"SOURCE_DATE_EPOCH": "1000000000"}
    mdocker("plugin", "rm", "-f", name, check=False)
    try:
        first = build_plugin(mdocker, name, **epoch)
        assert first.returncode == 0, first.stderr
        first_id = mdocker.out("plugin", "inspect", "-f", "{{.Id}}", name)
        mdocker("plugin", "set", name, "DOCKVOLS_LOG_LEVEL=DEBUG", "state.source=/tmp")
        again = build_plugin(mdocker, name, **epoch)
        assert again.returncode == 0, again.stderr
        assert "tar" not in again.stderr.lower()
        assert f"removed the previous {name}" in again.stderr
        assert mdocker.out("plugin", "inspect", "-f", "{{.Id}}", name) != first_id
        settings = json.loads(mdocker.out("plugin", "inspect", name))[0]["Settings"]
        assert "DOCKVOLS_LOG_LEVEL=DEBUG" in settings["Env"]
        assert "DOCKVOLS_DRIVER_NAME=dvrebuild" in settings["Env"]
        assert {m["Name"]: m["Source"] for m in settings["Mounts"]}["state"] == "/tmp"
    finally:
        mdocker("plugin", "rm", "-f", name, check=False)
