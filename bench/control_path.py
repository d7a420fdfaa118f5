"""Control-path latency at the plugin socket: Get, Path (volume mounted and not) and List
of 1,000 volumes, next to one raw HTTP hop measured in the same run. Targets: Get and Path
p50 under 2 ms and Get p50 at most 4x one raw hop (Get is two hops: dockerd -> plugin ->
esx_service); List of 1,000 under 50 ms."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from plugin.esx_client import HttpEsxClient

from .environment import VOLUME_SIZE, BenchEnv, DriverClient, RawHopServer, bench_main, standalone
from .processes import REPO, wait_for
from .stats import fmt_ms, fmt_ratio, md_table, sample, summarize, verdict

CALLS = int(os.environ.get("DOCKVOLS_BENCH_CALLS", "1000"))
LIST_VOLUMES = 1000
LIST_CALLS = int(os.environ.get("DOCKVOLS_BENCH_LIST_CALLS", "40"))
ROUNDS = 10
TARGET_POINT_MS = 2.0
TARGET_LIST_MS = 50.0
TARGET_GET_HOPS = 4.0  # Get p50 / raw hop p50


def trivial_app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """What a server costs with nothing behind it (the plugin's server and gunicorn, side
    by side, run this)."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = b'{"Err":""}'
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


@contextmanager
def _served(argv: list[str], sock: str, what: str) -> Iterator[DriverClient]:
    """A server process started with ``argv`` (from the repository) and a client of the
    socket it makes; the process is stopped afterwards."""
    proc = subprocess.Popen(argv, cwd=str(REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), 30, what)
        client = DriverClient(sock)
        try:
            yield client
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.wait(30)


def trivial_gunicorn(run_dir: str) -> AbstractContextManager[DriverClient]:
    """gunicorn as the plugin ran it before issue 15 (one gthread worker, 32 threads) serving
    trivial_app: the figure the plugin's own server is measured against."""
    sock = os.path.join(run_dir, "gtrivial.sock")
    return _served([sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
                    "--threads", "32", "--workers", "1", "--bind", f"unix:{sock}",
                    "bench.control_path:trivial_app"], sock, "gunicorn with a trivial app")


_LEAN = ("import sys\n"
         "from bench.control_path import trivial_app\n"
         "from plugin.server import PluginServer, serve_until_stopped\n"
         "serve_until_stopped(PluginServer(sys.argv[1], trivial_app), 5.0)\n")


