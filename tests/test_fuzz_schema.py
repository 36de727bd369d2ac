"""Schemathesis against our own OpenAPI schema: every operation, positive and negative data, in-process.

The schema is the one `/api/schema/` serves, read from the WSGI app itself, and the requests go to the same app
(no server, no network) with the credentials of a user holding every model permission. Each operation runs a
bounded number of seeded examples per generation mode (`FFV_FUZZ_EXAMPLES`, default below). Half of the examples
aim `{id}` at a real object of the route's model (an archive has a tiny real video), and every example runs in a
savepoint that is rolled back, so each starts from the same state and nothing a request writes outlives it
(files go to the per-test media_root).

A response fails when it is a 5xx, does not conform to the schema (undocumented status code, content type, body
or headers), or, for negative data, is not rejected with a 4xx. Failures are collected rather than raised inside
Hypothesis (so no shrinking and a bounded run time), then reported per operation with a curl line each.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import schemathesis
from django.contrib.auth.models import Permission, User
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, models, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import _user, make_video
from tests.test_auth_matrix import api_routes, make_instance, route_for, route_model
from videos import services
from videos.auth_views import token_create
from videos.models import CameraGroup, VideoArchive

SEED = 20240611
# Examples per operation and generation mode; about 30 operations x 2 modes x this many requests.
MAX_EXAMPLES = int(os.environ.get("FFV_FUZZ_EXAMPLES", "12"))
SCHEMA_PATH = "/api/schema/"

APP = get_wsgi_application()
# Credentials are not generated (the security schemes would otherwise be fuzzed as headers, and most negative
# examples would only test a garbled token): the operator's are sent; tests/test_auth_matrix.py covers 401/403.
CONFIG = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
SCHEMA = schemathesis.openapi.from_wsgi(
    SCHEMA_PATH, APP, config=CONFIG, headers={"Accept": "application/vnd.oai.openapi+json"}
)
OPERATIONS = {operation.label: operation for operation in (result.ok() for result in SCHEMA.get_all_operations())}

SCHEMA_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance,
                 response_headers_conformance]


@dataclass
class Tally:
    requests: int = 0
    server_errors: int = 0
    schema_violations: int = 0
    accepted_negative: int = 0
    reported: bool = False
    operations: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)

    def line(self) -> str:
        return (
            f"schemathesis: {self.requests} requests over {len(self.operations)} operations, "
            f"{self.server_errors} server errors, {self.schema_violations} schema violations, "
            f"{self.accepted_negative} accepted invalid requests "
            f"(statuses: {', '.join(f'{code} x{count}' for code, count in sorted(self.statuses.items()))})"
        )


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary(request, record_testsuite_property) -> Iterator[None]:
    """Prints the totals once the module is done (past output capture) and puts them into the JUnit report."""
    yield
    # pytest-django runs database-free tests last, so this module's fixtures may be set up twice: report once.
    if not TALLY.requests or TALLY.reported:
        return
    TALLY.reported = True
    record_testsuite_property("schemathesis_requests", TALLY.requests)
    record_testsuite_property("schemathesis_server_errors", TALLY.server_errors)
    record_testsuite_property("schemathesis_schema_violations", TALLY.schema_violations)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + TALLY.line())


@pytest.fixture
def wsgi_in_test_transaction() -> Iterator[None]:
    """Requests through the WSGI handler must not close the test's connection (as Django's test client does)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def fuzzer(db) -> User:
    """Every model permission of the app (events and clusters too), not a superuser."""
    codenames = Permission.objects.filter(content_type__app_label="videos").values_list("codename", flat=True)
    return _user("fuzzer", list(codenames))


