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
        "DJANGO_SECRET_KEY": "a-test-secret-key-" + "k" * 40,
        **env,
    })
    code = "import django; django.setup(); from django.conf import settings; print('ok', settings.FFV_PROCESSING_QUEUE)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=120)


def test_settings_load_with_a_sane_environment(tmp_path):
    result = django_setup(tmp_path, FFV_PROCESSING_QUEUE="gpu", DJANGO_SECRET_KEY="k" * 50)

    assert result.returncode == 0, result.stderr
    assert "ok gpu" in result.stdout


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "models/yolov8n_int8.onnx"),
        ({"FFV_OBJECT_PRECISION": "fp32"}, "models/yolov8n.onnx"),
        ({"FFV_OBJECT_PRECISION": "int8"}, "models/yolov8n_int8.onnx"),
        # An operator's own file wins over the precision, whichever it is.
        ({"FFV_OBJECT_PRECISION": "int8", "FFV_OBJECT_MODEL": "/opt/models/mine.onnx"}, "/opt/models/mine.onnx"),
    ],
)
def test_object_precision_chooses_the_prepared_yolo(tmp_path, env, expected):
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("FFV_", "DJANGO_", "CELERY_")) and key not in ("DATABASE_URL",)}
    clean.update({"DJANGO_SETTINGS_MODULE": "findface_videos.settings", "PYTHONPATH": str(ROOT),
                  "FFV_VAR_DIR": str(tmp_path / "var"), "DJANGO_SECRET_KEY": "k" * 50, **env})
    code = "import django; django.setup(); from django.conf import settings; print(settings.FFV_OBJECT_MODEL)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(expected)


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
        ({"FFV_DEV": "maybe"}, "FFV_DEV"),
        ({"DATABASE_URL": "nonsense://x"}, "DATABASE_URL"),
        ({"FFV_LOGIN_FAILURES_PER_USER": "0"}, "FFV_LOGIN_FAILURES_PER_USER"),
        ({"FFV_LOGIN_THROTTLE_WINDOW_SECONDS": "5m"}, "FFV_LOGIN_THROTTLE_WINDOW_SECONDS"),
        ({"FFV_TRUSTED_PROXIES": "10.0.0.1,proxy.local"}, "FFV_TRUSTED_PROXIES"),
        ({"FFV_TRUSTED_PROXIES": "10.0.0.0/33"}, "FFV_TRUSTED_PROXIES"),
        ({"FFV_METRICS_ALLOWED_IPS": "10.0.0.0/33"}, "FFV_METRICS_ALLOWED_IPS"),
        ({"FFV_METRICS_ALLOWED_IPS": "prometheus.internal"}, "FFV_METRICS_ALLOWED_IPS"),
        ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/prometheus"}, "PROMETHEUS_MULTIPROC_DIR"),
        ({"FFV_WORKER_METRICS_BIND": "9100"}, "FFV_WORKER_METRICS_BIND"),
        ({"FFV_WORKER_METRICS_BIND": "0.0.0.0:9100"}, "PROMETHEUS_MULTIPROC_DIR"),  # it serves that folder
        ({"FFV_DETECT_RATE": "-1"}, "FFV_DETECT_RATE"),
        ({"FFV_DETECT_RATE": "ten"}, "FFV_DETECT_RATE"),
        ({"FFV_SKIP_DUPLICATE_FRAMES": "sometimes"}, "FFV_SKIP_DUPLICATE_FRAMES"),
        ({"FFV_OBJECT_PRECISION": "fp16"}, "FFV_OBJECT_PRECISION"),
        ({"FFV_WEBHOOK_ALLOWED_NETWORKS": "receivers.internal"}, "FFV_WEBHOOK_ALLOWED_NETWORKS"),
        ({"FFV_WEBHOOK_TIMEOUT_SECONDS": "0"}, "FFV_WEBHOOK_TIMEOUT_SECONDS"),
        ({"FFV_WEBHOOK_MAX_ATTEMPTS": "0"}, "FFV_WEBHOOK_MAX_ATTEMPTS"),
        ({"FFV_WEBHOOK_BATCH_SIZE": "lots"}, "FFV_WEBHOOK_BATCH_SIZE"),
        ({"FFV_WEBHOOK_SWEEP_INTERVAL": "0.1"}, "FFV_WEBHOOK_SWEEP_INTERVAL"),
        ({"FFV_EXPORT_TTL_SECONDS": "5"}, "FFV_EXPORT_TTL_SECONDS"),
        ({"FFV_EXPORT_MAX_ROWS": "0"}, "FFV_EXPORT_MAX_ROWS"),
        ({"FFV_RETENTION_MATCHED_DAYS": "-1"}, "FFV_RETENTION_MATCHED_DAYS"),
        ({"FFV_RETENTION_UNMATCHED_DAYS": "a month"}, "FFV_RETENTION_UNMATCHED_DAYS"),
        ({"FFV_RETENTION_FULLFRAME_DAYS": "-0.5"}, "FFV_RETENTION_FULLFRAME_DAYS"),
        ({"FFV_RETENTION_INTERVAL": "0"}, "FFV_RETENTION_INTERVAL"),
        ({"FFV_DETECT_BATCH": "0"}, "FFV_DETECT_BATCH"),
        ({"FFV_DETECT_BATCH": "big"}, "FFV_DETECT_BATCH"),
        ({"FFV_DETECT_BATCH": "1000"}, "FFV_DETECT_BATCH"),
        ({"FFV_DETECT_BATCH_WAIT_MS": "-1"}, "FFV_DETECT_BATCH_WAIT_MS"),
        ({"FFV_DECODE_THREADS": "-2"}, "FFV_DECODE_THREADS"),
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
             "FFV_VAR_DIR": str(tmp_path / "var"), "DJANGO_SECRET_KEY_FILE": str(secret), "FFV_DEV": "0"},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "a-secret-key-from-a-mounted-file"


