"""`python -m service --help`: what the command does and its settings (the CONVZOO_* variables of
`Settings`), for the command and for `convzoo serve --help`."""

from __future__ import annotations

import sys
import textwrap

from service.core.settings import Settings

SUMMARY = (
    "Serves the models of the registry over HTTP (POST /classify, GET /models, the Open Inference "
    "Protocol under /v2) on CONVZOO_HOST:CONVZOO_PORT, and over gRPC when CONVZOO_GRPC_PORT is set. "
    "Settings are environment variables prefixed CONVZOO_, validated at start-up: a bad value stops it "
    "with a message naming the variable (README, section Configuration)."
)

# The settings a first run needs; every other one is listed with its default below them.
MAIN = {
    "host": "interface to listen on (0.0.0.0: every interface)",
    "port": "TCP port of the HTTP API",
    "grpc_port": "TCP port of the gRPC API (unset: no gRPC server)",
    "registry_path": "the model registry file",
    "models_dir": "directory of the ONNX artifacts the registry names",
    "preload": "models loaded at start-up, comma-separated (the default model always is)",
    "memory_budget_mb": "memory for loaded models; idle ones are evicted to stay under it",
    "providers": "auto (CUDA when available, else CPU), cpu or cuda",
    "front_processes": "HTTP front processes (unset: one per core, at most 4; 0: one process)",
    "max_upload_mb": "largest request body, in MB",
    "request_timeout_s": "a request not answered within this gets 503 with Retry-After",
    "log_level": "debug, info, warning, error or critical",
}


def variable(name: str) -> str:
    return f"CONVZOO_{name.upper()}"


def default(name: str) -> str:
    value = Settings.model_fields[name].default
    return "unset" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def settings_text(width: int = 76) -> str:
    """The main settings with their default and meaning, then every other one with its default; lines
    of at most `width` characters (a help screen of 80 columns shows them as they are)."""
    lines = ["Main settings (default):"]
    for name, meaning in MAIN.items():
        lines += [f"  {variable(name)} ({default(name)})", f"      {meaning}"]
    others = [f"{variable(n)}={default(n)}" for n in Settings.model_fields if n not in MAIN]
    lines += ["", "Other settings (default):"]
    lines += textwrap.wrap("  ".join(others), width, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)


def help_text() -> str:
    usage = "usage: python -m service [--help]"
    return "\n".join([usage, "", textwrap.fill(SUMMARY, 76), "", settings_text(), ""])


def check_arguments(argv: list[str]) -> None:
    """--help (or -h) prints the help and exits 0; any other argument is an error (exit 2), since
    settings are environment variables. No arguments: returns, and the service starts."""
    if not argv:
        return
    if argv[0] in ("-h", "--help") and len(argv) == 1:
        sys.stdout.write(help_text())
        raise SystemExit(0)
    sys.stderr.write(
        f"python -m service takes no arguments (got {' '.join(argv)!r}); settings are CONVZOO_* "
        "environment variables: see python -m service --help\n"
    )
    raise SystemExit(2)
