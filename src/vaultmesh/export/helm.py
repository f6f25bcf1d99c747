"""The mesh as values for the OpenBao Helm chart (``openbao/openbao-helm``, chart 0.29.2). Pure: a spec in, a
values document (and its YAML) out.

What the values make: an HA StatefulSet of ``nodes`` pods on integrated storage (Raft), each ``retry_join``-ing
every pod over TLS verified with the mesh CA; TLS on every listener, from one Kubernetes secret; the seal stanza
(static: its key from a second secret); a persistent audit volume with the mesh's file audit device on it;
telemetry with a ServiceMonitor that scrapes every pod (over TLS, verified) and labels the series the way the
mesh's alert rules select them, and those rules as the chart's PrometheusRule; the chart's snapshot CronJob on the
mesh's ``snapshots.every``; pods spread over zones.

Names are fixed by ``fullnameOverride`` (the mesh's name), so pod and service names are known here: pod
``<name>-<i>``, headless service ``<name>-internal``, active service ``<name>-active``. The certificate's names
are ``tls_names``.

Not made: the secrets themselves (``secret_commands`` prints the kubectl lines), the first ``bao operator init``
(self-initialisation needs one node with the stanza, and every pod here shares one config), the mesh-as-code part
(policies, auth, secrets engines), the Kubernetes auth role the snapshot CronJob logs in with, the keeper's jobs
(healing, reaping, drills: Kubernetes restarts pods itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from vaultmesh.errors import VaultmeshError
from vaultmesh.monitoring.names import JOB_NODE, MESH_LABEL, NODE_LABEL, VAULTMESH_METRICS, metric_names
from vaultmesh.monitoring.rules import mesh_rules
from vaultmesh.render.hcl import Block, render_document
from vaultmesh.render.node import DEFAULT_AUDIT
from vaultmesh.spec.models import KMS_SEALS, KeeperSpec, MeshSpec

CHART = "openbao/openbao 0.29.2"
"""The chart these values are written for and validated against (tests/unit/data/, with its source commit)."""

API_PORT = 8200
CLUSTER_PORT = 8201
"""The chart's ports: its services, probes and ``BAO_CLUSTER_ADDR`` hard-code them."""

TLS_DIR = "/openbao/tls"
SEAL_DIR = "/openbao/seal"
DATA_DIR = "/openbao/data"
AUDIT_DIR = "/openbao/audit"
"""Where the pods see things: the chart's data and audit volume mounts, and the two secrets."""

SECRET_MODE = 0o440
"""Secret files readable by the pod's group (the chart's ``fsGroup``), by no one else."""

ZONE_KEY = "topology.kubernetes.io/zone"
"""The well-known node label the mesh's zones map to: pods spread over it, at most one apart."""


@dataclass(frozen=True)
class HelmOptions:
    """What the mesh file does not say and a cluster needs."""

    image_tag: str
    """The OpenBao image tag: the pinned engine's version (``quay.io/openbao/openbao:<tag>``)."""
    namespace: str = "openbao"
    """The namespace the release goes to (only the certificate's names depend on it)."""
    s3_uri: str | None = None
    """Where the snapshot CronJob uploads (``s3://bucket/prefix``); default ``s3://<mesh>-snapshots``."""
    s3_host: str = "s3.amazonaws.com"

    def tls_secret(self, mesh: str) -> str:
        return f"{mesh}-tls"

    def seal_secret(self, mesh: str) -> str:
        return f"{mesh}-seal"

    def s3_secret(self, mesh: str) -> str:
        return f"{mesh}-snapshot-s3"


def tls_names(spec: MeshSpec, namespace: str) -> list[str]:
    """The DNS names the one certificate of the pods must carry: each pod through the headless service (what
    ``retry_join`` and ``BAO_API_ADDR`` use), the services, and localhost for ``bao`` inside a pod."""
    n = spec.name
    names = [f"*.{n}-internal", f"*.{n}-internal.{namespace}.svc", f"*.{n}-internal.{namespace}.svc.cluster.local"]
    for svc in (n, f"{n}-active", f"{n}-standby", f"{n}-internal"):
        names += [svc, f"{svc}.{namespace}.svc", f"{svc}.{namespace}.svc.cluster.local"]
    return [*names, "localhost"]


