"""The live dashboard page the keeper serves beside its ``/metrics`` (same listener: HTTPS with the mesh CA's
certificate, 127.0.0.1)::

    GET /dashboard             one self-contained HTML page (inline CSS and JS, SVG plots drawn by the page, no
                               CDN); it asks for the document below every few seconds
    GET /dashboard/data.json   the document: the nodes as the keeper sees them (zone, role, seal, voter, version,
                               applied-index lag), the last snapshot and drill, certificate days left, the keeper's
                               figures, and from Prometheus's HTTP API the firing alerts and the plots

The plots are a fixed set of panels of the Grafana dashboard (``monitoring.dashboard.mesh_panels``: one PromQL
definition for both), asked as range queries over the last ``RANGE_S`` seconds; nothing a request carries reaches
a query (no proxy), and the document holds no token, key or unseal material: names, numbers and the alert rules'
own sentences. Without Prometheus (``monitoring: none``, not installed, not answering) the page still shows what
the keeper knows and says why the plots are empty.

``document`` (the whole document from plain inputs) and ``answer`` (which request gets what) are pure; ``Page``
and ``query_prometheus`` are the edge.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vaultmesh.api.client import RetryPolicy, make_ssl_context
from vaultmesh.errors import VaultmeshError
from vaultmesh.keeper.metrics import Answer, Route
from vaultmesh.lifecycle import mesh as m
from vaultmesh.lifecycle.keeper_process import KeeperStatus
from vaultmesh.lifecycle.status import DASHBOARD_PATH
from vaultmesh.lifecycle.view import MeshView, NodeView, gather_view
from vaultmesh.monitoring.dashboard import Panel, mesh_panels
from vaultmesh.monitoring.names import MESH_LABEL
from vaultmesh.spec.models import MeshSpec

PAGE_PATH = DASHBOARD_PATH
DATA_PATH = f"{DASHBOARD_PATH}/data.json"
RANGE_S = 1800
"""The plots show the last 30 minutes..."""
STEP_S = 10
"""...one point every 10 s (180 points a series; a young mesh has a line 10 s after its first scrape)."""
POLL_MS = 5000
"""How often the page asks for the document."""
CACHE_S = 2.0
"""A document younger than this is served again (several tabs do not multiply the queries)."""
QUERY_TIMEOUT_S = 3.0
PLOTS = ("Requests and logins", "Request latency", "Leases", "Tokens created by auth mount (5m)",
         "Applied-index lag per follower")
"""The Grafana panels the page plots, by title, in its reading order."""
LAG_PLOT = "Applied-index lag per follower"
"""The panel whose last value per follower is the nodes table's lag column."""


def plot_panels(spec: MeshSpec) -> list[Panel]:
    """The panels of ``PLOTS``, from the one definition of the mesh's PromQL. Pure."""
    by_title = {p.title: p for p in mesh_panels(spec) if p.kind == "timeseries"}
    return [by_title[title] for title in PLOTS]


@dataclass(frozen=True)
class PromAnswers:
    """What Prometheus answered (or why nothing was asked): ``ranges`` maps each query to the ``result`` of its
    range query (a matrix), ``alerts`` is ``/api/v1/alerts``'s list."""

    url: str | None
    off: str | None = None
    """Why Prometheus was not asked (None: it was)."""
    error: str | None = None
    """A query that failed (the first), one line."""
    ranges: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)


_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend(template: str, labels: Mapping[str, str]) -> str:
    """Grafana's ``{{label}}`` legend filled from one series' labels (``{{node}} p99`` -> ``node-1 p99``)."""
    return _LEGEND.sub(lambda mt: str(labels.get(mt.group(1), "")), template).strip() or "value"


def _points(values: list[list[Any]]) -> list[list[float]]:
    """``[[t, "v"], ...]`` -> ``[[t, v], ...]`` without NaN or infinities (a summary of a node that handled
    nothing is NaN)."""
    out = []
    for t, v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if x == x and x not in (float("inf"), float("-inf")):
            out.append([float(t), x])
    return out


