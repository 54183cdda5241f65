"""The Dockerfile's contract (targets, non-root, healthcheck, no compilers, build-only CA) and the two
helpers it ships: the stdlib health check, run against a live HTTP server, and the requirements filter."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.paths import REPO

DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"
REQUIREMENTS = REPO / "deploy" / "docker" / "requirements.py"


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined), in file order."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = found.setdefault(match[2], [line])
        else:
            current.append(line)
    return found


def test_targets_in_an_order_the_legacy_builder_can_use() -> None:
    names = list(stages())
    assert {"runtime", "export"} <= set(names)
    # Without BuildKit every stage before the target is built: torch must come after runtime.
    assert names.index("runtime") < names.index("export-build") < names.index("export")


def test_dependency_layers_do_not_depend_on_the_code() -> None:
    # Code changes must not reinstall the serving dependencies or torch.
    for stage in ("deps", "export-build"):
        instructions = " ".join(stages()[stage])
        assert "COPY service/" not in instructions and "COPY export/" not in instructions
    assert stages()["export-build"][0] == "FROM deps AS export-build"


def test_runtime_is_unprivileged_healthchecked_and_built_from_the_slim_base() -> None:
    runtime = stages()["runtime"]
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE.read_text()
    users = [i for i in runtime if i.startswith("USER ")]
    assert users == ["USER 10001:10001"]
    (check,) = [i for i in runtime if i.startswith("HEALTHCHECK ")]
    assert "/opt/convzoo/healthcheck.py" in check and "curl" not in check and "wget" not in check
    assert runtime[-1] == 'CMD ["python", "-m", "service"]'


def test_runtime_has_no_compilers_torch_or_build_certificates() -> None:
    runtime = " ".join(stages()["runtime"])
    for forbidden in ("gcc", "g++", "build-essential", "apt-get install", "pip install", "torch", "certs/"):
        assert forbidden not in runtime
    copied_from = set(re.findall(r"COPY --from=(\S+)", runtime))
    assert copied_from == {"build"}
    # The CA bundle lives only in base-build, which the runtime stage does not descend from.
    assert "COPY certs/" in " ".join(stages()["base-build"])


def test_models_are_root_owned_in_the_image() -> None:
    runtime = stages()["runtime"]
    copies = [i for i in runtime if i.startswith("COPY") and "/var/lib/convzoo" in i]
    assert copies and all("--chown" not in i for i in copies)


def test_build_context_keeps_certs_and_drops_the_rest() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert not any(line.strip().startswith("certs") for line in ignored)
    for path in (".git", ".venv", "tests"):
        assert path in ignored
    assert (REPO / "certs" / "README.md").is_file()


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {"CONVZOO_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=20, check=False
    )


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_follows_readiness(
    health_server: http.server.ThreadingHTTPServer, status: int, healthy: bool
) -> None:
    _Health.status = status
    done = run_healthcheck(health_server.server_address[1])
    assert (done.returncode == 0) is healthy, done.stderr
    if not healthy:
        assert "503" in done.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    server.server_close()
    assert run_healthcheck(port).returncode == 1


def requirements(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(REQUIREMENTS), *args], cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def test_requirements_swap_onnxruntime_for_the_gpu_package() -> None:
    cpu = requirements("--ort", "onnxruntime")
    gpu = requirements("--ort", "onnxruntime-gpu[cuda,cudnn]")
    assert [r for r in cpu if r.startswith("onnxruntime")] == [r for r in cpu if "onnxruntime" in r]
    assert cpu[:-1] == gpu[:-1]  # everything but ONNX Runtime is the same
    assert cpu[-1].startswith("onnxruntime>=") and gpu[-1].startswith("onnxruntime-gpu[cuda,cudnn]>=")
    assert not any(r.startswith("torch") for r in cpu)
    assert requirements("--ort", "onnxruntime==1.20.1")[-1] == "onnxruntime==1.20.1"


def test_requirements_extra_lists_the_export_group_and_rejects_unknown_ones() -> None:
    assert any(r.startswith("torch") for r in requirements("--extra", "export"))
    done = subprocess.run(
        [sys.executable, str(REQUIREMENTS), "--extra", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "Unknown extra nope" in done.stderr


@pytest.mark.parametrize("script", ["compose-smoke.sh", "build-base-image.sh"])
def test_deploy_scripts_parse(script: str) -> None:
    done = subprocess.run(
        ["bash", "-n", str(REPO / "scripts" / script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
