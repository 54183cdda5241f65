"""/openapi.json documents the success body of every route, and its references resolve."""

from __future__ import annotations

from typing import Any

from service.core.settings import Settings
from service.main import create_app

# Routes that answer with a status and no body, and the two that always refuse.
NO_BODY = {
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
    ("get", "/v2/models/{name}/ready"),
    ("get", "/v2/models/{name}/versions/{version}/ready"),
    ("post", "/v2/repository/models/{name}/load"),
    ("post", "/v2/repository/models/{name}/unload"),
}


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _has_schema(schema: dict[str, Any]) -> bool:
    return "$ref" in schema or "type" in schema or "anyOf" in schema


def test_every_route_documents_its_success_body() -> None:
    schema = create_app(Settings()).openapi()
    operations = [(m, p, op) for p, ops in schema["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 25  # the service's routes and the /v2 app's
    for method, path, op in operations:
        ok = op["responses"].get("200")
        assert ok is not None, (method, path)
        content = ok.get("content", {})
        if (method, path) in NO_BODY:
            assert not content, (method, path)
            continue
        assert content and all(_has_schema(c.get("schema", {})) for c in content.values() if c), (
            method,
            path,
        )
        assert "default" in op["responses"], (method, path)  # the error body


def test_json_bodies_are_named_models_and_every_reference_resolves() -> None:
    schema = create_app(Settings()).openapi()
    for path in ("/classify", "/compare", "/models", "/models/{name}", "/models/pareto", "/v2/models/{name}"):
        method = "post" if path in ("/classify", "/compare") else "get"
        json_body = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert json_body["$ref"].startswith("#/components/schemas/"), path
    defined = {"#/components/schemas/" + name for name in schema["components"]["schemas"]}
    assert _refs(schema) <= defined, _refs(schema) - defined
    assert "Problem" in schema["components"]["schemas"]


def test_the_v2_app_has_its_own_document_with_its_own_error_body() -> None:
    app = create_app(Settings())
    (mount,) = [r for r in app.routes if getattr(r, "path", None) == "/v2"]
    inner = mount.app.openapi()  # type: ignore[attr-defined]
    assert "/models/{name}/infer" in inner["paths"] and "/classify" not in inner["paths"]
    error = inner["paths"]["/models/{name}"]["get"]["responses"]["default"]["content"]["application/json"]
    assert error["schema"]["required"] == ["error"]
