"""deploy/prometheus: the rules pass `promtool check rules` and their unit tests (`promtool test rules`),
name only metrics the service exports, and the compose `monitoring` profile scrapes every replica."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from service.core.registry import load_registry
from service.models.batcher import BatchRecord
from service.monitor import reference
from service.monitor.live import Monitor
from service.monitor.reference import References
from service.monitor.signals import Seen, Signals
from service.telemetry.metrics import Metrics, ModelGauge

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip(
            "promtool is not installed: `make promtool` installs Debian's prometheus package (needs apt)"
        )
    return subprocess.run(
        [binary, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", "rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_unit_tests_fire_the_alerts() -> None:
    done = promtool("test", "rules", "rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_passes_promtool_check() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def _monitored(metrics: Metrics, tmp: Path) -> None:
    """A monitor in `metrics`' registry with a reference and a judged window, so that every one of its
    series is exported."""
    entry = load_registry(REPO / "registry.yaml").get("fmnist-lenet5")
    rng = np.random.default_rng(0)
    n = 300
    probs = rng.dirichlet(np.ones(10), size=n)
    signals = Signals(
        probs.argmax(1),
        probs.max(1),
        -(probs * np.log(probs)).sum(1),
        rng.normal(size=n),
        rng.normal(size=n),
        rng.random(n),
    )
    references = References(tmp, tmp)
    references.put(entry, reference.build(entry.name, entry.version, "synthetic", signals, 10))
    monitor = Monitor(
        references,
        lambda _: entry,
        lambda _: [str(i) for i in range(10)],
        window=20,
        min_answers=10,
        registry=metrics.registry,
    )
    rows = [
        Seen(
            entry.name,
            entry.version,
            int(signals.classes[i]),
            float(signals.confidence[i]),
            0.5,
            0.0,
            0.0,
            0.5,
            0.99,
            1,
            28,
            28,
            1,
            0,
        )
        for i in range(20)
    ]
    monitor.ingest(rows)


def _exported_names(tmp: Path) -> set[str]:
    metrics = Metrics()
    _monitored(metrics, tmp)
    metrics.observe_request(route="/classify", model="m", status=200, seconds=0.01)
    metrics.observe_request(route="/classify", model="m", status=503, seconds=0.01)
    metrics.observe_batch(BatchRecord(model="m", size=1, ok=True, compute_ns=1000, queue_ns=(1000,)))
    metrics.watch_models(lambda: [ModelGauge("m", True, 1, False)])
    text = metrics.exposition().decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_rules_name_only_metrics_the_service_exports(tmp_path: Path) -> None:
    rules = (PROMETHEUS / "rules.yml").read_text()
    # Metric names, not the recording rules' own names (level:metric:operation).
    used = set(re.findall(r"(?<![:\w])convzoo_[a-z_]+\b(?!:)", rules))
    assert used, "the rules name no convzoo metric"
    missing = used - _exported_names(tmp_path)
    assert not missing, f"rules name metrics the service does not export: {sorted(missing)}"


def test_monitoring_profile_scrapes_every_api_replica() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["prometheus"]
    assert service["profiles"] == ["monitoring"]
    assert service["build"]["context"] == "deploy/prometheus"
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in service["volumes"]
    assert re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", service["ports"][0]) == "127.0.0.1:9090:9090"
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    # Docker's DNS answers the service name with every replica's address: each one is a target.
    assert job["job_name"] == "convzoo" and job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"] == [{"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "5s"}]
    assert "FROM debian:" in (PROMETHEUS / "Dockerfile").read_text()
