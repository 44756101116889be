"""The Kubernetes manifests validate against the official schemas (offline: the schemas ship
in kubernetes-validate) and agree with the services: probes, ports, settings names."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"


def documents() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    ]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_the_kubernetes_schema(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def by_kind(kind: str) -> list[dict]:
    return [d for d in documents() if d["kind"] == kind]


def test_every_deployment_probes_readyz_and_livez_and_sets_resources() -> None:
    for deployment in by_kind("Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_services_and_autoscalers_point_at_real_deployments() -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    for service in by_kind("Service"):
        labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
        assert any(service["spec"]["selector"].items() <= lab.items() for lab in labels)
    for hpa in by_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert len(by_kind("HorizontalPodAutoscaler")) == len(deployments)


def test_no_secret_values_are_committed() -> None:
    assert by_kind("Secret") == []  # secrets are referenced by name, created by the operator


def test_configmap_keys_are_real_settings() -> None:
    from services.autocomplete.settings import Settings as AutocompleteSettings
    from services.core.server_settings import ServerSettings
    from services.plate_reader.settings import Settings as PlateSettings

    shared = {f"MODELPORT_{f.name.upper()}" for f in fields(ServerSettings)}
    known = {
        "plate-reader-config": shared | {f"MODELPORT_PLATE_{f.name.upper()}" for f in fields(PlateSettings)},
        "autocomplete-config": shared
        | {f"MODELPORT_AUTOCOMPLETE_{f.name.upper()}" for f in fields(AutocompleteSettings)},
    }
    configs = {c["metadata"]["name"]: set(c["data"]) for c in by_kind("ConfigMap")}
    assert set(configs) == set(known)
    for name, keys in configs.items():
        assert keys <= known[name], keys - known[name]


def test_secrets_are_referenced_by_name_and_optional() -> None:
    for deployment in by_kind("Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        refs = [e["secretRef"] for e in container.get("envFrom", []) if "secretRef" in e]
        assert all(ref.get("optional") is True for ref in refs)


def test_pods_get_the_preStop_and_the_shutdown_grace_before_sigkill() -> None:
    # SIGKILL comes terminationGracePeriodSeconds after preStop starts: it must leave the
    # preStop sleep, the service's shutdown grace and a few seconds to exit.
    from services.core.server_settings import ServerSettings

    configs = {c["metadata"]["name"]: c["data"] for c in by_kind("ConfigMap")}
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        [config] = [configs[e["configMapRef"]["name"]] for e in container["envFrom"] if "configMapRef" in e]
        grace = ServerSettings.from_env(config).shutdown_grace_s
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + grace + 5
