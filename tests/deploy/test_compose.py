"""docker-compose.yml and its GPU override: the contract checked from the YAML, and `config` run by
whichever compose binary is installed (skipped, with the reason, when there is none)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.core.settings import Settings
from tests.paths import REPO

BASE = REPO / "docker-compose.yml"
GPU = REPO / "docker-compose.gpu.yml"
NGINX = REPO / "deploy" / "nginx" / "convzoo.conf"
SETTING_NAMES = {f"CONVZOO_{name.upper()}" for name in Settings.model_fields}
# Every profile, alone and with the GPU override.
VARIANTS = [
    pytest.param([BASE], [], id="base"),
    pytest.param([BASE], ["export"], id="export"),
    pytest.param([BASE], ["scale"], id="scale"),
    pytest.param([BASE, GPU], [], id="gpu"),
    pytest.param([BASE, GPU], ["scale"], id="gpu-scale"),
    pytest.param([BASE, GPU], ["export", "scale"], id="gpu-all"),
]


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def api() -> dict[str, Any]:
    return dict(load(BASE)["services"]["api"])


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    pairs = (item.partition("=") for item in service["environment"])
    return {name: (value if sep else None) for name, sep, value in pairs}


def default(value: str) -> str:
    """Interpolate ${VAR:-default} and ${VAR-default} with the variables unset, as compose would."""
    return re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", value)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def test_api_port_is_bound_to_loopback_by_default() -> None:
    ports = [default(p) for p in api()["ports"]]
    assert ports == ["127.0.0.1:8000:8000"]


def test_api_settings_are_real_convzoo_settings() -> None:
    env = environment(api())
    assert set(env) <= SETTING_NAMES, set(env) - SETTING_NAMES
    assert env["CONVZOO_HOST"] == "0.0.0.0"


def test_stop_grace_period_outlasts_uvicorn_graceful_shutdown() -> None:
    service = api()
    graceful = float(environment(service)["CONVZOO_GRACEFUL_SHUTDOWN_S"] or 0)
    assert seconds(service["stop_grace_period"]) > graceful + 5


def test_api_healthcheck_models_read_only_and_hardening() -> None:
    service = api()
    assert service["healthcheck"]["test"] == ["CMD", "python", "/opt/convzoo/healthcheck.py"]
    assert "models:/var/lib/convzoo:ro" in service["volumes"]
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert service["cap_drop"] == ["ALL"]
    assert service["build"]["target"] == "runtime"


def test_export_is_a_one_shot_job_under_its_profile_writing_the_volume() -> None:
    export = load(BASE)["services"]["export"]
    assert export["profiles"] == ["export"]
    assert export["build"]["target"] == "export"
    assert export["restart"] == "no"
    assert "models:/var/lib/convzoo" in export["volumes"]
    command = export["command"]
    assert command[command.index("--out") + 1] == "/var/lib/convzoo/models"
    assert command[command.index("--registry") + 1] == "/var/lib/convzoo/registry.yaml"


def test_scale_profile_puts_nginx_in_front_of_healthy_api_replicas() -> None:
    lb = load(BASE)["services"]["lb"]
    assert lb["profiles"] == ["scale"]
    assert lb["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert [default(p) for p in lb["ports"]] == ["127.0.0.1:8080:8080"]
    assert "./deploy/nginx/convzoo.conf:/etc/nginx/conf.d/default.conf:ro" in lb["volumes"]
    conf = NGINX.read_text()
    assert re.search(r"server api:8000 [^;]*max_fails=\d", conf)
    assert re.search(r"proxy_next_upstream [^;]*http_503", conf)
    assert "listen 8080;" in conf


def test_gpu_override_reserves_an_nvidia_gpu_and_installs_onnxruntime_gpu() -> None:
    override = load(GPU)["services"]["api"]
    devices = override["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert override["build"]["args"]["ORT_PACKAGE"].startswith("onnxruntime-gpu")
    assert "CONVZOO_PROVIDERS=cuda" in override["environment"]


def compose_binary() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize(("files", "profiles"), VARIANTS)
def test_compose_config_accepts_every_profile_and_override(files: list[Path], profiles: list[str]) -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed (make test-docker installs it)"
        )
    args = [*binary, "--project-directory", str(REPO)]
    for f in files:
        args += ["-f", str(f)]
    for p in profiles:
        args += ["--profile", p]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVZOO_", "API_", "LB_"))}
    done = subprocess.run([*args, "config"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert "api" in rendered["services"]
    for profile, service in (("export", "export"), ("scale", "lb")):
        if profile in profiles:
            assert service in rendered["services"]
    if GPU in files:
        reservations = rendered["services"]["api"]["deploy"]["resources"]["reservations"]
        assert reservations["devices"][0]["driver"] == "nvidia"
