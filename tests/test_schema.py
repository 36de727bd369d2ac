"""The OpenAPI document at /api/schema/ and the Swagger UI at /api/docs/."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from tests.conftest import requires

JSON_SCHEMA = "application/vnd.oai.openapi+json"

# Every request of the page's "Useful requests", plus those api-notes.md adds.
PAGE_ENDPOINTS = [
    ("/videos/", "get"),
    ("/videos/", "post"),
    ("/videos/{id}/", "get"),
    ("/videos/{id}/", "put"),
    ("/videos/{id}/", "delete"),
    ("/videos/{id}/process/", "post"),
    ("/videos/{id}/screenshot/", "get"),
    ("/videos/{id}/screenshot/", "post"),
    ("/videos/{id}/stop/", "post"),
    ("/videos/{id}/upload/source_file/", "put"),
    ("/videos/count/", "get"),
]
NOTES_ENDPOINTS = [
    ("/videos/{id}/", "patch"),
    ("/videos/{id}/file/", "delete"),
    ("/auth/login/", "post"),
    ("/auth/logout/", "post"),
    ("/camera-groups/", "get"),
    ("/camera-groups/", "post"),
    ("/cameras/", "get"),
    ("/cameras/", "post"),
]
LIST_FILTERS = [
    "case_in", "created_date_gt", "created_date_gte", "created_date_last_n_days", "created_date_lt",
    "created_date_lte", "created_date_nth_full_week", "created_date_nth_work_week", "limit", "name", "ordering",
    "page", "save_to",
]


@pytest.fixture
def schema(api) -> dict:
    response = api.get("/api/schema/", HTTP_ACCEPT=JSON_SCHEMA)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith(JSON_SCHEMA)
    return json.loads(response.content)


def operation(schema: dict, path: str, method: str) -> dict:
    assert path in schema["paths"], sorted(schema["paths"])
    assert method in schema["paths"][path], (path, sorted(schema["paths"][path]))
    return schema["paths"][path][method]


def parameter_names(op: dict) -> set[str]:
    return {param["name"] for param in op.get("parameters", [])}


def test_schema_is_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]
    assert schema["info"]["version"]


@pytest.mark.parametrize("path, method", PAGE_ENDPOINTS + NOTES_ENDPOINTS)
def test_schema_lists_the_endpoint(schema, path, method):
    operation(schema, path, method)


def test_schema_validates(schema):
    requires(importlib.util.find_spec("openapi_spec_validator") is not None,
             "openapi-spec-validator is not installed (pip install -e '.[dev]')")
    from openapi_spec_validator import validate

    validate(schema)


def test_list_documents_the_page_filters(schema):
    names = parameter_names(operation(schema, "/videos/", "get"))
    assert set(LIST_FILTERS) <= names, set(LIST_FILTERS) - names


def test_count_documents_the_list_filters(schema):
    list_names = parameter_names(operation(schema, "/videos/", "get")) - {"limit", "page"}
    assert list_names <= parameter_names(operation(schema, "/videos/count/", "get"))


def test_screenshot_documents_its_parameters_and_jpeg(schema):
    for method in ("get", "post"):
        op = operation(schema, "/videos/{id}/screenshot/", method)
        assert {"width", "height", "quality", "rot"} <= parameter_names(op)
        assert "image/jpeg" in op["responses"]["200"]["content"]
        assert "404" in op["responses"]


def test_upload_documents_its_media_types_and_errors(schema):
    op = operation(schema, "/videos/{id}/upload/source_file/", "put")
    media_types = set(op["requestBody"]["content"])
    assert {"application/octet-stream", "multipart/form-data"} <= media_types
    assert any(media_type.startswith("video/") for media_type in media_types)
    assert {"201", "413", "415"} <= set(op["responses"])


def test_process_documents_its_errors(schema):
    assert {"200", "409", "503"} <= set(operation(schema, "/videos/{id}/process/", "post")["responses"])


def test_archive_schema_has_the_page_fields(schema):
    fields = set(schema["components"]["schemas"]["VideoArchive"]["properties"])
    expected = {
        "id", "camera_group", "name", "url", "camera", "processing_start_date", "active", "screenshot",
        "stream_settings", "source_len", "health_status", "finished", "queued", "face_count", "file_size",
        "created_date", "body_count", "car_count", "case", "face_cluster_count", "body_cluster_count",
        "car_cluster_count",
    }
    assert expected <= fields, expected - fields


def test_schema_documents_token_and_basic_authentication(schema):
    schemes = schema["components"]["securitySchemes"]
    token = [scheme for scheme in schemes.values() if scheme.get("in") == "header" and scheme.get("name") ==
             "Authorization"]
    assert token, schemes
    assert any(scheme.get("scheme") == "basic" for scheme in schemes.values()), schemes
    login = operation(schema, "/auth/login/", "post")
    assert login["security"] == [{"basicAuth": []}]
    assert {"tokenAuth": []} in operation(schema, "/videos/", "get")["security"]


def test_schema_is_public(anon_api, db):
    response = anon_api.get("/api/schema/", HTTP_ACCEPT=JSON_SCHEMA)

    assert response.status_code == 200
    assert "/videos/" in json.loads(response.content)["paths"]


def test_schema_yaml_by_default(anon_api, db):
    response = anon_api.get("/api/schema/")

    assert response.status_code == 200
    document = yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")


def test_schema_ignores_credentials_even_a_stale_token(db):
    """The schema is public and reads no credentials, so a client's stale token cannot turn it into a 401."""
    from rest_framework.test import APIClient

    response = APIClient().get("/api/schema/", HTTP_AUTHORIZATION="Token garbage")

    assert response.status_code == 200
    assert yaml.safe_load(response.content)["openapi"].startswith("3.")


