"""Settings come from the environment and a nonsense value stops the start instead of becoming a default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from findface_videos.env import env_bool, env_choice, env_float, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parent.parent
NAME = "FFV_TEST_SETTING"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    monkeypatch.delenv(f"{NAME}_FILE", raising=False)


# --- env_bool


@pytest.mark.parametrize("raw", ["1", "true", "True", "YES", "on", " true "])
def test_env_bool_true(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    assert env_bool(NAME, False) is True


@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "off"])
def test_env_bool_false(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    assert env_bool(NAME, True) is False


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_unset_or_empty_is_the_default(monkeypatch, default):
    assert env_bool(NAME, default) is default
    monkeypatch.setenv(NAME, "")
    assert env_bool(NAME, default) is default


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "truee", "-"])
def test_env_bool_nonsense_fails(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_bool(NAME, False)


# --- env_int and env_float


def test_env_int_reads_an_integer(monkeypatch):
    monkeypatch.setenv(NAME, "42")
    assert env_int(NAME, 1) == 42


def test_env_int_unset_is_the_default(monkeypatch):
    assert env_int(NAME, 7, minimum=1) == 7
    monkeypatch.setenv(NAME, "")
    assert env_int(NAME, 7, minimum=1) == 7


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "12kb", "0x10"])
def test_env_int_nonsense_fails(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int(NAME, 1)


def test_env_int_below_the_minimum_fails(monkeypatch):
    monkeypatch.setenv(NAME, "4")
    with pytest.raises(ImproperlyConfigured, match=">= 5"):
        env_int(NAME, 10, minimum=5)


def test_env_int_at_the_minimum_is_accepted(monkeypatch):
    monkeypatch.setenv(NAME, "5")
    assert env_int(NAME, 10, minimum=5) == 5


def test_env_float(monkeypatch):
    monkeypatch.setenv(NAME, "0.25")
    assert env_float(NAME, 1.0, minimum=0.05) == 0.25
    monkeypatch.setenv(NAME, "fast")
    with pytest.raises(ImproperlyConfigured):
        env_float(NAME, 1.0)
    monkeypatch.setenv(NAME, "0.01")
    with pytest.raises(ImproperlyConfigured):
        env_float(NAME, 1.0, minimum=0.05)


# --- env_choice and env_list


def test_env_choice(monkeypatch):
    assert env_choice(NAME, "cpu", {"cpu", "gpu"}) == "cpu"
    monkeypatch.setenv(NAME, "gpu")
    assert env_choice(NAME, "cpu", {"cpu", "gpu"}) == "gpu"


@pytest.mark.parametrize("raw", ["bogus", "GPU", "cpu,gpu"])
def test_env_choice_nonsense_fails(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match="must be one of"):
        env_choice(NAME, "cpu", {"cpu", "gpu"})


def test_env_list(monkeypatch):
    assert env_list(NAME, ["a"]) == ["a"]
    monkeypatch.setenv(NAME, " a, b ,,c ")
    assert env_list(NAME, []) == ["a", "b", "c"]
    monkeypatch.setenv(NAME, "")
    assert env_list(NAME, ["a"]) == []


# --- env_str and _FILE secrets


def test_env_str(monkeypatch):
    assert env_str(NAME, "fallback") == "fallback"
    monkeypatch.setenv(NAME, "value")
    assert env_str(NAME, "fallback") == "value"


def test_file_secret_is_read_and_wins(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-from-file\n")
    monkeypatch.setenv(NAME, "from-env")
    monkeypatch.setenv(f"{NAME}_FILE", str(secret))

    assert env_str(NAME) == "s3cr3t-from-file"


def test_unreadable_file_secret_fails(monkeypatch, tmp_path):
    monkeypatch.setenv(f"{NAME}_FILE", str(tmp_path / "missing"))

    with pytest.raises(ImproperlyConfigured, match=f"{NAME}_FILE"):
        env_str(NAME)


# --- the whole settings module in a fresh interpreter


def django_setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("FFV_", "DJANGO_", "CELERY_")) and key not in ("DATABASE_URL",)}
    clean.update({
        "DJANGO_SETTINGS_MODULE": "findface_videos.settings",
        "PYTHONPATH": str(ROOT),
        "FFV_VAR_DIR": str(tmp_path / "var"),
        **env,
    })
    code = "import django; django.setup(); from django.conf import settings; print('ok', settings.FFV_PROCESSING_QUEUE)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=120)


def test_settings_load_with_a_sane_environment(tmp_path):
    result = django_setup(tmp_path, FFV_PROCESSING_QUEUE="gpu")

    assert result.returncode == 0, result.stderr
    assert "ok gpu" in result.stdout


@pytest.mark.parametrize(
    "env, names",
    [
        ({"FFV_PROCESSING_QUEUE": "bogus queue!"}, "FFV_PROCESSING_QUEUE"),
        ({"FFV_PROCESSING_QUEUE": "a/b"}, "FFV_PROCESSING_QUEUE"),
        ({"FFV_PROCESSING_QUEUE": "q" * 65}, "FFV_PROCESSING_QUEUE"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"FFV_MAX_UPLOAD_SIZE": "8GB"}, "FFV_MAX_UPLOAD_SIZE"),
        ({"FFV_TOKEN_TTL_SECONDS": "5"}, "FFV_TOKEN_TTL_SECONDS"),
        ({"DATA_UPLOAD_MAX_MEMORY_SIZE": "-1"}, "DATA_UPLOAD_MAX_MEMORY_SIZE"),
        ({"DJANGO_SECRET_KEY_FILE": "/nonexistent/secret"}, "DJANGO_SECRET_KEY_FILE"),
        ({"FFV_REQUIRE_SECRET_KEY": "true"}, "DJANGO_SECRET_KEY"),
        ({"DATABASE_URL": "nonsense://x"}, "DATABASE_URL"),
        ({"FFV_DETECT_RATE": "-1"}, "FFV_DETECT_RATE"),
        ({"FFV_DETECT_RATE": "ten"}, "FFV_DETECT_RATE"),
        ({"FFV_SKIP_DUPLICATE_FRAMES": "sometimes"}, "FFV_SKIP_DUPLICATE_FRAMES"),
    ],
)
def test_settings_fail_loudly_on_nonsense(tmp_path, env, names):
    result = django_setup(tmp_path, **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert names in result.stderr
    assert "ok" not in result.stdout


def test_secret_key_is_read_from_a_file(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("a-secret-key-from-a-mounted-file\n")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "print(settings.SECRET_KEY)"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "findface_videos.settings", "PYTHONPATH": str(ROOT),
             "FFV_VAR_DIR": str(tmp_path / "var"), "DJANGO_SECRET_KEY_FILE": str(secret),
             "FFV_REQUIRE_SECRET_KEY": "true"},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "a-secret-key-from-a-mounted-file"