TLS_IPS = ["127.0.0.1", "::1"]
"""The IP names of the certificate: ``bao`` inside a pod talks to ``https://127.0.0.1:8200`` (the chart's
``BAO_ADDR``), verified with ``BAO_CACERT``."""


def pod_address(spec: MeshSpec, pod: str, port: int = API_PORT) -> str:
    return f"https://{pod}.{spec.name}-internal:{port}"


def _seal(spec: MeshSpec) -> Block | None:
    seal = spec.seal
    if seal.type == "shamir":
        return None
    if seal.type == "static":
        return Block("seal", ("static",), {"current_key_id": "k1", "current_key": f"file://{SEAL_DIR}/static.key"})
    if seal.type in KMS_SEALS:
        return Block("seal", (seal.type,), dict(seal.options))
    raise VaultmeshError(f"seal: {seal.type} has no Helm export: the transit seal is vaultmesh's own seal node on "
                         "this machine, out of a Kubernetes cluster's reach",
                         hint="export a mesh file with the static, shamir or a KMS seal")


def server_config(spec: MeshSpec) -> str:
    """The HCL every pod reads (``server.ha.raft.config``). Node ids are pod names (``setNodeId``), the API
    address comes from the chart's ``BAO_API_ADDR``, the cluster address from its ``BAO_CLUSTER_ADDR``."""
    ap = spec.raft.autopilot
    listener = Block("listener", ("tcp",), {
        "address": f"[::]:{API_PORT}",
        "cluster_address": f"[::]:{CLUSTER_PORT}",
        "tls_cert_file": f"{TLS_DIR}/tls.crt",
        "tls_key_file": f"{TLS_DIR}/tls.key",
        "tls_min_version": "tls12",
    }, [Block("telemetry", (), {"unauthenticated_metrics_access": True})])
    storage = Block("storage", ("raft",), {
        "path": DATA_DIR,
        "performance_multiplier": spec.raft.performance_multiplier,
        "autopilot_reconcile_interval": ap.reconcile_interval,
        "autopilot_update_interval": ap.update_interval,
    }, [Block("retry_join", (), {"leader_api_addr": pod_address(spec, f"{spec.name}-{i}"),
                                 "leader_ca_cert_file": f"{TLS_DIR}/ca.crt"})
        for i in range(spec.nodes)])
    blocks = [listener, storage]
    seal = _seal(spec)
    if seal is not None:
        blocks.append(seal)
    blocks += [
        Block("telemetry", (), {"prometheus_retention_time": "60s", "disable_hostname": True}),
        Block("audit", (DEFAULT_AUDIT.type, DEFAULT_AUDIT.name), {},
              [Block("options", (), {"file_path": f"{AUDIT_DIR}/audit.log"})]),
        Block("service_registration", ("kubernetes",), {}),
    ]
    return render_document({"ui": False, "cluster_name": spec.name, "log_level": spec.log_level}, blocks)


def alert_rules(spec: MeshSpec) -> list[dict[str, object]]:
    """The mesh's alert rules that hold in Kubernetes: those over OpenBao's own metrics (no keeper runs there,
    so none of its rules, nor the certificate expiry gauge it exports)."""
    without_keeper = spec.model_copy(update={"keeper": KeeperSpec(enabled=False)})
    return [rule.to_yaml(spec.name) for rule in mesh_rules(without_keeper)
            if not metric_names(rule.expr) & VAULTMESH_METRICS]


def service_monitor(spec: MeshSpec, opts: HelmOptions) -> dict[str, Any]:
    """A ServiceMonitor over the headless service (every pod, not only the active one as the chart's own does),
    TLS verified with the CA of the TLS secret, with the labels the rules select on: ``mesh``, ``job``, ``node``.
    It goes into the chart's ``extraObjects`` (rendered through ``tpl``: ``{{ .Release.Name }}`` works)."""
    relabel = [
        {"targetLabel": MESH_LABEL, "replacement": spec.name, "action": "replace"},
        {"targetLabel": "job", "replacement": JOB_NODE, "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": NODE_LABEL, "action": "replace"},
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": f"{spec.name}-nodes", "labels": {"release": "prometheus"}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "openbao",
                                         "app.kubernetes.io/instance": "{{ .Release.Name }}",
                                         "openbao-internal": "true"}},
            "endpoints": [{
                "port": "https", "scheme": "https", "path": "/v1/sys/metrics", "params": {"format": ["prometheus"]},
                "interval": "30s", "scrapeTimeout": "10s",
                "tlsConfig": {"ca": {"secret": {"name": opts.tls_secret(spec.name), "key": "ca.crt"}},
                              "serverName": f"{spec.name}-internal"},
                "relabelings": relabel,
            }],
        },
    }


