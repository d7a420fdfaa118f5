"""The admin web page in a real browser (Debian's chromium, headless, via chromedriver),
against volumes made through the real dockerd, plugin and esx_service."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import REPO, Daemon, wait_for

from .conftest import Docker, make_volume

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def web(esx: Daemon, run_dir: Path) -> Iterator[str]:
    port = free_port()
    daemon = Daemon("admin-web", [sys.executable, "-m", "admin_web",
                                  "--listen", f"127.0.0.1:{port}"],
                    {"DOCKVOLS_ADMIN_SOCKET": str(run_dir / "admin.sock")},
                    run_dir / "admin-web.log", str(run_dir / "admin-web.ready"))
    daemon.start(wait=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: answers(url + "healthz") or not daemon.running, 30, "dockvols-web")
        assert daemon.running, daemon.log_tail()
        yield url
    finally:
        daemon.stop()


@pytest.fixture
def browser(run_dir: Path) -> Iterator[object]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are needed: scripts/install-deps.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-", dir=run_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(
        run_dir / "chromedriver.log")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, path: Path) -> None:
    """The whole page, not just the window (Chrome DevTools' capture beyond the viewport)."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def rows(driver, datastore: str) -> dict[str, dict[str, str]]:
    from selenium.webdriver.common.by import By

    found = {}
    selector = f'section.ds[data-datastore="{datastore}"] tr.volume'
    for row in driver.find_elements(By.CSS_SELECTOR, selector):
        cells = {c: row.find_element(By.CSS_SELECTOR, f"td.{c}").text
                 for c in ("capacity", "fstype", "vmgroup", "attached", "created-by")}
        found[row.get_attribute("data-volume")] = cells
    return found


def test_the_page_shows_volumes_per_datastore_and_filters_them(
        dv: Docker, busybox: str, web: str, browser, run_dir: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    make_volume(dv, "web-db", "size=200mb")
    make_volume(dv, "web-logs@datastore2", "size=1gb", "fstype=xfs")
    make_volume(dv, "web-cache@datastore2", "size=300mb")
    dv("volume", "create", "-d", dv.driver, "-o", "size=lots", "web-bad", check=False)
    dv("run", "-d", "--name", "web-user", "-v", "web-logs@datastore2:/data", busybox,
       "sleep", "600")
    try:
        browser.get(web)
        ds1, ds2 = rows(browser, "datastore1"), rows(browser, "datastore2")
        assert ds1["web-db"] == {"capacity": "200mb", "fstype": "ext4", "vmgroup": "_DEFAULT",
                                 "attached": "detached", "created-by": "test-vm"}
        assert ds2["web-logs"]["capacity"] == "1gb" and ds2["web-logs"]["fstype"] == "xfs"
        assert ds2["web-logs"]["attached"] == "test-vm"
        assert ds2["web-cache"]["capacity"] == "300mb"
        assert "web-logs" not in ds1 and "web-db" not in ds2
        assert "connected" in browser.find_element(By.ID, "backend-health").text
        for name in ("datastore1", "datastore2"):  # each datastore's capacity and free bar
            card = browser.find_element(By.CSS_SELECTOR,
                                        f'#datastores .card[data-datastore="{name}"]')
            assert card.find_element(By.CSS_SELECTOR, ".bar span").get_attribute("style")
            assert "free" in card.find_element(By.CSS_SELECTOR, ".ds-free").text
        ops = browser.find_element(By.ID, "operations").text
        assert "web-bad" in ops and "InvalidOption" in ops and "invalid size 'lots'" in ops
        screenshot(browser, run_dir / "admin-web.png")

        Select(browser.find_element(By.ID, "filter-datastore")).select_by_value("datastore2")
        wait_for(lambda: "datastore=datastore2" in browser.current_url, 15, "the filter")
        shown = browser.find_elements(By.CSS_SELECTOR, "section.ds")
        assert [s.get_attribute("data-datastore") for s in shown] == ["datastore2"]
        assert set(rows(browser, "datastore2")) >= {"web-logs", "web-cache"}

        Select(browser.find_element(By.ID, "filter-sort")).select_by_value("capacity")
        wait_for(lambda: "sort=capacity" in browser.current_url, 15, "the sort")
        names = [n for n in rows(browser, "datastore2") if n.startswith("web-")]
        assert names == ["web-cache", "web-logs"]  # 300mb before 1gb
        screenshot(browser, run_dir / "admin-web-filtered.png")
    finally:
        dv("rm", "-f", "web-user", check=False)


def test_metrics_beside_the_page_count_volumes_and_operations(
        dv: Docker, web: str) -> None:
    make_volume(dv, "web-metric", "size=100mb")
    with urllib.request.urlopen(web + "metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("dockvols_service_up", ())] == 1
    assert samples[("dockvols_backend_connected", (("backend", "local"),))] == 1
    assert any(name == "dockvols_volume_ops_seconds_count" and ("op", "create") in labels
               and ("outcome", "ok") in labels for name, labels in samples)
    assert ("dockvols_datastore_free_bytes",
            (("datastore", "datastore1"), ("type", "local"))) in samples


def test_the_page_refuses_a_public_address_without_tls(run_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "admin_web", "--listen", "0.0.0.0:9440"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "DOCKVOLS_ADMIN_SOCKET": str(run_dir / "x")})
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr


def test_with_tls_and_client_certificates_only_a_signed_client_gets_in(
        esx: Daemon, run_dir: Path) -> None:
    from .test_tls_transport import make_ca, make_cert

    d = run_dir / "web-pki"
    (d / "rogue").mkdir(parents=True, exist_ok=True)
    ca = make_ca(d, "web-ca")
    server = make_cert(d, ca, "localhost", server=True)
    admin = make_cert(d, ca, "admin")
    rogue = make_cert(d / "rogue", make_ca(d / "rogue", "rogue-ca"), "admin")
    port = free_port()
    daemon = Daemon("admin-web-tls", [sys.executable, "-m", "admin_web",
                                      "--listen", f"127.0.0.1:{port}"],
                    {"DOCKVOLS_ADMIN_SOCKET": str(run_dir / "admin.sock"),
                     "DOCKVOLS_WEB_TLS_CERT": server[0], "DOCKVOLS_WEB_TLS_KEY": server[1],
                     "DOCKVOLS_WEB_CLIENT_CA": str(ca[0])},
                    run_dir / "admin-web-tls.log", str(run_dir / "admin-web-tls.ready"))
    daemon.start(wait=False)
    url = f"https://localhost:{port}/healthz"

    def get(cert: tuple[str, str] | None) -> int:
        context = ssl.create_default_context(cafile=str(ca[0]))
        if cert:
            context.load_cert_chain(*cert)
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                return resp.status
        except (OSError, ssl.SSLError):
            return 0

    try:
        wait_for(lambda: get(admin) == 200 or not daemon.running, 30, "dockvols-web on TLS")
        assert get(admin) == 200, daemon.log_tail()
        assert get(None) == 0     # no client certificate: the handshake fails
        assert get(rogue) == 0    # signed by another CA
        with pytest.raises(OSError):  # plain HTTP on the TLS port gets nothing
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
    finally:
        daemon.stop()
