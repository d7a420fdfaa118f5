"""A seeded randomized fault run: bursts of concurrent Create/Mount/Unmount/Remove through a
real dockerd, SIGKILL of esx_service and/or the plugin (one process since it left gunicorn) after
a random delay, restart, then the invariants:

- nothing lost: a volume whose create succeeded and that no remove touched still exists;
- nothing half-made: each volume on the datastore is its three files, its metadata settled;
- nothing held: once containers are gone, within a few reconcile periods no mount, no loop
  device and no attachment is left;
- synced data reads back: every file a container wrote and synced before its exit 0 has
  the checksum it printed;
- no internal error: no answer anywhere said "internal error" or crashed.

The same harness serves `make test` (a few rounds) and `make soak` (hundreds of kills).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import Daemon, wait_for

from .conftest import Docker, loops_on, mounts_under, restart_plugin_and_wait_for_recovery

TARGETS = ("esx_service", "plugin", "both")
INTERNAL = ("internal error", "Traceback", "crash:")


@dataclass
class Figures:
    rounds: int = 0
    kills: Counter = field(default_factory=Counter)
    ops: Counter = field(default_factory=Counter)  # "<op> ok" / "<op> failed"
    writes_checked: int = 0
    lost: list[str] = field(default_factory=list)
    half_made: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)
    settle_seconds: list[float] = field(default_factory=list)
    temp_files: int = 0  # atomic-write leftovers after a round (cleanup: issue 10 item 3)

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    def problems(self) -> list[str]:
        return self.lost + self.half_made + self.leaked + self.internal_errors

    def summary(self) -> str:
        ok = sum(n for k, n in self.ops.items() if k.endswith(" ok"))
        failed = sum(n for k, n in self.ops.items() if k.endswith(" failed"))
        settle = sorted(self.settle_seconds) or [0.0]
        return (f"rounds={self.rounds} kills={self.total_kills} ({dict(self.kills)}) "
                f"operations={ok + failed} (ok={ok}, failed during kills={failed}) "
                f"synced files read back={self.writes_checked} lost={len(self.lost)} "
                f"half-made={len(self.half_made)} leaked={len(self.leaked)} "
                f"internal-errors={len(self.internal_errors)} temp-files={self.temp_files} "
                f"settle p50={settle[len(settle) // 2]:.1f}s max={settle[-1]:.1f}s")


class Chaos:
    def __init__(self, dv: Docker, esx: Daemon, plugin: Daemon, run_dir: Path,
                 mount_root: Path, datastore: Path, seed: int, reconcile_period: float,
                 volumes: int = 6, clients: int = 6, kills_per_round: int = 1) -> None:
        self.dv = dv
        self.esx = esx
        self.plugin = plugin
        self.run_dir = run_dir
        self.mount_root = mount_root
        self.folder = datastore / "dockvols" / "_DEFAULT"
        self.rng = random.Random(seed)
        self.seed = seed
        self.period = reconcile_period
        # named after the driver: another suite's dockerd on this host discovers our plugin
        # socket, and its own chaos run would otherwise remove our volumes of the same names
        prefix = re.sub(r"[^A-Za-z0-9_.-]", "-", dv.driver)
        self.names = [f"{prefix}-chaos{i}" for i in range(volumes)]
        self.clients = clients
        self.kills_per_round = kills_per_round
        self.figures = Figures()
        self._lock = threading.Lock()
        self.created: set[str] = set()  # create succeeded, no remove attempted since
        self.removing: set[str] = set()  # a remove ran; it may or may not have finished
        # volume -> file -> (md5, when its write started)
        self.written: dict[str, dict[str, tuple[str, float]]] = {}
        self._token = 0
        self._log_offsets = {d.name: _size(d.log_path) for d in (esx, plugin)}

    # -- one round ------------------------------------------------------------------------
    def round(self) -> None:
        plans = [[self._plan_op() for _ in range(self.rng.randint(2, 5) * self.kills_per_round)]
                 for _ in range(self.clients)]
        kills = [(self.rng.uniform(0.2, 4.0), self.rng.choice(TARGETS))
                 for _ in range(self.kills_per_round)]
        with ThreadPoolExecutor(self.clients) as pool:
            futures = [pool.submit(self._client, plan) for plan in plans]
            for delay, target in kills:
                time.sleep(delay)
                self._kill(target)
                self._restart(target)
            for f in futures:
                f.result()
        self.dv("rm", "-f", *self.dv.out("ps", "-aq").split(), check=False)
        self.figures.rounds += 1
        self._settle()
        self._check_volumes()
        self._check_data()

    def _plan_op(self) -> tuple[str, str]:
        op = self.rng.choices(["create", "write", "hold", "remove"], [3, 4, 2, 1])[0]
        return op, self.rng.choice(self.names)

    def _client(self, plan: list[tuple[str, str]]) -> None:
        for op, name in plan:
            getattr(self, f"_op_{op}")(name)

    def _record(self, op: str, done) -> bool:  # type: ignore[no-untyped-def]
        ok = done.returncode == 0
        text = (done.stdout or "") + (done.stderr or "")
        with self._lock:
            self.figures.ops[f"{op} {'ok' if ok else 'failed'}"] += 1
            if any(marker in text for marker in INTERNAL):
                self.figures.internal_errors.append(f"{op}: {text.strip()[:300]}")
        return ok

    def _next_token(self) -> int:
        with self._lock:
            self._token += 1
            return self._token

    def _op_create(self, name: str) -> None:
        done = self.dv("volume", "create", "-d", self.dv.driver, "-o", "size=32mb", name,
                       check=False)
        if self._record("create", done):
            with self._lock:
                if name not in self.removing:
                    self.created.add(name)

    def _op_write(self, name: str) -> None:
        token = self._next_token()
        started = time.monotonic()
        script = (f"dd if=/dev/urandom of=/data/f{token} bs=4k count=4 2>/dev/null && "
                  f"sync && md5sum /data/f{token}")
        done = self.dv("run", "--rm", "--volume-driver", self.dv.driver, "-v", f"{name}:/data",
                       "busybox", "sh", "-c", script, check=False)
        if self._record("write", done) and done.stdout.split():
            with self._lock:
                if name not in self.removing:
                    self.created.add(name)  # docker created it on first use if needed
                    self.written.setdefault(name, {})[f"f{token}"] = (done.stdout.split()[0],
                                                                       started)

    def _op_hold(self, name: str) -> None:
        done = self.dv("run", "-d", "--volume-driver", self.dv.driver, "-v",
                       f"{name}:/data", "busybox", "sleep", "3600", check=False)
        if self._record("hold", done):
            with self._lock:
                if name not in self.removing:
                    self.created.add(name)

    def _op_remove(self, name: str) -> None:
        with self._lock:
            self.removing.add(name)
        done = self.dv("volume", "rm", name, check=False)
        self._record("remove", done)
        if "in use" not in done.stderr:  # refused by Docker: nothing happened
            # done, or killed half-way (recovery then finishes it): what was written before
            # may be gone, rightly; what is written after it must stay
            ended = time.monotonic()
            with self._lock:
                files = self.written.get(name, {})
                for file in [f for f, (_, t) in files.items() if t < ended]:
                    del files[file]

    # -- kills ----------------------------------------------------------------------------
    def _kill(self, target: str) -> None:
        self.figures.kills[target] += 1
        if target in ("esx_service", "both"):
            self.esx.kill9()
        if target in ("plugin", "both"):
            self.plugin.kill9()

    def _restart(self, target: str) -> None:
        if target in ("esx_service", "both"):
            self.esx.start()
        if target in ("plugin", "both"):
            restart_plugin_and_wait_for_recovery(self.plugin)

    # -- invariants -----------------------------------------------------------------------
    def _held(self) -> list[str]:
        held = [f"mount {m}" for m in mounts_under(self.mount_root)]
        held += [f"loop {line}" for line in loops_on(self.run_dir)]
        for meta in self._metadata().values():
            if meta.get("status") != "detached":
                held.append(f"{meta.get('name')} {meta.get('status')} "
                            f"to {meta.get('attached_to')}")
        return held

    def _settle(self) -> None:
        """Containers are gone: within a few reconcile periods nothing may stay held."""
        started = time.monotonic()
        bound = self.period * 5 + 15
        try:
            wait_for(lambda: not self._held(), bound, "nothing held", interval=0.25)
        except TimeoutError:
            self.figures.leaked += [f"round {self.figures.rounds}: {h}" for h in self._held()]
            return
        self.figures.settle_seconds.append(time.monotonic() - started)

    def _metadata(self) -> dict[str, dict]:
        found = {}
        for path in self.folder.glob("*.json"):
            try:
                found[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                self.figures.half_made.append(f"unreadable {path.name}: {exc}")
        return found

    def _check_volumes(self) -> None:
        # lease folders are locks, not volume files (a kept one lingers briefly after its
        # operation); a dead holder's left behind is swept by recovery
        every = {p.name for p in self.folder.glob("*") if not p.name.startswith(".lease-")}
        files = {n for n in every if ".tmp" not in n}
        self.figures.temp_files = len(every - files)
        stems = {n.split(".")[0].removesuffix("-flat") for n in files}
        for stem in stems:
            whole = {f"{stem}.json", f"{stem}.vmdk", f"{stem}-flat.vmdk"}
            if not whole <= files:
                self.figures.half_made.append(f"{stem}: only {sorted(files & whole)}")
        listed = set(self.dv.out("volume", "ls", "-q").split())
        with self._lock:
            for name in sorted(self.removing):
                if name not in stems:  # the remove finished (perhaps by recovery)
                    self.created.discard(name)
                    self.written.pop(name, None)
                elif name in listed:  # refused or killed before it began: still whole
                    self.created.add(name)
            self.removing.clear()
            for name in sorted(self.created):
                if name not in stems or name not in listed:
                    self.figures.lost.append(f"round {self.figures.rounds}: volume {name} "
                                             f"(on datastore: {name in stems}, listed: "
                                             f"{name in listed})")
                    self.created.discard(name)
                    self.written.pop(name, None)

    def _check_data(self) -> None:
        for name, files in sorted(self.written.items()):
            if not files:
                continue
            script = "cd /data && md5sum " + " ".join(sorted(files))
            done = self.dv("run", "--rm", "--volume-driver", self.dv.driver, "-v",
                           f"{name}:/data", "busybox", "sh", "-c", script, check=False)
            got = dict(reversed(line.split()) for line in done.stdout.splitlines()
                       if len(line.split()) == 2)
            for file, (md5, _) in files.items():
                if got.get(file) != md5:
                    self.figures.lost.append(f"round {self.figures.rounds}: {name}/{file} "
                                             f"md5 {got.get(file)} != {md5} {done.stderr[:200]}")
            self.figures.writes_checked += len(files)

    def scan_logs(self) -> None:
        """Internal errors either half logged during this run (not before it)."""
        for daemon in (self.esx, self.plugin):
            with open(daemon.log_path, "rb") as f:
                f.seek(self._log_offsets[daemon.name])
                text = f.read().decode(errors="replace")
            for line in text.splitlines():
                if "internal error" in line or "outcome=crash" in line:
                    self.figures.internal_errors.append(f"{daemon.name}: {line[:300]}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
