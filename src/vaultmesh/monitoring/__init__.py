"""Observing a mesh: Prometheus alert rules, the Prometheus config and a Grafana dashboard, each a pure render
of the mesh file (and, for the config, of the mesh's addresses).

- ``names``: the metric names OpenBao 2.7.2 and vaultmesh emit, the scrape jobs and target labels, and the
  metric names a PromQL expression uses (so nothing here alerts or plots on a name nobody emits).
- ``rules``: the alerting rules (``render_rules``), every threshold derived from the spec or a named constant.
- ``config``: ``prometheus.yml`` (``render_prometheus_config``): every node over verified TLS, the keeper, the
  entry.
- ``dashboard``: the Grafana dashboard JSON (``render_dashboard``).
- ``alertmanager``: ``alertmanager.yml`` (``render_alertmanager_config``) for the receiver in ``monitoring.alerts``.
"""
