"""Throughput of whole life cycles (Create, Mount, Unmount, Remove) at the plugin socket with
1, 4 and 16 clients at once, each on volumes of its own: operations on different volumes
must run in parallel (only one volume's operations are serialised). The vsphere backend's
counterpart (attach+detach from 1, 4 and 16 VMs) is in bench/latency_model.py."""

from __future__ import annotations

import os
import time
import uuid

from .environment import VOLUME_SIZE, BenchEnv, DriverClient, bench_main, standalone
from .stats import fmt_ms, md_table, percentile, sample_concurrently

CLIENTS = (1, 4, 16)
SECONDS = float(os.environ.get("DOCKVOLS_BENCH_THROUGHPUT_SECONDS", "4"))


def _level(clients: int) -> dict:
    connections = [DriverClient() for _ in range(clients)]  # one kept-alive each
    stop_at = time.monotonic() + SECONDS

    def cycle(k: int, i: int) -> tuple[float]:
        client, name, mount_id = connections[k], f"tp{clients}x{k}n{i}", uuid.uuid4().hex
        start = time.perf_counter()
        client.call("Create", {"Name": name, "Opts": {"size": VOLUME_SIZE}})
        client.call("Mount", {"Name": name, "ID": mount_id})
        client.call("Unmount", {"Name": name, "ID": mount_id})
        client.call("Remove", {"Name": name})
        return (time.perf_counter() - start,)

    done = sample_concurrently(clients, cycle, lambda _k, _i: time.monotonic() < stop_at)
    for client in connections:
        client.close()
    times = done.column(0)
    return {"clients": clients, "cycles": len(times), "per_s": len(times) / done.wall,
            "p50_ms": percentile(times, 50) * 1000, "p95_ms": percentile(times, 95) * 1000,
            "errors": len(done.errors), "first_error": done.errors[0] if done.errors else ""}


def measure(env: BenchEnv) -> dict:
    return {"seconds": SECONDS, "levels": [_level(c) for c in CLIENTS]}


def render(r: dict) -> str:
    base = r["levels"][0]["per_s"] or float("nan")
    rows = [[lv["clients"], lv["cycles"], f"{lv['per_s']:.1f}", f"{lv['per_s'] / base:.2f}x",
             fmt_ms(lv["p50_ms"]), fmt_ms(lv["p95_ms"]), lv["errors"]] for lv in r["levels"]]
    errors = [lv["first_error"] for lv in r["levels"] if lv["first_error"]]
    return "\n".join([
        f"N clients, each its own kept-alive connection and its own volumes, life cycles "
        f"back to back for {r['seconds']:g} s per level; 100mb ext4. The machine has "
        f"{os.cpu_count()} cores shared by clients, plugin, esx_service and mkfs, so "
        "throughput flattens at the cores: what matters is that it does not fall and that "
        "nothing fails.",
        "",
        md_table(["clients", "life cycles", "per s", "vs 1 client", "p50 ms", "p95 ms",
                  "errors"], rows),
        *(["", f"First error: `{errors[0]}`"] if errors else []),
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
