"""The REST API against its own OpenAPI document, with schemathesis: generated requests,
valid and not, to every route; never a 500, and every answer as the document says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings

from .servers import Server, serving

if TYPE_CHECKING:  # imported by the test itself: each worker of the suite collects this file
    import schemathesis


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("schema") / "vault", gate=True) as s:
        yield s


@pytest.mark.slow
def test_no_input_gets_a_500_and_every_answer_is_as_documented(server: Server) -> None:
    """schemathesis, a bounded number of examples per route: no 5xx, status codes, content
    types and bodies as /openapi.json says (an agent token; decisions with an approver's)."""
    import schemathesis

    agent, approver = server.token("fuzz-bot"), server.token("alice", "approver")
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 8  # the gate over HTTP too
    for operation in operations:
        token = approver if operation.path.endswith("/decision") else agent
        modes = list(schemathesis.GenerationMode)  # valid requests, and invalid ones
        if operation.path == "/healthz":
            modes = [schemathesis.GenerationMode.POSITIVE]  # it takes nothing to get wrong
        for mode in modes:
            _fuzz(server, operation, mode, {"Authorization": f"Bearer {token}"})


def _fuzz(
    server: Server,
    operation: schemathesis.APIOperation,  # type: ignore[type-arg]
    mode: schemathesis.GenerationMode,
    headers: dict[str, str],
) -> None:
    import schemathesis

    # Not checked: that every schema-valid body is accepted. A duration, the params' depth
    # and the size of their numbers have limits the document states in words (the CLI's
    # 422s), and a decision on a request that does not exist is a 404: refusals it lists.
    positive_data_acceptance = schemathesis.checks.positive_data_acceptance

    @settings(
        max_examples=3,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
        response = case.call(base_url=server.url, headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(
            response, headers=headers, excluded_checks=[positive_data_acceptance]
        )

    check()
