"""The keeper's dashboard page in a real browser: headless Chromium (Debian `chromium`) loads `dashboard_url` of
a real mesh whose keeper runs Prometheus, over TLS verified with the mesh CA (put into the browser's own NSS
database with `certutil`, never `--ignore-certificate-errors`), and the test reads what the page rendered: every
node by name, the leader marked, and SVG plots with data points. The same browser without the CA renders
nothing. The screenshot is saved (to ``$VAULTMESH_DASHBOARD_PNG`` too when set: `docs/dashboard.png`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vaultmesh.waiting import wait_until

from .conftest import MeshHandle
from .test_lifecycle import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.integration
BROWSER = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)"),
    pytest.mark.skipif(shutil.which("certutil") is None,
                       reason="certutil is not installed (Debian package `libnss3-tools`): the mesh CA cannot be "
                              "put into the browser's trust store"),
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="prometheus is not installed (Debian package `prometheus`): no plots to check"),
]


def browser_test(test: Callable[..., None]) -> Callable[..., None]:
    for mark in BROWSER:
        test = mark(test)
    return test


def browser_home(base: Path, ca: str | None) -> Path:
    """A HOME whose NSS database (Chromium's trust store on Linux) trusts ``ca`` for TLS servers, or nothing."""
    home = base / "home"
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-N", "--empty-password"], check=True, capture_output=True)
    if ca:
        subprocess.run(["certutil", "-d", f"sql:{db}", "-A", "-t", "C,,", "-n", "vaultmesh", "-i", ca],
                       check=True, capture_output=True)
    return home


def chromium(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run on its own profile; the page's script runs until the virtual time budget."""
    assert CHROMIUM
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSL", "NSS"))} | {"HOME": str(home)}
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={home / 'profile'}", "--virtual-time-budget=8000",
                           "--window-size=1280,900", "--hide-scrollbars", *args, url],
                          env=env, capture_output=True, text=True, timeout=90, check=False)


def data(url: str, ca: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/data.json", context=ssl.create_default_context(cafile=ca),
                                    timeout=10) as resp:
            return json.load(resp)  # type: ignore[no-any-return]
    except OSError:
        return None


@browser_test
def test_chromium_renders_the_live_dashboard_of_a_real_mesh(make_mesh: Callable[..., MeshHandle],
                                                           tmp_path: Path) -> None:
    handle = make_mesh("monitoring: prometheus\n")
    names = [n.name for n in handle.mesh.layout.nodes]

    def monitoring() -> dict[str, Any] | None:
        doc = json.loads(run_cli(handle.dir, "status", "--json", check=False).stdout)["monitoring"]
        return doc if doc["dashboard_url"] and doc["prometheus_url"] else None

    found = wait_until(monitoring, timeout=30, interval=0.5)
    assert found, "status --json never gave both a dashboard_url and a prometheus_url"
    url = found["dashboard_url"]
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+/dashboard", url), url
    human = run_cli(handle.dir, "status", check=False).stdout
    assert f"dashboard: {url}" in human

    def plotted() -> dict[str, Any] | None:  # a leader is known; the first plots have series, one a line
        doc = data(url, handle.ca)
        if not doc or not doc["leader"] or doc["prometheus"]["error"]:
            return None
        lines = [s for p in doc["plots"] for s in p["series"] if len(s["points"]) >= 2]
        return doc if lines and all(p["series"] for p in doc["plots"][:3]) else None

    doc = wait_until(plotted, timeout=90, interval=1.0)
    assert doc, f"the document never had a leader and the first plots: {data(url, handle.ca)}"
    assert [n["name"] for n in doc["nodes"]] == names and doc["prometheus"]["url"] == found["prometheus_url"]
    body = json.dumps(doc)
    assert handle.token() not in body  # no secret in the document

    home = browser_home(tmp_path / "trusting", handle.ca)
    dom = chromium(home, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-loaded="1"' in html, html[-3000:]
    for name in names:
        assert f'data-node="{name}"' in html, name
    leader = re.search(r'<tr class="leader" data-node="([^"]+)" data-role="leader">', html)
    assert leader and leader.group(1) in names, html[:3000]
    points = [int(n) for n in re.findall(r'<svg[^>]*class="plot"[^>]*data-points="(\d+)"', html)]
    assert len(points) == len(doc["plots"]) and sum(points) > 0, points
    assert re.search(r'<polyline points="[\d.]+,[\d.]+ [\d.]+,[\d.]+', html), re.findall(r"<polyline[^>]*>", html)
    assert handle.token() not in html

    shot = tmp_path / "dashboard.png"
    taken = chromium(home, url, f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", taken.stderr[-2000:]
    if os.environ.get("VAULTMESH_DASHBOARD_PNG"):
        shutil.copyfile(shot, os.environ["VAULTMESH_DASHBOARD_PNG"])

    # the same browser that does not trust the mesh CA gets no page: the certificate is verified
    untrusting = chromium(browser_home(tmp_path / "untrusting", None), url, "--dump-dom")
    assert "data-node=" not in untrusting.stdout and names[0] not in untrusting.stdout


def test_without_prometheus_the_document_still_has_the_nodes_and_says_why(shared_mesh: MeshHandle) -> None:
    """The shared mesh runs no Prometheus (``monitoring: none``): the page's document still has what the keeper
    knows, and says why there are no plots. No browser: the document is what the page renders."""
    from vaultmesh.lifecycle.status import monitoring_json

    url = wait_until(lambda: monitoring_json(shared_mesh.mesh)["dashboard_url"], timeout=15)
    assert url, "the shared mesh's keeper gives no dashboard_url"

    def told() -> dict[str, Any] | None:
        doc = data(url, shared_mesh.ca)
        off = doc and doc["prometheus"]["off"] == "monitoring: none in the mesh file"
        return doc if off and doc["leader"] and doc["certificates"] else None

    doc = wait_until(told, timeout=20, interval=0.5)
    assert doc, data(url, shared_mesh.ca)
    assert [n["name"] for n in doc["nodes"]] == [n.name for n in shared_mesh.mesh.layout.nodes]
    assert doc["leader"] in [n.name for n in shared_mesh.mesh.layout.nodes]
    assert doc["prometheus"]["url"] is None and doc["alerts"] == []
    assert [p["series"] for p in doc["plots"]] == [[]] * len(doc["plots"])