def trivial_lean(run_dir: str) -> AbstractContextManager[DriverClient]:
    """The plugin's own server (plugin/server.py) serving trivial_app, in its own process
    as gunicorn is, so the two compare alike."""
    sock = os.path.join(run_dir, "ltrivial.sock")
    return _served([sys.executable, "-c", _LEAN, sock], sock,
                   "the plugin's server with a trivial app")


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
    esx = HttpEsxClient(f"unix://{env.esx_socket}")
    try:
        with RawHopServer(os.path.join(str(env.run_dir), "rawhop.sock")) as raw, \
                trivial_gunicorn(str(env.run_dir)) as trivial, \
                trivial_lean(str(env.run_dir)) as lean:
            # Every point call in turn, ROUNDS times: a burst of load on this shared machine
            # then weighs on each series alike, and their ratios hold.
            calls: dict[str, Callable[[], object]] = {
                "Get (detached volume)": lambda: client.call("Get", {"Name": idle}),
                "Get (mounted volume)": lambda: client.call("Get", {"Name": mounted}),
                "Path (mounted volume)": lambda: client.call("Path", {"Name": mounted}),
                "Path (not mounted)": lambda: client.call("Path", {"Name": idle}),
                "raw HTTP hop": raw.call,
                # the parts of a Get, each on its own: the plugin's server with nothing
                # behind it, and the second hop (the plugin's kept-alive call to esx_service)
                "gunicorn gthread, trivial WSGI app": lambda: trivial.call("Get", {"Name": idle}),
                "plugin's server, trivial WSGI app": lambda: lean.call("Get", {"Name": idle}),
                "esx_service Get (the second hop)": lambda: esx.get(idle),
            }
            times: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(ROUNDS):
                for what, call in calls.items():
                    times[what] += sample(call, max(1, CALLS // ROUNDS), warmup=5)
        summaries = {k: summarize(v) for k, v in times.items()}
        stats = {k: summaries.pop(k) for k in list(calls)[:4]}
        stats[f"List ({LIST_VOLUMES} volumes)"] = summarize(
            sample_call(client, "List", {}, LIST_CALLS, warmup=3))
        count = len(client.call("List")["Volumes"])
    finally:
        client.call("Unmount", {"Name": mounted, "ID": mount_id})
        client.call("Remove", {"Name": mounted})
        env.unseed_volumes(seeded)
        client.close()
    raw_hop = summaries.pop("raw HTTP hop")
    get_p50 = stats["Get (detached volume)"]["p50_ms"]
    return {"calls": CALLS, "rounds": ROUNDS, "list_calls": LIST_CALLS, "listed": count,
            "stats": stats, "parts": summaries, "raw_hop": raw_hop,
            "raw_hop_p50_ms": raw_hop["p50_ms"], "get_over_raw_hop": get_p50 / raw_hop["p50_ms"],
            "target_get_hops": TARGET_GET_HOPS}


def render(r: dict) -> str:
    rows = []
    for what, s in r["stats"].items():
        target = TARGET_LIST_MS if what.startswith("List") else TARGET_POINT_MS
        rows.append([what, s["n"], fmt_ms(s["p50_ms"]), fmt_ms(s["p90_ms"]),
                     fmt_ms(s["p99_ms"]), fmt_ms(s["max_ms"]),
                     f"p50 < {target:g} ms: {verdict(s['p50_ms'], target)}"])
    for label, s in (("raw HTTP hop", r["raw_hop"]), *r.get("parts", {}).items()):
        rows.append([label, s["n"], fmt_ms(s["p50_ms"]), fmt_ms(s["p90_ms"]),
                     fmt_ms(s["p99_ms"]), fmt_ms(s["max_ms"]), "-"])
    hops = r["get_over_raw_hop"]
    raw = r["raw_hop_p50_ms"]
    parts = r.get("parts", {})
    breakdown = ""
    if parts:
        floor = parts["plugin's server, trivial WSGI app"]["p50_ms"]
        gunicorn = parts["gunicorn gthread, trivial WSGI app"]["p50_ms"]
        second = parts["esx_service Get (the second hop)"]["p50_ms"]
        path = r["stats"]["Path (not mounted)"]["p50_ms"]
        get = r["stats"]["Get (detached volume)"]["p50_ms"]
        breakdown = (
            f" In raw hops: the plugin's server alone (plugin/server.py on "
            f"dockvols_common/http_server.py: a thread per kept-alive connection, the request "
            f"answered in that thread, one write per answer) {fmt_ratio(floor / raw)}, where "
            f"gunicorn's gthread worker, which served the plugin before, takes "
            f"{fmt_ratio(gunicorn / raw)} in the same run (its main thread polls, a pool "
            f"thread answers, the connection goes back through a queue); the plugin's own "
            f"dispatch on top of its server (Path, no esx_service call) "
            f"{fmt_ratio((path - floor) / raw)}; the second hop to esx_service with its work "
            f"{fmt_ratio(second / raw)}; the Get's own work in the plugin (its view, the "
            f"cache, the log line) {fmt_ratio((get - path - second) / raw)}.")
    return "\n".join([
        "One client, one kept-alive connection, calls back to back over the plugin socket; "
        f"the point calls interleaved, each in turn {r['rounds']} times (5 warm-up calls "
        f"each time), List after them (3 warm-ups). List returned {r['listed']} volumes. "
        "Raw HTTP hop: a minimal stdlib `http.server` on a unix socket answering "
        "`{\"Err\":\"\"}` to the same client over a kept-alive connection. Times in ms.",
        "",
        md_table(["call", "n", "p50", "p90", "p99", "max", "target"], rows),
        "",
        f"Get (detached) p50 / raw hop p50 = **{fmt_ratio(hops)}** (target <= "
        f"{r['target_get_hops']:g}x: {verdict(hops, r['target_get_hops'])}). A Get is two "
        "hops (dockerd -> plugin -> esx_service) plus reading one metadata file." + breakdown,
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
