"""`python -m service`: uvicorn on CONVZOO_HOST:CONVZOO_PORT with the app factory, and its front processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import uvicorn

from service.access import auth
from service.compute import cpus
from service.core.settings import Settings, unknown_variables
from service.fronts import process as front_processes
from service.server.connections import (
    Limits,
    configure,
    raise_descriptor_limit,
    server_options,
    shared_port,
)
from service.telemetry.logging import configure_logging
from service.usage import check_arguments


class _Server(uvicorn.Server):
    """uvicorn's server, passing a stop signal on to the front processes at once."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        front_processes.signal_running(signal.SIGTERM if sig == signal.SIGINT else sig)
        super().handle_exit(sig, frame)


log = logging.getLogger("convzoo")


def _url(host: str, port: int, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def main(argv: list[str] | None = None) -> None:
    check_arguments(sys.argv[1:] if argv is None else argv)  # --help: the settings, and exit
    settings = Settings()
    configure_logging(settings.log_level)  # JSON lines from the first one on
    for name in unknown_variables(dict(os.environ)):
        log.warning("%s is not a convzoo setting; see docs/configuration.md", name)
    limits = Limits.from_settings(settings, raise_descriptor_limit())
    configure(limits)
    common = server_options(settings)
    if (exposed := auth.exposure(settings)) is not None:
        log.warning("%s", exposed)
    # SIGHUP: the API keys file is read again here and in every front
    auth.reload_on_sighup(forward=front_processes.forward_running)
    fronts = settings.front_processes if settings.front_processes is not None else cpus.front_processes()
    if settings.workers > 1 or fronts == 0:
        log.info(
            "HTTP on %s (uvicorn, %d worker(s))",
            _url(settings.host, settings.port, settings.tls),
            settings.workers,
        )
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            **common,
        )
        return
    workdir = Path(tempfile.mkdtemp(prefix="convzoo-"))  # 0700: the link's Unix socket is this user's only
    try:
        # The service's address, bound but not listened on: the fronts listen there; binding it here
        # first makes an address in use fail the start at once.
        address = shared_port(settings.host, settings.port)
        host, port = address.getsockname()[:2]
        log.info("HTTP on %s (%d front processes)", _url(host, port, settings.tls), fronts)
        plan = front_processes.Plan(fronts, (host, port), workdir)
        config = uvicorn.Config("service.main:create_app", factory=True, **common)
        spawned = front_processes.plan(plan)  # they import and start up while the service does
        try:
            # The clients' connections, HTTP and gRPC, are the fronts'; this process holds the models and
            # answers the fronts over the link. uvicorn runs its lifespan and its signals, on no socket.
            _Server(config).run(sockets=[])
        finally:
            if spawned is not None:
                spawned.kill()  # only those still running: the lifespan stopped them unless it failed
        address.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
