"""A real S3-compatible server for tests: moto's standalone server in a subprocess on a free loopback port.

`moto_endpoint` starts one per test session; `s3_bucket` makes a bucket of the test's own and removes it (with
what is left in it) at the end; `s3_storage` points this process's Django at it; `s3_env` is the environment a
worker or server subprocess needs to use the same bucket.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.conftest import process_end, requires

ACCESS_KEY, SECRET_KEY, REGION = "test-access-key", "test-secret-key", "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    requires(importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None,
             "moto[server] is not installed (pip install -e '.[dev]')")
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    assert process.poll() is None, log_path.read_text(errors="replace")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process_end(process, timeout=20)


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name=REGION, config=Config(s3={"addressing_style": "path"}))


def bucket_keys(client, bucket: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(entry["Key"] for entry in page.get("Contents", ()))
    return sorted(keys)


def open_multipart_uploads(client, bucket: str) -> list[str]:
    return [upload["Key"] for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ())]


@pytest.fixture
def s3_bucket(moto_endpoint) -> Iterator[str]:
    client = s3_client(moto_endpoint)
    name = f"ffv-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    for key in bucket_keys(client, name):
        client.delete_object(Bucket=name, Key=key)
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", ()):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=name)


def storage_env(endpoint: str, bucket: str) -> dict[str, str]:
    """The settings' environment for the bucket (README "Storage")."""
    return {"FFV_STORAGE": "s3", "FFV_S3_ENDPOINT_URL": endpoint, "FFV_S3_BUCKET": bucket,
            "FFV_S3_ACCESS_KEY": ACCESS_KEY, "FFV_S3_SECRET_KEY": SECRET_KEY, "FFV_S3_REGION": REGION,
            "FFV_S3_TIMEOUT_SECONDS": "3", "FFV_S3_PART_SIZE_MB": "5"}


@pytest.fixture
def s3_env(moto_endpoint, s3_bucket) -> dict[str, str]:
    return storage_env(moto_endpoint, s3_bucket)


def storage_options(endpoint: str, bucket: str) -> dict:
    """What findface_videos.settings makes of `storage_env` (tests/test_object_storage.py checks they agree)."""
    return {"bucket_name": bucket, "endpoint_url": endpoint, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
            "region_name": REGION, "addressing_style": "path", "verify": True, "location": "",
            "file_overwrite": True, "default_acl": None, "querystring_auth": True, "max_memory_size": 4 * 1024 * 1024,
            "timeout": 3.0, "part_size": 5 * 1024 * 1024}


def use_bucket(settings, endpoint: str, bucket: str) -> None:
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "videos.storage.S3Storage",
                                                          "OPTIONS": storage_options(endpoint, bucket)}}


@pytest.fixture
def s3_storage(settings, moto_endpoint, s3_bucket) -> str:
    """This process's default storage is the test's bucket; returns the bucket's name."""
    use_bucket(settings, moto_endpoint, s3_bucket)
    return s3_bucket


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
