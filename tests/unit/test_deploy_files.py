"""The deployment files a user starts from: `deploy/ray/serve.yaml` (`serve run`) and the
KubeRay manifest with its image (`deploy/kuberay/`). Each is read as Ray reads it (its Serve
config schema) and as whisperwire reads its args, and they name the Ray whisperwire locks.
Needs Ray installed, no cluster (no Kubernetes here: the manifest is checked, not applied)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import support

pytestmark = pytest.mark.ray

try:
    import yaml  # Ray's dependency
    from ray.serve.schema import ServeDeploySchema

    from whisperwire import ray_app
    from whisperwire.ray_proxy import CALLBACK
except ImportError:
    support.missing("Ray Serve is not installed (pip install 'whisperwire[ray]')", "--ray")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def serve_config(config: dict[str, Any]) -> Any:
    """The Serve config as Ray validates it, each application's args as whisperwire's."""
    schema = ServeDeploySchema.model_validate(config)
    for application in schema.applications:
        assert application.import_path == "whisperwire.ray_app:app_from", application
        ray_app.settings_from(application.args)  # a renamed flag is named here
        for deployment in application.deployments:
            assert deployment.name == ray_app.DEPLOYMENT, deployment.name
    return schema


def test_the_serve_config_file_is_one_ray_and_whisperwire_accept() -> None:
    text = (DEPLOY / "ray" / "serve.yaml").read_text()
    schema = serve_config(yaml.safe_load(text))
    assert schema.applications[0].args["ray-replicas"] == 2
    assert f"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH={CALLBACK}" in text


def test_the_kuberay_manifest_serves_whisperwire_on_the_locked_ray() -> None:
    manifest = yaml.safe_load((DEPLOY / "kuberay" / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    spec = manifest["spec"]
    schema = serve_config(yaml.safe_load(spec["serveConfigV2"]))
    settings = ray_app.settings_from(schema.applications[0].args)
    assert settings.ray_replica_gpus == 1, "one replica per GPU worker"
    cluster = spec["rayClusterConfig"]
    locked = version("ray")
    assert cluster["rayVersion"] == locked
    gpus = [
        container["resources"]["limits"].get("nvidia.com/gpu")
        for group in cluster["workerGroupSpecs"]
        for container in group["template"]["spec"]["containers"]
    ]
    assert gpus and all(gpus), gpus
    dockerfile = (DEPLOY / "kuberay" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM rayproject/ray:(\S+)", dockerfile, re.MULTILINE)
    assert base.startswith(f"{locked}-") and "gpu" in base, base
    assert f"ENV RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH={CALLBACK}" in dockerfile
    images = {
        container["image"]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for container in group["template"]["spec"]["containers"]
    }
    assert len(images) == 1, f"head and workers run one image: {images}"
