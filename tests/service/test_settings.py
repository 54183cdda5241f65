"""Settings come from CONVZOO_* variables and fail loudly on bad values."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from service.core.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in [v for v in os.environ if v.startswith("CONVZOO_")]:
        monkeypatch.delenv(var)
    s = Settings()
    assert (s.host, s.port, s.providers, s.allow_random_weights) == ("127.0.0.1", 8000, "auto", False)
    assert s.preload is None  # the registry's default model


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVZOO_PORT", "9001")
    monkeypatch.setenv("CONVZOO_PROVIDERS", "cpu")
    monkeypatch.setenv("CONVZOO_PRELOAD", "a, b")
    monkeypatch.setenv("CONVZOO_ALLOW_RANDOM_WEIGHTS", "true")
    monkeypatch.setenv("CONVZOO_LOG_LEVEL", "DEBUG")
    s = Settings()
    assert (s.port, s.providers, s.preload, s.allow_random_weights, s.log_level) == (
        9001,
        "cpu",
        ["a", "b"],
        True,
        "debug",
    )
    monkeypatch.setenv("CONVZOO_PRELOAD", '["x"]')
    assert Settings().preload == ["x"]
    monkeypatch.setenv("CONVZOO_PRELOAD", "")
    assert Settings().preload == []


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CONVZOO_PORT", "0"),
        ("CONVZOO_PORT", "http"),
        ("CONVZOO_PROVIDERS", "gpu"),
        ("CONVZOO_GRAPH_OPTIMIZATION", "max"),
        ("CONVZOO_MAX_BATCH_SIZE", "0"),
        ("CONVZOO_MAX_QUEUE_DELAY_US", "-1"),
        ("CONVZOO_MEMORY_BUDGET_MB", "0"),
        ("CONVZOO_ALLOW_RANDOM_WEIGHTS", "perhaps"),
        ("CONVZOO_REQUEST_TIMEOUT_S", "0"),
    ],
)
def test_bad_values_fail_loudly(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=var.removeprefix("CONVZOO_").lower()):
        Settings()


def test_unknown_preload_name_fails_start_up(tmp_path, source_zoo) -> None:  # type: ignore[no-untyped-def]
    from service.models.manager import ModelManager
    from tests.service.conftest import settings_for

    manager = ModelManager.from_settings(settings_for(source_zoo, preload=["no-such-model"]))
    with pytest.raises(ValueError, match=r"Unknown model no-such-model$"):
        manager.preload_names()
    default = source_zoo.registry.default
    typo = ModelManager.from_settings(settings_for(source_zoo, preload=[default.replace("-", "_")]))
    with pytest.raises(ValueError, match=re.escape(f"; did you mean {default}?")):
        typo.preload_names()


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [f for f in Settings.model_fields if f"`CONVZOO_{f.upper()}`" not in text]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_unknown_variables_are_named() -> None:
    from service.core.settings import unknown_variables

    env = {"CONVZOO_PORT": "1", "CONVZOO_PROVIDER": "cuda", "HOME": "/root"}
    assert unknown_variables(env) == ["CONVZOO_PROVIDER"]
