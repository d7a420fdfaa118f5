"""The managed plugin's footprint and start-up time.

Builds the plugin directory with scripts/build-plugin.sh (CREATE=0; the debootstrap tree is
cached under build/, so this times a warm build unless build/cache is empty), creates the
plugin in a private dockerd and records:

- ``rootfs_bytes``: du of build/plugin/rootfs;
- ``image_bytes``: the plugin's layer as dockerd stores it (gzip, what `docker plugin push`
  uploads), and ``installed_rootfs_bytes``: the rootfs as dockerd unpacked it;
- ``startup_ms``: `docker plugin enable` until the plugin's socket answers
  /Plugin.Activate, RUNS times (disable in between), median and all runs;
- ``build_s`` and ``create_s``.

No esx_service is needed: the plugin binds its socket first and connects lazily.

    .venv/bin/python -m bench.plugin_image      # prints one JSON line
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .processes import answers_activate

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("DOCKVOLS_BENCH_RUNS", "5"))
NAME = os.environ.get("DOCKVOLS_BENCH_PLUGIN", "dvbench-managed")


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sxb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


class PrivateDocker:
    """A dockerd with its own roots, and the docker CLI against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}"}
        log = open(root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
             f"--data-root={root / 'data'}", f"--exec-root={root / 'x'}",
             f"--pidfile={root / 'docker.pid'}", f"--host=unix://{self.sock}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while self("version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"dockerd did not start; see {root / 'dockerd.log'}")
            time.sleep(0.2)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                              timeout=300)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done

    def stop(self) -> None:
        self("plugin", "disable", "-f", NAME, check=False)
        self("plugin", "rm", "-f", NAME, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def measure(work: Path) -> dict:
    started = time.monotonic()
    subprocess.run([str(REPO / "scripts" / "build-plugin.sh")], env={**os.environ, "CREATE": "0"},
                   check=True, capture_output=True)
    build_s = time.monotonic() - started
    out = REPO / "build" / "plugin"
    result: dict = {"bench": "plugin_image", "build_s": round(build_s, 1),
                    "rootfs_bytes": du_bytes(out / "rootfs")}
    for sub in ("esx-run", "state"):
        (work / sub).mkdir()
    docker = PrivateDocker(work)
    try:
        started = time.monotonic()
        docker("plugin", "create", NAME, str(out))
        result["create_s"] = round(time.monotonic() - started, 1)
        docker("plugin", "set", NAME, f"esx-run.source={work / 'esx-run'}",
               f"state.source={work / 'state'}", f"docker-sock.source={docker.sock}")
        plugin = json.loads(docker("plugin", "inspect", NAME).stdout)[0]
        blobs = work / "data" / "plugins" / "storage" / "blobs" / "sha256"
        result["image_bytes"] = max(p.stat().st_size for p in blobs.iterdir())
        installed = work / "data" / "plugins" / plugin["Id"] / "rootfs"
        result["installed_rootfs_bytes"] = du_bytes(installed)
        sock = f"/run/docker/plugins/{plugin['Id']}/vsphere.sock"
        runs = []
        for _ in range(RUNS):
            started = time.monotonic()
            docker("plugin", "enable", "--timeout", "60", NAME)
            while not answers_activate(sock, 1.0):
                if time.monotonic() - started > 30:
                    raise RuntimeError("the plugin did not answer Plugin.Activate within 30 s")
                time.sleep(0.01)
            runs.append((time.monotonic() - started) * 1000)
            docker("plugin", "disable", NAME)
        result["startup_ms"] = {"median": round(statistics.median(runs)),
                                "runs": [round(r) for r in runs]}
        result["startup_budget_ms"] = 9500
    finally:
        docker.stop()
    return result


def main() -> int:
    if os.geteuid() != 0:
        print("bench.plugin_image: needs root (debootstrap, dockerd)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="dvpi-", dir="/tmp"))
    try:
        print(json.dumps(measure(work)))
    finally:
        subprocess.run(["umount", "-R", "-l", str(work / "data")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
