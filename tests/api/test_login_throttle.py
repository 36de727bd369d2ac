"""Brute force on `POST /auth/login/`: failed logins are throttled per client address and per username.

Every test is the attack itself, through HTTP: wrong passwords until the 429, then what a client may or may not
do about it (the right password, another address, a forged X-Forwarded-For, waiting).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from django.core.checks import run_checks
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import ROOT, process_end, wait_for
from tests.errors import assert_error
from tests.test_concurrency import free_port
from videos.models import AuthToken, LoginThrottle

ADDRESS_LIMIT = 3
USER_LIMIT = 5
WINDOW = 60


@pytest.fixture(autouse=True)
def limits(settings) -> None:
    settings.FFV_LOGIN_FAILURES_PER_ADDRESS = ADDRESS_LIMIT
    settings.FFV_LOGIN_FAILURES_PER_USER = USER_LIMIT
    settings.FFV_LOGIN_THROTTLE_WINDOW_SECONDS = WINDOW
    settings.FFV_TRUSTED_PROXIES = []


class CountingHasher(MD5PasswordHasher):
    """The test users' hasher (same algorithm, so their stored hashes verify), counting every hash it computes."""

    calls = 0

    def encode(self, password: str, salt: str) -> str:
        type(self).calls += 1
        return super().encode(password, salt)


@pytest.fixture
def hasher(settings) -> type[CountingHasher]:
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.calls = 0
    return CountingHasher


def login(username: str, password: str, address: str = "198.51.100.7", **extra):
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return APIClient().post("/auth/login/", {"uuid": "device-1"}, format="json",
                            HTTP_AUTHORIZATION=f"Basic {credentials}", REMOTE_ADDR=address, **extra)


def assert_throttled(response) -> int:
    """A 429 in the envelope with a Retry-After of whole seconds within the window; returns those seconds."""
    body = assert_error(response, 429, "TOO_MANY_REQUESTS")
    assert re.fullmatch(r"[1-9][0-9]*", response["Retry-After"]), response["Retry-After"]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= WINDOW
    assert str(retry_after) in body["desc"]
    return retry_after


def fail(times: int, username: str = "operator", address: str = "198.51.100.7", **extra) -> None:
    for _ in range(times):
        assert_error(login(username, "wrong", address, **extra), 401, "UNAUTHORIZED")


# --- per address


def test_failures_past_the_address_limit_get_429_with_retry_after(operator):
    fail(ADDRESS_LIMIT)

    assert_throttled(login("operator", "wrong"))
    assert_throttled(login("operator", "wrong"))


def test_the_right_password_during_a_lockout_gets_the_same_429(operator):
    fail(ADDRESS_LIMIT)

    with time_machine.travel(timezone.now(), tick=False):  # one Retry-After for both
        wrong, right = login("operator", "wrong"), login("operator", "pw-operator")

    assert_throttled(right)
    assert (right.status_code, right.json()["code"], right["Retry-After"]) == (
        wrong.status_code, wrong.json()["code"], wrong["Retry-After"])
    assert not AuthToken.objects.exists()


def test_the_lockout_ends_with_the_window(operator):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        fail(ADDRESS_LIMIT)
        assert assert_throttled(login("operator", "pw-operator")) == WINDOW

        clock.shift(timedelta(seconds=WINDOW - 1))
        assert assert_throttled(login("operator", "pw-operator")) == 1

        clock.shift(timedelta(seconds=1))
        response = login("operator", "pw-operator")
    assert response.status_code == 200, response.content


def test_an_address_is_throttled_over_every_username_it_tries(operator, viewer):
    for username in ("ann", "bob", "carl"):
        fail(1, username)

    assert_throttled(login("viewer", "pw-viewer"))
    assert login("viewer", "pw-viewer", address="203.0.113.9").status_code == 200


def test_ipv6_clients_count_per_64(operator):
    for host in range(ADDRESS_LIMIT):
        fail(1, f"user{host}", address=f"2001:db8:0:1::{host + 1}")

    assert_throttled(login("operator", "pw-operator", address="2001:db8:0:1:ffff::1"))
    assert login("operator", "pw-operator", address="2001:db8:0:2::1").status_code == 200


# --- per user


def test_a_username_is_throttled_over_every_address_that_tries_it(operator, viewer):
    # Fewer failures per address than the address limit: only the per-user count can stop this.
    addresses = [f"192.0.2.{n}" for n in range(1, USER_LIMIT + 1)]
    for address in addresses:
        fail(1, "operator", address)

    assert_throttled(login("operator", "pw-operator", address="203.0.113.50"))
    assert login("viewer", "pw-viewer", address="203.0.113.50").status_code == 200


def test_the_username_count_ignores_case(db):
    for n, spelling in enumerate(["Operator", "OPERATOR", "operator", "oPeRaToR", "operatoR"]):
        fail(1, spelling, address=f"192.0.2.{n + 1}")

    assert_throttled(login("OPERATOR", "x", address="203.0.113.50"))