def plots(panels: list[Panel], answers: PromAnswers) -> list[dict[str, Any]]:
    """One plot per panel: its title, unit and series (name, points); empty series when nothing answered."""
    out = []
    for p in panels:
        series = []
        for expr, template in p.queries:
            for result in answers.ranges.get(expr, []):
                points = _points(result.get("values") or [])
                if points:
                    series.append({"name": legend(template, result.get("metric") or {}), "points": points})
        series.sort(key=lambda s: s["name"])
        out.append({"title": p.title, "unit": p.unit, "description": p.description, "series": series})
    return out


def lags(panels: list[Panel], answers: PromAnswers) -> dict[str, float]:
    """Each follower's applied-index lag now (the last point of the lag plot), by node name."""
    panel = next((p for p in panels if p.title == LAG_PLOT), None)
    out: dict[str, float] = {}
    if panel is None:
        return out
    for expr, _ in panel.queries:
        for result in answers.ranges.get(expr, []):
            points = _points(result.get("values") or [])
            peer = (result.get("metric") or {}).get("peer_id")
            if points and peer:
                out[str(peer)] = points[-1][1]
    return out


def role(n: NodeView) -> str:
    """``leader``, ``standby``, ``sealed``, ``not answering`` (its process runs) or ``down``; the node's
    ``error`` says why."""
    if n.leader:
        return "leader"
    if n.reachable and n.sealed:
        return "sealed"
    if n.reachable:
        return "standby"
    return "not answering" if n.running else "down"


def alerts(answers: PromAnswers, mesh: str) -> list[dict[str, Any]]:
    """Firing alerts first, then pending, each the oldest first, of this mesh only (a Prometheus may watch
    several)."""
    out = []
    for a in answers.alerts:
        labels, notes = a.get("labels") or {}, a.get("annotations") or {}
        if labels.get(MESH_LABEL) not in (None, mesh) or a.get("state") not in ("firing", "pending"):
            continue
        where = ", ".join(f"{k}={labels[k]}" for k in ("node", "peer_id", "cert", "instance") if k in labels)
        out.append({"name": str(labels.get("alertname", "?")), "state": a["state"],
                    "severity": str(labels.get("severity", "")), "summary": str(notes.get("summary", "")),
                    "where": where, "since": str(a.get("activeAt") or "")})
    out.sort(key=lambda a: (a["state"] != "firing", a["since"], a["name"]))
    return out


def document(spec: MeshSpec, view: MeshView | None, record: KeeperStatus | None, certificates: Mapping[str, float],
             answers: PromAnswers, *, now: float, view_error: str | None = None) -> dict[str, Any]:
    """The dashboard's document. ``view``: the mesh as last observed (None: it could not be); ``record``: the
    keeper's; ``certificates``: name -> not-after (Unix s). Pure."""
    panels = plot_panels(spec)
    lag = lags(panels, answers)
    nodes = []
    for n in view.nodes if view else ():
        nodes.append({"name": n.name, "zone": n.zone, "role": role(n), "leader": n.leader, "sealed": n.sealed,
                      "voter": n.voter, "version": n.version, "healthy": n.healthy, "error": n.error,
                      "lag": 0.0 if n.leader else lag.get(n.name)})
    seal = view.seal_node if view else None
    snap: dict[str, Any] = dict(record.snapshot or {}) if record else {}
    drill: dict[str, Any] = dict(record.drill or {}) if record else {}
    leader = view.leader if view else None
    return {
        "mesh": spec.name,
        "now": now,
        "range_s": RANGE_S,
        "poll_ms": POLL_MS,
        "healthy": bool(view and view.healthy),
        "leader": leader.name if leader else None,
        "nodes_wanted": spec.nodes,
        "failure_tolerance": view.failure_tolerance if view else None,
        "view_error": view_error,
        "nodes": nodes,
        "seal_node": None if seal is None else {"role": "seal" if seal.reachable else role(seal),
                                                "sealed": seal.sealed, "serving": view.seal_node_serving
                                                if view else False, "zone": seal.zone, "version": seal.version},
        "snapshot": None if not snap else {
            "time": snap.get("time"), "age_s": now - snap["time"] if snap.get("time") else None,
            "size": snap.get("size"), "index": snap.get("index"), "failures": snap.get("failures") or 0,
            "error": snap.get("error")},
        "snapshots_every": spec.snapshots.every,
        "drill": None if not drill else {
            "time": drill.get("time"), "age_s": now - drill["time"] if drill.get("time") else None,
            "ok": drill.get("ok"), "rto_s": drill.get("rto_s"), "rpo_s": drill.get("rpo_s"),
            "error": drill.get("error") or "; ".join(drill.get("failed") or []) or None},
        "drills_every": spec.drills.every,
        "certificates": sorted(({"name": name, "days_left": round((end - now) / 86400, 1)}
                                for name, end in certificates.items()), key=lambda c: c["days_left"]),
        "keeper": None if record is None else {
            "restarts": record.restarts, "revoked": record.revoked, "backing_off": record.backing_off,
            "over_budget": list(record.over_budget), "last_error": record.last_error,
            "answering": record.healthy_since is not None},
        "prometheus": {"url": answers.url, "off": answers.off, "error": answers.error},
        "alerts": alerts(answers, spec.name),
        "plots": plots(panels, answers),
    }


def dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


# --- the page -------------------------------------------------------------------------------------------------

STYLE = """
:root{--bg:#f4f6f9;--card:#fff;--ink:#1d2433;--dim:#6b7385;--line:#e3e7ee;--ok:#1f9d55;--warn:#d97706;
--bad:#dc2626;--acc:#2563eb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
background:var(--bg);color:var(--ink)}
header{display:flex;align-items:center;gap:14px;padding:14px 24px;background:#111827;color:#f9fafb}
header h1{font-size:18px;margin:0;font-weight:600;white-space:nowrap}
header .dim{color:#9ca3af}
main{padding:16px 24px;display:grid;gap:16px}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;color:#fff}
.ok{background:var(--ok)}.warn{background:var(--warn)}.bad{background:var(--bad)}.off{background:#9ca3af}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card h2{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--dim);margin:0 0 6px;
font-weight:600}
.big{font-size:22px;font-weight:650}
.sub{color:var(--dim);font-size:12px}
.t-ok{color:var(--ok)}.t-warn{color:var(--warn)}.t-bad{color:var(--bad)}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
.why{max-width:220px;overflow:hidden;text-overflow:ellipsis}
th{font-size:12px;color:var(--dim);font-weight:600}
tr.leader td:first-child{font-weight:700}
.star{color:#f59e0b}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:12px}
svg.plot{display:block}
svg text{font-size:10px;fill:var(--dim)}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:12px;color:var(--dim);margin-top:4px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.two{display:grid;grid-template-columns:2fr 1fr;gap:16px}
table.certs td{padding:3px 8px}
.note{color:var(--dim)}
ul.alerts{list-style:none;margin:0;padding:0}
ul.alerts li{padding:6px 0;border-bottom:1px solid var(--line)}
@media (max-width:900px){.two{grid-template-columns:1fr}}
"""

