"""API tokens at rest and after a change of password: only a hash of the key is stored, and a new password (by
whichever route) revokes every token the user had."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher, PBKDF2PasswordHasher
from django.contrib.auth.management.commands import changepassword
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from rest_framework.test import APIClient

from tests.errors import assert_error
from videos.models import AuthToken

NEW_PASSWORD = "a-new-long-passphrase"


def login(username: str, password: str) -> str:
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    response = APIClient().post("/auth/login/", {"uuid": "device-1"}, format="json",
                                HTTP_AUTHORIZATION=f"Basic {credentials}")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def works(key: str) -> bool:
    response = APIClient().get("/videos/", HTTP_AUTHORIZATION=f"Token {key}")
    if response.status_code == 401:
        assert_error(response, 401, "UNAUTHORIZED")
        return False
    assert response.status_code == 200, response.content
    return True


@pytest.fixture
def admin_client(db, client):
    client.force_login(User.objects.create_superuser("root", password="pw-root-long", email=""))
    return client


# --- at rest


def test_the_database_holds_only_the_hash_of_the_key(operator):
    key = login("operator", "pw-operator")

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM videos_authtoken")
        rows = cursor.fetchall()

    assert len(rows) == 1
    assert hashlib.sha256(key.encode()).hexdigest() in rows[0]
    assert not any(key in str(value) for value in rows[0])


def test_a_hash_is_not_a_token(operator):
    key = login("operator", "pw-operator")
    stored = AuthToken.objects.get().key_hash

    assert not works(stored)
    assert works(key)


def test_the_admin_shows_neither_key_nor_hash(operator, admin_client):
    key = login("operator", "pw-operator")
    token = AuthToken.objects.get()

    pages = [admin_client.get("/admin/videos/authtoken/"),
             admin_client.get(f"/admin/videos/authtoken/{token.pk}/change/")]

    for page in pages:
        assert page.status_code == 200
        content = page.content.decode()
        assert "device-1" in content  # the token's own page, not an empty one
        assert key not in content and token.key_hash not in content
    assert admin_client.get("/admin/videos/authtoken/add/").status_code == 403


# --- a change of password revokes


@pytest.fixture
def tokens(operator, viewer) -> tuple[list[str], str]:
    """Two tokens of the operator (two devices), one of another user."""
    return [login("operator", "pw-operator"), login("operator", "pw-operator")], login("viewer", "pw-viewer")


def assert_revoked(tokens: tuple[list[str], str]) -> None:
    own, others = tokens
    assert not any(works(key) for key in own)
    assert works(others)


def test_a_new_password_in_the_admin_revokes_the_users_tokens(operator, admin_client, tokens):
    response = admin_client.post(f"/admin/auth/user/{operator.pk}/password/",
                                 {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert response.status_code == 302 and response["Location"] == f"/admin/auth/user/{operator.pk}/change/"
    assert_revoked(tokens)
    assert works(login("operator", NEW_PASSWORD))


def test_disabling_the_password_in_the_admin_revokes_the_users_tokens(operator, admin_client, tokens):
    response = admin_client.post(f"/admin/auth/user/{operator.pk}/password/",
                                 {"usable_password": "false", "unset-password": "1"})

    assert response.status_code == 302 and response["Location"] == f"/admin/auth/user/{operator.pk}/change/"
    assert_revoked(tokens)


def test_manage_py_changepassword_revokes_the_users_tokens(operator, tokens, monkeypatch):
    monkeypatch.setattr(changepassword.Command, "_get_pass", lambda self, prompt="Password: ": NEW_PASSWORD)

    call_command("changepassword", "operator", stdout=open("/dev/null", "w"))  # noqa: SIM115

    assert_revoked(tokens)
    assert works(login("operator", NEW_PASSWORD))


def test_set_password_and_save_revokes_the_users_tokens(operator, tokens):
    user = User.objects.get(username="operator")
    user.set_password(NEW_PASSWORD)
    user.save()

    assert_revoked(tokens)


def test_saving_the_user_without_a_new_password_keeps_the_tokens(operator, tokens):
    user = User.objects.get(username="operator")
    user.first_name = "Op"
    user.save()
    User.objects.get(username="operator").save(update_fields=["last_login"])

    own, others = tokens
    assert all(works(key) for key in [*own, others])


class FastPBKDF2Hasher(PBKDF2PasswordHasher):
    iterations = 1


def test_a_rehash_at_login_is_not_a_change_of_password(operator, settings):
    """Django re-hashes a password with a newer hasher when its owner logs in: the same password, no revocation."""
    key = login("operator", "pw-operator")
    settings.PASSWORD_HASHERS = [f"{__name__}.FastPBKDF2Hasher", "django.contrib.auth.hashers.MD5PasswordHasher"]
    assert User.objects.get(username="operator").password.startswith(MD5PasswordHasher.algorithm)

    second = login("operator", "pw-operator")

    assert User.objects.get(username="operator").password.startswith(FastPBKDF2Hasher.algorithm)
    assert works(key) and works(second)


# --- tokens issued before keys were hashed


def test_the_migration_hashes_the_keys_of_issued_tokens(transactional_db):
    executor = MigrationExecutor(connection)
    migration = next(node for node in executor.loader.graph.nodes
                     if node[0] == "videos" and node[1].endswith("_auth_hardening"))
    before = [parent.key for parent in executor.loader.graph.node_map[migration].parents if parent.key[0] == "videos"]
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    user = old_apps.get_model("auth", "User").objects.create(username="legacy", is_active=True)
    key = "f" * 64
    old_apps.get_model("videos", "AuthToken").objects.create(
        key=key, user=user, device_uuid="old", expires_at=timezone.now() + timedelta(days=1))

    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    stored = AuthToken.objects.get(device_uuid="old")
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    # The token still authenticates: logout needs nothing but a valid token.
    assert APIClient().post("/auth/logout/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 204
