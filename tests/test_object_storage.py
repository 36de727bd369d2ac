"""Sources and pictures in an S3-compatible bucket (FFV_STORAGE=s3) against a real S3 server (moto's, started by
tests/object_storage.py): web and worker share no folder, uploads stream to the bucket, workers read by ranged
GETs, a missing object is the documented error and a dead bucket a 503, never a 500.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import av
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from processing.decoding import DecodeStats, decode_frames
from tests.api.test_events import EVENT_ALL_PERMS, EVENT_VIEW_PERMS, make_archive, make_event
from tests.conftest import ALL_VIDEO_PERMS, ROOT, WorkerProcess, _user, requires, token_client, upload, wait_for
from tests.errors import assert_error
from tests.footage import trim
from tests.object_storage import (
    bucket_keys,
    files_under,
    free_port,
    open_multipart_uploads,
    s3_client,
    storage_options,
    use_bucket,
)
from tests.test_settings_env import django_setup
from videos.models import FaceEvent, JobState, VideoArchive
from videos.services import archive_upload_source
from videos.storage import S3RangeReader, media_source

DATA_DIR = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))
NO_DETECTORS = {"detectors": {"face": None, "body": None, "car": None}}


def footage(name: str) -> Path:
    path = DATA_DIR / name
    requires(path.is_file(), f"{path} is missing (./dev test fetches Debian's opencv-doc)")
    return path


@pytest.fixture
def analyst(db):
    """May run archives and read events (what a search client has)."""
    return token_client(_user("analyst", ALL_VIDEO_PERMS + EVENT_VIEW_PERMS))


@pytest.fixture
def ev_api(db):
    return token_client(_user("event-operator", EVENT_ALL_PERMS))


@pytest.fixture
def ev_viewer_api(db):
    return token_client(_user("event-viewer", EVENT_VIEW_PERMS))


def create_archive(client, group, stream_settings: dict | None = None) -> int:
    body = {"camera_group": group.pk, "name": "clip", "stream_settings": stream_settings or NO_DETECTORS}
    response = client.post("/videos/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def noisy_video(path: Path, *, frames: int) -> Path:
    """A video of random pixels: it barely compresses, so a few seconds make many megabytes (several parts)."""
    import numpy as np

    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 320, 240, "yuv420p", 50_000_000
        for _ in range(frames):
            image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --- settings


def test_settings_choose_the_bucket_from_the_environment_and_fail_loudly_when_wrong(tmp_path):
    code = ("import django, json; django.setup(); from django.conf import settings; "
            "print(json.dumps(settings.STORAGES['default'], default=str))")
    env = {"FFV_STORAGE": "s3", "FFV_S3_ENDPOINT_URL": "http://127.0.0.1:9000", "FFV_S3_BUCKET": "ffv-media",
           "FFV_S3_ACCESS_KEY": "test-access-key", "FFV_S3_SECRET_KEY": "test-secret-key",
           "FFV_S3_TIMEOUT_SECONDS": "3", "FFV_S3_PART_SIZE_MB": "5", "FFV_VAR_DIR": str(tmp_path / "var"),
           "DJANGO_SETTINGS_MODULE": "findface_videos.settings", "PYTHONPATH": str(ROOT), "DJANGO_SECRET_KEY": "k" * 50}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FFV_", "AWS_")) and k != "DATABASE_URL"}
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    configured = json.loads(result.stdout.strip().splitlines()[-1])
    assert configured == {"BACKEND": "videos.storage.S3Storage",
                          "OPTIONS": storage_options("http://127.0.0.1:9000", "ffv-media")}

    bucket = {"FFV_STORAGE": "s3", "FFV_S3_BUCKET": "ffv-media"}
    for wrong, message in [
        ({"FFV_STORAGE": "s3"}, "FFV_S3_BUCKET"),
        ({"FFV_STORAGE": "s3", "FFV_S3_BUCKET": "Not_A_Bucket"}, "FFV_S3_BUCKET"),
        ({"FFV_STORAGE": "minio"}, "FFV_STORAGE"),
        ({**bucket, "FFV_S3_ENDPOINT_URL": "minio:9000"}, "FFV_S3_ENDPOINT_URL"),
        ({**bucket, "FFV_S3_ACCESS_KEY": "only-the-key"}, "FFV_S3_SECRET_KEY"),
        ({**bucket, "FFV_S3_ADDRESSING_STYLE": "dns"}, "FFV_S3_ADDRESSING_STYLE"),
        ({**bucket, "FFV_S3_PART_SIZE_MB": "1"}, "FFV_S3_PART_SIZE_MB"),
        ({"FFV_S3_BUCKET": "ffv-media"}, "FFV_STORAGE"),  # a bucket named, files still going to local disk
    ]:
        result = django_setup(tmp_path, **wrong)
        assert result.returncode != 0, wrong
        assert "ImproperlyConfigured" in result.stderr and message in result.stderr, (wrong, result.stderr[-800:])


# --- uploads and reads


def test_an_upload_streams_to_the_bucket_in_parts_and_leaves_no_local_file(
    api, default_group, s3_storage, moto_endpoint, settings, tmp_path
):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "web-tmp")
    Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir()
    video = noisy_video(tmp_path / "noise.mp4", frames=140)
    assert video.stat().st_size > 11 * 1024 * 1024  # three parts of 5 MiB at least

    archive_id = create_archive(api, default_group)
    response = upload(api, archive_id, video)

    assert response.status_code == 201, response.content
    archive = VideoArchive.objects.get(pk=archive_id)
    client = s3_client(moto_endpoint)
    assert bucket_keys(client, s3_storage) == [archive.source_file.name]
    head = client.head_object(Bucket=s3_storage, Key=archive.source_file.name)
    assert head["ContentLength"] == video.stat().st_size == archive.file_size
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    body = client.get_object(Bucket=s3_storage, Key=archive.source_file.name)["Body"].read()
    assert body == video.read_bytes()
    assert archive.source_len == pytest.approx(140 / 25, abs=0.05)
    assert files_under(Path(settings.FILE_UPLOAD_TEMP_DIR)) == []
    assert files_under(settings.MEDIA_ROOT) == []


def test_a_rejected_or_truncated_upload_leaves_nothing_in_the_bucket(api, default_group, s3_storage, moto_endpoint,
                                                                    tmp_path):
    client = s3_client(moto_endpoint)
    archive_id = create_archive(api, default_group)

    not_a_video = b"\x00\x01garbage" * (700 * 1024)  # 7 MB: one part uploaded before the body ends
    response = api.put(f"/videos/{archive_id}/upload/source_file/", data=not_a_video,
                       content_type="application/octet-stream")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")

    video = noisy_video(tmp_path / "noise.mp4", frames=80).read_bytes()
    with pytest.raises(Exception) as raised:  # the client went away after 6 MB of it
        archive_upload_source(archive_id=archive_id, reader=io.BytesIO(video[: 6 * 1024 * 1024]), size=len(video))
    assert "truncated" in str(raised.value)

    assert bucket_keys(client, s3_storage) == []
    assert open_multipart_uploads(client, s3_storage) == []
    assert VideoArchive.objects.get(pk=archive_id).source_file.name == ""


def test_a_source_is_decoded_from_the_bucket_by_ranged_reads_without_a_copy(
    api, default_group, s3_storage, video_factory, settings
):
    # PyAV writes the index (moov) at the end: the demuxer reads the head, jumps to the end and back.
    video = video_factory("moov-at-end.mp4", frames=75)
    archive_id = create_archive(api, default_group)
    assert upload(api, archive_id, video).status_code == 201
    name = VideoArchive.objects.get(pk=archive_id).source_file.name

    with media_source(name) as source:
        assert isinstance(source, S3RangeReader)
        stats = DecodeStats()
        frames = list(decode_frames(source, stats, max_pixels=10**8))
        gets = source.gets

    assert len(frames) == 75 and (stats.width, stats.height) == (320, 240)
    with av.open(str(video)) as local:
        expected = [frame.to_ndarray(format="bgr24") for frame in local.decode(video=0)]
    assert all((frame.image == image).all() for frame, image in zip(frames, expected, strict=True))
    assert 1 <= gets <= 4, gets  # a few ranged GETs for the seeks, not one per read
    assert files_under(settings.MEDIA_ROOT) == []


# --- errors


def test_a_missing_object_is_the_documented_error(api, ev_viewer_api, default_group, s3_storage, moto_endpoint,
                                                 video_file):
    client = s3_client(moto_endpoint)
    archive_id = create_archive(api, default_group)
    assert upload(api, archive_id, video_file).status_code == 201
    event = make_event("face", make_archive(default_group))
    for name in (VideoArchive.objects.get(pk=archive_id).source_file.name, event.thumbnail.name):
        client.delete_object(Bucket=s3_storage, Key=name)

    assert_error(api.get(f"/videos/{archive_id}/screenshot/"), 404, "NOT_FOUND")  # api-notes: no source, 404
    assert_error(ev_viewer_api.get(f"/events/faces/{event.pk}/thumbnail/"), 404, "NOT_FOUND")
    assert ev_viewer_api.get(f"/events/faces/{event.pk}/fullframe/").status_code == 200


def test_a_bucket_that_is_down_is_a_503_envelope_never_a_500(api, ev_viewer_api, default_group, settings,
                                                            s3_storage, moto_endpoint, video_file):
    archive_id = create_archive(api, default_group)
    assert upload(api, archive_id, video_file).status_code == 201
    event = make_event("face", make_archive(default_group))
    second = create_archive(api, default_group)

    use_bucket(settings, f"http://127.0.0.1:{free_port()}", s3_storage)  # nothing listens there

    assert_error(upload(api, second, video_file), 503, "SERVICE_UNAVAILABLE")
    assert_error(api.get(f"/videos/{archive_id}/screenshot/"), 503, "SERVICE_UNAVAILABLE")
    assert_error(ev_viewer_api.get(f"/events/faces/{event.pk}/thumbnail/"), 503, "SERVICE_UNAVAILABLE")
    # What needs only the database still works; the row goes, its file is logged as not deleted.
    assert api.get(f"/videos/{archive_id}/").status_code == 200
    assert api.delete(f"/videos/{second}/").status_code == 204


# --- the API's other users of the storage


def test_screenshot_and_detect_work_with_the_bucket(api, default_group, s3_storage, moto_endpoint, settings,
                                                    models_dir):
    archive_id = create_archive(api, default_group)
    assert upload(api, archive_id, trim(footage("Megamind.avi"), settings.MEDIA_ROOT.parent / "m.avi", 30)
                  ).status_code == 201

    shot = api.get(f"/videos/{archive_id}/screenshot/?width=360")
    assert shot.status_code == 200 and shot["Content-Type"] == "image/jpeg"
    with av.open(io.BytesIO(shot.content)) as picture:
        assert picture.streams.video[0].codec_context.width == 360

    settings.FFV_FACE_MODEL = models_dir / "retinaface_mnet025.onnx"
    settings.FFV_FACE_EMBEDDER_MODEL = models_dir / "facenet.onnx"
    searcher = token_client(_user("searcher", ["view_faceevent"]))
    photo = (DATA_DIR / "messi5.jpg")
    requires(photo.is_file(), f"{photo} is missing")
    response = searcher.generic("POST", "/detect/", photo.read_bytes(), content_type="image/jpeg")
    assert response.status_code == 200, response.content
    assert len(response.json()["objects"]["face"]) == 1
    # A photo is never stored: its faces' embeddings are (FaceDetection rows); the bucket holds the source only.
    assert bucket_keys(s3_client(moto_endpoint), s3_storage) == [VideoArchive.objects.get(pk=archive_id)
                                                                  .source_file.name]


# --- web and worker with no folder in common


@pytest.mark.worker
def test_web_and_worker_share_no_disk_only_the_bucket(
    analyst, default_group, settings, s3_env, s3_storage, moto_endpoint, processing_queue, transactional_db,
    models_dir, tmp_path,
):
    web, worker_dir = tmp_path / "web", tmp_path / "worker"
    for folder in (web / "media", web / "tmp", worker_dir / "media", worker_dir / "tmp", worker_dir / "var"):
        folder.mkdir(parents=True)
    settings.MEDIA_ROOT, settings.FILE_UPLOAD_TEMP_DIR = web / "media", str(web / "tmp")
    process = WorkerProcess(processing_queue, worker_dir / "media", tmp_path / "worker.log", extra_env={
        **s3_env, "FFV_VAR_DIR": str(worker_dir / "var"), "FILE_UPLOAD_TEMP_DIR": str(worker_dir / "tmp"),
        "TMPDIR": str(worker_dir / "tmp"), "FFV_MODELS_DIR": str(models_dir),
    }).start()
    client = s3_client(moto_endpoint)
    try:
        clip = trim(footage("Megamind.avi"), tmp_path / "megamind.avi", 90)
        archive_id = create_archive(analyst, default_group, {"detectors": {"body": None, "car": None}})
        assert upload(analyst, archive_id, clip, content_type="application/octet-stream").status_code == 201
        source_name = VideoArchive.objects.get(pk=archive_id).source_file.name
        assert bucket_keys(client, s3_storage) == [source_name]

        assert analyst.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: VideoArchive.objects.get(pk=archive_id).job_state
                        in (JobState.COMPLETED, JobState.FAILED), timeout=300), process.log()
        archive = analyst.get(f"/videos/{archive_id}/").json()
        assert archive["health_status"]["status"] == "COMPLETED", (archive["health_status"], process.log()[-3000:])
        assert archive["face_count"] >= 1

        events = analyst.get(f"/events/faces/?video_archive={archive_id}&limit=100")
        assert events.status_code == 200, events.content
        results = events.json()["results"]
        assert len(results) == archive["face_count"]
        # Pictures are the API's URLs (token needed), never the bucket's.
        assert moto_endpoint not in events.content.decode() and s3_storage not in events.content.decode()
        first = FaceEvent.objects.get(pk=results[0]["id"])
        thumbnail = analyst.get(f"/events/faces/{first.pk}/thumbnail/")
        assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/jpeg"
        stored = client.get_object(Bucket=s3_storage, Key=first.thumbnail.name)["Body"].read()
        assert b"".join(thumbnail.streaming_content) == stored
        assert token_client(_user("nobody")).get(f"/events/faces/{first.pk}/thumbnail/").status_code == 403

        keys = bucket_keys(client, s3_storage)
        assert source_name in keys and first.thumbnail.name in keys and first.fullframe.name in keys
        # Neither side wrote a file of its own: everything went through the bucket.
        for folder in (web, worker_dir / "media", worker_dir / "tmp"):
            # (onnxruntime leaves an empty `.ses` marker in the temporary folder when it loads a model)
            assert [name for name in files_under(folder) if name != ".ses"] == [], folder

        assert analyst.delete(f"/videos/{archive_id}/").status_code == 204
        assert bucket_keys(client, s3_storage) == []
    finally:
        process.stop()


@pytest.mark.worker
def test_a_source_gone_from_the_bucket_fails_the_job_with_source_file_missing(
    api, default_group, s3_env, s3_storage, moto_endpoint, processing_queue, transactional_db, tmp_path, video_file
):
    process = WorkerProcess(processing_queue, tmp_path / "worker-media", tmp_path / "worker.log",
                            extra_env=s3_env).start()
    try:
        archive_id = create_archive(api, default_group)
        assert upload(api, archive_id, video_file).status_code == 201
        s3_client(moto_endpoint).delete_object(Bucket=s3_storage,
                                               Key=VideoArchive.objects.get(pk=archive_id).source_file.name)
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: VideoArchive.objects.get(pk=archive_id).job_state == JobState.FAILED, timeout=120
                        ), process.log()
        assert VideoArchive.objects.get(pk=archive_id).job_msg_code == "source_file_missing"
    finally:
        process.stop()


def test_event_pictures_are_stored_and_deleted_in_the_bucket(ev_api, default_group, s3_storage, moto_endpoint,
                                                             django_capture_on_commit_callbacks):
    archive = make_archive(default_group)
    event = make_event("face", archive)
    keys = bucket_keys(s3_client(moto_endpoint), s3_storage)
    assert {event.thumbnail.name, event.fullframe.name, event.normalized.name} == set(keys)
    assert default_storage.save("probe/x.jpg", ContentFile(b"x")) == "probe/x.jpg"
    default_storage.delete("probe/x.jpg")

    with django_capture_on_commit_callbacks(execute=True):  # the files go once the rows' deletion is committed
        assert ev_api.delete(f"/events/faces/{event.pk}/").status_code == 204
    assert bucket_keys(s3_client(moto_endpoint), s3_storage) == []
