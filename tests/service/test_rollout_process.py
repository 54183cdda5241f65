"""Versions in a real `python -m service`, with front processes and in one process: SIGHUP swaps the
version under load with no failed request, a broken version leaves the current one serving, a canary
keeps each client on one version, and the shadow's comparisons reach GET /models/{name}/rollout."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import Server, start_service, stop_service
from tests.service.conftest import FashionSample, Zoo
from tests.service.versioned import OWN_CLASS, V2_CLASS, set_policy, versioned_zoo

SWAPS = 4


class Load:
    """Clients posting /classify in a loop on their own threads, every answer's status and version kept."""

    def __init__(self, server: Server, model: str, image: bytes, clients: int = 4) -> None:
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(server.url, model, image, i), daemon=True)
            for i in range(clients)
        ]

    def _run(self, url: str, model: str, image: bytes, i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not self._stop.is_set():
                r = client.post(
                    "/classify",
                    params={"model": model},
                    content=image,
                    headers={"Content-Type": "image/png", "X-Client-ID": f"load-{i}"},
                )
                with self._lock:
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        self.versions[r.json()["version"]] += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def _answer(client: httpx.Client, model: str, image: bytes, who: str = "probe") -> dict[str, Any]:
    r = client.post(
        "/classify",
        params={"model": model},
        content=image,
        headers={"Content-Type": "image/png", "X-Client-ID": who},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _until(check: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _hup(server: Server) -> None:
    os.kill(server.process.pid, signal.SIGHUP)


@pytest.mark.parametrize("fronts", ["2", "0"], ids=["fronts", "one-process"])
def test_versions_roll_out_on_sighup_under_load(
    fronts: str, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path)
    own = zoo.registry.get(name).version
    image = fashion.png(0)
    server = start_service(
        registry_path=zoo.registry_path,
        models_dir=zoo.models_dir,
        log_path=tmp_path / "service.log",
        env={"CONVZOO_FRONT_PROCESSES": fronts, "CONVZOO_WORKERS": "1"},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with Load(server, name, image) as load:
                for i in range(SWAPS):
                    version = "v2" if i % 2 == 0 else own
                    set_policy(zoo, name, stable=version)
                    _hup(server)
                    _until(lambda v=version: _answer(client, name, image)["version"] == v)
                # a version that cannot load: the current one goes on answering
                set_policy(zoo, name, stable="broken")
                _hup(server)

                def failed() -> bool:
                    rollout = client.get(f"/models/{name}/rollout").json()
                    return any(v["error"] for v in rollout["versions"] if v["version"] == "broken")

                _until(failed)
                body = _answer(client, name, image)
                assert (body["version"], body["results"][0]["predictions"][0]["index"]) == (own, OWN_CLASS)
                time.sleep(0.5)
            assert set(load.statuses) == {200}, load.statuses  # not one failed request
            assert load.versions[own] > 0 and load.versions["v2"] > 0
            assert "failed to roll out" in server.log()
            assert client.get("/health/ready").json()["rollout_failed"]
            pinned = _answer(client, f"{name}@v2", image)  # through a front too: the service runs v2
            assert (pinned["version"], pinned["results"][0]["predictions"][0]["index"]) == ("v2", V2_CLASS)

            # a canary: each client sees one version, both versions answer someone
            set_policy(zoo, name, canary=("v2", 50), shadow=("v2", 100))
            _hup(server)
            _until(lambda: client.get(f"/models/{name}/rollout").json()["serving"]["canary"] is not None)
            seen = {
                who: {
                    _answer(client, name, image, who)["results"][0]["predictions"][0]["index"]
                    for _ in range(3)
                }
                for who in (f"user-{i}" for i in range(16))
            }
            assert all(len(s) == 1 for s in seen.values()), seen
            assert {c for s in seen.values() for c in s} == {OWN_CLASS, V2_CLASS}
            # the shadow (v2) compared on the clients the stable answered
            _until(lambda: client.get(f"/models/{name}/rollout").json()["shadow"] != [])
            rollout = client.get(f"/models/{name}/rollout").json()
            pair = next(p for p in rollout["shadow"] if p["primary"] == own)
            assert pair["shadow"] == "v2" and pair["requests"] > 0 and pair["agreement"] == 0.0
            assert rollout["served"][own] > 0 and rollout["served"]["v2"] > 0
    finally:
        stop_service(server)


def test_a_version_added_on_sighup_is_served_to_inference_requests_alone(
    zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    """Inference routes read no snapshot of the models' state (the service checks the model itself), so
    with nothing but inference traffic a front still learns a name the service's reloaded registry has:
    the hot path and the multipart route both serve a version added by SIGHUP. (In one process there is
    no copy of the registry to bring up to date: the test above covers that layout's reload.)"""
    name, image = zoo.registry.default, fashion.png(0)
    server = start_service(
        registry_path=zoo.registry_path,
        models_dir=zoo.models_dir,
        log_path=tmp_path / "service.log",
        env={"CONVZOO_FRONT_PROCESSES": "2", "CONVZOO_WORKERS": "1"},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def raw() -> httpx.Response:
                return client.post(
                    "/classify",
                    params={"model": f"{name}@v2"},
                    content=image,
                    headers={"Content-Type": "image/png"},
                )

            assert raw().status_code == 404
            versioned_zoo(zoo, tmp_path)
            _hup(server)
            _until(lambda: raw().status_code == 200)
            assert raw().json()["version"] == "v2"
            multipart = client.post(
                "/classify", params={"model": f"{name}@v2"}, files={"file": ("x.png", image, "image/png")}
            )
            assert multipart.status_code == 200, multipart.text
            assert multipart.json()["version"] == "v2"
    finally:
        stop_service(server)
