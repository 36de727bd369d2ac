"""Where sources and event pictures live: local files under MEDIA_ROOT, or an S3-compatible bucket (FFV_STORAGE=s3).

With the bucket, web and worker hosts share no disk: an upload is streamed to the bucket as a multipart upload
(one part in memory at a time), and a source is read by FFmpeg through `S3RangeReader`, a seekable file over
ranged GETs (one streaming GET from the position FFmpeg reads at; a new one only after it seeks away), never
copied whole to a local disk. FFmpeg gets a Python file object, not a presigned URL: it opens no network
connection of its own (the pipeline lets it open local files only, processing.fetch), and the bucket's
credentials and retries stay in boto3.

Storage failures reach the callers as OSError: FileNotFoundError for an object that is not there, and
`StorageUnavailable` when the bucket cannot be reached or refuses the request, which the API answers with 503.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import Storage, default_storage
from storages.backends.s3 import S3Storage as _BaseS3Storage
from storages.utils import clean_name

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# A forward seek of at most this many bytes reads on in the open GET instead of starting a new one.
_SKIP_LIMIT = 1 * MiB
# Seconds the storage may take to answer the completion of a multipart upload.
COMPLETE_TIMEOUT = 600.0
# Reads of one position tried again over a new GET when a stream breaks mid-way (a dropped connection).
_READ_ATTEMPTS = 3


class StorageUnavailable(OSError):
    """The object storage could not be reached, or refused the request (credentials, bucket): the API says 503."""


@contextmanager
def storage_errors(name: str = "") -> Iterator[None]:
    """botocore's errors as OSError: a missing object as FileNotFoundError, anything else as StorageUnavailable."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            raise FileNotFoundError(2, "not in the object storage", name) from None
        raise StorageUnavailable(f"object storage refused the request ({code or status}): "
                                 f"{error.get('Message', '')}".rstrip(": ")) from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"object storage unreachable: {exc}") from exc


class S3Storage(_BaseS3Storage):
    """django-storages' S3 backend whose failures are OSErrors (above), with streamed uploads and ranged reads."""

    def get_default_settings(self) -> dict:
        return {**super().get_default_settings(), "timeout": 10.0, "part_size": 8 * MiB}

    def __init__(self, **options) -> None:
        super().__init__(**options)
        # Short timeouts and few retries: a request waiting on a dead bucket should get its 503 within seconds.
        self.client_config = Config(
            s3={"addressing_style": self.addressing_style or "auto"},
            signature_version="s3v4",
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        # Pictures are small; this only bounds what a larger save holds in memory (two parts at once).
        self.transfer_config = TransferConfig(multipart_chunksize=self.part_size, max_concurrency=2)

    @property
    def client(self):
        return self.connection.meta.client

    @property
    def completion_client(self):
        """A client that waits longer for an answer: completing a multipart upload of gigabytes takes the server a
        while (AWS documents minutes), during which the connection is silent."""
        client = getattr(self._connections, "completion_client", None)
        if client is None:
            client = self._create_session().client(
                "s3", region_name=self.region_name, use_ssl=self.use_ssl, endpoint_url=self.endpoint_url,
                config=self.client_config.merge(Config(read_timeout=max(self.timeout, COMPLETE_TIMEOUT))),
                verify=self.verify,
            )
            self._connections.completion_client = client
        return client

    def key(self, name: str) -> str:
        return self._normalize_name(clean_name(name))

    def _open(self, name, mode="rb"):
        with storage_errors(name):
            file = super()._open(name, mode)
            if "r" in mode:
                # Downloaded now, so that a failure is raised here and not while a response is being sent.
                file.file  # noqa: B018
            return file

    def _save(self, name, content):
        with storage_errors(name):
            return super()._save(name, content)

    def delete(self, name):
        with storage_errors(name):
            return super().delete(name)

    def exists(self, name):
        with storage_errors(name):
            return super().exists(name)

    def size(self, name):
        with storage_errors(name):
            return super().size(name)

    def listdir(self, name):
        with storage_errors(name):
            return super().listdir(name)

    def get_modified_time(self, name):
        with storage_errors(name):
            return super().get_modified_time(name)

    def path(self, name):
        raise NotImplementedError("objects in a bucket have no local path")

    def url(self, name, parameters=None, expire=None, http_method=None):
        # Pictures are served by the API's authenticated endpoints only; no bucket URL is ever handed out.
        raise NotImplementedError("objects are served through the API, not by bucket URLs")

    def open_stream(self, name: str) -> S3RangeReader:
        with storage_errors(name):
            head = self.client.head_object(Bucket=self.bucket_name, Key=self.key(name))
        return S3RangeReader(self.client, self.bucket_name, self.key(name), name=name,
                             size=int(head["ContentLength"]), etag=head.get("ETag", ""))

    def multipart_writer(self, name: str, content_type: str = "application/octet-stream") -> MultipartWriter:
        return MultipartWriter(self, name, content_type=content_type)


class S3RangeReader(io.RawIOBase):
    """A stored object as a seekable, read-only file for PyAV: ranged GETs, no local copy.

    One GET streams from the position read; a seek within `_SKIP_LIMIT` ahead reads on through it, any other
    seek closes it and the next read opens a GET from there. Each GET names the object's ETag, so an object
    replaced while it is read fails instead of mixing two files.
    """

    def __init__(self, client, bucket: str, key: str, *, name: str, size: int, etag: str) -> None:
        super().__init__()
        self.name = name
        self.size = size
        self.gets = 0  # GET requests made, for tests and benchmarks
        self._client, self._bucket, self._key, self._etag = client, bucket, key, etag
        self._pos = 0
        self._body = None
        self._body_pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        position = base + offset
        if position < 0:
            raise OSError(22, "negative seek position")
        self._pos = position
        return position

    def readinto(self, buffer) -> int:
        if self.closed:
            raise ValueError("read of a closed file")
        wanted = min(len(buffer), self.size - self._pos)
        if wanted <= 0:
            return 0
        for attempt in range(_READ_ATTEMPTS):
            try:
                body = self._body_at(self._pos)
                data = body.read(wanted)
            except (StorageUnavailable, FileNotFoundError):
                raise  # opening the GET failed (after boto3's own retries)
            except (BotoCoreError, OSError) as exc:  # the stream broke mid-way: once more from this position
                self._drop_body()
                if attempt == _READ_ATTEMPTS - 1:
                    raise StorageUnavailable(f"object storage read failed: {exc}") from exc
                continue
            if not data:  # the stream ended early: a dropped connection
                self._drop_body()
                if attempt == _READ_ATTEMPTS - 1:
                    raise StorageUnavailable(f"object storage stream of {self.name} ended at {self._pos}")
                continue
            count = len(data)
            buffer[:count] = data
            self._pos += count
            self._body_pos += count
            return count
        return 0  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        self._drop_body()
        super().close()

    def _body_at(self, position: int):
        if self._body is not None and 0 < position - self._body_pos <= _SKIP_LIMIT:
            self._body.read(position - self._body_pos)  # a short hop forward: read through it
            self._body_pos = position
        if self._body is None or self._body_pos != position:
            self._drop_body()
            params = {"IfMatch": self._etag} if self._etag else {}
            with storage_errors(self.name):
                response = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={position}-",
                                                   **params)
            self.gets += 1
            self._body, self._body_pos = response["Body"], position
        return self._body

    def _drop_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # noqa: BLE001 - a broken connection is being thrown away anyway
                pass
            self._body = None


