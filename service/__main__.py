"""`python -m service`: uvicorn on CONVZOO_HOST:CONVZOO_PORT with the app factory, and its front processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType

import uvicorn

from service.connections import (
    BACKLOG,
    Limits,
    configure,
    raise_descriptor_limit,
    server_options,
    shared_port,
)
from service.fronts import process as front_processes
from service.logging import configure_logging
from service.settings import Settings, unknown_variables
from service.usage import check_arguments


class _Server(uvicorn.Server):
    """uvicorn's server, passing a stop signal on to the front processes at once."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        front_processes.signal_running(signal.SIGTERM if sig == signal.SIGINT else sig)
        super().handle_exit(sig, frame)


def _listen_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(BACKLOG)
    return sock


def main(argv: list[str] | None = None) -> None:
    check_arguments(sys.argv[1:] if argv is None else argv)  # --help: the settings, and exit
    settings = Settings()
    configure_logging(settings.log_level)  # JSON lines from the first one on
    for name in unknown_variables(dict(os.environ)):
        logging.getLogger("convzoo").warning(
            "%s is not a convzoo setting; see the README, section Configuration", name
        )
    limits = Limits.from_settings(settings, raise_descriptor_limit())
    configure(limits)
    common = server_options(settings)
    fronts = (
        settings.front_processes if settings.front_processes is not None else front_processes.auto_count()
    )
    if settings.workers > 1 or fronts == 0:
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            **common,
        )
        return
    workdir = Path(tempfile.mkdtemp(prefix="convzoo-"))  # 0700: the Unix sockets are this user's only
    try:
        # The service's address, bound but not listened on: the fronts listen there; binding it here
        # first makes an address in use fail the start at once.
        address = shared_port(settings.host, settings.port)
        http_path = workdir / "http.sock"
        plan = front_processes.Plan(fronts, address.getsockname()[:2], http_path, workdir)
        config = uvicorn.Config("service.main:create_app", factory=True, **common)
        listening = _listen_unix(http_path)
        spawned = front_processes.plan(plan)  # they import and start up while the service does
        try:
            # The clients' HTTP goes to the fronts; the service answers what they relay, on a Unix socket.
            _Server(config).run(sockets=[listening])
        finally:
            if spawned is not None:
                spawned.kill()  # only those still running: the lifespan stopped them unless it failed
        address.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
