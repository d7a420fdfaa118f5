"""Where the time goes on the slow paths: py-spy (installed into the running venv if
missing; not a project dependency) samples esx_service and the plugin process
while a workload runs at the plugin socket, wall-clock (``--idle``: waiting on a subprocess,
an fsync or the other process counts).

Three workloads: the volume life cycle (Create, Mount, Unmount, Remove: furthest from its
floor target), the same beside 5,000 other volumes (it should not change, and does), and
List of 1,000 volumes (closest to its 50 ms target). Each sample is charged to the
innermost dockvols function on its stack, so subprocess waits, fsyncs and HTTP waits show
up under the line that caused them.

It also measures, side by side in-process, List over 1,000 volumes with the dataclasses
``asdict`` that VolumeMeta/VolumeOptions.to_dict used before the fix this profile led to."""

from __future__ import annotations

import dataclasses
import linecache
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from .environment import (
    REPO,
    VOLUME_SIZE,
    BenchEnv,
    DriverClient,
    bench_main,
    seed_volumes,
    standalone,
)
from .stats import fmt_ms, fmt_ratio, md_table, ratio, summarize

SECONDS = float(os.environ.get("DOCKVOLS_BENCH_PROFILE_SECONDS", "8"))
RATE = 100  # samples per second per thread: low enough not to starve 2 cores
TOP = 10
OURS = ("esx_service/", "plugin/", "dockvols_common/")
# inside request handling: the service's API, the plugin's WSGI app under its server
ANCHORS = {"esx_service": "Api.handle ", "plugin": "WsgiHandler.answer "}


def py_spy() -> str:
    """The py-spy next to this interpreter, installed from PyPI on first use."""
    path = Path(sys.executable).with_name("py-spy")
    if not path.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True,
                       capture_output=True)
    return str(path)


def attribute(raw: str, anchor: str) -> tuple[int, Counter, Counter]:
    """From py-spy's raw (collapsed) output: the samples inside request handling, charged
    to the innermost dockvols frame (``ours``) and to the leaf frame (``leaves``)."""
    total, ours, leaves = 0, Counter(), Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if anchor not in stack or not count.isdigit():
            continue
        frames = stack[stack.index(anchor):].split(";")
        n = int(count)
        total += n
        mine = [f for f in frames if any(f"({p}" in f for p in OURS)]
        ours[mine[-1] if mine else frames[0]] += n
        leaves[_short(frames[-1])] += n
    return total, ours, leaves


