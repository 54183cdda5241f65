"""The mutation fuzzer of the image path (tests/security/fuzz.py) for a bounded time with a fixed seed,
in its own process so that its peak RSS is its own; and every saved regression case replayed.
`make fuzz` runs it longer (FUZZ_SECONDS, FUZZ_SEED)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.settings import Settings
from tests.security.fuzz import CASES_DIR, run_case, run_grpc_case

# Minutes of exports and fuzzing: `make test-long` (CI runs it; docs in the README).
pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("FUZZ_SECONDS", "10"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))


def test_mutated_images_stay_within_the_mapped_errors_and_the_bounds(repo_root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.security.fuzz", "--seconds", str(SECONDS), "--seed", str(SEED)],
        capture_output=True,
        cwd=repo_root,
        check=False,
        timeout=SECONDS + 120,
    )
    lines = done.stdout.decode().strip().splitlines()
    assert lines, done.stderr.decode()[-3000:]
    report = json.loads(lines[-1])
    print(f"fuzz: {report['executions']} executions, {report['executions_per_s']}/s")
    assert not report["failures"], report["failures"]  # saved under tests/security/fuzz_cases/
    assert report["executions"] > 0


CASES = sorted(CASES_DIR.glob("*.bin"))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_saved_cases_are_replayed(case: Path) -> None:
    assert run_case(case.read_bytes(), max_cpu_s=2.0, max_pixels=Settings().max_image_pixels) is None


MESSAGES = sorted(CASES_DIR.glob("*.pb"))


@pytest.mark.parametrize("case", MESSAGES, ids=[c.stem for c in MESSAGES])
def test_saved_grpc_cases_are_replayed(case: Path) -> None:
    assert run_grpc_case(case.read_bytes()) is None