def test_one_address_cannot_lock_a_user_out(operator):
    """The per-user limit is above the per-address one: a single attacker is stopped before the user is locked."""
    fail(ADDRESS_LIMIT, "operator", "198.51.100.66")
    for _ in range(USER_LIMIT):
        assert_throttled(login("operator", "wrong", "198.51.100.66"))

    assert login("operator", "pw-operator", address="203.0.113.9").status_code == 200


def test_a_successful_login_clears_the_user_count(operator):
    addresses = iter(f"192.0.2.{n}" for n in range(1, 20))
    for _ in range(USER_LIMIT - 1):
        fail(1, "operator", next(addresses))
    assert login("operator", "pw-operator", next(addresses)).status_code == 200

    for _ in range(USER_LIMIT):
        fail(1, "operator", next(addresses))
    assert_throttled(login("operator", "pw-operator", next(addresses)))


def test_a_known_password_does_not_clear_the_address_count(operator, viewer):
    """An attacker who owns one account cannot log into it between guesses to keep guessing others."""
    fail(ADDRESS_LIMIT - 1, "operator")
    assert login("viewer", "pw-viewer").status_code == 200
    fail(1, "operator")

    assert_throttled(login("viewer", "pw-viewer"))


def test_successes_alone_are_never_throttled(operator):
    for _ in range(ADDRESS_LIMIT + USER_LIMIT):
        assert login("operator", "pw-operator").status_code == 200


# --- the client address behind proxies


def test_x_forwarded_for_is_ignored_without_trusted_proxies(operator):
    for n in range(ADDRESS_LIMIT):
        fail(1, f"user{n}", "198.51.100.7", HTTP_X_FORWARDED_FOR=f"192.0.2.{n + 1}")

    assert_throttled(login("operator", "pw-operator", "198.51.100.7", HTTP_X_FORWARDED_FOR="192.0.2.200"))


def test_x_forwarded_for_names_the_client_behind_a_trusted_proxy(operator, settings):
    settings.FFV_TRUSTED_PROXIES = ["10.0.0.0/8"]
    fail(ADDRESS_LIMIT, "ann", "10.1.1.1", HTTP_X_FORWARDED_FOR="192.0.2.1")

    # The same client through another of our proxies; then another client through the same proxy.
    assert_throttled(login("operator", "pw-operator", "10.2.2.2", HTTP_X_FORWARDED_FOR="192.0.2.1"))
    assert login("operator", "pw-operator", "10.1.1.1", HTTP_X_FORWARDED_FOR="192.0.2.2").status_code == 200


def test_a_forged_x_forwarded_for_entry_does_not_escape_the_limit(operator, settings):
    """The proxy appends the address it saw; what the client wrote before it is not believed."""
    settings.FFV_TRUSTED_PROXIES = ["10.0.0.1"]
    for n in range(ADDRESS_LIMIT):
        fail(1, f"user{n}", "10.0.0.1", HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}, 192.0.2.1")

    forged = login("operator", "pw-operator", "10.0.0.1", HTTP_X_FORWARDED_FOR="not-an-address, 192.0.2.1")
    assert_throttled(forged)


def test_a_proxy_that_is_not_trusted_cannot_speak_for_clients(operator, settings):
    settings.FFV_TRUSTED_PROXIES = ["10.0.0.1"]
    for n in range(ADDRESS_LIMIT):
        fail(1, f"user{n}", "10.0.0.2", HTTP_X_FORWARDED_FOR=f"192.0.2.{n + 1}")

    assert_throttled(login("operator", "pw-operator", "10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.99"))


# --- the hash work


def test_throttled_attempts_compute_no_password_hash(operator, hasher):
    fail(ADDRESS_LIMIT)
    assert hasher.calls == ADDRESS_LIMIT

    for password in ("wrong", "pw-operator"):
        assert_throttled(login("operator", password))
    assert_throttled(login("nobody", "x"))

    assert hasher.calls == ADDRESS_LIMIT


@pytest.mark.parametrize("username, password", [("operator", "pw-operator"), ("operator", "wrong"),
                                                ("nobody", "pw-operator")])
def test_known_and_unknown_users_cost_one_hash_each(operator, hasher, username, password):
    """No timing oracle on whether a username exists: Django's backend hashes for unknown users too."""
    login(username, password)

    assert hasher.calls == 1


class SlowHasher(MD5PasswordHasher):
    """A hash that takes a while, as a real one does: concurrent guesses overlap while it runs."""

    def encode(self, password: str, salt: str) -> str:
        time.sleep(0.3)
        return super().encode(password, salt)