def cron_schedule(every: float) -> str:
    """A cron line for a job every ``every`` seconds: a whole number of minutes that divides an hour, or of hours
    that divides a day (cron cannot say "every 7 minutes" evenly)."""
    minutes = every / 60
    if minutes == int(minutes) and 1 <= minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{int(minutes)} * * * *"
    hours = every / 3600
    if hours == int(hours) and 1 <= hours <= 24 and 24 % hours == 0:
        return "0 0 * * *" if hours == 24 else ("0 * * * *" if hours == 1 else f"0 */{int(hours)} * * *")
    raise VaultmeshError(f"snapshots.every ({every:g} s) is not a cron schedule",
                         hint="use a divisor of an hour in minutes (15m, 20m, 30m) or of a day in hours (1h, 6h, 24h)")


def expire_days(spec: MeshSpec) -> int:
    """Days the bucket keeps a snapshot: ``keep.age``, else as long as ``keep.count`` snapshots last (the
    CronJob deletes by age only), at least one."""
    keep, every = spec.snapshots.keep, spec.snapshots.every or 0
    seconds = keep.age if keep.age is not None else (keep.count or 1) * every
    return max(1, math.ceil(seconds / 86400))


def snapshot_agent(spec: MeshSpec, opts: HelmOptions) -> dict[str, Any]:
    """The chart's snapshot CronJob: ``bao operator raft snapshot save`` on the active node, logged in with the
    Kubernetes auth role ``snapshot``, uploaded to S3, verified against the mesh CA."""
    if spec.snapshots.every is None:
        return {"enabled": False}
    uri = opts.s3_uri or f"s3://{spec.name}-snapshots"
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise VaultmeshError(f"the snapshot upload address {uri!r} is not an s3:// URI", hint="--s3-uri s3://bucket")
    return {
        "enabled": True,
        "schedule": cron_schedule(spec.snapshots.every),
        "concurrencyPolicy": "Forbid",
        "s3CredentialsSecret": opts.s3_secret(spec.name),
        "config": {"s3Host": opts.s3_host, "s3Bucket": uri[len("s3://"):].split("/", 1)[0], "s3Uri": uri,
                   "s3ExpireDays": str(expire_days(spec)), "baoAuthPath": "kubernetes", "baoRole": "snapshot"},
        "extraVolumes": [{"name": "tls", "secret": {"secretName": opts.tls_secret(spec.name),
                                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                                    "defaultMode": SECRET_MODE}}],
        "extraVolumeMounts": [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}],
        "extraEnvironmentVars": {"BAO_CACERT": f"{TLS_DIR}/ca.crt"},
    }


