"""`python -m export` where the development environment's packages are missing: a plain message that
names the environment to use, not a traceback."""

from __future__ import annotations

import subprocess
import sys

from tests.paths import REPO

# `python -m export --help` with typer (or torch) not importable, as in the serving environment.
WITHOUT = """
import runpy, sys
sys.modules[{name!r}] = None  # `import {name}` now raises ModuleNotFoundError, as where it is not installed
sys.argv = ["python -m export", "--help"]
runpy.run_module("export", run_name="__main__", alter_sys=True)
"""


def _without(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT.format(name=name)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_typer_it_names_the_development_environment() -> None:
    done = _without("typer")
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert "needs the development environment (typer is not installed" in done.stderr
    assert "make models" in done.stderr and ".venv/bin/python -m export" in done.stderr


def test_with_the_development_environment_it_is_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "export", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Usage: python -m export" in done.stdout
