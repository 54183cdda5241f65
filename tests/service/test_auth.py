"""API keys over real sockets, with and without front processes (docs/auth.md): 401 with WWW-Authenticate
(no key, unknown, expired), 403 (scope, a model outside the key's list), 429 with Retry-After and the
RateLimit headers, the gRPC codes, admin model control, the key id (never a secret) in the log and the
metrics, a reload on SIGHUP, and failed attempts limited per address."""

from __future__ import annotations

import datetime as dt
import hmac
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import yaml
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service.access.auth import Access, Need, scope_of
from service.access.keys import KeyRing, KeysFile, digest, new_secret
from service.access.keys import main as keys_main
from service.access.quota import Quotas, TokenBucket
from service.core.registry import ModelEntry
from service.core.settings import Settings
from service.telemetry import tracing
from tests.asgi import manager_of_client
from tests.live import Server, free_port, start_service, stop_service
from tests.service.conftest import ClientFactory, FashionSample, Zoo

LAYOUTS = ["0", "2"]  # CONVZOO_FRONT_PROCESSES: the service alone, and two fronts


def _fashion(zoo: Zoo) -> list[ModelEntry]:
    return [m for m in zoo.registry.models if m.built and m.dataset == "fashion-mnist"]


def key_entries(allowed: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The keys file's entries and each key's secret."""
    secrets = {name: new_secret() for name in ("reader", "inferer", "limited", "admin", "expired")}
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    entries: list[dict[str, Any]] = [
        {"id": "reader", "scopes": ["read"]},
        {"id": "inferer", "scopes": ["infer", "read"], "models": [allowed]},
        {"id": "limited", "scopes": ["infer"], "rate": {"requests_per_s": 2, "burst_s": 1}},
        {"id": "admin", "scopes": ["admin"]},
        {"id": "expired", "scopes": ["infer"], "expires": past},
    ]
    for entry in entries:
        entry["sha256"] = digest(secrets[entry["id"]])
    return entries, secrets


def write_keys(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump({"keys": entries}))


@dataclass
class Live:
    server: Server
    grpc_url: str
    secrets: dict[str, str]
    keys_path: Path
    entries: list[dict[str, Any]]
    allowed: str  # the one model of the `inferer` key
    other: str  # the zoo's default, outside that key's list


@pytest.fixture(scope="module", params=LAYOUTS, ids=[f"fronts={n}" for n in LAYOUTS])
def live(
    request: pytest.FixtureRequest, source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("auth")
    default = source_zoo.registry.default
    allowed = next(m.name for m in _fashion(source_zoo) if m.name != default)
    entries, secrets = key_entries(allowed)
    keys_path = root / "keys.yaml"
    write_keys(keys_path, entries)
    grpc_port = free_port()
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=root / "server.log",
        env={
            "CONVZOO_API_KEYS_FILE": str(keys_path),
            "CONVZOO_FRONT_PROCESSES": request.param,
            "CONVZOO_GRPC_PORT": str(grpc_port),
            "CONVZOO_AUTH_FAILURES_BURST": "30",
            "CONVZOO_AUTH_FAILURES_PER_S": "0.2",
            "CONVZOO_PRELOAD": "",  # the default only: the other model may be unloaded
        },
        probe="/health/ready",
    )
    try:
        yield Live(server, f"127.0.0.1:{grpc_port}", secrets, keys_path, entries, allowed, default)
    finally:
        stop_service(server)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def classify(
    live: Live, headers: dict[str, str], fashion: FashionSample, model: str | None = None
) -> httpx.Response:
    params = {"model": model} if model else {}
    return httpx.post(
        live.server.url + "/classify",
        params=params,
        content=fashion.png(0),
        headers={"content-type": "image/png", **headers},
        timeout=30,
    )


# --- in process: the pieces ------------------------------------------------------------------------------


def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module service.access.keys calls it through
    secret = new_secret()
    ring = KeyRing(
        KeysFile.model_validate({"keys": [{"id": "a", "sha256": digest(secret), "scopes": ["infer"]}]}).keys
    )
    assert ring.find(secret) is not None
    assert calls == [(digest(secret), digest(secret))]
    assert ring.find(secret + "x") is None  # no stored digest matches: nothing to compare


def test_routes_need_their_scopes() -> None:
    assert scope_of("GET", "/health/ready", b"", metrics_open=False) == Need(None)
    assert scope_of("GET", "/v2/health/live", b"", metrics_open=False) == Need(None)
    assert scope_of("GET", "/metrics", b"", metrics_open=False) == Need("read")
    assert scope_of("GET", "/metrics", b"", metrics_open=True) == Need(None)
    assert scope_of("POST", "/classify", b"model=m&top_k=2", metrics_open=False) == Need("infer", ("m",))
    assert scope_of("POST", "/compare", b"models=a,b", metrics_open=False) == Need("infer", ("a", "b"))
    assert scope_of("POST", "/v2/models/m/infer", b"", metrics_open=False) == Need("infer", ("m",))
    assert scope_of("GET", "/v2/models/m", b"", metrics_open=False) == Need("read", ("m",))
    assert scope_of("POST", "/v2/repository/index", b"", metrics_open=False) == Need("admin")


def test_a_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=1000.0, capacity=2.0)
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    wait = bucket.take()
    assert 0 < wait <= 0.001
    time.sleep(0.002)
    assert bucket.take() == 0.0


def test_the_queue_is_shared_fairly_between_keys() -> None:
    quotas = Quotas(queue_capacity=4)
    for _ in range(4):
        assert quotas.fair_share("a")
        quotas.enter("a")
    assert not quotas.fair_share("a")
    assert quotas.fair_share("b")  # a newcomer is admitted; "a" now holds more than its half
    quotas.enter("b")
    quotas.leave("a")
    assert not quotas.fair_share("a")  # 3 held, 2 its share
    assert quotas.fair_share("b")


# --- over real sockets -----------------------------------------------------------------------------------


def test_probes_and_the_page_are_open(live: Live) -> None:
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/"):
        assert httpx.get(live.server.url + path, timeout=10).status_code == 200, path


def test_no_key_an_unknown_key_and_an_expired_key_get_401(live: Live, fashion: FashionSample) -> None:
    for headers in ({}, bearer(new_secret()), {"X-API-Key": live.secrets["expired"]}):
        r = classify(live, headers, fashion)
        assert r.status_code == 401, r.text
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers.get("connection") != "close"  # a small body is read: the connection stays
    r = httpx.post(live.server.url + f"/v2/models/{live.allowed}/infer", json={}, timeout=10)
    assert r.status_code == 401 and "error" in r.json()  # the protocol's own body under /v2


def test_a_scope_the_key_lacks_gets_403(live: Live, fashion: FashionSample) -> None:
    assert classify(live, bearer(live.secrets["reader"]), fashion).status_code == 403
    assert httpx.get(live.server.url + "/models", headers=bearer(live.secrets["reader"])).status_code == 200
    r = httpx.post(live.server.url + "/v2/repository/index", headers=bearer(live.secrets["inferer"]))
    assert r.status_code == 403


def test_a_model_outside_the_keys_list_gets_403(live: Live, fashion: FashionSample) -> None:
    secret = live.secrets["inferer"]
    assert classify(live, bearer(secret), fashion, live.allowed).status_code == 200
    assert classify(live, {"X-API-Key": secret}, fashion, live.allowed).status_code == 200
    named = classify(live, bearer(secret), fashion, live.other)
    assert named.status_code == 403 and live.other in named.json()["detail"]
    chosen = classify(live, bearer(secret), fashion)  # the default model, chosen by the service
    assert chosen.status_code == 403, chosen.text


def test_a_key_over_its_rate_gets_429_with_the_ratelimit_headers(live: Live, fashion: FashionSample) -> None:
    statuses = []
    refused: httpx.Response | None = None
    with httpx.Client(base_url=live.server.url, timeout=30) as client:
        for _ in range(12):
            r = client.post(
                "/classify",
                params={"model": live.allowed},
                content=fashion.png(0),
                headers={"content-type": "image/png", **bearer(live.secrets["limited"])},
            )
            statuses.append(r.status_code)
            if r.status_code == 429:
                refused = r
    assert 200 in statuses and refused is not None, statuses
    assert set(statuses) == {200, 429}
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"].startswith('"requests";q=')
    assert refused.headers["RateLimit"].startswith('"requests";r=0;t=')


def test_an_admin_key_loads_and_unloads_a_model(live: Live) -> None:
    admin = bearer(live.secrets["admin"])
    url = live.server.url + "/v2/repository"
    assert (
        httpx.post(f"{url}/models/{live.allowed}/load", headers=bearer(live.secrets["reader"])).status_code
        == 403
    )
    assert httpx.post(f"{url}/models/{live.allowed}/load", headers=admin, timeout=30).status_code == 200
    index = {m["name"]: m for m in httpx.post(f"{url}/index", headers=admin).json()}
    assert index[live.allowed]["state"] == "READY"
    assert httpx.post(f"{url}/models/{live.allowed}/unload", headers=admin, timeout=30).status_code == 200
    index = {m["name"]: m for m in httpx.post(f"{url}/index", headers=admin).json()}
    assert index[live.allowed]["state"] != "READY"
    # the default model is pinned: refused, and still loaded
    assert httpx.post(f"{url}/models/{live.other}/unload", headers=admin, timeout=30).status_code == 400
    assert httpx.post(f"{url}/models/{live.allowed}/load", headers=admin, timeout=30).status_code == 200


def test_metrics_need_read_and_count_requests_by_key(live: Live, fashion: FashionSample) -> None:
    assert httpx.get(live.server.url + "/metrics").status_code == 401
    assert classify(live, bearer(live.secrets["inferer"]), fashion, live.allowed).status_code == 200
    deadline = time.monotonic() + 5  # a front sends its requests to the service's metrics every 50 ms
    while True:
        text = httpx.get(live.server.url + "/metrics", headers=bearer(live.secrets["reader"])).text
        if (
            'convzoo_client_requests_total{client="inferer",status="200"}' in text
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.1)
    assert 'convzoo_client_requests_total{client="inferer",status="200"}' in text
    assert 'client="limited",status="429"' in text or "limited" not in text  # bounded: key ids only


def test_the_log_names_the_key_never_its_secret(live: Live, fashion: FashionSample) -> None:
    assert classify(live, bearer(live.secrets["inferer"]), fashion, live.allowed).status_code == 200
    time.sleep(0.2)
    log = live.server.log()
    assert '"client":"inferer"' in log
    for secret in live.secrets.values():
        assert secret not in log and digest(secret) not in log


def _grpc_code(call: Any, request: Any, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    try:
        call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _infer_request(model: str) -> Any:
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(x.shape))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[x.tobytes()])


def test_grpc_answers_unauthenticated_permission_denied_and_resource_exhausted(live: Live) -> None:
    with grpc.insecure_channel(live.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = pb.ModelMetadataRequest(name=live.allowed)
        assert _grpc_code(stub.ServerLive, pb.ServerLiveRequest(), []) == grpc.StatusCode.OK
        assert _grpc_code(stub.ModelMetadata, metadata, []) == grpc.StatusCode.UNAUTHENTICATED
        reader = [("authorization", f"Bearer {live.secrets['reader']}")]
        assert _grpc_code(stub.ModelMetadata, metadata, reader) == grpc.StatusCode.OK
        infer = _infer_request(live.allowed)
        assert _grpc_code(stub.ModelInfer, infer, reader) == grpc.StatusCode.PERMISSION_DENIED
        inferer = [("x-api-key", live.secrets["inferer"])]
        assert _grpc_code(stub.ModelInfer, infer, inferer) == grpc.StatusCode.OK
        assert (
            _grpc_code(stub.ModelInfer, _infer_request(live.other), inferer)
            == grpc.StatusCode.PERMISSION_DENIED
        )
        limited = [("x-api-key", live.secrets["limited"])]
        codes = {_grpc_code(stub.ModelInfer, infer, limited) for _ in range(8)}
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        load = pb.RepositoryModelLoadRequest(model_name=live.allowed)
        assert _grpc_code(stub.RepositoryModelLoad, load, inferer) == grpc.StatusCode.PERMISSION_DENIED
        admin = [("x-api-key", live.secrets["admin"])]
        assert _grpc_code(stub.RepositoryModelLoad, load, admin) == grpc.StatusCode.OK


def test_sighup_reloads_the_keys(live: Live) -> None:
    late = new_secret()
    entries = [e for e in live.entries if e["id"] != "reader"]
    entries.append({"id": "late", "sha256": digest(late), "scopes": ["read"]})
    write_keys(live.keys_path, entries)
    os.kill(live.server.process.pid, signal.SIGHUP)
    time.sleep(1.0)  # the service reads the file in its handler and passes the signal on to its fronts
    # every front has read it again: new connections land on either (a refusal is a 401, or a 429 once
    # this address has failed too often)
    for _ in range(6):
        assert httpx.get(live.server.url + "/models", headers=bearer(late)).status_code == 200
        assert httpx.get(live.server.url + "/models", headers=bearer(live.secrets["reader"])).status_code in (
            401,
            429,
        )
    assert live.server.process.poll() is None  # SIGHUP stopped nothing
    assert "API keys reloaded" in live.server.log()


def test_failed_attempts_from_one_address_are_limited(live: Live) -> None:
    statuses = []
    with httpx.Client(base_url=live.server.url, timeout=10) as client:  # one connection: one front
        for _ in range(40):
            r = client.get("/models", headers=bearer(new_secret()))
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
                break
    assert statuses[-1] == 429 and set(statuses) <= {401, 429}, statuses


# --- in process: the image quota, the open service's warning, a bad file ---------------------------------


@pytest.mark.anyio
async def test_a_key_over_its_image_rate_gets_429(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample, tmp_path: Path
) -> None:
    secret = new_secret()
    entry = {
        "id": "batch",
        "sha256": digest(secret),
        "scopes": ["infer"],
        "rate": {"requests_per_s": 100, "images_per_s": 2, "burst_s": 1},
    }
    write_keys(tmp_path / "keys.yaml", [entry])
    files = [("file", (f"{i}.png", fashion.png(i), "image/png")) for i in range(3)]
    async with client_for(zoo, api_keys_file=tmp_path / "keys.yaml") as client:
        # a full bucket lets a request of more images than it holds through, leaving a debt
        first = await client.post("/classify", files=files, headers=bearer(secret))
        assert first.status_code == 200, first.text
        second = await client.post("/classify", files=files, headers=bearer(secret))
        assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
        assert "image rate" in second.json()["detail"]
        assert manager_of_client(client).state(zoo.registry.default).status == "loaded"


@pytest.mark.anyio
async def test_an_open_service_beyond_loopback_says_so(
    zoo: Zoo, client_for: ClientFactory, tmp_path: Path
) -> None:
    async with client_for(zoo, host="0.0.0.0") as client:
        exposure = (await client.get("/health/ready")).json()["exposure"]
        assert "without API keys" in exposure and "CONVZOO_API_KEYS_FILE" in exposure
    async with client_for(zoo) as client:  # loopback
        assert (await client.get("/health/ready")).json()["exposure"] is None
    write_keys(tmp_path / "keys.yaml", [])
    async with client_for(zoo, host="0.0.0.0", api_keys_file=tmp_path / "keys.yaml") as client:
        assert (await client.get("/health/ready")).json()["exposure"] is None


def test_a_bad_keys_file_stops_the_start_and_a_bad_reload_keeps_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [{id: a, sha256: nothex, scopes: [infer]}]")
    with pytest.raises(ValueError, match="not valid"):
        Access(Settings(api_keys_file=path))
    secret = new_secret()
    write_keys(path, [{"id": "a", "sha256": digest(secret), "scopes": ["infer"]}])
    access = Access(Settings(api_keys_file=path))
    path.write_text("keys: [")
    access.reload()
    assert access.ring.find(secret) is not None


@pytest.mark.anyio
async def test_the_trace_names_the_key(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample, tmp_path: Path
) -> None:
    secret = new_secret()
    write_keys(tmp_path / "keys.yaml", [{"id": "traced", "sha256": digest(secret), "scopes": ["infer"]}])
    exporter = InMemorySpanExporter()
    tracing.enable(SimpleSpanProcessor(exporter))
    try:
        async with client_for(zoo, api_keys_file=tmp_path / "keys.yaml") as client:
            r = await client.post(
                "/classify", content=fashion.png(0), headers={"content-type": "image/png", **bearer(secret)}
            )
            assert r.status_code == 200, r.text
    finally:
        tracing.disable()
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "receive"]
    assert root.attributes is not None and root.attributes["convzoo.client"] == "traced"
    assert all(secret not in str(dict(s.attributes or {})) for s in exporter.get_finished_spans())


def test_a_new_key_prints_its_entry_and_shows_the_secret_once(capsys: pytest.CaptureFixture[str]) -> None:
    keys_main(["new", "bob", "--scopes", "infer,read", "--models", "fmnist-lenet5", "--requests-per-s", "5"])
    out, err = capsys.readouterr()
    secret = err.strip().splitlines()[-1].removeprefix("# ").strip()
    assert secret.startswith("czk_") and secret not in out
    ring = KeyRing(KeysFile.model_validate(yaml.safe_load(out)).keys)
    key = ring.find(secret)
    assert key is not None and key.id == "bob" and key.models == frozenset({"fmnist-lenet5"})
    assert key.rate is not None and key.rate.requests_per_s == 5
