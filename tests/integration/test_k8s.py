"""Offline validation of the Kubernetes manifests in k8s/.

Core kinds: kubernetes-validate with strict schemas (unknown fields rejected). The Prometheus Operator
kinds: jsonschema against the openAPIV3Schema of the CRDs in k8s/crds/, made strict the same way. Overlays
are rendered with plain `kubectl kustomize` (kustomize's default load restrictions, as Argo CD and Flux apply
them) when kubectl is installed; the base and component files are validated one by one in any case.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.30"
OVERLAYS = ["local", "prod"]
COMPONENTS = ["kubeflow-multi-user"]
CRD_KINDS = {"ServiceMonitor": "servicemonitor.yaml", "PrometheusRule": "prometheusrule.yaml"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob"}
# The top-level sections bgmrec/config.py accepts in a params.yaml.
CONFIG_SECTIONS = {
    "data", "validation", "feast", "train", "models", "gate", "kubeflow", "sample_media", "extract", "batch",
    "serving",
}
KFP_AUDIENCE = "pipelines.kubeflow.org"
FEAST_CLIENT_LABEL = ("bgmrec.io/feast-client", "true")
REDIS_PASSWORD_ENV = "BGMREC_REDIS_PASSWORD"

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


def _resource_files() -> list[Path]:
    """The manifest files of the base and of every component, as their kustomization lists them."""
    folders = [K8S / "base", *(K8S / "components" / name for name in COMPONENTS)]
    files = []
    for folder in folders:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        files += [folder / name for name in kustomization["resources"]]
    return files


def _load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@functools.cache
def _kustomize(directory: Path) -> str:
    """`kubectl kustomize DIR` with no extra flags; skips the test when kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: overlays cannot be rendered (base files are still validated)")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{directory} does not render with default load restrictions: {result.stderr}"
    return result.stdout


