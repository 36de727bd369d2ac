"""Login, logout, token expiry, and who may do what with model permissions."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from tests.conftest import token_client, upload
from tests.errors import assert_error
from videos.models import AuthToken
from videos.tokens import token_key_hash


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def login(username: str, password: str, body: dict | None = None, **extra):
    client = APIClient()
    payload = {"uuid": "device-1"} if body is None else body
    return client.post("/auth/login/", payload, format="json", HTTP_AUTHORIZATION=basic(username, password), **extra)


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# --- login and logout


def test_login_returns_a_token_the_user_and_the_expiry(operator, settings):
    before = timezone.now()

    response = login("operator", "pw-operator")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "user", "token_expiration_datetime"}
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert body["user"]["id"] == operator.pk
    assert body["user"]["username"] == "operator"
    assert "password" not in body["user"]
    expires = parse_datetime(body["token_expiration_datetime"])
    assert expires is not None and expires.tzinfo is not None
    assert before + settings.FFV_TOKEN_TTL <= expires <= timezone.now() + settings.FFV_TOKEN_TTL
    token = AuthToken.objects.get(key_hash=token_key_hash(body["token"]))
    assert token.device_uuid == "device-1"


def test_the_token_works_on_videos(operator, default_group):
    key = login("operator", "pw-operator").json()["token"]

    response = with_token(key).get("/videos/")

    assert response.status_code == 200
    assert "results" in response.json()


def test_each_login_gets_its_own_token(operator):
    first = login("operator", "pw-operator").json()["token"]
    second = login("operator", "pw-operator").json()["token"]

    assert first != second
    assert with_token(first).get("/videos/").status_code == 200
    assert with_token(second).get("/videos/").status_code == 200


@pytest.mark.parametrize("username, password", [("operator", "wrong"), ("nobody", "pw-operator"), ("operator", "")])
def test_wrong_credentials_are_unauthorized(operator, username, password):
    assert_error(login(username, password), 401, "UNAUTHORIZED")
    assert not AuthToken.objects.exists()


def test_login_without_credentials_is_unauthorized(operator):
    response = APIClient().post("/auth/login/", {"uuid": "x"}, format="json")

    assert_error(response, 401, "UNAUTHORIZED")
    assert response["WWW-Authenticate"].startswith("Basic")


def test_login_with_a_token_instead_of_basic_is_unauthorized(operator):
    token = login("operator", "pw-operator").json()["token"]

    assert_error(with_token(token).post("/auth/login/", {"uuid": "x"}, format="json"), 401, "UNAUTHORIZED")


def test_inactive_user_cannot_log_in(operator):
    operator.is_active = False
    operator.save()

    assert_error(login("operator", "pw-operator"), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "body, param",
    [({}, "uuid"), ({"uuid": ""}, "uuid"), ({"uuid": 5}, "uuid"), ({"uuid": None}, "uuid"),
     ({"uuid": "x", "extra": 1}, "extra")],
)
def test_login_body_is_checked(operator, body, param):
    assert assert_error(login("operator", "pw-operator", body), 400, "BAD_PARAM")["param"] == param
    assert not AuthToken.objects.exists()


def test_login_takes_only_post(operator):
    response = APIClient().get("/auth/login/", HTTP_AUTHORIZATION=basic("operator", "pw-operator"))

    assert_error(response, 405, "METHOD_NOT_ALLOWED")


def test_logout_revokes_the_token(operator):
    key = login("operator", "pw-operator").json()["token"]
    client = with_token(key)

    response = client.post("/auth/logout/")

    assert response.status_code == 204
    assert response.content == b""
    assert_error(client.get("/videos/"), 401, "UNAUTHORIZED")
    assert_error(client.post("/auth/logout/"), 401, "UNAUTHORIZED")


def test_logout_leaves_other_tokens_alone(operator):
    first = login("operator", "pw-operator").json()["token"]
    second = login("operator", "pw-operator").json()["token"]

    assert with_token(first).post("/auth/logout/").status_code == 204

    assert with_token(second).get("/videos/").status_code == 200


def test_logout_without_a_token_is_unauthorized(db):
    assert_error(APIClient().post("/auth/logout/"), 401, "UNAUTHORIZED")


# --- expiry


def test_token_expires_after_its_ttl(operator, settings):
    settings.FFV_TOKEN_TTL = timedelta(minutes=10)
    key = login("operator", "pw-operator").json()["token"]
    client = with_token(key)
    assert client.get("/videos/").status_code == 200

    with time_machine.travel(timezone.now() + timedelta(minutes=9), tick=False):
        assert client.get("/videos/").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(minutes=11), tick=False):
        body = assert_error(client.get("/videos/"), 401, "UNAUTHORIZED")
    assert "expired" in body["desc"].lower()


def test_token_expired_in_the_database_is_unauthorized(operator):
    key = login("operator", "pw-operator").json()["token"]
    AuthToken.objects.filter(key_hash=token_key_hash(key)).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert_error(with_token(key).get("/videos/"), 401, "UNAUTHORIZED")


def test_token_of_a_deactivated_user_is_unauthorized(operator):
    client = token_client(operator)
    operator.is_active = False
    operator.save()

    assert_error(client.get("/videos/"), 401, "UNAUTHORIZED")


# --- missing and malformed tokens


def test_no_token_is_unauthorized_with_www_authenticate(db):
    response = APIClient().get("/videos/")

    assert_error(response, 401, "UNAUTHORIZED")
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(
    "header",
    ["Token garbage", "Token", "Token a b", "token " + "0" * 64, "Token \u00e9t\u00e9", "Bearer abc",
     "Basic Zm9vOmJhcg=="],
)
def test_bad_authorization_headers_are_unauthorized(db, header):
    response = APIClient().get("/videos/", HTTP_AUTHORIZATION=header)

    assert_error(response, 401, "UNAUTHORIZED")
    assert "WWW-Authenticate" in response


def test_keyword_is_case_insensitive(operator):
    key = login("operator", "pw-operator").json()["token"]

    assert APIClient().get("/videos/", HTTP_AUTHORIZATION=f"token {key}").status_code == 200


def test_errors_are_translated(db):
    response = APIClient().get("/videos/", HTTP_AUTHORIZATION="Token garbage", HTTP_ACCEPT_LANGUAGE="ru")

    body = assert_error(response, 401, "UNAUTHORIZED")
    assert any("\u0400" <= ch <= "\u04ff" for ch in body["desc"]), body["desc"]


# --- model permissions


@pytest.fixture
def archive_id(api, default_group, video_factory) -> int:
    archive_id = api.post("/videos/", {"camera_group": default_group.pk, "name": "clip"}, format="json").json()["id"]
    assert upload(api, archive_id, video_factory()).status_code == 201
    return archive_id


def write_requests(archive_id: int, group_id: int, video_bytes: bytes) -> list[tuple[str, str, dict]]:
    return [
        ("post", "/videos/", {"data": {"camera_group": group_id, "name": "new"}, "format": "json"}),
        ("put", f"/videos/{archive_id}/", {"data": {"camera_group": group_id, "name": "put"}, "format": "json"}),
        ("patch", f"/videos/{archive_id}/", {"data": {"name": "patched"}, "format": "json"}),
        ("delete", f"/videos/{archive_id}/", {}),
        ("post", f"/videos/{archive_id}/process/", {}),
        ("post", f"/videos/{archive_id}/stop/", {}),
        ("put", f"/videos/{archive_id}/upload/source_file/", {"data": video_bytes, "content_type": "video/mp4"}),
        ("delete", f"/videos/{archive_id}/file/", {}),
    ]


def read_requests(archive_id: int) -> list[tuple[str, str]]:
    return [
        ("get", "/videos/"),
        ("get", "/videos/count/"),
        ("get", f"/videos/{archive_id}/"),
        ("get", f"/videos/{archive_id}/screenshot/"),
        ("post", f"/videos/{archive_id}/screenshot/"),
    ]


def test_outsider_is_denied_everything(outsider_api, archive_id, default_group, video_factory):
    video_bytes = video_factory("other.mp4").read_bytes()
    for method, url in read_requests(archive_id):
        assert_error(getattr(outsider_api, method)(url), 403, "PERMISSION_DENIED")
    for method, url, kwargs in write_requests(archive_id, default_group.pk, video_bytes):
        assert_error(getattr(outsider_api, method)(url, **kwargs), 403, "PERMISSION_DENIED")


def test_viewer_can_read(viewer_api, archive_id):
    for method, url in read_requests(archive_id):
        response = getattr(viewer_api, method)(url)
        assert response.status_code == 200, (method, url, response.content)


def test_viewer_cannot_write(viewer_api, api, archive_id, default_group, video_factory):
    before = api.get(f"/videos/{archive_id}/").json()
    video_bytes = video_factory("other.mp4").read_bytes()

    for method, url, kwargs in write_requests(archive_id, default_group.pk, video_bytes):
        response = getattr(viewer_api, method)(url, **kwargs)
        assert_error(response, 403, "PERMISSION_DENIED")

    after = api.get(f"/videos/{archive_id}/").json()
    assert after == before
    assert api.get("/videos/count/").json() == {"count": 1}


def test_operator_can_write(api, archive_id, default_group):
    assert api.patch(f"/videos/{archive_id}/", {"name": "renamed"}, format="json").status_code == 200
    assert api.delete(f"/videos/{archive_id}/").status_code == 204


def test_permissions_per_action(db, default_group, video_factory):
    """A user with only change_videoarchive may process and upload but not create or delete."""
    from django.contrib.auth.models import Permission, User

    owner = User.objects.create_user("owner", password="x")
    owner.user_permissions.set(Permission.objects.filter(codename__in=["view_videoarchive", "add_videoarchive",
                                                                       "change_videoarchive"]))
    owner_api = token_client(owner)
    archive_id = owner_api.post("/videos/", {"camera_group": default_group.pk, "name": "c"}, format="json").json()["id"]
    changer = User.objects.create_user("changer", password="x")
    changer.user_permissions.set(Permission.objects.filter(codename__in=["view_videoarchive", "change_videoarchive"]))
    client = token_client(changer)

    assert upload(client, archive_id, video_factory()).status_code == 201
    assert client.post(f"/videos/{archive_id}/stop/").status_code == 200
    assert_error(client.post("/videos/", {"camera_group": default_group.pk, "name": "n"}, format="json"), 403,
                 "PERMISSION_DENIED")
    assert_error(client.delete(f"/videos/{archive_id}/"), 403, "PERMISSION_DENIED")


def test_anonymous_is_unauthorized_everywhere(anon_api, archive_id, default_group, video_factory):
    video_bytes = video_factory("other.mp4").read_bytes()
    for method, url in read_requests(archive_id):
        assert_error(getattr(anon_api, method)(url), 401, "UNAUTHORIZED")
    for method, url, kwargs in write_requests(archive_id, default_group.pk, video_bytes):
        assert_error(getattr(anon_api, method)(url, **kwargs), 401, "UNAUTHORIZED")
