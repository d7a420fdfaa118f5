"""Many hosts, one datastore (issue 11): three esx_service processes, each with its own
sockets, data dir, host id and VM identities, on one datastore directory and one admin DB,
driven at the same moment. Every round must keep: one disk per create, one VM per attach,
no attach of a removed volume, a vmgroup never over its quota, every metadata file parses,
every host lists the same volumes. Then kill -9 of a lease holder mid-operation, services
in PID namespaces of their own (the same PID, 1, on both), and one service for many VMs
over mutual TLS. ``DOCKVOLS_MULTIHOST_ROUNDS`` (default 50) sets the rounds per race."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.processes import python_daemon, wait_for
from dockvols_common.http_client import client_tls_context
from plugin.esx_client import HttpEsxClient

from .multihost import (
    LEASE_SECONDS,
    TEAM_LIMIT_MB,
    Cluster,
    Figures,
    Host,
    at_once,
    datastore_problems,
    loops_on,
)
from .test_tls_transport import free_port, make_ca, make_cert

ROUNDS = int(os.environ.get("DOCKVOLS_MULTIHOST_ROUNDS", "50"))
KILLS = int(os.environ.get("DOCKVOLS_MULTIHOST_KILLS", "1"))  # per fault point
SIZES = [2, 3]  # hosts taking part in each race


@pytest.fixture(scope="module")
def cluster(run_dir: Path) -> Iterator[Cluster]:
    c = Cluster(run_dir, 3)
    c.start()
    c.hosts[0].admin.call("POST", "/v1/admin/vmgroups", {
        "name": "team", "vms": [f"team-{h.index}" for h in c.hosts]})
    c.hosts[0].admin.call("POST", "/v1/admin/vmgroups/team/access", {
        "datastore": "datastore1", "allow_create": True,
        "volume_totalsize": f"{TEAM_LIMIT_MB}mb"})
    c.team = True
    yield c
    c.stop()


@pytest.fixture(scope="module")
def figures() -> Iterator[Figures]:
    f = Figures()
    yield f
    print(f"\nmulti-host figures: {f.line()}")


def _check(cluster: Cluster, figures: Figures, race: str, round_no: int,
           results: list[tuple[str, object]], wrong: str | None) -> None:
    figures.rounds[race] += 1
    figures.outcomes.update(f"{race}:{code}" for code, _ in results)
    problems = ([wrong] if wrong else []) + datastore_problems(cluster, cluster.hosts)
    if problems:
        figures.broken.append(f"{race} round {round_no}: {problems} {results}")
    assert not problems, f"{race} round {round_no} broken: {problems}; answers {results}"


@pytest.mark.parametrize("n", SIZES)
def test_racing_creates_of_one_name_make_one_disk(cluster: Cluster, figures: Figures,
                                                  n: int) -> None:
    hosts = cluster.hosts[:n]
    for r in range(ROUNDS):
        name = f"cc{n}-{r}"
        results = at_once([lambda h=h, name=name: Host.outcome(lambda: h.client.create(name, {
            "size": "8mb"})) for h in hosts])
        uuids = {v["disk_uuid"] for code, v in results if code == "ok"}  # type: ignore[index]
        wrong = None if all(c == "ok" for c, _ in results) and len(uuids) == 1 else \
            "not every host was told the one same disk"
        _check(cluster, figures, f"create/create x{n}", r, results, wrong)
        hosts[r % n].client.remove(name)


@pytest.mark.parametrize("n", SIZES)
def test_racing_attaches_give_the_disk_to_exactly_one_vm(cluster: Cluster, figures: Figures,
                                                         n: int) -> None:
    hosts = cluster.hosts[:n]
    name = f"aa{n}"
    hosts[0].client.create(name, {"size": "8mb"})
    extent = cluster.folder / f"{name}-flat.vmdk"
    for r in range(ROUNDS):
        results = at_once([lambda h=h, name=name: Host.outcome(lambda: h.client.attach(name))
                           for h in hosts])
        winners = [hosts[i] for i, (code, _) in enumerate(results) if code == "ok"]
        wrong = None
        if len(winners) != 1:
            wrong = f"{len(winners)} VMs got the disk"
        elif any(code != "VolumeInUse" or f"attached to VM {winners[0].vm}" not in str(msg)
                 for code, msg in results if code != "ok"):
            wrong = "a loser was not told VolumeInUse naming the holder"
        elif len(loops_on(extent)) != 1:
            wrong = f"loop devices on the extent: {loops_on(extent)}"
        _check(cluster, figures, f"attach/attach x{n}", r, results, wrong)
        for w in winners:
            w.client.detach(name)
    hosts[0].client.remove(name)


@pytest.mark.parametrize("n", SIZES)
def test_remove_racing_attach_never_leaves_an_attached_volume_without_files(
        cluster: Cluster, figures: Figures, n: int) -> None:
    hosts = cluster.hosts[:n]
    for r in range(ROUNDS):
        name = f"ar{n}-{r}"
        hosts[0].client.create(name, {"size": "8mb"})
        # host 1 removes; the others attach
        calls = [lambda h=h, name=name: Host.outcome(lambda: h.client.attach(name)) for h in hosts]
        calls[1] = lambda name=name: Host.outcome(lambda: hosts[1].client.remove(name))
        results = at_once(calls)
        attached = [hosts[i] for i, (c, _) in enumerate(results) if c == "ok" and i != 1]
        removed = results[1][0] == "ok"
        wrong = None
        if removed and attached:
            wrong = "both the remove and an attach succeeded"
        elif len(attached) > 1:
            wrong = "two VMs got the disk"
        elif not removed and results[1][0] != "VolumeInUse":
            wrong = f"remove answered {results[1]}"
        elif removed and any(c not in ("VolumeNotFound",) for i, (c, _) in enumerate(results)
                             if i != 1):
            wrong = "an attach after the remove was not told VolumeNotFound"
        elif removed and (cluster.folder / f"{name}-flat.vmdk").exists():
            wrong = "removed, but its disk is still there"
        _check(cluster, figures, f"attach/remove x{n}", r, results, wrong)
        for h in attached:
            h.client.detach(name)
        if not removed:
            hosts[0].client.remove(name)


@pytest.mark.parametrize("n", SIZES)
def test_racing_creates_never_take_a_vmgroup_over_its_quota(cluster: Cluster,
                                                             figures: Figures, n: int) -> None:
    hosts = cluster.hosts[:n]
    for r in range(ROUNDS):
        names = [f"q{n}-{r}-{h.index}" for h in hosts]
        results = at_once([lambda h=h, v=v: Host.outcome(lambda: h.team.create(v, {
            "size": "20mb"})) for h, v in zip(hosts, names, strict=True)])
        used = sum(v["capacity_mb"] for v in hosts[0].team.list())
        wrong = None
        if used > TEAM_LIMIT_MB:
            wrong = f"vmgroup team uses {used}mb, over its {TEAM_LIMIT_MB}mb"
        elif [c for c, _ in results].count("ok") != 1 or any(
                c not in ("ok", "QuotaExceeded") for c, _ in results):
            wrong = "not exactly one create within the quota"
        _check(cluster, figures, f"quota x{n}", r, results, wrong)
        for h, v, (code, _) in zip(hosts, names, results, strict=True):
            if code == "ok":
                h.team.remove(v)


# -- kill -9 of a lease holder --------------------------------------------------------
@pytest.mark.parametrize("point,first,then", [
    ("create.metadata_written", "create", "create"),
    ("attach.disk_attached", "attach", "attach"),
    ("remove.marked", "remove", "create"),
])
def test_the_others_proceed_within_the_lease_after_a_holder_is_killed(
        cluster: Cluster, figures: Figures, point: str, first: str, then: str) -> None:
    for kill in range(KILLS):
        _kill_the_holder(cluster, figures, point, first, then, kill)


def _kill_the_holder(cluster: Cluster, figures: Figures, point: str, first: str, then: str,
                     kill: int) -> None:
    victim, others = cluster.hosts[kill % 3], [h for h in cluster.hosts
                                               if h is not cluster.hosts[kill % 3]]
    name = f"kill-{first}-{kill}"
    if first != "create":
        victim.client.create(name, {"size": "8mb"})
    victim.daemon.restart({"DOCKVOLS_FAULT_POINTS": point})
    code, _ = Host.outcome(lambda: getattr(victim.client, first)(
        *((name, {"size": "8mb"}) if first == "create" else (name,))))
    assert code == "Unreachable"
    wait_for(lambda: not victim.daemon.running, 5, "the victim to die")  # holding the lease
    assert any(e for e in os.listdir(cluster.folder / f".lease-{name}") if e[0] != ".")
    started = time.monotonic()
    results = at_once([lambda h=h: Host.outcome(lambda: getattr(h.client, then)(
        *((name, {"size": "8mb"}) if then == "create" else (name,)))) for h in others])
    waited = time.monotonic() - started
    codes = sorted(c for c, _ in results)
    if then == "create":
        assert codes == ["ok", "ok"], results
    else:
        assert codes == ["VolumeInUse", "ok"], results
    # The bound the issue asks for: nobody waits on a dead holder much past its lease.
    assert waited < LEASE_SECONDS + 5, f"the others waited {waited:.1f}s"
    victim.daemon.restart({"DOCKVOLS_FAULT_POINTS": ""})
    _check(cluster, figures, f"kill -9 at {point}", kill, results, None)
    for h, (c, _) in zip(others, results, strict=True):
        if c == "ok" and then == "attach":
            h.client.detach(name)
    others[0].client.remove(name)
    assert datastore_problems(cluster, cluster.hosts) == []


# -- the same PID on two hosts ----------------------------------------------------------
def _pid_in_namespace(host: Host) -> int:
    """The esx_service process's PID inside its own namespace (NSpid's last field)."""
    assert host.daemon.proc is not None
    child = psutil.Process(host.daemon.proc.pid).children()[0].pid
    # NSpid by hand: psutil shows only the PID as this namespace sees it
    for line in Path(f"/proc/{child}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


@pytest.fixture
def namespaced(run_dir: Path) -> Iterator[Cluster]:
    """Two services, each PID 1 of a PID namespace of its own, claiming one host id: equal
    PIDs and an equal host id, the case where a PID-only temp name or liveness check breaks."""
    c = Cluster(run_dir, 2, prefix="ns", wrap=["unshare", "--pid", "--fork", "--kill-child"],
                env={"DOCKVOLS_HOST_ID": "same-host"})
    c.start()
    yield c
    c.stop()


def test_services_with_the_same_pid_and_host_id_neither_collide_nor_presume_each_other_dead(
        namespaced: Cluster, figures: Figures) -> None:
    a, b = namespaced.hosts
    assert _pid_in_namespace(a) == _pid_in_namespace(b) == 1
    a.daemon.restart({"DOCKVOLS_FAULT_POINTS": "create.metadata_written"})
    assert Host.outcome(lambda: a.client.create("p1", {"size": "8mb"}))[0] == "Unreachable"
    wait_for(lambda: not a.daemon.running, 5, "a to die")
    lease = namespaced.folder / ".lease-p1"
    [tag] = [e for e in os.listdir(lease) if e[0] != "."]
    assert tag.startswith("same-host_") and tag.split("_")[2] == "1"  # host id and PID 1
    started = time.monotonic()
    assert Host.outcome(lambda: b.client.create("p1", {"size": "8mb"}))[0] == "ok"
    waited = time.monotonic() - started
    # b is PID 1 with the same host id as the dead tag: had it trusted the PID, it would not
    # have waited; it must wait the lease out, and no longer.
    assert LEASE_SECONDS * 0.8 < waited < LEASE_SECONDS + 5, waited
    a.daemon.restart({"DOCKVOLS_FAULT_POINTS": ""})  # PID 1 again, same host id
    assert _pid_in_namespace(a) == 1
    for r in range(20):
        name = f"pp-{r}"
        results = at_once([lambda h=h, name=name: Host.outcome(lambda: h.client.create(name, {
            "size": "8mb"})) for h in (a, b)])
        attach = at_once([lambda h=h, name=name: Host.outcome(lambda: h.client.attach(name))
                          for h in (a, b)])
        wrong = None if [c for c, _ in attach].count("ok") == 1 else f"attach {attach}"
        _check(namespaced, figures, "same PID x2", r, results + attach, wrong)
        for h, (c, _) in zip((a, b), attach, strict=True):
            if c == "ok":
                h.client.detach(name)
        a.client.remove(name)
    b.client.remove("p1")


# -- one service for many hosts: several VM identities over mutual TLS -----------------
@pytest.fixture(scope="module")
def vcenter_mode(run_dir: Path) -> Iterator[list[HttpEsxClient]]:
    d = run_dir / "mh-pki"
    d.mkdir(exist_ok=True)
    ca = make_ca(d, "mh-ca")
    server = make_cert(d, ca, "localhost", server=True)
    port = free_port()
    sock = str(run_dir / "mhv.sock")
    daemon = python_daemon("esx_service-vcenter", "esx_service", {
        "DOCKVOLS_SOCKET": sock, "DOCKVOLS_DATA_DIR": str(run_dir / "mhv-data"),
        "DOCKVOLS_DATASTORES": f"datastore1={run_dir / 'mhv-datastore'}",
        "DOCKVOLS_VM_NAME": "mhv-local", "DOCKVOLS_ADMIN_SOCKET": str(run_dir / "mhv-a.sock"),
        "DOCKVOLS_TLS_LISTEN": f"127.0.0.1:{port}", "DOCKVOLS_TLS_CERT": server[0],
        "DOCKVOLS_TLS_KEY": server[1], "DOCKVOLS_TLS_CLIENT_CA": str(ca[0]),
        # the one service owns its datastore: its own locks suffice (README: deployments)
        "DOCKVOLS_LEASES": "process", "DOCKVOLS_CONFIG": "",
    }, run_dir / "esx-vcenter.log", sock)
    daemon.start()

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, 10, "the TLS listener")
    clients = []
    for vm in ("esx1-vm", "esx2-vm", "esx3-vm"):  # VMs on three hosts, one service
        cert = make_cert(d, ca, vm)
        clients.append(HttpEsxClient(f"https://127.0.0.1:{port}", timeout=60,
                                     tls=client_tls_context(cert[0], cert[1],
                                                                    str(ca[0]))))
    yield clients
    daemon.stop()


def test_one_service_for_many_hosts_gives_a_disk_to_exactly_one_vm(
        vcenter_mode: list[HttpEsxClient], figures: Figures, run_dir: Path) -> None:
    clients = vcenter_mode
    for r in range(ROUNDS):
        name = f"v{r}"
        created = at_once([lambda c=c, name=name: Host.outcome(
            lambda: c.create(name, {"size": "8mb"})) for c in clients])
        assert len({v["disk_uuid"] for _, v in created}) == 1, created  # type: ignore[index]
        results = at_once([lambda c=c, name=name: Host.outcome(lambda: c.attach(name))
                           for c in clients])
        figures.rounds["mTLS attach/attach x3"] += 1
        figures.outcomes.update(f"mTLS:{code}" for code, _ in results)
        winners = [clients[i] for i, (code, _) in enumerate(results) if code == "ok"]
        assert len(winners) == 1 and sorted(c for c, _ in results).count("VolumeInUse") == 2, \
            results
        lists = [sorted(v["name"] for v in c.list()) for c in clients]
        assert lists[0] == lists[1] == lists[2]
        winners[0].detach(name)
        clients[r % 3].remove(name)
    # the deployment's setting took: this process's locks only, no datastore leases
    assert "leases=process/" in (run_dir / "esx-vcenter.log").read_text()