SCRIPT = """
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";
const COLOURS = ["#2563eb","#dc2626","#16a34a","#d97706","#7c3aed","#0891b2","#db2777","#4b5563"];
const $ = (id) => document.getElementById(id);
const CERTS = $("certs-card");
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}
function num(v, unit) {
  if (v === null || v === undefined) return "-";
  const a = Math.abs(v);
  let s = a >= 1e6 ? (v / 1e6).toFixed(1) + "M" : a >= 1e4 ? (v / 1e3).toFixed(1) + "k"
        : a >= 100 || Number.isInteger(v) ? v.toFixed(0) : a >= 1 ? v.toFixed(1) : v.toFixed(2);
  if (unit === "ms") s += " ms"; else if (unit === "reqps") s += "/s"; else if (unit === "d") s += " d";
  return s;
}
function ago(s) {
  if (s === null || s === undefined) return "-";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function yesno(v) { return v === null || v === undefined ? "-" : v ? "yes" : "no"; }
function card(title, value, cls, sub) {
  const c = el("div", "card");
  c.appendChild(el("h2", null, title));
  c.appendChild(el("div", "big " + (cls || ""), value));
  if (sub) c.appendChild(el("div", "sub", sub));
  return c;
}
function cards(doc) {
  const box = $("cards");
  box.replaceChildren();
  const healthy = doc.nodes.filter((n) => n.healthy).length;
  box.appendChild(card("Leader", doc.leader || "none", doc.leader ? "t-ok" : "t-bad",
                       doc.leader ? "active node" : "nothing can be written"));
  box.appendChild(card("Nodes healthy", healthy + " / " + doc.nodes_wanted,
                       healthy === doc.nodes_wanted ? "t-ok" : healthy > doc.nodes_wanted / 2 ? "t-warn" : "t-bad",
                       "unsealed voters, autopilot healthy"));
  const tol = doc.failure_tolerance;
  box.appendChild(card("Failure tolerance", tol === null ? "-" : tol, tol ? "t-ok" : "t-warn",
                       "nodes it can lose"));
  const firing = doc.alerts.filter((a) => a.state === "firing").length;
  box.appendChild(card("Alerts firing", doc.prometheus.url ? firing : "-", firing ? "t-bad" : "t-ok",
                       doc.prometheus.url ? (doc.alerts.length - firing) + " pending" : "Prometheus is off"));
  const s = doc.snapshot;
  const late = s && doc.snapshots_every && s.age_s > 2 * doc.snapshots_every;
  box.appendChild(card("Last snapshot", s && s.time ? ago(s.age_s) : "none yet",
                       s && s.error ? "t-bad" : late ? "t-warn" : s && s.time ? "t-ok" : "",
                       s ? (s.error ? "failing: " + s.error : "index " + num(s.index) + ", " + num(s.size) + " B")
                         : (doc.snapshots_every ? "every " + doc.snapshots_every + " s" : "not scheduled")));
  const d = doc.drill;
  box.appendChild(card("Last drill", d ? (d.ok ? "passed" : "failed") : "none yet",
                       d ? (d.ok ? "t-ok" : "t-bad") : "",
                       d ? (d.ok ? "RTO " + num(d.rto_s) + " s, RPO " + num(d.rpo_s) + " s, " + ago(d.age_s)
                                 : d.error) : (doc.drills_every ? "every " + doc.drills_every + " s"
                                                                : "not scheduled")));
  const c = doc.certificates[0];
  box.appendChild(card("Certificate days left", c ? num(c.days_left) : "-",
                       c ? (c.days_left < 7 ? "t-bad" : c.days_left < 30 ? "t-warn" : "t-ok") : "",
                       c ? c.name + " ends first" : "not read yet"));
}
function nodes(doc) {
  const body = $("nodes");
  body.replaceChildren();
  for (const n of doc.nodes) {
    const tr = el("tr", n.leader ? "leader" : "");
    tr.dataset.node = n.name;
    tr.dataset.role = n.role;
    const name = el("td", null, n.name);
    if (n.leader) { const s = el("span", "star", " \\u2605"); s.title = "leader"; name.appendChild(s); }
    tr.appendChild(name);
    tr.appendChild(el("td", null, n.zone));
    const r = el("td"); r.appendChild(el("span", "badge " + (n.leader ? "ok" : n.role === "standby" ? "off"
                                                                    : "bad"), n.role)); tr.appendChild(r);
    if (n.error) { r.title = n.error; r.appendChild(el("div", "sub why", n.error)); }
    tr.appendChild(el("td", n.sealed ? "t-bad" : "", n.sealed === null ? "-" : n.sealed ? "sealed" : "unsealed"));
    tr.appendChild(el("td", null, yesno(n.voter)));
    tr.appendChild(el("td", null, n.version || "-"));
    tr.appendChild(el("td", n.lag > 1000 ? "t-bad" : "", n.leader ? "-" : n.lag === null ? "?" : num(n.lag)));
    tr.appendChild(el("td", n.healthy ? "t-ok" : "t-bad", n.healthy ? "yes" : "no"));
    body.appendChild(tr);
  }
  const seal = doc.seal_node;
  if (seal) {
    const tr = el("tr", "");
    tr.dataset.node = "seal";
    for (const v of ["seal", seal.zone, seal.role, seal.sealed ? "sealed" : "unsealed", "-", seal.version || "-", "-",
                     seal.serving ? "yes" : "no"]) tr.appendChild(el("td", null, v));
    body.appendChild(tr);
  }
  $("nodes-note").textContent = doc.view_error ? "the mesh could not be observed: " + doc.view_error : "";
}
function plot(box, p, t0, t1) {
  box.appendChild(el("h2", null, p.title));
  if (p.description) box.title = p.description;
  const W = Math.max(280, box.clientWidth - 28), H = 150, L = 52, R = 10, T = 8, B = 18;
  const g = svg("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, class: "plot", role: "img",
                        "aria-label": p.title});
  let vmax = 0, vmin = 0, count = 0;
  for (const s of p.series) for (const [, v] of s.points) { vmax = Math.max(vmax, v); vmin = Math.min(vmin, v);
                                                            count++; }
  vmax = nice(vmax === vmin ? vmin + 1 : vmax);
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - (v - vmin) / (vmax - vmin));
  for (let i = 0; i <= 4; i++) {
    const v = vmin + (vmax - vmin) * i / 4;
    g.appendChild(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb"}));
    const t = svg("text", {x: L - 4, y: y(v) + 3, "text-anchor": "end"}); t.textContent = num(v, p.unit);
    g.appendChild(t);
  }
  for (let i = 0; i <= 3; i++) {
    const tt = t0 + (t1 - t0) * i / 3;
    const t = svg("text", {x: x(tt), y: H - 5, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle"});
    t.textContent = new Date(tt * 1000).toISOString().slice(11, 16);
    g.appendChild(t);
  }
  const legend = el("div", "legend");
  p.series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = s.points.map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
    g.appendChild(svg("polyline", {points: pts, fill: "none", stroke: colour, "stroke-width": 1.6,
                                   "vector-effect": "non-scaling-stroke", class: "series"}));
    const [lt, lv] = s.points[s.points.length - 1];
    g.appendChild(svg("circle", {cx: x(lt), cy: y(lv), r: 2.5, fill: colour}));
    const item = el("span"); const sw = el("span", "sw"); sw.style.background = colour;
    item.appendChild(sw); item.appendChild(document.createTextNode(s.name + " " + num(lv, p.unit)));
    legend.appendChild(item);
  });
  g.setAttribute("data-points", String(count));
  if (!count) {
    const t = svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle"});
    t.textContent = "no data yet"; g.appendChild(t);
  }
  box.appendChild(g);
  box.appendChild(legend);
}
function nice(v) {
  const step = Math.pow(10, Math.floor(Math.log10(v / 4)));
  for (const k of [1, 2, 2.5, 5, 10]) if (k * step * 4 >= v) return k * step * 4;
  return v;
}
function plots(doc) {
  const box = $("plots");
  box.replaceChildren();
  // from the first point Prometheus has (a young mesh fills the width), at least 5 minutes, at most range_s
  let first = doc.now;
  for (const p of doc.plots) for (const s of p.series) first = Math.min(first, s.points[0][0]);
  const t1 = doc.now, t0 = Math.max(doc.now - doc.range_s, Math.min(first, doc.now - 300));
  const boxes = doc.plots.map(() => box.appendChild(el("div", "card")));
  box.appendChild(CERTS);  // the grid's last cell; laid out before any plot measures its width
  doc.plots.forEach((p, i) => plot(boxes[i], p, t0, t1));
  const pr = doc.prometheus;
  $("prom").textContent = pr.url ? (pr.error ? "Prometheus did not answer: " + pr.error : "from " + pr.url +
                                    ", at most the last " + Math.round(doc.range_s / 60) + " minutes")
                                 : "Prometheus is off: " + (pr.off || "not running") + "; no plots or alerts";
}
function alerts(doc) {
  const list = $("alerts");
  list.replaceChildren();
  for (const a of doc.alerts) {
    const li = el("li");
    li.appendChild(el("span", "badge " + (a.state === "firing" ? (a.severity === "critical" ? "bad" : "warn")
                                                               : "off"), a.state + " " + a.severity));
    li.appendChild(el("strong", null, " " + a.name));
    if (a.where) li.appendChild(el("span", "sub", " " + a.where));
    if (a.summary) li.appendChild(el("div", "sub", a.summary));
    list.appendChild(li);
  }
  if (!doc.alerts.length) list.appendChild(el("li", "note", doc.prometheus.url ? "nothing firing"
                                                                               : "Prometheus is off"));
  const certs = $("certs");
  certs.replaceChildren();
  for (const c of doc.certificates) {
    const tr = el("tr");
    tr.appendChild(el("td", null, c.name));
    tr.appendChild(el("td", c.days_left < 7 ? "t-bad" : c.days_left < 30 ? "t-warn" : "", num(c.days_left)));
    certs.appendChild(tr);
  }
  const k = doc.keeper;
  $("keeper").textContent = k ? "keeper: " + k.restarts + " restarts, " + k.revoked + " revoked" +
    (k.over_budget.length ? ", over budget: " + k.over_budget.join("; ") : "") +
    (k.backing_off ? ", backing off: " + k.backing_off : "") + (k.last_error ? ", last error: " + k.last_error : "")
    : "";
}
function render(doc) {
  document.title = "vaultmesh: " + doc.mesh;
  $("mesh").textContent = doc.mesh;
  const h = $("health");
  h.className = "badge " + (doc.healthy ? "ok" : doc.leader ? "warn" : "bad");
  h.textContent = doc.healthy ? "healthy" : doc.leader ? "degraded" : "no leader";
  $("updated").textContent = "updated " + new Date(doc.now * 1000).toISOString().slice(11, 19) + " UTC";
  cards(doc); nodes(doc); plots(doc); alerts(doc);
  document.body.dataset.loaded = "1";
}
async function refresh() {
  try {
    const r = await fetch("/dashboard/data.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("error").textContent = "";
  } catch (err) {
    $("error").textContent = "the keeper did not answer (" + err.message + "); retrying";
  }
  setTimeout(refresh, POLL_MS);
}
refresh();
"""

