"""How List grows with the number of volumes (10, 100, 1,000, 10,000: the cost per volume
must stay flat, here: at 10,000 at most FLAT_LIMIT x its cost at 1,000, at the plugin and at
the service), split into the plugin socket and esx_service's own API; and Get under
1, 2, 4, 8, 16 concurrent clients (throughput and p99)."""

from __future__ import annotations

import os
import threading
import time
import uuid

from plugin.esx_client import HttpEsxClient

from .environment import VOLUME_SIZE, BenchEnv, DriverClient, bench_main, standalone
from .stats import fmt_ms, fmt_ratio, md_table, percentile, ratio, sample, summarize, timed

SIZES = (10, 100, 1000, 10000)
FLAT_LIMIT = 1.25  # µs/volume at the largest size over µs/volume at 1,000
CONCURRENCY = (1, 2, 4, 8, 16)
LIFECYCLES = 8
SECONDS = float(os.environ.get("DOCKVOLS_BENCH_CONC_SECONDS", "3"))


def _list_calls(size: int) -> int:
    return 30 if size <= 1000 else 8




def _lifecycles(client: DriverClient, prefix: str) -> dict:
    """Create+Mount+Unmount+Remove of a new volume while the datastore holds the others
    (and the plugin's cache knows them all, after the List above)."""
    times = []
    for i in range(LIFECYCLES + 1):
        name, mount_id = f"{prefix}{i}", uuid.uuid4().hex
        start = time.perf_counter()
        client.call("Create", {"Name": name, "Opts": {"size": VOLUME_SIZE}})
        client.call("Mount", {"Name": name, "ID": mount_id})
        client.call("Unmount", {"Name": name, "ID": mount_id})
        client.call("Remove", {"Name": name})
        if i:  # the first one warms up
            times.append(time.perf_counter() - start)
    return summarize(times)


def list_scaling(env: BenchEnv) -> tuple[list[dict], list[str]]:
    client = DriverClient()
    esx = HttpEsxClient(f"unix://{env.esx_socket}")
    seeded: list[str] = []
    rows = []
    for size in SIZES:
        seeded += env.seed_volumes(size - len(seeded), f"sc{len(seeded)}-")
        assert len(client.call("List")["Volumes"]) == size
        calls = _list_calls(size)
        # alternately, so that a burst of load weighs on both alike
        sample(lambda: (client.call("List"), esx.list()), 0, warmup=2)
        plugin_t, service_t = [], []
        for _ in range(calls):
            plugin_t.append(timed(lambda: client.call("List")))
            service_t.append(timed(esx.list))
        plugin, service = summarize(plugin_t), summarize(service_t)
        cycle = _lifecycles(client, f"lc{size}-")
        rows.append({"volumes": size, "calls": calls, "plugin": plugin, "esx_service": service,
                     "lifecycle": cycle,
                     "plugin_us_per_volume": plugin["p50_ms"] * 1000 / size,
                     "esx_us_per_volume": service["p50_ms"] * 1000 / size})
    client.close()
    return rows, seeded


