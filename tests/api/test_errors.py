"""Every failure answers in the one error format: {"code", "desc", "param", "traceback"}, JSON, never a 500."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory
from django.urls import get_resolver

from tests.errors import ERROR_KEYS, assert_error


@pytest.fixture
def archive_id(api, default_group) -> int:
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "clip"}, format="json")
    assert response.status_code == 201
    return response.json()["id"]


# --- routes


@pytest.mark.parametrize(
    "path",
    ["/nope/", "/videos/abc/", "/videos/1/unknown-action/", "/videos/-1/", "/api/", "/auth/", "/media/x.mp4",
     "/videos/1.5/"],
)
def test_unknown_route_is_not_found_json(api, path):
    assert_error(api.get(path), 404, "NOT_FOUND")


def test_unknown_route_needs_no_authentication_to_be_json(anon_api):
    assert_error(anon_api.post("/nope/", {"a": 1}, format="json"), 404, "NOT_FOUND")


def test_not_found_speaks_russian(api):
    body = assert_error(api.get("/nope/", HTTP_ACCEPT_LANGUAGE="ru"), 404, "NOT_FOUND")
    assert any("\u0400" <= ch <= "\u04ff" for ch in body["desc"]), body["desc"]


def test_missing_object_is_not_found(api, default_group):
    assert_error(api.get("/videos/987654/"), 404, "NOT_FOUND")
    assert_error(api.patch("/videos/987654/", {"name": "x"}, format="json"), 404, "NOT_FOUND")
    assert_error(api.delete("/videos/987654/"), 404, "NOT_FOUND")


@pytest.mark.parametrize("digits", [19, 30, 100])
@pytest.mark.parametrize("suffix", ["", "process/", "stop/", "screenshot/", "file/", "upload/source_file/"])
def test_huge_ids_are_not_found(api, default_group, digits, suffix):
    path = f"/videos/{'9' * digits}/{suffix}"
    response = api.put(path, data=b"x", content_type="video/mp4") if suffix.startswith("upload") else api.get(path)
    assert_error(response, 404, "NOT_FOUND")


@pytest.mark.parametrize("resource", ["videos", "camera-groups", "cameras"])
def test_largest_possible_id_is_not_found(api, default_group, resource):
    assert_error(api.get(f"/{resource}/{'9' * 18}/"), 404, "NOT_FOUND")
    assert_error(api.get(f"/{resource}/{'1' * 30}/"), 404, "NOT_FOUND")


# --- methods


@pytest.mark.parametrize(
    "method, path",
    [("patch", "/videos/{id}/process/"), ("get", "/videos/{id}/stop/"), ("delete", "/videos/count/"),
     ("put", "/videos/"), ("patch", "/videos/"), ("post", "/videos/{id}/"), ("get", "/videos/{id}/upload/source_file/"),
     ("post", "/videos/{id}/file/"), ("get", "/auth/logout/"), ("trace", "/videos/")],
)
def test_method_not_allowed_is_an_error_body(api, archive_id, method, path):
    url = path.format(id=archive_id)
    response = api.generic(method.upper(), url)
    body = assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert method.upper() in body["desc"]


# --- request bodies


@pytest.mark.parametrize(
    "raw",
    [b"{bad", b'{"camera_group": 1,}', b"", b'{"camera_group":1,"name":NaN}', b'{"name":"\xff"}', b"null",
     b'"just a string"'],
)
def test_malformed_json_is_bad_param(api, default_group, raw):
    response = api.post("/videos/", data=raw, content_type="application/json")
    assert_error(response, 400, "BAD_PARAM")


def test_json_of_the_wrong_shape_is_bad_param(api, default_group):
    assert_error(api.post("/videos/", data=b"[1, 2]", content_type="application/json"), 400, "BAD_PARAM")


def test_non_json_body_is_unsupported_media_type(api, default_group):
    response = api.post("/videos/", data=b"name=a&camera_group=1", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_json_body_over_the_memory_limit_is_refused(api, default_group, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    # Valid JSON that would create an archive, padded with whitespace past the limit.
    body = b'{"camera_group": 1, "name": "padded"}' + b" " * 8192

    response = api.post("/videos/", data=body, content_type="application/json")

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert api.get("/videos/count/").json() == {"count": 0}


def test_json_body_over_the_default_limit_is_refused(api, default_group, settings):
    body = json.dumps({"camera_group": 1, "name": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}).encode()

    response = api.post("/videos/", data=body, content_type="application/json")

    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code, response.json()["code"])


def test_json_body_under_the_limit_is_accepted(api, default_group, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = b'{"camera_group": 1, "name": "padded"}' + b" " * 1024

    assert api.post("/videos/", data=body, content_type="application/json").status_code == 201


@pytest.mark.parametrize("depth", [100_000, 5_000])
@pytest.mark.parametrize("field", ["name", "stream_settings", "ffmpeg_params"])
def test_deeply_nested_json_is_bad_param(api, default_group, depth, field):
    nested = "[" * depth + "]" * depth
    if field == "ffmpeg_params":
        raw = f'{{"camera_group": 1, "name": "n", "stream_settings": {{"ffmpeg_params": {nested}}}}}'
    else:
        raw = f'{{"camera_group": 1, "name": "n", "{field}": {nested}}}'

    response = api.post("/videos/", data=raw.encode(), content_type="application/json")

    assert_error(response, 400, "BAD_PARAM")
    assert api.get("/videos/count/").json() == {"count": 0}


def test_moderately_nested_json_is_a_validation_error(api, default_group):
    nested = '{"a": ' * 200 + "1" + "}" * 200
    raw = f'{{"camera_group": 1, "name": "n", "stream_settings": {nested}}}'

    body = assert_error(api.post("/videos/", data=raw.encode(), content_type="application/json"), 400, "BAD_PARAM")
    assert body["param"].startswith("stream_settings")


def test_deep_nesting_on_login_is_bad_param(operator):
    import base64

    from rest_framework.test import APIClient

    raw = ('{"uuid": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    credentials = "Basic " + base64.b64encode(b"operator:pw-operator").decode()
    response = APIClient().post("/auth/login/", data=raw, content_type="application/json",
                                HTTP_AUTHORIZATION=credentials)
    assert_error(response, 400, "BAD_PARAM")


# --- headers and negotiation


def test_unacceptable_accept_header_is_an_error_body(api, default_group):
    assert_error(api.get("/videos/", HTTP_ACCEPT="text/html"), 406, "NOT_ACCEPTABLE")


def test_unknown_query_parameter_is_bad_param(api, default_group):
    assert assert_error(api.get("/videos/?bogus=1"), 400, "BAD_PARAM")["param"] == "bogus"


# --- traceback


def test_traceback_is_empty_when_debug_is_off(api, settings, default_group):
    settings.DEBUG = False
    for response in (api.get("/videos/987654/"), api.post("/videos/", data=b"{bad", content_type="application/json"),
                     api.post("/videos/", {"camera_group": 1}, format="json"), api.get("/nope/")):
        assert json.loads(response.content)["traceback"] == ""


def test_traceback_is_filled_when_debug_is_on(api, settings, default_group):
    settings.DEBUG = True

    body = api.post("/videos/", data=b"{bad", content_type="application/json").json()

    assert list(body) == ERROR_KEYS
    assert body["code"] == "BAD_PARAM"
    assert "Traceback" in body["traceback"] or "Error" in body["traceback"]


def test_server_error_handler_answers_in_the_error_format(settings):
    settings.DEBUG = False
    handler = get_resolver().resolve_error_handler(500)

    response = handler(RequestFactory().get("/videos/"))

    assert response.status_code == 500
    body = json.loads(response.content)
    assert list(body) == ERROR_KEYS
    assert body["code"] == "INTERNAL"
    assert body["traceback"] == ""


@pytest.mark.parametrize("status", [400, 403])
def test_django_error_handlers_answer_in_the_error_format(status):
    handler = get_resolver().resolve_error_handler(status)

    response = handler(RequestFactory().get("/x/"), exception=Exception("boom"))

    assert response.status_code == status
    assert list(json.loads(response.content)) == ERROR_KEYS