@pytest.fixture
def objects(db, wsgi_in_test_transaction, media_root, tmp_path) -> Callable[[object], str | None]:
    """The id of a real object for an operation's `{id}`, of the model its view serves, so detail routes resolve.

    Archives get a real (tiny) source video, so screenshots render and process/ queues; other models are built from
    their fields (tests/test_auth_matrix.make_instance), which covers models that appear later too.
    """
    cache: dict[type, models.Model] = {}

    def object_id(operation) -> str | None:
        if "{id}" not in operation.path:
            return None
        route = route_for(operation.path.replace("{id}", "1"), operation.method.upper())
        model = route_model(route)
        assert model is not None, f"{operation.label}: no model to build an object for its {{id}}"
        if model is VideoArchive and model not in cache:
            group = make_instance(CameraGroup, cache)
            archive = VideoArchive.objects.create(camera_group=group, name="fuzz archive", stream_settings={})
            video = make_video(tmp_path / "fuzz.mp4", frames=10, width=64, height=48)
            with video.open("rb") as reader:
                cache[model] = services.archive_upload_source(archive_id=archive.pk, reader=reader,
                                                              size=video.stat().st_size)
        return str(make_instance(model, cache).pk)

    return object_id


def _is_negative(case, location: ParameterLocation) -> bool:
    info = case.meta.components.get(location) if case.meta is not None else None
    return info is not None and info.mode.is_negative


def _credentials(operation, user) -> dict[str, str]:
    schemes = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
    if "basicAuth" in schemes:
        secret = base64.b64encode(f"{user.username}:pw-{user.username}".encode()).decode()
        return {"Authorization": f"Basic {secret}"}
    # A fresh token for every request: logout revokes the one it is sent with.
    return {"Authorization": f"Token {token_create(user=user, device_uuid='fuzz').key}"}


def _takes_input(operation) -> bool:
    return bool(operation.definition.raw.get("parameters")) or "requestBody" in operation.definition.raw


# Negative data needs something to break: an operation without parameters or body (logout) runs positive only.
FUZZ_CASES = [
    pytest.param(label, mode, id=f"{label}-{mode}")
    for label, operation in sorted(OPERATIONS.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode.is_positive or _takes_input(operation)
]


@pytest.mark.parametrize("label, mode", FUZZ_CASES)
def test_operation_conforms_to_schema(label, mode, fuzzer, objects):
    operation = OPERATIONS[label]
    known_id = objects(operation)
    checks = [not_a_server_error, *SCHEMA_CHECKS, *([negative_data_rejection] if mode.is_negative else [])]
    failures: list[str] = []
    requests = 0

    @hypothesis_seed(SEED)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), use_known_id=st.booleans())
    def example(case, use_known_id: bool) -> None:
        nonlocal requests
        path_is_valid = not _is_negative(case, ParameterLocation.PATH)
        if use_known_id and known_id and "id" in case.path_parameters and path_is_valid:
            case.path_parameters["id"] = known_id
        with transaction.atomic():
            # Negative data may drop or garble the credentials (the security scheme is a header): then it must
            # get its 401, so it keeps them.
            headers = {} if _is_negative(case, ParameterLocation.HEADER) else _credentials(operation, fuzzer)
            response = case.call(headers=headers)
            requests += 1
            TALLY.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except FailureGroup as group:
                if any(isinstance(failure, ServerError) for failure in group.exceptions):
                    TALLY.server_errors += 1
                elif mode.is_negative and response.status_code < 400:
                    TALLY.accepted_negative += 1
                else:
                    TALLY.schema_violations += 1
                failures.append(str(group))
            transaction.set_rollback(True)

    example()
    TALLY.requests += requests
    TALLY.operations.add(label)
    assert not failures, f"{len(failures)} failing examples of {label} ({mode}):\n" + "\n".join(failures[:5])


def test_every_operation_is_fuzzed():
    """The parametrization is built from the schema: all of the app's API routes are in it (new ones too)."""
    documented = {(operation.method.upper(), operation.path) for operation in OPERATIONS.values()}
    routes = {(method, path) for path, method in api_routes()}
    assert routes <= documented, sorted(routes - documented)