def test_concurrent_guesses_cannot_overrun_the_limit(transactional_db, settings):
    settings.PASSWORD_HASHERS = [f"{__name__}.SlowHasher"]
    guesses = 4 * ADDRESS_LIMIT
    start = threading.Barrier(guesses)

    def guess(_: int) -> int:
        start.wait()
        try:
            return login("operator", "wrong").status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(guesses) as pool:
        statuses = sorted(pool.map(guess, range(guesses)))

    assert statuses == [401] * ADDRESS_LIMIT + [429] * (guesses - ADDRESS_LIMIT)
    # ...and the guesses past the address's limit did not count against the user: one address cannot lock it out.
    from videos.login_throttle import _username_key

    assert LoginThrottle.objects.get(key=_username_key("operator")).failures == ADDRESS_LIMIT


# --- the admin's login page


def admin_login(client, username: str, password: str, address: str = "198.51.100.7"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password},
                       REMOTE_ADDR=address)


def test_the_admin_login_is_throttled_with_the_same_counts(db, client, hasher):
    User.objects.create_superuser("root", password="pw-root-long", email="")
    hasher.calls = 0
    for _ in range(ADDRESS_LIMIT - 1):
        assert admin_login(client, "root", "wrong").status_code == 200  # the form again, with its error
    fail(1, "root")  # the API's failures count for the admin page and the other way round
    assert hasher.calls == ADDRESS_LIMIT

    response = admin_login(client, "root", "pw-root-long")

    assert response.status_code == 200 and "_auth_user_id" not in client.session
    assert "Too many failed login attempts" in response.content.decode()
    assert hasher.calls == ADDRESS_LIMIT
    assert_throttled(login("root", "pw-root-long"))


def test_the_admin_login_still_works(db, client):
    User.objects.create_superuser("root", password="pw-root-long", email="")

    response = admin_login(client, "root", "pw-root-long")

    assert response.status_code == 302 and client.session["_auth_user_id"]


# --- the text and the table


def test_the_429_is_translated(operator):
    fail(ADDRESS_LIMIT)

    body = assert_error(login("operator", "wrong", HTTP_ACCEPT_LANGUAGE="ru"), 429, "TOO_MANY_REQUESTS")

    assert any("\u0400" <= ch <= "\u04ff" for ch in body["desc"]), body["desc"]


def test_the_table_keeps_no_username_or_address_in_clear_and_forgets_old_windows(db):
    fail(ADDRESS_LIMIT - 1, "hunter2-typed-as-a-username")
    rows = list(LoginThrottle.objects.values_list("key", flat=True))
    assert len(rows) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", key) for key in rows)

    with time_machine.travel(timezone.now() + timedelta(seconds=WINDOW + 1), tick=False):
        fail(1, "someone-else", "203.0.113.9")

    assert LoginThrottle.objects.count() == 2
    assert not LoginThrottle.objects.filter(key__in=rows).exists()


# --- several server processes


@contextmanager
def gunicorn_server(env: dict[str, str], log_path: Path) -> Iterator[int]:
    """One gunicorn worker process serving the test database on a free loopback port."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "findface_videos.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--timeout", "60"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return process.poll() is not None

    try:
        assert wait_for(listening, timeout=60) and process.poll() is None, log_path.read_text(errors="replace")
        yield port
    finally:
        process_end(process, timeout=20)


def http_login(port: int, username: str, password: str) -> tuple[int, dict[str, str]]:
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/auth/login/", body=json.dumps({"uuid": "d"}),
                     headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def test_the_counts_are_shared_by_server_processes(transactional_db, tmp_path):
    """Two servers, one worker process each, on one database: failures on either count for both."""
    cfg = connection.settings_dict
    if connection.vendor == "postgresql":
        password = f":{cfg['PASSWORD']}" if cfg["PASSWORD"] else ""
        port = f":{cfg['PORT']}" if cfg["PORT"] else ""
        database_url = f"postgres://{cfg['USER']}{password}@{cfg['HOST'] or '127.0.0.1'}{port}/{cfg['NAME']}"
    else:
        database_url = f"sqlite:///{cfg['NAME']}"
    (tmp_path / "var").mkdir()
    env = {**os.environ, "FFV_VAR_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url,
           "DJANGO_DEBUG": "false", "FFV_LOGIN_FAILURES_PER_ADDRESS": "4", "FFV_LOGIN_FAILURES_PER_USER": "100",
           "FFV_LOGIN_THROTTLE_WINDOW_SECONDS": "600"}

    with gunicorn_server(env, tmp_path / "a.log") as port_a, gunicorn_server(env, tmp_path / "b.log") as port_b:
        statuses = [http_login(port, "operator", "wrong")[0] for port in (port_a, port_b, port_a, port_b)]
        throttled = [http_login(port, "operator", "wrong") for port in (port_a, port_b)]

    assert statuses == [401] * 4
    assert [status for status, _ in throttled] == [429, 429]
    assert all(1 <= int(headers["Retry-After"]) <= 600 for _, headers in throttled)


# --- configuration


def test_a_per_user_limit_not_above_the_per_address_one_is_warned_about(settings):
    assert "videos.W020" not in [message.id for message in run_checks()]

    settings.FFV_LOGIN_FAILURES_PER_USER = ADDRESS_LIMIT

    assert "videos.W020" in [message.id for message in run_checks()]
