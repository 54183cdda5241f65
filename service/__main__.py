"""`python -m service`: uvicorn on CONVZOO_HOST:CONVZOO_PORT with the app factory."""

from __future__ import annotations

import logging
import os

import uvicorn

from service.connections import GuardedHttpToolsProtocol, Limits, configure, raise_descriptor_limit
from service.logging import configure_logging
from service.settings import Settings, unknown_variables


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)  # JSON lines from the first one on
    for name in unknown_variables(dict(os.environ)):
        logging.getLogger("convzoo").warning(
            "%s is not a convzoo setting; see the README, section Configuration", name
        )
    limits = Limits.from_settings(settings, raise_descriptor_limit())
    configure(limits)
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        http=GuardedHttpToolsProtocol,  # the limits of service/connections.py
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works: call_later
    )


if __name__ == "__main__":
    main()
