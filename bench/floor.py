"""dockvols Create+Mount and Unmount+Remove at the VolumeDriver socket against the floor:
the same primitives done directly (sparse file, losetup, mkfs.ext4 with the plugin's own
flags, mount; then umount, losetup -d, rm). Runs are interleaved, alternating which side
goes first, so both see the same machine noise."""

from __future__ import annotations

import os
import time

from esx_service.options import MB, parse_options
from plugin.filesystem import _MKFS

from .environment import (
    VOLUME_SIZE,
    BenchEnv,
    DriverClient,
    bench_main,
    life_cycle,
    run,
    standalone,
)
from .stats import fmt_ms, fmt_ratio, md_table, ratio, summarize, verdict

RUNS = int(os.environ.get("DOCKVOLS_BENCH_FLOOR_RUNS", "40"))
WARMUP = 3
TARGET = 1.15
SIZE_BYTES = parse_options({"size": VOLUME_SIZE}).size_mb * MB


class Floor:
    """What a volume costs with nothing but the primitives: the lower bound."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def create_and_mount(self, name: str) -> tuple[str, str, str]:
        image = os.path.join(self.root, f"{name}-flat.img")
        with open(image, "wb") as f:
            f.truncate(SIZE_BYTES)
        device = run(["losetup", "--find", "--show", image]).stdout.strip()
        run(_MKFS["ext4"] + ["-L", name[:16], device])
        target = os.path.join(self.root, "mnt", name)
        os.makedirs(target, exist_ok=True)
        run(["mount", "-t", "ext4", device, target])
        return image, device, target

    def unmount_and_remove(self, image: str, device: str, target: str) -> None:
        run(["umount", target])
        os.rmdir(target)
        run(["losetup", "--detach", device])
        os.unlink(image)


def _floor_cycle(floor: Floor, name: str) -> tuple[float, float]:
    start = time.perf_counter()
    made = floor.create_and_mount(name)
    middle = time.perf_counter()
    floor.unmount_and_remove(*made)
    return middle - start, time.perf_counter() - middle


def measure(env: BenchEnv, runs: int = RUNS) -> dict:
    client = DriverClient()
    floor = Floor(str(env.run_dir / "floor"))
    samples: dict[str, list[float]] = {k: [] for k in
                                       ("dv_up", "dv_down", "floor_up", "floor_down")}
    for i in range(WARMUP + runs):
        sides = [("dv", lambda n: life_cycle(client, n)),
                 ("floor", lambda n: _floor_cycle(floor, n))]
        if i % 2:
            sides.reverse()
        for side, cycle in sides:
            up, down = cycle(f"fl{side}{i:03d}")
            if i >= WARMUP:
                samples[f"{side}_up"].append(up)
                samples[f"{side}_down"].append(down)
    client.close()
    stats = {k: summarize(v) for k, v in samples.items()}
    result: dict = {"runs": runs, "warmup": WARMUP, "target": TARGET, "stats": stats}
    for phase in ("up", "down"):
        for q in ("p50", "p90"):
            result[f"ratio_{phase}_{q}"] = ratio(stats[f"dv_{phase}"][f"{q}_ms"],
                                                 stats[f"floor_{phase}"][f"{q}_ms"])
    return result


def render(r: dict) -> str:
    s = r["stats"]
    rows = []
    for phase, label in (("up", "Create+Mount"), ("down", "Unmount+Remove")):
        dv, fl = s[f"dv_{phase}"], s[f"floor_{phase}"]
        rows.append([label, fmt_ms(fl["p50_ms"]), fmt_ms(dv["p50_ms"]),
                     f"**{fmt_ratio(r[f'ratio_{phase}_p50'])}**",
                     fmt_ms(fl["p90_ms"]), fmt_ms(dv["p90_ms"]),
                     fmt_ratio(r[f"ratio_{phase}_p90"]),
                     verdict(r[f"ratio_{phase}_p50"], r["target"])])
    total_dv = s["dv_up"]["p50_ms"] + s["dv_down"]["p50_ms"]
    total_fl = s["floor_up"]["p50_ms"] + s["floor_down"]["p50_ms"]
    return "\n".join([
        f"{r['runs']} interleaved runs per side (after {r['warmup']} warm-up runs), order "
        f"alternating; {VOLUME_SIZE} thin volumes, ext4. dockvols = VolumeDriver calls over "
        "the plugin socket (Create, Mount / Unmount, Remove); floor = the same primitives "
        "from Python (sparse file, `losetup`, `mkfs.ext4` with plugin/filesystem.py's flags, "
        "`mount` / `umount`, `losetup -d`, `rm`). Times in ms.",
        "",
        md_table(["phase", "floor p50", "dockvols p50", "ratio p50", "floor p90",
                  "dockvols p90", "ratio p90", f"target {r['target']}x (p50)"], rows),
        "",
        f"Whole life cycle p50: floor {fmt_ms(total_fl)} ms, dockvols {fmt_ms(total_dv)} ms "
        f"({fmt_ratio(ratio(total_dv, total_fl))}).",
    ])


def main(env: BenchEnv | None = None) -> dict:
    return bench_main(measure, render, env, with_docker=False)


if __name__ == "__main__":
    standalone(main)
