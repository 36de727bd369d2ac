"""Assertions on the API's one error envelope: {"code", "desc", "param", "traceback"} (api-notes.md)."""

from __future__ import annotations

import json

ERROR_KEYS = ["code", "desc", "param", "traceback"]
ANY_PARAM = object()


def assert_error(response, status: int, code: str, param: str | object = ANY_PARAM) -> dict:
    """`response` is a `status` error in the envelope, with `code` (and `param` when one is given)."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert list(body) == ERROR_KEYS, body
    assert body["code"] == code, body
    assert isinstance(body["desc"], str) and body["desc"].strip(), body
    assert isinstance(body["param"], str), body
    if param is not ANY_PARAM:
        assert body["param"] == param, body
    assert body["traceback"] == "", body
    return body


def assert_bad_param(response, param: str) -> dict:
    return assert_error(response, 400, "BAD_PARAM", param)
