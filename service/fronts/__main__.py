"""`python -m service.fronts`: one front process, started by the service (service/fronts/process.py)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import os
import signal
import socket

import uvicorn

from service import tracing
from service.connections import GuardedHttpToolsProtocol, Limits, configure, raise_descriptor_limit
from service.fronts.app import FrontApp
from service.logging import configure_logging
from service.registry import load_registry
from service.settings import Settings

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the service died before the line above
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True, help="the service's address, shared (SO_REUSEPORT)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--link", required=True, help="the service's link socket")
    parser.add_argument("--http", required=True, help="the service's HTTP Unix socket")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--of", type=int, default=1, help="how many fronts share the connection cap")
    args = parser.parse_args()
    _die_with_parent()
    settings = Settings()
    configure_logging(settings.log_level)
    limits = Limits.from_settings(settings, raise_descriptor_limit())
    # CONVZOO_MAX_CONNECTIONS bounds the service's connections in all: each front takes its share.
    configure(dataclasses.replace(limits, max_connections=max(1, limits.max_connections // args.of)))
    if settings.otlp_endpoint is not None:
        tracing.enable_otlp(settings.otlp_endpoint)
    app = FrontApp(settings, load_registry(settings.registry_path), link_path=args.link, http_path=args.http)
    config = uvicorn.Config(
        app,
        log_config=None,  # the JSON lines configured above
        access_log=False,  # the request log writes them
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works: call_later
    )
    listening = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listening.bind((args.host, args.port))
    listening.listen(2048)
    uvicorn.Server(config).run(sockets=[listening])


if __name__ == "__main__":
    main()
