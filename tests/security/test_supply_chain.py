"""Supply chain: the serving dependencies are locked with hashes (requirements/serve.lock, what `make run`
installs), and neither the lock nor this environment holds a release older than the first fix of the
known vulnerabilities of the libraries the anchors were burned through."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from typing import NamedTuple

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.service.conftest import REPO

LOCK = REPO / "requirements" / "serve.lock"


class Fix(NamedTuple):
    package: str
    advisory: str
    fixed: str  # the first release with the fix, unless the comment says otherwise
    what: str


# Known vulnerabilities and the release that fixed them. onnxruntime has no published advisory of its own;
# its refusal of external data outside the model directory is tested in test_models.py instead.
FIXES = [
    Fix("pillow", "CVE-2022-45198", "9.2.0", "decompression bomb through highly compressed GIF data"),
    Fix("pillow", "CVE-2023-44271", "10.0.0", "ImageFont: unbounded memory for long text"),
    Fix("pillow", "CVE-2023-50447", "10.2.0", "ImageMath.eval: arbitrary code execution"),
    Fix("pillow", "CVE-2024-28219", "10.3.0", "buffer overflow in _imagingcms"),
    Fix("pillow", "CVE-2025-48379", "11.3.0", "heap overflow writing large DDS images"),
    Fix("python-multipart", "CVE-2024-24762", "0.0.7", "ReDoS in the Content-Type header options"),
    Fix(
        "python-multipart",
        "CVE-2024-53981",
        "0.0.18",
        "DoS: bytes before the first boundary skipped and logged one by one",
    ),
    # The next three: a fixed release named by the advisories; not confirmed to be the first one.
    Fix("python-multipart", "CVE-2026-24486", "0.0.22", "arbitrary file write"),
    Fix(
        "python-multipart",
        "CVE-2026-53539",
        "0.0.30",
        "quadratic-time query-string parsing (GHSA-5rvq-cxj2-64vf)",
    ),
    Fix(
        "python-multipart",
        "CVE-2026-53540",
        "0.0.31",
        "negative Content-Length buffers the body (GHSA-v9pg-7xvm-68hf)",
    ),
    Fix("starlette", "CVE-2023-30798", "0.25.0", "multipart: unlimited parts and fields"),
    Fix("starlette", "CVE-2024-47874", "0.40.0", "multipart: text fields buffered without a size limit"),
    Fix(
        "starlette", "CVE-2025-54121", "0.47.2", "a large upload blocks the event loop while spooling to disk"
    ),
    Fix("starlette", "CVE-2025-62727", "0.49.1", "FileResponse: O(n^2) Range header parsing"),
    Fix(
        "fastapi",
        "CVE-2024-24762",
        "0.109.1",
        "ReDoS in form Content-Type parsing (through python-multipart)",
    ),
    Fix("onnx", "CVE-2022-25882", "1.13.0", "path traversal through external data locations"),
    Fix("onnx", "CVE-2024-27318", "1.16.0", "bypass of the CVE-2022-25882 fix"),
    Fix("onnx", "CVE-2024-27319", "1.16.0", "out-of-bounds read in ONNX_ASSERT"),
    Fix("onnx", "CVE-2024-5187", "1.16.2", "arbitrary file overwrite extracting model tarballs"),
    Fix("torch", "CVE-2022-45907", "1.13.1", "eval injection in torch.jit.annotations.parse_type_line"),
    Fix("torch", "CVE-2025-32434", "2.6.0", "torch.load(weights_only=True) remote code execution"),
    # a fixed release named by the advisory; not confirmed to be the first one
    Fix("torch", "GHSA-63cw-57p8-fm3p", "2.10.0", "weights_only unpickler memory corruption"),
]
SERVING = {
    "pillow",
    "python-multipart",
    "starlette",
    "fastapi",
    "onnxruntime",
}  # in the lock; the rest: export


def installed(package: str) -> Version | None:
    try:
        return Version(metadata.version(package))
    except metadata.PackageNotFoundError:
        return None


def locked() -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", LOCK.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): Version(version) for name, version in pins}


@pytest.mark.parametrize("fix", FIXES, ids=[f"{f.package}-{f.advisory}" for f in FIXES])
def test_installed_release_has_the_fix(fix: Fix) -> None:
    version = installed(fix.package)
    if version is None:
        assert fix.package not in SERVING, f"{fix.package} is a serving dependency but is not installed"
        pytest.skip(f"{fix.package} is not installed here (export only)")
    assert version >= Version(fix.fixed), (
        f"{fix.package} {version} is older than {fix.fixed}: {fix.advisory} {fix.what}"
    )


@pytest.mark.parametrize(
    "fix", [f for f in FIXES if f.package in SERVING], ids=lambda f: f"{f.package}-{f.advisory}"
)
def test_locked_release_has_the_fix(fix: Fix) -> None:
    pins = locked()
    assert canonicalize_name(fix.package) in pins, f"{fix.package} is not in {LOCK.name}"
    assert pins[canonicalize_name(fix.package)] >= Version(fix.fixed), (fix.advisory, fix.what)


def test_the_lock_pins_every_serving_dependency_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in {LOCK.name}: regenerate it (docs/security.md)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} does not satisfy {spec}"
        )
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n\n", 1)[-1].strip())
    for entry in entries:
        if entry.startswith("#"):
            continue
        assert "==" in entry.splitlines()[0] and "--hash=sha256:" in entry, entry.splitlines()[0]
    assert "torch" not in pins, "the serving lock must not pull in torch"
