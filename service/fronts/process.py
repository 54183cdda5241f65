"""Starting, watching and stopping the front processes, from the service process.

`python -m service` reserves its address (SO_REUSEPORT) and spawns the fronts (`plan`) before the app
starts; the app's lifespan opens the link (`start`); each front then binds its own socket to that
address, so the kernel spreads the connections evenly over the fronts. A front that dies is started again; on
SIGTERM the fronts are told at once, so they stop accepting while the service drains, and the link
stays open until they have answered what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from service.fronts.link_server import LinkServer
from service.services import Services

log = logging.getLogger("convzoo.fronts")

RESTART_DELAY_S = 1.0


@dataclass(frozen=True)
class Plan:
    count: int
    address: tuple[str, int]  # the service's TCP address: each front listens there (SO_REUSEPORT)
    workdir: Path  # a private directory for the link's socket


_running: Fronts | None = None


class Fronts:
    """The front processes of one service: spawned by `python -m service` before the app starts, so that
    they start up beside it; linked to the service's models once its lifespan has built them."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.link_path = plan.workdir / "link.sock"
        self.link: LinkServer | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self._watch: asyncio.Task[None] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "service.fronts",
            "--host",
            self.plan.address[0],
            "--port",
            str(self.plan.address[1]),
            "--link",
            str(self.link_path),
            "--of",
            str(self.plan.count),
        ]
        return subprocess.Popen(cmd)

    def spawn(self) -> None:
        """Start every front; each listens once it has reached the link (`attach`)."""
        self.processes = [self._spawn() for _ in range(self.plan.count)]
        log.info("started %d front process(es): %s", self.plan.count, [p.pid for p in self.processes])

    async def attach(self, services: Services) -> None:
        """Open the link to `services` and watch the fronts from now on."""
        self.link = LinkServer(services, self.link_path)
        await self.link.start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(RESTART_DELAY_S)
            for i, p in enumerate(self.processes):
                if self.stopping or p.poll() is None:
                    continue
                log.warning(
                    "front process %d (pid %d) exited with %s; starting it again", i, p.pid, p.returncode
                )
                self.processes[i] = self._spawn()

    def signal(self, sig: int) -> None:
        """Pass a stop signal on at once: the fronts stop accepting while the service drains."""
        self.stopping = True
        for p in self.processes:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)

    def forward(self, sig: int) -> None:
        """Pass a signal that stops nothing (SIGHUP: read the API keys again) on to the running fronts."""
        for p in self.processes:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)

    async def stop(self, timeout_s: float) -> None:
        self.signal(signal.SIGTERM)
        if self._watch is not None:
            self._watch.cancel()
        deadline = time.monotonic() + timeout_s + 2.0  # their own drain, then a little
        while any(p.poll() is None for p in self.processes):
            if time.monotonic() > deadline:
                self.kill()
                break
            await asyncio.sleep(0.05)
        if self.link is not None:
            await self.link.stop()

    def kill(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                log.warning("front process %d did not stop in time; killed", p.pid)
                p.kill()
                p.wait()


def plan(fronts: Plan | None) -> Fronts | None:
    """From `python -m service`: spawn the planned fronts now; the app's lifespan links them."""
    global _running
    _running = Fronts(fronts) if fronts is not None and fronts.count > 0 else None
    if _running is not None:
        _running.spawn()
    return _running


async def start(services: Services) -> Fronts | None:
    """Link the spawned fronts to `services`; None when `python -m service` planned none."""
    if _running is None or _running.link is not None:  # none, or an app already linked them
        return None
    await _running.attach(services)
    return _running


async def stop(fronts: Fronts | None, timeout_s: float) -> None:
    if fronts is not None:
        await fronts.stop(timeout_s)


def signal_running(sig: int) -> None:
    """From the service's signal handler."""
    if _running is not None:
        _running.signal(sig)


def forward_running(sig: int) -> None:
    """From the service's SIGHUP handler: the fronts read the API keys again."""
    if _running is not None:
        _running.forward(sig)