class MultipartWriter:
    """Bytes written in order become one object through a multipart upload, holding one part in memory.

    `complete()` makes the object appear; `abort()` (or an exception in the `with` block) leaves nothing behind.
    An empty or one-part object is written with a single PUT, as S3 wants parts of at least 5 MiB but the last.
    """

    def __init__(self, storage: S3Storage, name: str, *, content_type: str) -> None:
        self.storage, self.name, self.content_type = storage, name, content_type
        self._key = storage.key(name)
        self._part_size = storage.part_size
        self._buffer = bytearray()
        self._parts: list[dict] = []
        self._upload_id: str | None = None
        self.written = 0

    def __enter__(self) -> MultipartWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.written += len(data)
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            self._upload_part(part)
        return len(data)

    def complete(self) -> str:
        client, bucket = self.storage.client, self.storage.bucket_name
        with storage_errors(self.name):
            if self._upload_id is None:
                client.put_object(Bucket=bucket, Key=self._key, Body=bytes(self._buffer),
                                  ContentType=self.content_type)
            else:
                if self._buffer:
                    self._upload_part(bytes(self._buffer))
                self.storage.completion_client.complete_multipart_upload(
                    Bucket=bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts})
        self._buffer = bytearray()
        self._upload_id = None
        return self.name

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        try:
            with storage_errors(self.name):
                self.storage.client.abort_multipart_upload(Bucket=self.storage.bucket_name, Key=self._key,
                                                           UploadId=self._upload_id)
        except OSError:
            # The bucket's lifecycle rule for incomplete multipart uploads (README "Storage") clears it later.
            logger.warning("could not abort the multipart upload of %s", self.name, exc_info=True)
        self._upload_id = None

    def _upload_part(self, data: bytes) -> None:
        client, bucket = self.storage.client, self.storage.bucket_name
        with storage_errors(self.name):
            if self._upload_id is None:
                self._upload_id = client.create_multipart_upload(
                    Bucket=bucket, Key=self._key, ContentType=self.content_type)["UploadId"]
            number = len(self._parts) + 1
            response = client.upload_part(Bucket=bucket, Key=self._key, UploadId=self._upload_id,
                                          PartNumber=number, Body=data)
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})


def streams_uploads(storage: Storage = default_storage) -> bool:
    """Whether uploads go straight to the storage (a bucket) instead of through a local temporary file."""
    return hasattr(storage, "multipart_writer")


@contextmanager
def media_source(name: str) -> Iterator[str | BinaryIO]:
    """What PyAV opens for a stored file: its path on a local storage, else a seekable reader of the object.

    FileNotFoundError when the file is not in storage; StorageUnavailable when the bucket cannot be reached.
    """
    storage = default_storage
    if hasattr(storage, "open_stream"):
        reader = storage.open_stream(name)
        try:
            yield reader
        finally:
            reader.close()
        return
    path = Path(storage.path(name))
    if not path.is_file():
        raise FileNotFoundError(2, "not in storage", name)
    yield str(path)