BODY = """<header><h1>vaultmesh <span class="dim">mesh</span> <span id="mesh"></span></h1>
<span id="health" class="badge off">loading</span><span id="updated" class="dim"></span>
<span id="error" class="dim"></span></header>
<main>
<section id="cards" class="cards"></section>
<div class="two"><section class="card"><h2>Nodes</h2><table><thead><tr><th>node</th><th>zone</th><th>role</th>
<th>seal</th><th>voter</th><th>version</th><th>applied-index lag</th><th>healthy</th></tr></thead>
<tbody id="nodes"></tbody></table><div id="nodes-note" class="note"></div></section>
<section class="card"><h2>Alerts</h2><ul id="alerts" class="alerts"></ul></section></div>
<div class="note" id="prom"></div>
<section id="plots" class="plots"></section>
<section id="certs-card" class="card"><h2>Certificate days left</h2><table class="certs"><tbody id="certs"></tbody>
</table><div id="keeper" class="note"></div></section>
</main>"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def page_html() -> bytes:
    """The page: no external resource, its script and style allowed by hash only. Pure."""
    script = SCRIPT.replace("POLL_MS", str(POLL_MS))
    html = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>vaultmesh</title>"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<style>{STYLE}</style></head><body>{BODY}<script>{script}</script></body></html>")
    return html.encode()


def security_headers() -> list[tuple[str, str]]:
    """The script and the style by their hashes, the document from the same origin, no framing, no cache."""
    script = SCRIPT.replace("POLL_MS", str(POLL_MS))
    csp = (f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(STYLE)}; "
           "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return [("Content-Security-Policy", csp), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store")]


def answer(method: str, path: str, host: str, port: int, data: Callable[[], bytes]) -> Answer | None:
    """What the page's listener answers a request (None: not the page's, ``/metrics`` answers it). Only
    ``GET``/``HEAD`` with the listener's own ``Host`` (a name that resolves elsewhere is refused: no DNS
    rebinding reaches the document). Pure but for calling ``data``."""
    if path not in (PAGE_PATH, f"{PAGE_PATH}/", DATA_PATH):
        return None
    text = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", [*text, ("Allow", "GET, HEAD")], b"GET only\n"
    if host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
        return "421 Misdirected Request", text, f"ask https://127.0.0.1:{port}{PAGE_PATH}\n".encode()
    if path == DATA_PATH:
        return "200 OK", [("Content-Type", "application/json"), *security_headers()], data()
    return "200 OK", [("Content-Type", "text/html; charset=utf-8"), *security_headers()], page_html()


# --- the edge -------------------------------------------------------------------------------------------------

def _get_json(url: str, ca: str) -> Any:
    with urllib.request.urlopen(url, context=make_ssl_context(ca), timeout=QUERY_TIMEOUT_S) as resp:
        doc = json.load(resp)
    if doc.get("status") != "success":
        raise ValueError(f"{doc.get('errorType', 'error')}: {doc.get('error', 'no answer')}")
    return doc["data"]


def query_prometheus(url: str, ca: str, exprs: list[str], *, now: float) -> PromAnswers:
    """Every range query and the alerts, in parallel; the first failure is the answer's ``error``."""
    start = now - RANGE_S

    def one(expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{now:.3f}",
                                         "step": str(STEP_S)})
        return list(_get_json(f"{url}/api/v1/query_range?{params}", ca).get("result") or [])

    errors: list[str] = []
    ranges: dict[str, list[dict[str, Any]]] = {}
    with cf.ThreadPoolExecutor(max_workers=4) as pool:
        alerts_future = pool.submit(_get_json, f"{url}/api/v1/alerts", ca)
        futures = {expr: pool.submit(one, expr) for expr in dict.fromkeys(exprs)}
        for expr, fut in futures.items():
            try:
                ranges[expr] = fut.result()
            except (OSError, ValueError, VaultmeshError) as err:
                errors.append(f"{type(err).__name__}: {err}".splitlines()[0])
        try:
            found = list((alerts_future.result() or {}).get("alerts") or [])
        except (OSError, ValueError, VaultmeshError) as err:
            errors.append(f"{type(err).__name__}: {err}".splitlines()[0])
            found = []
    return PromAnswers(url, None, errors[0] if errors else None, ranges, found)