def helm_values(spec: MeshSpec, opts: HelmOptions) -> dict[str, Any]:
    """The values document for ``helm install <release> openbao/openbao -f values.yaml``."""
    volumes: list[dict[str, Any]] = [{"name": "tls", "secret": {"secretName": opts.tls_secret(spec.name),
                                                                "defaultMode": SECRET_MODE}}]
    mounts: list[dict[str, Any]] = [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
    if spec.seal.type == "static":
        volumes.append({"name": "seal", "secret": {"secretName": opts.seal_secret(spec.name),
                                                   "defaultMode": SECRET_MODE}})
        mounts.append({"name": "seal", "mountPath": SEAL_DIR, "readOnly": True})
    spread = (f"- maxSkew: 1\n  topologyKey: {ZONE_KEY}\n  whenUnsatisfiable: DoNotSchedule\n"
              "  labelSelector:\n    matchLabels:\n      app.kubernetes.io/name: openbao\n"
              "      app.kubernetes.io/instance: \"{{ .Release.Name }}\"\n      component: server\n")
    rules = alert_rules(spec)
    return {
        "fullnameOverride": spec.name,
        "global": {"enabled": True, "tlsDisable": False, "serverTelemetry": {"prometheusOperator": False}},
        "injector": {"enabled": False},
        "server": {
            "image": {"repository": "openbao/openbao", "tag": opts.image_tag},
            "logLevel": spec.log_level,
            "updateStrategyType": "OnDelete",
            "extraEnvironmentVars": {"BAO_CACERT": f"{TLS_DIR}/ca.crt"},
            "volumes": volumes,
            "volumeMounts": mounts,
            "dataStorage": {"enabled": True, "mountPath": DATA_DIR},
            "auditStorage": {"enabled": True, "mountPath": AUDIT_DIR},
            "topologySpreadConstraints": spread if len(spec.zones) > 1 else None,
            "standalone": {"enabled": False},
            "ha": {
                "enabled": True,
                "replicas": spec.nodes,
                "apiAddr": f"https://$(BAO_K8S_POD_NAME).{spec.name}-internal:{API_PORT}",
                "raft": {"enabled": True, "setNodeId": True, "config": server_config(spec)},
                "disruptionBudget": {"enabled": True, "maxUnavailable": 1},
            },
        },
        "serverTelemetry": {
            "serviceMonitor": {"enabled": False},
            "prometheusRules": {"enabled": bool(rules), "rules": rules},
        },
        "snapshotAgent": snapshot_agent(spec, opts),
        "extraObjects": [service_monitor(spec, opts)],
    }


def secret_commands(spec: MeshSpec, opts: HelmOptions) -> list[str]:
    """The kubectl lines that make the secrets the values name, from files the user has (``ca.pem``,
    ``cert.pem``, ``key.pem``: a certificate for ``tls_names``; ``static.key``: the mesh's seal key)."""
    ns = opts.namespace
    lines = [f"kubectl create namespace {ns}",
             f"kubectl -n {ns} create secret generic {opts.tls_secret(spec.name)} --from-file=ca.crt=ca.pem "
             "--from-file=tls.crt=cert.pem --from-file=tls.key=key.pem"]
    if spec.seal.type == "static":
        lines.append(f"kubectl -n {ns} create secret generic {opts.seal_secret(spec.name)} "
                     "--from-file=static.key=static.key")
    if spec.snapshots.every is not None:
        lines.append(f"kubectl -n {ns} create secret generic {opts.s3_secret(spec.name)} "
                     "--from-file=AWS_ACCESS_KEY_ID=aws-access-key-id "
                     "--from-file=AWS_SECRET_ACCESS_KEY=aws-secret-access-key")
    return lines


class BlockDumper(yaml.SafeDumper):
    """YAML whose multi-line strings (the HCL config, the spread constraints) are literal blocks (``|``), as a
    human writes them in a values file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


BlockDumper.add_representer(str, _str)


def dump_yaml(value: object) -> str:
    """``value`` as YAML in the order given, multi-line strings as literal blocks."""
    return yaml.dump(value, Dumper=BlockDumper, sort_keys=False, width=120, allow_unicode=True)


def render_helm_values(spec: MeshSpec, opts: HelmOptions) -> str:
    """The values as YAML, headed by what to create before ``helm install`` (as comments)."""
    head = [f"# Values for the OpenBao Helm chart ({CHART}), rendered by `vaultmesh export helm` from mesh "
            f"{spec.name}; do not edit.",
            "# Before `helm install`, make the secrets these values name (files: the mesh CA, a certificate and",
            f"# key for the names below, the seal key): {', '.join(tls_names(spec, opts.namespace)[:3])}, ...",
            *(f"#   {line}" for line in secret_commands(spec, opts)),
            f"# Then: helm install {spec.name} openbao/openbao -n {opts.namespace} -f values.yaml; "
            f"kubectl -n {opts.namespace} exec {spec.name}-0 -- bao operator init"]
    body = dump_yaml(helm_values(spec, opts))
    return "\n".join(head) + "\n" + body
