"""Per-request cost of the HTTP layer, in process (no sockets): POST /classify on fmnist-lenet5 with a 28x28
PNG and GET /models, 16 concurrent clients; requests/s and CPU ms per request of this process.

    PYTHONPATH=TREE python scripts/request_cost.py TREE

TREE is a checkout of the repository; comparing two checkouts (run each a few times, alternating) shows
what a change to the routes, schemas or middleware costs. CPU per request is the steadier figure on a
shared host. Older checkouts kept the manager on `app.state`; both are handled.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

CLIENTS = 16


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 120).save(buf, "PNG")
    return buf.getvalue()


async def _measure(name: str, request: Callable[[], Awaitable[httpx.Response]], per_client: int) -> None:
    async def client(n: int) -> None:
        for _ in range(n):
            response = await request()
            assert response.status_code == 200, response.text

    await client(10)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(per_client) for _ in range(CLIENTS)))
    n = CLIENTS * per_client
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name}: {n / wall:.1f} requests/s, {cpu * 1e3 / n:.3f} CPU ms/request")


async def main(tree: Path) -> None:
    from service.core.settings import Settings
    from service.main import create_app

    settings = Settings(
        registry_path=tree / "registry.yaml",
        models_dir=tree / "models",
        calibration_s=0.01,
        preload=["fmnist-lenet5"],
        log_level="warning",
    )
    app = create_app(settings)
    png = _png()
    async with app.router.lifespan_context(app) as state:
        asgi: Any = app
        if state and "services" in state:  # the lifespan state, which a server passes to every request
            manager = state["services"].manager

            async def asgi(scope: Any, receive: Any, send: Any) -> None:
                await app({**scope, "state": dict(state)}, receive, send)
        else:
            manager = app.state.manager
        await manager.wait_preloaded()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://bench") as c:
            headers = {"content-type": "image/png"}
            await _measure(
                "POST /classify",
                lambda: c.post("/classify?model=fmnist-lenet5", content=png, headers=headers),
                100,
            )
            await _measure("GET /models", lambda: c.get("/models"), 40)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
