"""`make bench-rollout` (`python -m bench.rollout`): versions rolled out under sustained load
(docs/bench-rollout.md).

A scratch zoo holds fmnist-lenet5 and the photo model, each with a second version "b" added by the export
stage (`export/versions.py`; the same weights, its own artifact file, so every swap loads, warms, moves
the traffic and unloads for real), and a corrupt version "broken". One `python -m service` (front
processes, the defaults) serves it; per model, at concurrency C:

- steady: the p99 under load;
- swaps: the same load while the stable version alternates N times (registry written, SIGHUP, the next
  swap once GET /models/{name}/rollout says the new one serves): non-2xx answers, p99 against steady;
- broken: promoting the corrupt version under load: failed requests (0 expected), the error reported;
- canary at 10%: requests from distinct clients (X-Client-ID), the share the canary answered;
- shadow at 100%: the primary's p99 against steady measured right before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.images import fashion_png, photo_jpeg
from bench.servers import ROOT, clean_env, free_port, serve
from export import versions
from service.core.registry import Registry, dump_registry, load_registry

MODELS = ("fmnist-lenet5", "efficientnet_lite0")


@dataclass
class Window:
    """One stretch of load: latencies of the 2xx answers, the count of the others, versions seen."""

    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1e3 if self.latencies_s else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies_s) + self.failed,
            "failed": self.failed,
            "p50_ms": round(self.p(50), 3),
            "p99_ms": round(self.p(99), 3),
            "versions": self.versions,
        }


async def _post(
    client: httpx.AsyncClient, model: str, body: bytes, media: str, who: str, into: Window
) -> None:
    t0 = time.perf_counter()
    try:
        r = await client.post(
            "/classify",
            params={"model": model},
            content=body,
            headers={"Content-Type": media, "X-Client-ID": who},
        )
    except httpx.HTTPError:
        into.failed += 1
        return
    if r.status_code // 100 != 2:
        into.failed += 1
        return
    into.latencies_s.append(time.perf_counter() - t0)
    version = str(r.json()["version"])
    into.versions[version] = into.versions.get(version, 0) + 1


async def _load(
    client: httpx.AsyncClient, model: str, body: bytes, media: str, c: int, until: asyncio.Event
) -> Window:
    window = Window()

    async def worker(i: int) -> None:
        while not until.is_set():
            await _post(client, model, body, media, f"load-{i}", window)

    await asyncio.gather(*(worker(i) for i in range(c)))
    return window


async def _for(seconds: float) -> asyncio.Event:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, done.set)
    return done


class Zoo:
    """The scratch zoo: registry texts prepared ahead, so a swap writes a file and sends a signal."""

    def __init__(self, root: Path, models: list[str]) -> None:
        committed = load_registry(ROOT / "registry.yaml")
        self.registry_path = root / "registry.yaml"
        self.models_dir = root / "models"
        entries = [committed.get(m) for m in models]
        for e in entries:
            target = self.models_dir / e.artifact.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / "models" / e.artifact.path, target)
        registry = Registry.model_validate(
            {
                "schema_version": 1,
                "default": models[0],
                "label_sets": {e.labels: committed.label_sets[e.labels] for e in entries},
                "models": [e.model_dump() for e in entries],
            }
        )
        garbage = root / "broken.onnx"
        garbage.write_bytes(b"no ONNX model" * 100)
        for e in entries:
            registry = versions.add_version(
                registry, self.models_dir, e.name, "b", self.models_dir / e.artifact.path
            )
            registry = versions.add_version(registry, self.models_dir, e.name, "broken", garbage)
        self.base = registry
        self.write(registry)

    def own(self, model: str) -> str:
        return self.base.get(model).version

    def write(self, registry: Registry) -> None:
        tmp = self.registry_path.with_suffix(".tmp")
        tmp.write_text(dump_registry(registry), encoding="utf-8")
        tmp.replace(self.registry_path)

    def policy(
        self, model: str, stable: str, canary: float | None = None, shadow: float | None = None
    ) -> str:
        r = versions.promote(self.base, model, stable)
        r = versions.canary(r, model, "b" if canary else None, canary or 10)
        r = versions.shadow(r, model, "b" if shadow else None, shadow or 100)
        return dump_registry(r)


async def _apply(client: httpx.AsyncClient, zoo: Zoo, pid: int, text: str, model: str, check: Any) -> float:
    """Write a registry text, SIGHUP the service, wait until `check(rollout)` holds; the seconds it took."""
    t0 = time.perf_counter()
    tmp = zoo.registry_path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(zoo.registry_path)
    os.kill(pid, signal.SIGHUP)
    while True:
        rollout = (await client.get(f"/models/{model}/rollout")).json()
        if check(rollout):
            return time.perf_counter() - t0
        await asyncio.sleep(0.05)


async def _model(url: str, pid: int, zoo: Zoo, model: str, args: argparse.Namespace) -> dict[str, Any]:
    body, media = (
        (fashion_png(0), "image/png") if model.startswith("fmnist") else (photo_jpeg(), "image/jpeg")
    )
    own = zoo.own(model)
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(20):  # warm: the model loaded, the connections open
            await _post(client, model, body, media, "warm", Window())
        steady = await _load(client, model, body, media, args.concurrency, await _for(args.seconds))

        done = asyncio.Event()
        load = asyncio.create_task(_load(client, model, body, media, args.concurrency, done))
        swap_s = []
        for i in range(args.swaps):
            target = "b" if i % 2 == 0 else own
            if i > 0:
                await asyncio.sleep(args.swap_gap_s)
            swap_s.append(
                await _apply(
                    client,
                    zoo,
                    pid,
                    zoo.policy(model, target),
                    model,
                    lambda r, t=target: r["serving"]["stable"] == t,
                )
            )
        done.set()
        swaps = await load

        done = asyncio.Event()
        load = asyncio.create_task(_load(client, model, body, media, args.concurrency, done))

        def failed(r: dict[str, Any]) -> bool:
            return any(v["error"] for v in r["versions"] if v["version"] == "broken")

        await _apply(client, zoo, pid, zoo.policy(model, "broken"), model, failed)
        await asyncio.sleep(1.0)
        done.set()
        broken = await load

        await _apply(
            client,
            zoo,
            pid,
            zoo.policy(model, own, canary=10),
            model,
            lambda r: r["serving"]["canary"] is not None,
        )
        canary = Window()
        clients = iter(
            range(args.canary_requests if model.startswith("fmnist") else args.photo_canary_requests)
        )

        async def one_client() -> None:
            for i in clients:
                await _post(client, model, body, media, f"client-{i}", canary)

        await asyncio.gather(*(one_client() for _ in range(args.concurrency)))

        await _apply(
            client, zoo, pid, zoo.policy(model, own), model, lambda r: r["serving"]["canary"] is None
        )
        before_shadow = await _load(client, model, body, media, args.concurrency, await _for(args.seconds))
        await _apply(
            client,
            zoo,
            pid,
            zoo.policy(model, own, shadow=100),
            model,
            lambda r: r["serving"]["shadow"] is not None,
        )
        shadow = await _load(client, model, body, media, args.concurrency, await _for(args.seconds))
        rollout = (await client.get(f"/models/{model}/rollout")).json()
        await _apply(
            client, zoo, pid, zoo.policy(model, own), model, lambda r: r["serving"]["shadow"] is None
        )

    served = canary.versions
    return {
        "model": model,
        "steady": steady.summary(),
        "swaps": {
            **swaps.summary(),
            "swaps": args.swaps,
            "gap_s": args.swap_gap_s,
            "swap_s_median": round(float(np.median(swap_s)), 3),
        },
        "swap_p99_ratio": round(swaps.p(99) / steady.p(99), 3),
        "broken": broken.summary(),
        "canary": {
            **canary.summary(),
            "share_percent": round(100 * served.get("b", 0) / max(sum(served.values()), 1), 2),
        },
        "shadow_steady": before_shadow.summary(),
        "shadow": shadow.summary(),
        "shadow_p99_ratio": round(shadow.p(99) / before_shadow.p(99), 3),
        "shadow_comparison": rollout["shadow"],
        "shadow_shed": rollout["shadow_shed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="each steady and shadow window")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument(
        "--swap-gap-s", type=float, default=0.0, help="load alone between two swaps (0: back to back)"
    )
    parser.add_argument("--canary-requests", type=int, default=10_000, help="for fmnist-lenet5")
    parser.add_argument(
        "--photo-canary-requests",
        type=int,
        default=1_000,
        help="for the photo model (about 50x slower per request)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="convzoo-rollout-") as tmp:
        root = Path(tmp)
        zoo = Zoo(root, models)
        port = free_port()
        env = clean_env(
            CONVZOO_HOST="127.0.0.1",
            CONVZOO_PORT=str(port),
            CONVZOO_REGISTRY_PATH=str(zoo.registry_path),
            CONVZOO_MODELS_DIR=str(zoo.models_dir),
            CONVZOO_PRELOAD=",".join(models),
            CONVZOO_LOG_LEVEL="warning",
        )
        cmd = [sys.executable, "-m", "service"]
        with serve(cmd, env, "/health/ready", port, root / "service.log") as running:
            results = []
            for m in models:
                results.append(asyncio.run(_model(running.url, running.pid, zoo, m, args)))
                print(json.dumps(results[-1], indent=None), flush=True)
    if args.out is not None:
        args.out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
