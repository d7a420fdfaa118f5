"""Control-path latency at the plugin socket: Get, Path (volume mounted and not) and List
of 1,000 volumes, next to one raw HTTP hop measured in the same run. Targets: Get and Path
p50 under 2 ms and Get p50 at most 4x one raw hop (Get is two hops: dockerd -> plugin ->
esx_service); List of 1,000 under 50 ms."""

from __future__ import annotations

import os
import uuid

from .environment import VOLUME_SIZE, BenchEnv, DriverClient, RawHopServer, bench_main, standalone
from .stats import fmt_ms, fmt_ratio, md_table, sample, summarize, verdict

CALLS = int(os.environ.get("DOCKVOLS_BENCH_CALLS", "1000"))
LIST_VOLUMES = 1000
LIST_CALLS = int(os.environ.get("DOCKVOLS_BENCH_LIST_CALLS", "40"))
TARGET_POINT_MS = 2.0
TARGET_LIST_MS = 50.0
TARGET_GET_HOPS = 4.0  # Get p50 / raw hop p50


def sample_call(client: DriverClient, endpoint: str, body: dict, calls: int,
                warmup: int = 20) -> list[float]:
    return sample(lambda: client.call(endpoint, body), calls, warmup)


def measure(env: BenchEnv) -> dict:
    client = DriverClient()
    mounted, mount_id = "cpmounted", uuid.uuid4().hex
    client.call("Create", {"Name": mounted, "Opts": {"size": VOLUME_SIZE}})
    client.call("Mount", {"Name": mounted, "ID": mount_id})
    seeded = env.seed_volumes(LIST_VOLUMES - 1, "cp")
    idle = seeded[0]
    try:
        with RawHopServer(os.path.join(str(env.run_dir), "rawhop.sock")) as raw:
            raw_hop = summarize(sample(raw.call, CALLS, warmup=20))
        stats = {
            "Get (detached volume)": summarize(sample_call(client, "Get", {"Name": idle}, CALLS)),
            "Get (mounted volume)": summarize(sample_call(client, "Get", {"Name": mounted}, CALLS)),
            "Path (mounted volume)": summarize(sample_call(client, "Path", {"Name": mounted},
                                                      CALLS)),
            "Path (not mounted)": summarize(sample_call(client, "Path", {"Name": idle}, CALLS)),
            f"List ({LIST_VOLUMES} volumes)": summarize(sample_call(client, "List", {},
                                                               LIST_CALLS, warmup=3)),
        }
        count = len(client.call("List")["Volumes"])
        # the raw hop once more after, so a drift in machine load shows
        with RawHopServer(os.path.join(str(env.run_dir), "rawhop.sock")) as raw:
            raw_after = summarize(sample(raw.call, CALLS, warmup=20))
    finally:
        client.call("Unmount", {"Name": mounted, "ID": mount_id})
        client.call("Remove", {"Name": mounted})
        env.unseed_volumes(seeded)
        client.close()
    raw_p50 = (raw_hop["p50_ms"] + raw_after["p50_ms"]) / 2
    get_p50 = stats["Get (detached volume)"]["p50_ms"]
    return {"calls": CALLS, "list_calls": LIST_CALLS, "listed": count, "stats": stats,
            "raw_hop": raw_hop, "raw_hop_after": raw_after, "raw_hop_p50_ms": raw_p50,
            "get_over_raw_hop": get_p50 / raw_p50, "target_get_hops": TARGET_GET_HOPS}




def render(r: dict) -> str:
    rows = []
    for what, s in r["stats"].items():
        target = TARGET_LIST_MS if what.startswith("List") else TARGET_POINT_MS
        rows.append([what, s["n"], fmt_ms(s["p50_ms"]), fmt_ms(s["p90_ms"]),
                     fmt_ms(s["p99_ms"]), fmt_ms(s["max_ms"]),
                     f"p50 < {target:g} ms: {verdict(s['p50_ms'], target)}"])
    for label, s in (("raw HTTP hop (before)", r["raw_hop"]),
                     ("raw HTTP hop (after)", r["raw_hop_after"])):
        rows.append([label, s["n"], fmt_ms(s["p50_ms"]), fmt_ms(s["p90_ms"]),
                     fmt_ms(s["p99_ms"]), fmt_ms(s["max_ms"]), "-"])
    hops = r["get_over_raw_hop"]
    return "\n".join([
        "One client, one kept-alive connection, calls back to back over the plugin socket "
        f"(after 20 warm-up calls; 3 for List). List returned {r['listed']} volumes. "
        "Raw HTTP hop: a minimal stdlib `http.server` on a unix socket answering "
        "`{\"Err\":\"\"}` to the same client over a kept-alive connection, measured before "
        "and after the calls. Times in ms.",
        "",
        md_table(["call", "n", "p50", "p90", "p99", "max", "target"], rows),
        "",
        f"Get (detached) p50 / raw hop p50 = **{fmt_ratio(hops)}** (target <= "
        f"{r['target_get_hops']:g}x: {verdict(hops, r['target_get_hops'])}). A Get is two "
        "hops (dockerd -> plugin -> esx_service) plus reading one metadata file.",
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
