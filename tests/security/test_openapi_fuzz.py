"""schemathesis against the service's own /openapi.json, on a real uvicorn: no input the schema allows or
forbids gives a 5xx other than 503, and every response conforms to the schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi import checks as oc

from tests.live import Server
from tests.service.conftest import ServeFactory, Zoo

# Minutes of exports and fuzzing: `make test-long` (CI runs it; docs in the README).
pytestmark = pytest.mark.slow

EXAMPLES = 12  # per operation: the whole run stays well under a minute on two shared cores


def _not_a_server_error_except_503(ctx, response, case):  # type: ignore[no-untyped-def]
    # 503 is the service's documented answer for overload, not-ready and unavailable models.
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(
            f"{response.status_code} on {case.method} {case.formatted_path}: {response.text[:300]}"
        )


CHECKS = [
    _not_a_server_error_except_503,
    oc.response_schema_conformance,
    oc.content_type_conformance,
    oc.response_headers_conformance,
]


def test_schemathesis_finds_no_5xx_and_no_schema_violation(zoo: Zoo, serve: ServeFactory) -> None:
    server: Server = serve(zoo, CONVZOO_LOG_LEVEL="warning")
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)

        try:
            check()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert failures == [], "\n\n".join(failures)
    assert "Traceback" not in server.log()
