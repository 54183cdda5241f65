"""The phone-photo section: per model, convzoo, the in-process limits, then each peer with its users'
usual image path and with convzoo's preprocessing followed by convzoo again; each at c1 and c4 with the
same photos.

A peer's ratio is to the mean of convzoo's runs just before and just after it (its `bracket`: the index
of the run before it), so a drift of the shared host shows and is halved; the in-process rows are
compared with the first two runs. A peer that is not installed or does not start keeps its row, with why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import servers, workspace
from bench.load import Body
from bench.peers import Peer
from bench.peers import run as peer_run
from bench.peers.common import IMAGE_PATH
from bench.phone import (
    CONCURRENCIES,
    IMAGES_PER_POINT,
    MIN_POINT_S,
    MODELS,
    OURS,
    PHOTO,
    client,
    images_for,
    photos,
)
from service.core.registry import load_registry, save_registry

ROOT = Path(__file__).resolve().parents[2]
WORK = workspace.WORK / "phone"
LOGS = WORK / "logs"


def registry(default: str) -> Path:
    """The bench's registry (resnet50 with random weights, workspace.prepare) plus the bundled photo model,
    with `default` as its default."""
    bench = load_registry(workspace.WORK / "registry.yaml")
    photo = load_registry(ROOT / "registry.yaml").get(PHOTO)
    target = workspace.WORK / "models" / photo.artifact.path
    if not target.is_file() or target.stat().st_size != photo.artifact.bytes:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "models" / photo.artifact.path, target)
    models = [m for m in bench.models if m.name != PHOTO] + [photo]
    path = workspace.WORK / f"registry-phone-{default}.yaml"
    save_registry(bench.model_copy(update={"models": models, "default": default}), path)
    return path


def variants(chosen: list[Peer]) -> list[tuple[Peer, str]]:
    """Each chosen peer twice: its users' usual image path, then convzoo's preprocessing."""
    out: list[tuple[Peer, str]] = []
    for p in chosen:
        if p.key == "torchserve":
            stock = dataclasses.replace(p, key="torchserve-stock", start=(*p.start, "--handler", "stock"))
            out.append((stock, "stock image_classifier handler"))
        else:
            usual = dataclasses.replace(p, key=f"{p.key}-usual", env=((IMAGE_PATH, "usual"),))
            out.append((usual, "PIL + torchvision"))
        out.append((p, OURS))
    return out


class Section:
    def __init__(self) -> None:
        workspace.prepare()
        self.registries = {m: registry(m) for m in MODELS}
        self.photos = photos.ensure(workspace.WORK / "photos")
        self.raw = [Body(p, "image/jpeg") for p in self.photos]
        LOGS.mkdir(parents=True, exist_ok=True)

    def _paths(self, model: str) -> dict[str, str]:
        return {
            "CONVZOO_REGISTRY_PATH": str(self.registries[model]),
            "CONVZOO_MODELS_DIR": str(workspace.WORK / "models"),
            "CONVZOO_ALLOW_RANDOM_WEIGHTS": "true",
            "CONVZOO_PRELOAD": model,
        }

    def _send(self, url: str, concurrency: int, requests: int, bodies: Path) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "bench.phone.client", url, "--concurrency", str(concurrency)]
        cmd += ["--requests", str(requests), "--bodies", str(bodies)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the client failed (exit {done.returncode}): {done.stderr[-500:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def point(self, srv: servers.Running, url: str, concurrency: int, bodies: list[Body]) -> dict[str, Any]:
        listing = client.write_bodies(bodies, WORK / f"bodies-{srv.pid}.json")
        warm = self._send(url, concurrency, max(concurrency, len(bodies)), listing)  # every photo once
        count = images_for(warm["images_per_s"], len(bodies))
        cpu0 = srv.cpu_s()
        result = self._send(url, concurrency, count, listing)
        result["server_cpu_ms_per_request"] = (srv.cpu_s() - cpu0) * 1e3 / count
        print(
            f"    c={concurrency:<2} {result['images_per_s']:7.2f} images/s  p50 {result['p50_ms']:8.1f} ms  "
            f"p99 {result['p99_ms']:8.1f} ms  server CPU {result['server_cpu_ms_per_request']:7.1f} ms/image  "
            f"failed {result['failed']}",
            flush=True,
        )
        return result

    def convzoo(self, model: str) -> list[dict[str, Any]]:
        port = servers.free_port()
        env = servers.clean_env(**self._paths(model), CONVZOO_HOST=servers.HOST, CONVZOO_PORT=str(port))
        log = LOGS / f"convzoo-{model}.log"
        with servers.serve([sys.executable, "-m", "service"], env, "/health/ready", port, log) as srv:
            url = f"{srv.url}/classify?model={model}&top_k=5"
            return [self.point(srv, url, c, self.raw) for c in CONCURRENCIES]

    def limit(self, model: str) -> dict[str, Any]:
        cmd = [
            sys.executable,
            "-m",
            "bench.phone.limit",
            "--registry",
            str(self.registries[model]),
            "--model",
            model,
        ]
        cmd += ["--concurrencies", ",".join(map(str, CONCURRENCIES)), "--images", str(IMAGES_PER_POINT)]
        cmd += ["--min-seconds", str(MIN_POINT_S)]
        env = servers.clean_env(**self._paths(model))
        done = subprocess.run(
            [*cmd, *map(str, self.photos)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.phone.limit failed: {done.stderr[-800:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def peer(self, peer: Peer, image_path: str, model: str) -> dict[str, Any]:
        work = workspace.WORK / "peers" / peer.key
        work.mkdir(parents=True, exist_ok=True)
        framed = work / "phone"  # not beside the one body measure() frames itself: a new multipart boundary
        framed.mkdir(exist_ok=True)
        bodies = [peer_run.body_for(peer, b, framed) for b in self.raw]

        def load_point(srv: servers.Running, url: str, c: int, _: Body) -> dict[str, Any]:
            return self.point(srv, url, c, bodies)

        res = peer_run.measure(
            peer,
            paths=self._paths(model),
            concurrencies=list(CONCURRENCIES),
            image=self.raw[0],
            work=work,
            log=LOGS / f"peer-{peer.key}-{model}.log",
            load_point=load_point,
        )
        return {"key": peer.key, "image_path": image_path, **res}


def _photo(path: Path) -> dict[str, Any]:
    from PIL import Image

    with Image.open(path) as image:
        orientation = image.getexif().get(photos.ORIENTATION, 1)
        return {
            "name": path.name,
            "bytes": path.stat().st_size,
            "size": list(image.size),
            "orientation": orientation,
        }


def run(chosen: list[Peer], host: dict[str, Any]) -> dict[str, Any]:
    """The whole section; its results as bench.json's "phone" holds them."""
    started = time.monotonic()
    section = Section()
    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {**host, "load_average_at_start": list(os.getloadavg())},
        "photos": [_photo(p) for p in section.photos],
        "images_per_point": IMAGES_PER_POINT,
        "min_point_s": MIN_POINT_S,
        "models": {},
    }
    for model in MODELS:
        print(f"(phone) convzoo, {model}", flush=True)
        result: dict[str, Any] = {"convzoo_runs": [section.convzoo(model)], "peers": []}
        print(f"(phone) raw ONNX Runtime in-process, {model}", flush=True)
        result["limit"] = section.limit(model)
        for peer in chosen:  # each peer's two rows, then convzoo again
            entries = []
            for variant, image_path in variants([peer]):
                print(f"(phone) {variant.label}, {image_path}, {model}", flush=True)
                entry = section.peer(variant, image_path, model)
                if not entry["points"]:
                    print(f"    {entry['status']}", flush=True)
                entries.append({**entry, "bracket": len(result["convzoo_runs"]) - 1})
            result["peers"] += entries
            if any(e["points"] for e in entries):
                print(f"(phone) convzoo again, after {peer.label}, {model}", flush=True)
                result["convzoo_runs"].append(section.convzoo(model))
        out["models"][model] = result
    out["host"]["load_average_at_end"] = list(os.getloadavg())
    out["wall_s"] = round(time.monotonic() - started, 1)
    (WORK / "results.json").write_text(json.dumps(out, indent=2))  # kept should the rendering fail
    return out
