"""Print pip requirements from pyproject.toml, for image builds (stdlib only).

requirements.py --ort 'onnxruntime-gpu[cuda,cudnn]'   serving dependencies, ONNX Runtime swapped
requirements.py --extra export                         one optional-dependency group
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ORT_NAMES = {"onnxruntime", "onnxruntime-gpu"}


def requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if match is None:
        raise ValueError(f"Unparseable requirement {spec!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def serving(project: dict[str, Any], ort: str) -> list[str]:
    deps = [str(d) for d in project.get("dependencies", [])]
    pinned = [d for d in deps if requirement_name(d) in ORT_NAMES]
    kept = [d for d in deps if requirement_name(d) not in ORT_NAMES]
    # Keep pyproject's version bound on the replacement when ORT_PACKAGE gives none.
    bound = pinned[0][len(requirement_name(pinned[0])) :].strip() if pinned else ""
    has_version = re.search(r"[<>=!~]", ort) is not None
    return [*kept, ort if has_version or not bound else f"{ort}{bound}"]


def extra(project: dict[str, Any], name: str) -> list[str]:
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    if name not in extras:
        raise ValueError(f"Unknown extra {name}")
    return list(extras[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ort", help="ONNX Runtime requirement replacing pyproject's onnxruntime")
    group.add_argument("--extra", help="print this optional-dependency group")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    project = tomllib.loads(args.pyproject.read_text())["project"]
    lines = serving(project, args.ort) if args.ort else extra(project, args.extra)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
