"""Control-path latency at the plugin socket: Get, Path (volume mounted and not) and List
of 1,000 volumes. Targets: Get and Path p50 under 2 ms; List of 1,000 under 50 ms."""

from __future__ import annotations

import os
import time
import uuid

from .harness import (
    VOLUME_SIZE,
    BenchEnv,
    DriverClient,
    bench_main,
    fmt_ms,
    md_table,
    standalone,
    summarize,
    verdict,
)

CALLS = int(os.environ.get("DOCKVOLS_BENCH_CALLS", "1000"))
LIST_VOLUMES = 1000
LIST_CALLS = int(os.environ.get("DOCKVOLS_BENCH_LIST_CALLS", "40"))
TARGET_POINT_MS = 2.0
TARGET_LIST_MS = 50.0


def sample(client: DriverClient, endpoint: str, body: dict, calls: int,
           warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        client.call(endpoint, body)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.call(endpoint, body)
        times.append(time.perf_counter() - start)
    return times


def measure(env: BenchEnv) -> dict:
    client = DriverClient()
    mounted, mount_id = "cpmounted", uuid.uuid4().hex
    client.call("Create", {"Name": mounted, "Opts": {"size": VOLUME_SIZE}})
    client.call("Mount", {"Name": mounted, "ID": mount_id})
    seeded = env.seed_volumes(LIST_VOLUMES - 1, "cp")
    idle = seeded[0]
    try:
        stats = {
            "Get (detached volume)": summarize(sample(client, "Get", {"Name": idle}, CALLS)),
            "Get (mounted volume)": summarize(sample(client, "Get", {"Name": mounted}, CALLS)),
            "Path (mounted volume)": summarize(sample(client, "Path", {"Name": mounted},
                                                      CALLS)),
            "Path (not mounted)": summarize(sample(client, "Path", {"Name": idle}, CALLS)),
            f"List ({LIST_VOLUMES} volumes)": summarize(sample(client, "List", {},
                                                               LIST_CALLS, warmup=3)),
        }
        count = len(client.call("List")["Volumes"])
    finally:
        client.call("Unmount", {"Name": mounted, "ID": mount_id})
        client.call("Remove", {"Name": mounted})
        env.unseed_volumes(seeded)
        client.close()
    return {"calls": CALLS, "list_calls": LIST_CALLS, "listed": count, "stats": stats}


def render(r: dict) -> str:
    rows = []
    for what, s in r["stats"].items():
        target = TARGET_LIST_MS if what.startswith("List") else TARGET_POINT_MS
        rows.append([what, s["n"], fmt_ms(s["p50_ms"]), fmt_ms(s["p90_ms"]),
                     fmt_ms(s["p99_ms"]), fmt_ms(s["max_ms"]),
                     f"p50 < {target:g} ms: {verdict(s['p50_ms'], target)}"])
    return "\n".join([
        "One client, one kept-alive connection, calls back to back over the plugin socket "
        f"(after 20 warm-up calls; 3 for List). List returned {r['listed']} volumes. "
        "Times in ms.",
        "",
        md_table(["call", "n", "p50", "p90", "p99", "max", "target"], rows),
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
