"""The deployment assets in platform/ and docker-compose.yml: alert rules through promtool, the
dashboards' and rules' queries against the metrics /metrics really serves, the Helm chart
rendered by Helm's own engine and its manifests checked against Kubernetes' schemas.

promtool comes from Debian's `prometheus` package, Helm's engine and the schemas from PyPI
(helm-python-sdk, kubernetes-validate); scripts/tools.sh installs all three for `make test`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "platform"
CHART = PLATFORM / "helm" / "chat-platform"
DASHBOARDS = sorted((PLATFORM / "grafana" / "dashboards").glob("*.json"))
KUBERNETES_VERSION = "1.31.0"

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None,
    reason="promtool is missing: `bash scripts/tools.sh` installs Debian's prometheus package",
)


@needs_promtool
def test_alert_rules_are_valid_and_fire_when_they_should() -> None:
    assert promtool is not None
    for args in (
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts.test.yml"],
    ):
        done = subprocess.run([promtool, *args], cwd=PLATFORM / "prometheus", capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stdout, done.stderr)


def test_the_seeds_alerts_and_ours_are_all_there() -> None:
    rules = yaml.safe_load((PLATFORM / "prometheus" / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "HighLatency",
        "TenantRateLimitExceeded",
        "ProviderErrorRate",
        "CircuitOpen",
        "TenantQuotaAt80Percent",
        "CeleryBacklog",
    } <= names


# --- the queries name real metrics -------------------------------------------------------------

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
_FUNCTIONS_AND_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "label_values", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "bool", "offset", "topk", "bottomk", "abs", "clamp_min", "clamp_max", "le",
}  # fmt: skip


@pytest.fixture(scope="module")
def exposed(django_db_setup: Any) -> set[str]:
    """Every series name /metrics can serve: our families (defined at import, whether or not
    traffic has made a series yet), django-prometheus' and the scrape-time collectors'."""
    from django_prometheus.middleware import Metrics

    import config.metrics  # noqa: F401 - defines our families
    from config.metrics import scrape_registry

    Metrics.get_instance()  # django-prometheus defines its HTTP families with its first middleware

    names: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(scrape_registry()).decode()):
        base = family.name
        names.add(base)
        for suffix in _SUFFIXES.get(family.type, ()):
            names.add(base + suffix)
    return names


def _queries() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                found.append((f"{path.name}: ${variable['name']}", variable["definition"]))
    rules = yaml.safe_load((PLATFORM / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            found.append((f"alerts.yml: {rule['alert']}", rule["expr"]))
    return found


def _metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are not functions, keywords, label names (in
    braces or by/on lists) or durations."""
    expr = re.sub(r"label_values\(([^,]+),\s*\w+\)", r"\1", expr)  # its second argument is a label
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    without_strings = re.sub(r'"[^"]*"', "", without_groupings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {w for w in words if w not in _FUNCTIONS_AND_WORDS and not w.startswith("$")}


def test_dashboards_and_rules_query_only_metrics_that_exist(exposed: set[str]) -> None:
    queries = _queries()
    assert len(queries) > 30
    for where, expr in queries:
        names = _metric_names(expr)
        assert names, (where, expr)
        missing = names - exposed
        assert not missing, (where, missing)


def test_the_five_dashboards_are_there_and_well_formed() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {
        "System Overview",
        "API Performance",
        "Tenant Usage",
        "Cost Analysis",
        "Model Performance",
    }
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)) and board["uid"] == path.stem
        assert all(t["datasource"]["uid"] == "${datasource}" for p in board["panels"] for t in p["targets"])


# --- Helm ----------------------------------------------------------------------------------------


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is missing: `bash scripts/tools.sh`")
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="gw", namespace="chat")
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"ingress": {"enabled": True, "tlsSecret": "tls"}, "migrations": {"enabled": False}},
        {"web": {"autoscaling": {"enabled": False}}},
    ],
    ids=["defaults", "ingress", "no-autoscaling"],
)
def test_helm_chart_renders_valid_kubernetes_manifests(values: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is missing: `bash scripts/tools.sh`"
    )
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is missing: `bash scripts/tools.sh`")
    lint = helm.lint(str(CHART))
    assert not lint["errors"], lint
    manifests = _render(values)
    for manifest in manifests:
        # strict: unknown fields are errors too
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds.count("Deployment") == 3 and kinds.count("PodDisruptionBudget") == 2


def test_helm_chart_wires_probes_autoscaling_secrets_and_migrations() -> None:
    manifests = {(m["kind"], m["metadata"]["name"]): m for m in _render({})}
    web = manifests[("Deployment", "gw-chat-platform-web")]["spec"]["template"]["spec"]
    [container] = web["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["envFrom"] == [{"secretRef": {"name": "chat-platform"}}]
    assert web["securityContext"]["runAsNonRoot"] is True
    assert web["terminationGracePeriodSeconds"] > int(
        next(e["value"] for e in container["env"] if e["name"] == "SHUTDOWN_GRACE_SECONDS")
    )
    hpa = manifests[("HorizontalPodAutoscaler", "gw-chat-platform-web")]["spec"]
    assert {m["type"] for m in hpa["metrics"]} == {"Resource", "Pods"}
    assert hpa["metrics"][1]["pods"]["metric"]["name"] == "gateway_requests_in_flight"
    beat = manifests[("Deployment", "gw-chat-platform-beat")]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    job = manifests[("Job", "gw-chat-platform-migrate")]
    assert "pre-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "python",
        "manage.py",
        "migrate_schemas",
    ]


# --- docker compose and the image -------------------------------------------------------------


def test_compose_runs_the_whole_stack_with_provisioned_monitoring() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "rabbitmq",
        "migrate",
        "web",
        "worker",
        "beat",
        "jaeger",
        "prometheus",
        "grafana",
    } <= set(services)
    assert "pgvector" in services["postgres"]["image"]
    assert services["web"]["environment"]["CELERY_BROKER_URL"].startswith("amqp://")
    assert services["web"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (service, source)


def test_dockerfile_is_multi_stage_and_runs_as_a_user() -> None:
    dockerfile = (PLATFORM / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M)
    assert not list(PLATFORM.rglob("*.py")), "no Python under platform/ (it would shadow the stdlib)"
