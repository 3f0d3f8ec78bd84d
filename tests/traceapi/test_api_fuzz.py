"""Schemathesis against the app's own OpenAPI document: no 5xx, no answer outside its schema.

A real uvicorn server on loopback serves the egg world of trace_kit (SQLite); every operation is
called with generated valid and invalid input, with the admin token so that the calls get past
authentication into the handlers.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from sqlalchemy import create_engine
from trace_kit import ADMIN, LOG

from traceapi.app import create_app
from tracecore.settings import Settings


def _operations() -> dict[str, Any]:
    """Every operation of the app's OpenAPI document, by label (``GET /v1/...``)."""
    app = create_app(Settings(), create_engine("sqlite://"), log_vkey=LOG.verifier)
    loaded = schemathesis.openapi.from_dict(app.openapi())
    operations = (result.ok() for result in loaded.get_all_operations())
    return {operation.label: operation for operation in operations}


OPERATIONS = _operations()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_errors_and_answers_match_the_schema(live_api: str, label: str) -> None:
    """Generated calls of one operation: never a 5xx, always an answer its schema allows."""
    strategy = OPERATIONS[label].as_strategy()

    @given(case=strategy)
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        case.call_and_validate(
            base_url=live_api,
            headers={"Authorization": f"Bearer {ADMIN}"},
            checks=[not_a_server_error, response_schema_conformance],
        )

    call()