# --- fail closed outside development mode: no built-in secret key, no wildcard host


def run_in_fresh_interpreter(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("FFV_", "DJANGO_", "CELERY_")) and key not in ("DATABASE_URL",)}
    clean.update({"PYTHONPATH": str(ROOT), "FFV_VAR_DIR": str(tmp_path / "var"), **env})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=120)


# How a production process starts: gunicorn imports the WSGI application, celery the app and its tasks.
STARTS = {
    "wsgi": "import findface_videos.wsgi; print('ok')",
    "celery": "from findface_videos.celery import app; app.loader.import_default_modules(); print('ok')",
}


@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize("env", [{}, {"DJANGO_DEBUG": "true"}, {"FFV_DEV": "0"}, {"DJANGO_SECRET_KEY": ""}])
def test_no_secret_key_outside_development_mode_stops_the_start(tmp_path, start, env):
    result = run_in_fresh_interpreter(tmp_path, STARTS[start], **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr, result.stderr[-2000:]
    assert "ok" not in result.stdout


def test_development_mode_may_use_the_built_in_key(tmp_path):
    result = run_in_fresh_interpreter(
        tmp_path, "import django; django.setup(); from django.conf import settings; print('ok', settings.SECRET_KEY)",
        DJANGO_SETTINGS_MODULE="findface_videos.settings", FFV_DEV="1")

    assert result.returncode == 0, result.stderr
    assert "ok insecure-dev-key" in result.stdout


@pytest.mark.parametrize("hosts", ["*", "api.example.com,*", " * "])
def test_wildcard_allowed_hosts_outside_development_mode_stops_the_start(tmp_path, hosts):
    result = django_setup(tmp_path, DJANGO_SECRET_KEY="k" * 50, DJANGO_ALLOWED_HOSTS=hosts)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DJANGO_ALLOWED_HOSTS" in result.stderr, result.stderr[-2000:]
    assert django_setup(tmp_path, DJANGO_SECRET_KEY="k" * 50, DJANGO_ALLOWED_HOSTS=hosts, FFV_DEV="1").returncode == 0


def test_docker_compose_names_its_hosts(tmp_path):
    """The compose file's default is a host list the settings accept outside development mode."""
    compose = (ROOT / "docker-compose.yml").read_text()
    line = next(line for line in compose.splitlines() if line.strip().startswith("DJANGO_ALLOWED_HOSTS:"))
    default = line.split(":-", 1)[1].rstrip("}\"' ")
    assert "*" not in default and "localhost" in default.split(",")
    assert django_setup(tmp_path, DJANGO_SECRET_KEY="k" * 50, DJANGO_ALLOWED_HOSTS=default).returncode == 0


def test_dev_script_keeps_a_secret_key_of_its_own(tmp_path):
    """`./dev serve` and `./dev test` run on a key made once into var/django_secret_key (mode 600), not on the
    built-in one: the script's own function, run in a copy of the checkout's layout."""
    script = (ROOT / "dev").read_text()
    function = script[script.index("ensure_secret_key() {"):]
    function = function[: function.index("\n}\n") + 3]
    shell = f"""set -euo pipefail
VENV={sys.prefix}
ROOT=$(pwd)
{function}
ensure_secret_key
echo "file=$DJANGO_SECRET_KEY_FILE"
"""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_SECRET_KEY")}
    first = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "var" / "django_secret_key"
    assert f"file={key_file}" in first.stdout
    assert len(key_file.read_text().strip()) >= 50 and key_file.stat().st_mode & 0o077 == 0
    key = key_file.read_text()
    second = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=clean, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 0 and key_file.read_text() == key  # made once, kept

    result = run_in_fresh_interpreter(
        tmp_path, "import django; django.setup(); from django.conf import settings; print('ok', settings.SECRET_KEY)",
        DJANGO_SETTINGS_MODULE="findface_videos.settings", DJANGO_SECRET_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {key.strip()}"
