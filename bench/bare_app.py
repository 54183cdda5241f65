"""(d) The floor: a bare FastAPI app whose POST /classify ignores the image and returns constant JSON.

Served by the same uvicorn settings as convzoo (`uvicorn bench.bare_app:create_app --factory ...`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response

CONSTANT: dict[str, Any] = {
    "model": "constant",
    "results": [{"predictions": [{"index": 0, "label": "x", "score": 1.0}]}],
}


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    async def classify() -> dict[str, Any]:
        return CONSTANT

    @app.post("/headers")
    async def headers(request: Request) -> Response:
        # the harness's check that the load generators send a peer's extra headers
        return Response(status_code=204 if request.headers.get("x-bench-check") == "1" else 400)

    return app