def test_docs_page_is_html_pointing_at_the_schema(anon_api, db):
    response = anon_api.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "swagger" in html.lower()
    assert "/api/schema/" in html


def test_docs_assets_are_served_locally(anon_api, db):
    """The Swagger UI comes from the sidecar package, not a CDN: the docs work on a machine with no internet."""
    html = anon_api.get("/api/docs/").content.decode()

    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html


def test_exports_document_the_download_and_its_errors(schema):
    create = operation(schema, "/exports/", "post")
    assert {"201", "400", "401", "403", "503"} <= set(create["responses"])
    download = operation(schema, "/exports/{id}/download/", "get")
    assert set(download["responses"]["200"]["content"]) == {"text/csv", "application/zip"}
    assert {"404", "409", "410"} <= set(download["responses"])
    gone = download["responses"]["410"]["content"]["application/json"]["schema"]["allOf"][1]
    assert gone["properties"]["code"]["enum"] == ["GONE"]
    for path, method in [("/exports/", "get"), ("/exports/count/", "get"), ("/exports/{id}/", "get"),
                         ("/exports/{id}/", "delete")]:
        operation(schema, path, method)


@pytest.mark.parametrize("plural", ["faces", "bodies", "cars"])
def test_persons_operations_document_their_bodies_and_answers(schema, plural):
    """Persons (tests/test_persons.py): PATCH takes only `name`, merge/ answers a plain list of per-id results,
    split/ answers 201 with the new cluster."""
    patch = operation(schema, f"/clusters/{plural}/{{id}}/", "patch")
    body = patch["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    writable = {"name", "card"} if plural == "faces" else {"name"}  # a face cluster's card: watch lists
    assert {name for name, spec in schema["components"]["schemas"][body]["properties"].items()
            if not spec.get("readOnly")} == writable
    merge = operation(schema, f"/clusters/{plural}/{{id}}/merge/", "post")
    answer = merge["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["type"] == "array"
    result = schema["components"]["schemas"][answer["items"]["$ref"].rsplit("/", 1)[-1]]
    assert set(result["properties"]) == {"id", "success", "error"}
    split = operation(schema, f"/clusters/{plural}/{{id}}/split/", "post")
    assert "201" in split["responses"] and "200" not in split["responses"]
    for op in (patch, merge, split):
        assert {"400", "401", "403", "404"} <= set(op["responses"])
    assert "name_contains" in parameter_names(operation(schema, f"/clusters/{plural}/", "get"))
