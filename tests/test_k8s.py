"""Offline validation of the Kubernetes manifests in k8s/.

Core kinds: kubernetes-validate with strict schemas (unknown fields rejected). The Prometheus Operator
kinds: jsonschema against the openAPIV3Schema of the CRDs in k8s/crds/, made strict the same way. Overlays
are rendered with `kubectl kustomize` when kubectl is installed; the base files are validated one by one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.30"
OVERLAYS = ["local", "prod"]
CRD_KINDS = {"ServiceMonitor": "servicemonitor.yaml", "PrometheusRule": "prometheusrule.yaml"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob"}

pytestmark = pytest.mark.unit


def _strict(schema: Any) -> Any:
    """Reject unknown fields wherever the CRD lists properties and does not preserve unknown fields."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((K8S / "crds" / CRD_KINDS[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    return _strict(version["schema"]["openAPIV3Schema"])


def validate_resource(resource: dict[str, Any]) -> None:
    """Raise if `resource` does not match its kind's schema (strict)."""
    if resource["kind"] in CRD_KINDS:
        jsonschema.validate(resource, crd_schema(resource["kind"]))
    else:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _base_files() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return [K8S / "base" / name for name in kustomization["resources"]]


def _load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize` renders for one overlay."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: overlays cannot be rendered (base files are still validated)")
    result = subprocess.run(
        [
            kubectl,
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(K8S / "overlays" / request.param),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"overlay {request.param} does not render: {result.stderr}"
    return _load_all(result.stdout)


@pytest.mark.parametrize("path", _base_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_base_file_validates(path: Path) -> None:
    for resource in _load_all(path.read_text()):
        validate_resource(resource)


def test_crd_files_validate_as_core_kinds() -> None:
    for name in CRD_KINDS.values():
        kubernetes_validate.validate(yaml.safe_load((K8S / "crds" / name).read_text()), KUBERNETES_VERSION, strict=True)


def test_rendered_overlay_validates(rendered) -> None:
    kinds = {r["kind"] for r in rendered}
    expected = {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CronJob",
        "StatefulSet",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
        "PersistentVolumeClaim",
    }
    assert expected <= kinds, f"missing kinds: {expected - kinds}"
    for resource in rendered:
        validate_resource(resource)


def test_strict_validation_rejects_unknown_fields() -> None:
    deployment = yaml.safe_load((K8S / "base" / "serving" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_resource(deployment)
    monitor = yaml.safe_load((K8S / "base" / "monitoring" / "servicemonitor.yaml").read_text())
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(monitor)
    rule = yaml.safe_load((K8S / "base" / "monitoring" / "prometheus-rules.yaml").read_text())
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(rule)


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    if resource["kind"] == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return resource["spec"]["template"]["spec"]


def test_workloads_are_hardened(rendered) -> None:
    for resource in (r for r in rendered if r["kind"] in WORKLOAD_KINDS):
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        pod = _pod_spec(resource)
        assert pod["securityContext"]["runAsNonRoot"] is True, f"{name}: must run as non-root"
        for container in pod["containers"]:
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(section, {})), f"{name}: cpu/memory {section} missing"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, f"{name}: root filesystem must be read-only"
            assert context["allowPrivilegeEscalation"] is False, f"{name}: privilege escalation allowed"


def test_serving_probes_and_selectors(rendered) -> None:
    by_kind = {(r["kind"], r["metadata"]["name"]): r for r in rendered}
    deployment = by_kind[("Deployment", "bgmrec-serving")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        resource = by_kind[(kind, "bgmrec-serving")]
        selector = resource["spec"].get("selector") or resource["spec"]["podSelector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels.items(), f"{kind} selector {selector} misses the serving pods"
    monitor = by_kind[("ServiceMonitor", "bgmrec-serving")]
    service = by_kind[("Service", "bgmrec-serving")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {p["name"] for p in service["spec"]["ports"]} >= {e["port"] for e in monitor["spec"]["endpoints"]}
    hpa = by_kind[("HorizontalPodAutoscaler", "bgmrec-serving")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_params_configmap_is_params_yaml(rendered) -> None:
    config_maps = [
        r for r in rendered if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("bgmrec-params")
    ]
    assert len(config_maps) == 1
    assert config_maps[0]["data"]["params.yaml"] == (ROOT / "params.yaml").read_text()


def test_grafana_dashboard_is_shipped(rendered) -> None:
    import json

    dashboards = [
        r
        for r in rendered
        if r["kind"] == "ConfigMap" and r["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    (content,) = dashboards[0]["data"].values()
    assert json.loads(content)["panels"], "the dashboard has no panels"