def _short(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (file.py:123)``."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rstrip(')').rsplit('/', 1)[-1]})" if where else func


def _source(frame: str) -> str:
    """The source line a dockvols frame points at, e.g. ``os.fsync(fd)``."""
    where = frame.partition(" (")[2].rstrip(")")
    path, _, line = where.rpartition(":")
    for package in ("esx_service", "plugin", "dockvols_common"):
        candidate = REPO / package / path if "/" not in path else REPO / path
        if candidate.exists() and line.isdigit():
            return linecache.getline(str(candidate), int(line)).strip().replace("|", "\\|")
    return ""


def _lifecycle(client: DriverClient, stop_at: float) -> int:
    n = 0
    while time.perf_counter() < stop_at:
        name, mount_id = f"pf{n:05d}", uuid.uuid4().hex
        client.call("Create", {"Name": name, "Opts": {"size": VOLUME_SIZE}})
        client.call("Mount", {"Name": name, "ID": mount_id})
        client.call("Unmount", {"Name": name, "ID": mount_id})
        client.call("Remove", {"Name": name})
        n += 1
    return n


def _lists(client: DriverClient, stop_at: float) -> int:
    n = 0
    while time.perf_counter() < stop_at:
        client.call("List")
        n += 1
    return n


def profile(env: BenchEnv, workload, label: str) -> dict:  # type: ignore[no-untyped-def]
    spy = py_spy()
    pids = {"esx_service": env.esx.proc.pid, "plugin": env.plugin.proc.pid}
    out = {name: env.run_dir / f"profile-{label}-{name}.txt" for name in pids}
    recorders = [subprocess.Popen(
        [spy, "record", "--idle", "--threads", "--nonblocking", "-r", str(RATE),
         "-d", str(int(SECONDS) + 2), "-f", "raw", "-o", str(out[name]), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for name, pid in pids.items()]
    time.sleep(1.0)  # py-spy attaches
    client = DriverClient()
    started = time.perf_counter()
    count = workload(client, started + SECONDS)
    elapsed = time.perf_counter() - started
    client.close()
    for rec in recorders:
        _, err = rec.communicate(timeout=60)
        if rec.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    result: dict = {"label": label, "operations": count, "per_op_ms": elapsed / count * 1000}
    for name in pids:
        total, ours, leaves = attribute(out[name].read_text(), ANCHORS[name])
        result[name] = {"samples": total,
                        "ours": [(f, n / total) for f, n in ours.most_common(TOP)],
                        "leaves": [(f, n / total) for f, n in leaves.most_common(5)]}
    return result


def _asdict_meta(self) -> dict:  # type: ignore[no-untyped-def]
    data = dataclasses.asdict(self)
    data["options"] = self.options.to_dict()
    return data


def _asdict_options(self) -> dict:  # type: ignore[no-untyped-def]
    return dataclasses.asdict(self)


def to_dict_ab(volumes: int = 1000, rounds: int = 20) -> dict:
    """VolumeService.list in-process over ``volumes`` seeded volumes, interleaved: the
    dataclasses.asdict to_dict (before) against the current one (after)."""
    from esx_service import metadata, options
    from esx_service.backends.local import LocalBackend
    from esx_service.volumes import VolumeService

    root = Path(tempfile.mkdtemp(prefix="dvb-ab-", dir="/tmp"))
    current = (metadata.VolumeMeta.to_dict, options.VolumeOptions.to_dict)
    before = (_asdict_meta, _asdict_options)
    times: dict[str, list[float]] = {"before": [], "after": []}
    try:
        seed_volumes(root, volumes, "ab")
        service = VolumeService(LocalBackend({"datastore1": str(root)}))
        for i in range(rounds):
            for side in (("before", "after") if i % 2 else ("after", "before")):
                meta_fn, opt_fn = before if side == "before" else current
                metadata.VolumeMeta.to_dict = meta_fn  # type: ignore[method-assign]
                options.VolumeOptions.to_dict = opt_fn  # type: ignore[method-assign]
                start = time.perf_counter()
                assert len(service.list("bench-vm")) == volumes
                times[side].append(time.perf_counter() - start)
    finally:
        metadata.VolumeMeta.to_dict, options.VolumeOptions.to_dict = current  # type: ignore
        shutil.rmtree(root, ignore_errors=True)
    stats = {k: summarize(v) for k, v in times.items()}
    return {"volumes": volumes, "rounds": rounds, "stats": stats,
            "ratio_p50": ratio(stats["after"]["p50_ms"], stats["before"]["p50_ms"])}


def measure(env: BenchEnv) -> dict:
    results = {"lifecycle": profile(env, _lifecycle, "lifecycle")}
    seeded = env.seed_volumes(1000, "pl")
    try:
        results["list"] = profile(env, _lists, "list1000")
        seeded += env.seed_volumes(4000, "pm")
        DriverClient().call("List")  # the plugin's cache now knows all 5,000
        results["lifecycle5000"] = profile(env, _lifecycle, "lifecycle5000")
    finally:
        env.unseed_volumes(seeded)
    results["to_dict_ab"] = to_dict_ab()
    return results


def _render_profile(p: dict, title: str) -> list[str]:
    lines = [f"**{title}**: {p['operations']} operations in {SECONDS:g} s under py-spy "
             f"({fmt_ms(p['per_op_ms'])} ms each, slowed by sampling). Share of request-"
             "handling wall time, charged to the innermost dockvols function:", ""]
    for proc in ("plugin", "esx_service"):
        d = p[proc]
        rows = [[f"`{_short(f)}`", f"`{_source(f)}`" if _source(f) else "",
                 f"{share * 100:.1f}%"] for f, share in d["ours"]]
        leaves = ", ".join(f"`{f}` {share * 100:.0f}%" for f, share in d["leaves"])
        lines += [md_table([f"{proc} ({d['samples']} samples)", "line", "share"], rows), "",
                  f"Leaves ({proc}): {leaves}.", ""]
    return lines


def render(r: dict) -> str:
    ab = r["to_dict_ab"]
    lines = _render_profile(r["lifecycle"], "Life cycle (Create, Mount, Unmount, Remove)")
    lines += _render_profile(r["lifecycle5000"], "The same life cycle beside 5,000 other "
                             "volumes (after a List, so the plugin's cache holds them all)")
    lines += _render_profile(r["list"], "List of 1,000 volumes")
    lines += [
        f"**The fix it led to, measured side by side**: VolumeService.list in-process over "
        f"{ab['volumes']} volumes, {ab['rounds']} interleaved rounds: with "
        f"`dataclasses.asdict` in to_dict p50 {fmt_ms(ab['stats']['before']['p50_ms'])} ms, "
        f"field-by-field now {fmt_ms(ab['stats']['after']['p50_ms'])} ms "
        f"(**{fmt_ratio(ab['ratio_p50'])}**).",
    ]
    return "\n".join(lines)


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
