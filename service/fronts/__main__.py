"""`python -m service.fronts`: one front process, started by the service (service/fronts/process.py). It
serves the service's whole app, HTTP and gRPC, with the service's models over the link."""

from __future__ import annotations

import argparse
import os
import signal

import uvicorn

from service.access import auth
from service.core.settings import Settings
from service.fronts.remote import LinkedMetrics, linked
from service.main import create_app
from service.server.children import die_with_parent
from service.server.connections import (
    BACKLOG,
    Limits,
    configure,
    raise_descriptor_limit,
    server_options,
    shared_port,
)
from service.telemetry import tracing
from service.telemetry.logging import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True, help="the service's address, shared (SO_REUSEPORT)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--link", required=True, help="the service's link socket")
    parser.add_argument("--of", type=int, default=1, help="how many fronts share the connection cap")
    args = parser.parse_args()
    die_with_parent(os.getppid(), signal.SIGTERM)  # a SIGTERM: it drains what it holds
    # A registry reload is the service's (it holds the models); a front's SIGHUP reads the API keys again
    # (auth.reload_on_sighup below), never ends it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = Settings()
    configure_logging(settings.log_level)
    # CONVZOO_MAX_CONNECTIONS bounds the service's connections in all: each front takes its share.
    configure(Limits.from_settings(settings, raise_descriptor_limit(), share=args.of))
    if settings.otlp_endpoint is not None:
        tracing.enable_otlp(settings.otlp_endpoint)
    app = create_app(
        settings,
        services_from=linked(args.link),
        metrics=LinkedMetrics(),
        shared_port=True,
        processes=args.of,  # each front holds its share of every API key's quota (docs/auth.md)
    )
    auth.reload_on_sighup()  # the service passes SIGHUP on: read the API keys file again
    config = uvicorn.Config(
        app,
        log_config=None,  # the JSON lines configured above
        access_log=False,  # the request log writes them
        lifespan="on",
        **server_options(settings),
    )
    listening = shared_port(args.host, args.port)
    listening.listen(BACKLOG)
    uvicorn.Server(config).run(sockets=[listening])


if __name__ == "__main__":
    main()
