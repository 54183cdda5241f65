"""deploy/k8s: every manifest validated offline against the Kubernetes OpenAPI schemas, plus the
cross-references a schema cannot see (selectors, names, ports, probes, settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.core.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest Kubernetes release still commonly run, and the newest the validator knows.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
KSERVE_API = "serving.kserve.io/v1beta1"
SETTING_NAMES = {f"CONVZOO_{name.upper()}" for name in Settings.model_fields}
API_LABELS = {"app.kubernetes.io/name": "convzoo", "app.kubernetes.io/component": "api"}

Doc = dict[str, Any]


def manifests() -> list[tuple[str, Doc]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((str(path.relative_to(K8S)), doc))
    return found


def the(kind: str, file: str | None = None) -> Doc:
    docs = [d for f, d in manifests() if d["kind"] == kind and (file is None or f == file)]
    assert len(docs) == 1, f"expected one {kind} in {file or 'deploy/k8s'}, found {len(docs)}"
    return docs[0]


def deployments() -> dict[str, Doc]:
    return {f: d for f, d in manifests() if d["kind"] == "Deployment"}


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_every_expected_manifest_is_there() -> None:
    kinds = sorted(d["kind"] for _, d in manifests())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "InferenceService",
            "PodDisruptionBudget",
            "Service",
        ]
    )
    assert set(deployments()) == {"cpu/deployment.yaml", "gpu/deployment.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("name", "doc"),
    [(f, d) for f, d in manifests() if d["apiVersion"] != KSERVE_API],
    ids=lambda v: str(v)[:40],
)
def test_manifest_validates_against_the_kubernetes_schema(name: str, doc: Doc, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_what_it_should() -> None:
    # Guards against a validator that silently accepts everything (e.g. a missing schema).
    doc = yaml.safe_load((K8S / "cpu" / "deployment.yaml").read_text())
    container(doc)  # shape check
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[0], strict=True)


@pytest.mark.parametrize("file", ["cpu/deployment.yaml", "gpu/deployment.yaml"])
def test_deployment_probes_resources_and_hardening(file: str) -> None:
    deployment = deployments()[file]
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    # Pods must outlive the preStop delay plus uvicorn's graceful shutdown.
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = float(the("ConfigMap")["data"]["CONVZOO_GRACEFUL_SHUTDOWN_S"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + graceful


def test_gpu_variant_requests_an_nvidia_gpu_and_cpu_does_not() -> None:
    gpu, cpu = (
        container(deployments()["gpu/deployment.yaml"]),
        container(deployments()["cpu/deployment.yaml"]),
    )
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert {"name": "CONVZOO_PROVIDERS", "value": "cuda"} in gpu["env"]
    assert gpu["image"] != cpu["image"]


def test_both_variants_are_interchangeable_behind_service_hpa_and_pdb() -> None:
    service, hpa, pdb = the("Service"), the("HorizontalPodAutoscaler"), the("PodDisruptionBudget")
    for deployment in deployments().values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["metadata"]["name"] == hpa["spec"]["scaleTargetRef"]["name"]
        assert deployment["spec"]["selector"]["matchLabels"] == API_LABELS
        assert API_LABELS.items() <= labels.items()
        assert service["spec"]["selector"].items() <= labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        refs = [e["configMapRef"]["name"] for e in container(deployment)["envFrom"]]
        assert refs == [the("ConfigMap")["metadata"]["name"]]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]


def test_configmap_holds_only_real_settings() -> None:
    data = the("ConfigMap")["data"]
    assert set(data) <= SETTING_NAMES, set(data) - SETTING_NAMES
    assert data["CONVZOO_HOST"] == "0.0.0.0" and data["CONVZOO_PORT"] == "8000"
    settings = Settings(**{k.removeprefix("CONVZOO_").lower(): v for k, v in data.items()})
    assert settings.port == 8000


# --- KServe --------------------------------------------------------------------------------------
# Fields of KServe's v1beta1 PredictorSpec besides the inlined PodSpec (ComponentExtensionSpec and the
# framework specs), from the CRD's Go types.
PREDICTOR_EXTENSION_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
    "model",
    "workerSpec",
}


def test_inference_service_is_a_v2_custom_predictor_with_our_image() -> None:
    isvc = the("InferenceService")
    assert isvc["apiVersion"] == KSERVE_API
    name = isvc["metadata"]["name"]
    assert name.islower() and name[0].isalpha() and len(name) <= 45  # DNS-1035, room for suffixes
    predictor = isvc["spec"]["predictor"]
    assert set(isvc["spec"]) == {"predictor"}
    containers = predictor["containers"]
    assert [c["name"] for c in containers] == ["kserve-container"]  # the custom-predictor convention
    c = containers[0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["PROTOCOL"] == "v2"  # how KServe learns a custom predictor's protocol
    assert c["image"] == container(deployments()["cpu/deployment.yaml"])["image"]
    assert len(c["ports"]) == 1 and str(c["ports"][0]["containerPort"]) == env["CONVZOO_PORT"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {k for k in env if k.startswith("CONVZOO_")} <= SETTING_NAMES
    assert predictor["minReplicas"] <= predictor["maxReplicas"]


@pytest.mark.parametrize("version", VERSIONS)
def test_inference_service_pod_spec_validates_as_a_pod(version: str) -> None:
    predictor = dict(the("InferenceService")["spec"]["predictor"])
    extension = {k for k in predictor if k in PREDICTOR_EXTENSION_FIELDS}
    pod_spec = {k: v for k, v in predictor.items() if k not in extension}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "convzoo-predictor"}, "spec": pod_spec}
    # Strict: any predictor field that is neither KServe's nor a PodSpec field fails here.
    kubernetes_validate.validate(pod, version, strict=True)