def route(data: Callable[[], bytes]) -> Route:
    """``answer`` for a WSGI request (``keeper.metrics.serve_metrics``'s ``page``)."""
    def on(environ: Mapping[str, Any]) -> Answer | None:
        return answer(str(environ.get("REQUEST_METHOD", "")), str(environ.get("PATH_INFO", "")),
                      str(environ.get("HTTP_HOST", "")), int(environ.get("SERVER_PORT") or 0), data)
    return on


class Page:
    """The keeper's dashboard: observes the mesh (its own client, no test write) and asks Prometheus when the
    document is older than ``CACHE_S``. ``record``, ``certificates`` and ``prometheus`` are the keeper's: its
    status, the expiry gauge's values, and its Prometheus record (``url``, or ``reason``)."""

    def __init__(self, mesh: m.Mesh, record: Callable[[], KeeperStatus | None],
                 certificates: Callable[[], dict[str, float]], prometheus: Callable[[], Mapping[str, Any]]) -> None:
        self.mesh, self.record, self.certificates, self.prometheus = mesh, record, certificates, prometheus
        self.client = mesh.client(retry=RetryPolicy(deadline=1.0))
        self.lock = threading.Lock()
        self.cached: tuple[float, bytes] = (float("-inf"), b"")

    def observe(self) -> tuple[MeshView | None, str | None]:
        layout = self.mesh.layout
        try:
            view = gather_view(layout.nodes, self.client, seal_node=layout.seal_node,
                               login=lambda: m.admin_token(self.mesh, self.client))
        except (VaultmeshError, OSError) as err:
            return None, str(err).splitlines()[0]
        if not view.token_ok:
            self.client.token = None  # revoked or never had: log in again next time (the reaper renews the cache)
        return view, None

    def ask_prometheus(self, now: float) -> PromAnswers:
        record = self.prometheus() or {}
        url = record.get("url")
        if not url or not record.get("running"):
            return PromAnswers(None, str(record.get("reason") or "not started yet"))
        exprs = [expr for p in plot_panels(self.mesh.spec) for expr, _ in p.queries]
        return query_prometheus(str(url), str(self.mesh.paths.ca_cert), exprs, now=now)

    def data(self) -> bytes:
        with self.lock:  # one request builds, the others wait for it and take the same document
            at, body = self.cached
            if time.monotonic() - at < CACHE_S:
                return body
            now = time.time()
            with cf.ThreadPoolExecutor(max_workers=1) as pool:
                prom = pool.submit(self.ask_prometheus, now)
                view, why = self.observe()
                answers = prom.result()
            body = dumps(document(self.mesh.spec, view, self.record(), self.certificates(), answers, now=now,
                                  view_error=why))
            self.cached = (time.monotonic(), body)
            return body