def get_level(names: list[str], clients: int) -> dict:
    """``clients`` threads calling Get back to back for SECONDS, started together."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stale = [0] * clients
    errors: list[BaseException] = []
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(k: int) -> None:
        client = DriverClient()
        try:
            client.call("Get", {"Name": names[k % len(names)]})  # connect + warm
            start_gate.wait()
            i = k
            while time.perf_counter() < stop_at[0]:
                start = time.perf_counter()
                answer = client.call("Get", {"Name": names[i % len(names)]})
                latencies[k].append(time.perf_counter() - start)
                if "stale" in answer["Volume"]["Status"]:
                    stale[k] += 1  # served from the plugin's cache: esx_service refused
                i += clients
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + SECONDS
    began = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} Get client(s) failed: {errors[0]!r}")
    flat = [x for per in latencies for x in per]
    return {"clients": clients, "calls": len(flat), "throughput_per_s": len(flat) / elapsed,
            "p50_ms": percentile(flat, 50) * 1000, "p99_ms": percentile(flat, 99) * 1000,
            "stale": sum(stale)}


def get_concurrency(names: list[str]) -> list[dict]:
    return [get_level(names, clients) for clients in CONCURRENCY]


def measure(env: BenchEnv) -> dict:
    rows, seeded = list_scaling(env)
    try:
        conc = get_concurrency(seeded[:100])
    finally:
        env.unseed_volumes(seeded)
    at = {row["volumes"]: row for row in rows}
    big, ref = at[SIZES[-1]], at[1000]
    flat = {side: big[f"{side}_us_per_volume"] / ref[f"{side}_us_per_volume"]
            for side in ("plugin", "esx")}
    return {"list": rows, "get_concurrency": conc, "seconds_per_level": SECONDS,
            "flatness": flat, "flat_limit": FLAT_LIMIT, "largest": SIZES[-1]}


def render(r: dict) -> str:
    base = r["list"][0]
    list_rows = []
    for row in r["list"]:
        p, s = row["plugin"], row["esx_service"]
        list_rows.append([row["volumes"], row["calls"], fmt_ms(p["p50_ms"]),
                          fmt_ms(p["p99_ms"]), f"{row['plugin_us_per_volume']:.1f}",
                          fmt_ms(s["p50_ms"]), f"{row['esx_us_per_volume']:.1f}",
                          f"{row['plugin_us_per_volume'] / base['plugin_us_per_volume']:.2f}",
                          fmt_ms(row["lifecycle"]["p50_ms"]),
                          fmt_ratio(ratio(row["lifecycle"]["p50_ms"],
                                          base["lifecycle"]["p50_ms"]))])
    conc_rows = [[c["clients"], c["calls"], f"{c['throughput_per_s']:.0f}",
                  fmt_ms(c["p50_ms"]), fmt_ms(c["p99_ms"]), c["stale"]]
                 for c in r["get_concurrency"]]
    return "\n".join([
        "**List vs. number of volumes.** Volumes seeded as metadata + descriptor + sparse "
        "extent files in esx_service's own format (esx_service/metadata.py, vmdk.py). "
        "\"plugin\" is VolumeDriver.List at the plugin socket (what dockerd sees); "
        "\"esx_service\" is `GET /v1/volumes` on its socket (the plugin's client, a "
        "kept-alive connection), the two called alternately. Times in ms, per-volume cost "
        "in µs at p50. \"life cycle\" is one "
        f"more volume's Create+Mount+Unmount+Remove at that size (p50 of {LIFECYCLES}, after "
        "a List so the plugin's cache knows every volume, as after dockerd's start-up Gets): "
        "it should not depend on how many other volumes exist.",
        "",
        md_table(["volumes", "calls", "plugin p50", "plugin p99", "plugin µs/volume",
                  "esx_service p50", "esx_service µs/volume", "µs/volume vs 10",
                  "life cycle p50", "life cycle vs 10"], list_rows),
        "",
        f"Flat to {r['largest']:,}: µs/volume at {r['largest']:,} over µs/volume at 1,000 is "
        f"{r['flatness']['plugin']:.2f} at the plugin and {r['flatness']['esx']:.2f} at "
        f"esx_service (flat means <= {r['flat_limit']:g}: "
        f"{'meets' if max(r['flatness'].values()) <= r['flat_limit'] else 'misses'}).",
        "",
        f"**Get under concurrency.** N client threads (in the bench process, each with its "
        f"own kept-alive connection) call Get back to back for {r['seconds_per_level']:g} s "
        "per level over 100 volumes; the plugin serves each connection in its own thread. "
        "2 cores for clients, plugin and esx_service together.",
        "",
        md_table(["clients", "calls", "Get/s", "p50 ms", "p99 ms", "stale answers"],
                 conc_rows),
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
