"""What a user waits for: ``docker volume create`` + ``docker run -v`` + ``docker volume rm``
with dockvols, against Docker's own ``local`` driver on a loop-backed ext4
(``-o type=ext4 -o device=/dev/loopN``). The local driver cannot make its disk, so its cost
includes ours doing so: sparse file + losetup + mkfs.ext4 (plugin flags) is counted in its
create, and losetup -d + rm in its remove. Interleaved, order alternating."""

from __future__ import annotations

import os
import time

from esx_service.options import MB, parse_options
from plugin.filesystem import _MKFS

from .environment import DRIVER, VOLUME_SIZE, BenchEnv, bench_main, run, standalone
from .stats import fmt_ms, fmt_ratio, md_table, ratio, summarize

RUNS = int(os.environ.get("DOCKVOLS_BENCH_USER_RUNS", "12"))
WARMUP = 1
PHASES = ("create", "run", "rm")
SIZE_BYTES = parse_options({"size": VOLUME_SIZE}).size_mb * MB


def _dockvols(env: BenchEnv, name: str) -> dict[str, float]:
    times = {}
    start = time.perf_counter()
    env.docker("volume", "create", "-d", DRIVER, "-o", f"size={VOLUME_SIZE}", name)
    times["create"] = time.perf_counter() - start
    start = time.perf_counter()
    env.docker("run", "--rm", "-v", f"{name}:/data", "busybox", "true")
    times["run"] = time.perf_counter() - start
    start = time.perf_counter()
    env.docker("volume", "rm", name)
    times["rm"] = time.perf_counter() - start
    return times


def _local(env: BenchEnv, name: str) -> dict[str, float]:
    times = {}
    image = str(env.run_dir / "local-disks" / f"{name}.img")
    os.makedirs(os.path.dirname(image), exist_ok=True)
    start = time.perf_counter()
    with open(image, "wb") as f:
        f.truncate(SIZE_BYTES)
    device = run(["losetup", "--find", "--show", image]).stdout.strip()
    try:
        run(_MKFS["ext4"] + ["-L", name[:16], device])
        env.docker("volume", "create", "-d", "local", "-o", "type=ext4", "-o",
                   f"device={device}", name)
        times["create"] = time.perf_counter() - start
        start = time.perf_counter()
        env.docker("run", "--rm", "-v", f"{name}:/data", "busybox", "true")
        times["run"] = time.perf_counter() - start
        start = time.perf_counter()
        env.docker("volume", "rm", name)
    finally:
        run(["losetup", "--detach", device], check=False)
        os.unlink(image)
    times["rm"] = time.perf_counter() - start
    return times


def measure(env: BenchEnv, runs: int = RUNS) -> dict:
    samples: dict[str, dict[str, list[float]]] = {
        side: {p: [] for p in (*PHASES, "total")} for side in ("dockvols", "local")}
    for i in range(WARMUP + runs):
        sides = [("dockvols", _dockvols), ("local", _local)]
        if i % 2:
            sides.reverse()
        for side, cycle in sides:
            times = cycle(env, f"uv{side[0]}{i:03d}")
            if i >= WARMUP:
                for phase, value in times.items():
                    samples[side][phase].append(value)
                samples[side]["total"].append(sum(times.values()))
    stats = {side: {p: summarize(v) for p, v in phases.items()}
             for side, phases in samples.items()}
    ratios = {p: ratio(stats["dockvols"][p]["p50_ms"], stats["local"][p]["p50_ms"])
              for p in (*PHASES, "total")}
    return {"runs": runs, "warmup": WARMUP, "stats": stats, "ratio_p50": ratios,
            "docker_version": env.docker_version()}


def render(r: dict) -> str:
    labels = {"create": "`docker volume create`", "run": "`docker run --rm -v … true`",
              "rm": "`docker volume rm`", "total": "all three"}
    rows = []
    for phase in (*PHASES, "total"):
        dv, lo = r["stats"]["dockvols"][phase], r["stats"]["local"][phase]
        rows.append([labels[phase], fmt_ms(lo["p50_ms"]), fmt_ms(dv["p50_ms"]),
                     f"**{fmt_ratio(r['ratio_p50'][phase])}**", fmt_ms(lo["p90_ms"]),
                     fmt_ms(dv["p90_ms"])])
    return "\n".join([
        f"{r['runs']} interleaved runs per driver (after {r['warmup']} warm-up), docker CLI "
        f"against a private dockerd {r['docker_version']}, busybox image, {VOLUME_SIZE} ext4. "
        "The `local` driver's create includes making its disk (sparse file + `losetup` + "
        "`mkfs.ext4` with the plugin's flags, then `docker volume create -o type=ext4 -o "
        "device=/dev/loopN`); its rm includes `losetup -d` + `rm` of the file. dockvols does "
        "the same work inside the plugin on first mount, so its mkfs lands in `docker run`. "
        "Times in ms.",
        "",
        md_table(["step", "local p50", "dockvols p50", "ratio p50", "local p90",
                  "dockvols p90"], rows),
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=True)


if __name__ == "__main__":
    standalone(main)