def render(overlay: str) -> list[dict[str, Any]]:
    return _load_all(_kustomize(K8S / "overlays" / overlay))


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize` renders for one overlay."""
    return render(request.param)


def _by_kind(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    if resource["kind"] == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return resource["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _mount_of(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict, dict]:
    """The volume mount holding `path` (the longest matching mount path) and its volume."""
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume mount of container {container['name']}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return mount, volume


def _secret_ref(env: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    assert name in env, f"env {name} missing"
    ref = env[name].get("valueFrom", {}).get("secretKeyRef")
    assert ref is not None, f"env {name} must come from a Secret (secretKeyRef), not a literal"
    return ref


@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_resource_file_validates(path: Path) -> None:
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
    by_kind = _by_kind(rendered)
    deployment = by_kind[("Deployment", "bgmrec-serving")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
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


def test_serving_reads_cluster_config_and_secrets(rendered) -> None:
    deployment = _by_kind(rendered)[("Deployment", "bgmrec-serving")]
    pod = _pod_spec(deployment)
    (container,) = pod["containers"]
    env = _env(container)
    admin = _secret_ref(env, "BGMREC_ADMIN_TOKEN")
    assert admin["name"].startswith("bgmrec-admin") and admin["key"] == "token"
    assert admin.get("optional") is False, "the admin token must be required"
    redis = _secret_ref(env, REDIS_PASSWORD_ENV)
    assert (redis["name"], redis["key"]) == ("bgmrec-redis", "password")
    assert env["BGMREC_REGISTRY"]["value"] == "/data/registry"
    assert env["BGMREC_FEATURE_REPO"]["value"] == "/data/feast"
    assert env["BGMREC_REGISTRY_POLL_S"]["value"] == "5"
    _, volume = _mount_of(pod, container, env["BGMREC_PARAMS"]["value"])
    assert volume["configMap"]["name"] == "bgmrec-params"
    _, data = _mount_of(pod, container, "/data/registry/")
    assert data["persistentVolumeClaim"]["claimName"] == "bgmrec-data"


def test_trigger_authenticates_with_kfp_token(rendered) -> None:
    cronjob = _by_kind(rendered)[("CronJob", "bgmrec-music-batch-trigger")]
    pod = _pod_spec(cronjob)
    assert pod["automountServiceAccountToken"] is False, "the trigger needs no Kubernetes API token"
    (container,) = pod["containers"]
    env = _env(container)
    token_path = env["KF_PIPELINES_SA_TOKEN_PATH"]["value"]
    mount, volume = _mount_of(pod, container, token_path)
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == KFP_AUDIENCE
    assert token_path == f"{mount['mountPath'].rstrip('/')}/{token['path']}"
    assert token["expirationSeconds"] >= 600, "the kubelet refuses tokens shorter than 10 minutes"
    assert env["BGMREC_KFP_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["BGMREC_PIPELINE_IMAGE"]["value"] == container["image"], "tasks must run the trigger's own image"


def test_trigger_compiles_from_cluster_config(rendered) -> None:
    cronjob = _by_kind(rendered)[("CronJob", "bgmrec-music-batch-trigger")]
    pod = _pod_spec(cronjob)
    (container,) = pod["containers"]
    command = " ".join(container["command"] + container["args"]).split()
    params = command[command.index("--params") + 1]
    _, volume = _mount_of(pod, container, params)
    assert volume["configMap"]["name"] == "bgmrec-params"
    config_map = _by_kind(rendered)[("ConfigMap", "bgmrec-params")]
    assert Path(params).name in config_map["data"]


def test_redis_requires_password_from_secret(rendered) -> None:
    statefulset = _by_kind(rendered)[("StatefulSet", "feast-redis")]
    (container,) = _pod_spec(statefulset)["containers"]
    env = _env(container)
    args = container["args"]
    password = args[args.index("--requirepass") + 1]
    assert password.startswith("$(") and password.endswith(")"), "the password must be an env reference"
    ref = _secret_ref(env, password[2:-1])
    assert (ref["name"], ref["key"]) == ("bgmrec-redis", "password")
    probe_ref = _secret_ref(env, "REDISCLI_AUTH")
    assert (probe_ref["name"], probe_ref["key"]) == ("bgmrec-redis", "password")
    assert "redis-cli" in " ".join(container["readinessProbe"]["exec"]["command"])


def test_redis_admits_only_its_clients(rendered) -> None:
    by_kind = _by_kind(rendered)
    policy = by_kind[("NetworkPolicy", "feast-redis")]
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert peers, "an ingress rule without `from` admits every pod"
    for peer in peers:
        assert "ipBlock" not in peer, f"Redis admits an address range: {peer}"
        assert peer.get("podSelector", {}).get("matchLabels"), f"namespace-wide peer without a podSelector: {peer}"
    selectors = [peer["podSelector"]["matchLabels"] for peer in peers]
    serving_labels = by_kind[("Deployment", "bgmrec-serving")]["spec"]["template"]["metadata"]["labels"]
    assert any(s.items() <= serving_labels.items() for s in selectors), "the recommender cannot reach Redis"
    assert dict([FEAST_CLIENT_LABEL]) in selectors, "pipeline pods that push features cannot reach Redis"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_generated_only_for_local(overlay: str) -> None:
    secrets = {r["metadata"]["name"]: r for r in render(overlay) if r["kind"] == "Secret"}
    if overlay == "prod":
        assert not secrets, f"prod must not ship credentials: {sorted(secrets)}"
        return
    # Pipeline tasks read bgmrec-redis by name: no hash suffix.
    assert set(secrets["bgmrec-redis"]["data"]) == {"password"}
    (admin,) = [s for name, s in secrets.items() if name.startswith("bgmrec-admin")]
    assert set(admin["data"]) == {"token"}


def test_params_configmap_is_cluster_config(rendered) -> None:
    config_maps = [
        r for r in rendered if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("bgmrec-params")
    ]
    assert len(config_maps) == 1
    assert config_maps[0]["metadata"]["name"] == "bgmrec-params", "pipelines mount it by name: no hash suffix"
    text = config_maps[0]["data"]["params.yaml"]
    assert text == (K8S / "base" / "params.yaml").read_text()
    cluster = yaml.safe_load(text)
    assert isinstance(cluster, dict)
    assert set(cluster) <= CONFIG_SECTIONS, f"unknown sections: {set(cluster) - CONFIG_SECTIONS}"


def test_cluster_params_match_the_repository() -> None:
    cluster = yaml.safe_load((K8S / "base" / "params.yaml").read_text())
    local = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert cluster["kubeflow"] == local["kubeflow"], "k8s/base/params.yaml kubeflow: differs from params.yaml"
    for section, values in cluster.items():
        if section in ("kubeflow", "serving"):
            continue
        assert section in local, f"{section}: not a section of params.yaml"
        unknown = set(values) - set(local[section])
        assert not unknown, f"{section}: keys not in params.yaml: {sorted(unknown)}"
    assert cluster["feast"]["config"] == "feature_store.redis.yaml"
    assert (ROOT / "features" / cluster["feast"]["config"]).is_file()
    for path in (cluster["data"]["dataset"], cluster["gate"]["registry"], cluster["feast"]["repo"]):
        assert path.startswith(local["kubeflow"]["data_volume"]["mount_path"] + "/"), f"{path} is not on the volume"


def test_cluster_params_load_as_config() -> None:
    config = pytest.importorskip("bgmrec.config")
    loaded = config.load_config(K8S / "base" / "params.yaml")
    assert loaded.feast.repo == "/data/feast"


def test_feast_redis_config_takes_password_from_env(monkeypatch) -> None:
    text = (ROOT / "features" / "feature_store.redis.yaml").read_text()
    monkeypatch.setenv(REDIS_PASSWORD_ENV, "s3cretPassw0rd")
    # Feast reads feature_store.yaml through os.path.expandvars (feast.repo_config.load_repo_config).
    online = yaml.safe_load(os.path.expandvars(text))["online_store"]
    assert online["type"] == "redis"
    fields = online["connection_string"].split(",")
    assert fields[0] == "feast-redis:6379"
    assert "password=s3cretPassw0rd" in fields[1:]


def test_multi_user_component_binds_trigger(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "kubeflow-user-example-com",
        "resources": [os.path.relpath(K8S / "base", overlay)],
        "components": [os.path.relpath(K8S / "components" / "kubeflow-multi-user", overlay)],
    }))
    resources = _load_all(_kustomize(overlay))
    bindings = [r for r in resources if r["kind"] == "RoleBinding"]
    assert len(bindings) == 1
    (subject,) = bindings[0]["subjects"]
    trigger = _by_kind(resources)[("CronJob", "bgmrec-music-batch-trigger")]
    assert subject == {
        "kind": "ServiceAccount",
        "name": _pod_spec(trigger)["serviceAccountName"],
        "namespace": "kubeflow-user-example-com",
    }
    assert bindings[0]["roleRef"]["name"] == "kubeflow-pipelines-edit"
    for resource in resources:
        validate_resource(resource)


def test_grafana_dashboard_is_shipped(rendered) -> None:
    dashboards = [
        r
        for r in rendered
        if r["kind"] == "ConfigMap" and r["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    (content,) = dashboards[0]["data"].values()
    assert json.loads(content)["panels"], "the dashboard has no panels"
