"""PUT /videos/{id}/upload/source_file/: raw bodies, multipart forms, limits, bad and broken uploads."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from tests.conftest import token_client, upload
from tests.errors import assert_error
from videos.models import JobState, VideoArchive


def stored_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


@pytest.fixture(autouse=True)
def upload_temp_dir(settings, tmp_path) -> Path:
    """Uploads spool into a folder of this test's own, so a test can see that nothing is left behind."""
    folder = tmp_path / "upload-tmp"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


@pytest.fixture
def archive_id(api, default_group) -> int:
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "clip"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def url(archive_id: int) -> str:
    return f"/videos/{archive_id}/upload/source_file/"


def archive_row(archive_id: int) -> dict:
    archive = VideoArchive.objects.get(pk=archive_id)
    return {"source_file": archive.source_file.name, "file_size": archive.file_size, "source_len": archive.source_len}


def put_multipart(client, archive_id: int, fields: dict, **extra):
    return client.put(url(archive_id), data=encode_multipart(BOUNDARY, fields), content_type=MULTIPART_CONTENT,
                      **extra)


# --- success


@pytest.mark.parametrize("content_type", ["video/mp4", "application/octet-stream", "video/x-matroska"])
def test_raw_body_upload_sets_file_size_and_source_len(api, archive_id, video_factory, media_root, content_type):
    video = video_factory(frames=50, fps=25)

    response = upload(api, archive_id, video, content_type=content_type)

    assert response.status_code == 201, response.content
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["file_size"] == video.stat().st_size
    assert body["source_len"] == pytest.approx(50 / 25, abs=0.1)
    assert body["health_status"]["status"] == "DISABLED"
    assert body["health_status"]["code"] == "gray"
    assert body["queued"] is False and body["active"] is False and body["finished"] is False
    files = stored_files(media_root)
    assert len(files) == 1
    assert files[0].read_bytes() == video.read_bytes()


def test_source_len_follows_the_video(api, archive_id, video_factory):
    video = video_factory(frames=90, fps=30, width=160, height=120)

    assert upload(api, archive_id, video).status_code == 201

    assert api.get(f"/videos/{archive_id}/").json()["source_len"] == pytest.approx(3.0, abs=0.1)


def test_client_file_name_never_reaches_storage(api, archive_id, video_factory, media_root):
    video = video_factory("evil name.mp4")

    assert put_multipart(api, archive_id, {"file": open_named(video, "../../../evil.mp4")}).status_code == 201

    [stored] = stored_files(media_root)
    assert stored.is_relative_to(media_root / "videos" / str(archive_id))
    assert "evil" not in stored.name


def open_named(path: Path, name: str) -> io.BytesIO:
    handle = io.BytesIO(path.read_bytes())
    handle.name = name
    return handle


def test_multipart_form_with_a_file_field(api, archive_id, video_factory, media_root):
    video = video_factory()

    response = put_multipart(api, archive_id, {"file": open_named(video, "clip.mp4")})

    assert response.status_code == 201, response.content
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["file_size"] == video.stat().st_size
    assert body["source_len"] == pytest.approx(2.0, abs=0.1)
    [stored] = stored_files(media_root)
    assert stored.read_bytes() == video.read_bytes()


def test_multipart_through_the_api_client(api, archive_id, video_factory):
    video = video_factory()
    with video.open("rb") as handle:
        response = api.put(url(archive_id), {"file": handle}, format="multipart")

    assert response.status_code == 201, response.content
    assert api.get(f"/videos/{archive_id}/").json()["file_size"] == video.stat().st_size


def test_multipart_larger_than_the_in_memory_limit_is_spooled_to_disk(api, archive_id, video_factory, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    video = video_factory(frames=60)
    assert video.stat().st_size > 1024

    assert put_multipart(api, archive_id, {"file": open_named(video, "clip.mp4")}).status_code == 201

    assert api.get(f"/videos/{archive_id}/").json()["file_size"] == video.stat().st_size


def test_multipart_without_a_file_field_is_bad_param(api, archive_id, video_factory, media_root):
    response = put_multipart(api, archive_id, {"video": open_named(video_factory(), "clip.mp4")})

    assert assert_error(response, 400, "BAD_PARAM")["param"] == "file"
    assert stored_files(media_root) == []


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary="])
def test_multipart_without_a_boundary_is_bad_param(api, archive_id, video_factory, media_root, content_type):
    body = encode_multipart(BOUNDARY, {"file": open_named(video_factory(), "clip.mp4")})

    assert_error(api.put(url(archive_id), data=body, content_type=content_type), 400, "BAD_PARAM")
    assert stored_files(media_root) == []


def test_reupload_replaces_the_file_and_removes_the_old_one(
    api, archive_id, video_factory, media_root, django_capture_on_commit_callbacks
):
    first = video_factory("first.mp4", frames=25)
    second = video_factory("second.mp4", frames=75, width=160, height=120)
    with django_capture_on_commit_callbacks(execute=True):
        assert upload(api, archive_id, first).status_code == 201
    [old_file] = stored_files(media_root)

    with django_capture_on_commit_callbacks(execute=True):
        assert upload(api, archive_id, second).status_code == 201

    assert not old_file.exists()
    [new_file] = stored_files(media_root)
    assert new_file.read_bytes() == second.read_bytes()
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["file_size"] == second.stat().st_size
    assert body["source_len"] == pytest.approx(3.0, abs=0.1)


@pytest.mark.django_db(transaction=True)
def test_reupload_removes_the_old_file_with_real_commits(api, archive_id, video_factory, media_root):
    assert upload(api, archive_id, video_factory("first.mp4")).status_code == 201
    [old_file] = stored_files(media_root)

    assert upload(api, archive_id, video_factory("second.mp4", frames=30)).status_code == 201

    assert not old_file.exists()
    assert len(stored_files(media_root)) == 1


# --- refused before a byte is read


def test_over_the_size_limit_is_payload_too_large(api, archive_id, video_factory, media_root, settings):
    video = video_factory()
    settings.FFV_MAX_UPLOAD_SIZE = video.stat().st_size - 1

    assert_error(upload(api, archive_id, video), 413, "PAYLOAD_TOO_LARGE")

    assert stored_files(media_root) == []
    assert archive_row(archive_id) == {"source_file": "", "file_size": 0, "source_len": None}


def test_multipart_over_the_size_limit_is_payload_too_large(api, archive_id, video_factory, media_root, settings):
    video = video_factory()
    settings.FFV_MAX_UPLOAD_SIZE = video.stat().st_size // 2

    assert_error(put_multipart(api, archive_id, {"file": open_named(video, "clip.mp4")}), 413, "PAYLOAD_TOO_LARGE")

    assert stored_files(media_root) == []


def test_exactly_at_the_size_limit_is_accepted(api, archive_id, video_factory, settings):
    video = video_factory()
    settings.FFV_MAX_UPLOAD_SIZE = video.stat().st_size

    assert upload(api, archive_id, video).status_code == 201


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/json", "video"])
def test_wrong_content_type_is_unsupported_media_type(api, archive_id, video_factory, media_root, content_type):
    assert_error(upload(api, archive_id, video_factory(), content_type=content_type), 415, "UNSUPPORTED_MEDIA_TYPE")

    assert stored_files(media_root) == []
    assert archive_row(archive_id)["source_file"] == ""


def test_zero_bytes_is_bad_param(api, archive_id, media_root):
    response = api.put(url(archive_id), data=b"", content_type="video/mp4", CONTENT_LENGTH="0")

    assert assert_error(response, 400, "BAD_PARAM")["param"] == "source_file"
    assert stored_files(media_root) == []
    assert archive_row(archive_id)["file_size"] == 0


def test_unknown_archive_is_not_found(api, default_group, video_factory, media_root):
    assert_error(upload(api, 987654, video_factory()), 404, "NOT_FOUND")
    assert_error(put_multipart(api, 987654, {"file": open_named(video_factory(), "x.mp4")}), 404, "NOT_FOUND")
    assert stored_files(media_root) == []


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.STARTING, JobState.IN_PROGRESS])
def test_upload_while_processing_is_a_conflict(api, archive_id, video_factory, media_root, state):
    assert upload(api, archive_id, video_factory("first.mp4")).status_code == 201
    before = archive_row(archive_id)
    VideoArchive.objects.filter(pk=archive_id).update(job_state=state)

    assert_error(upload(api, archive_id, video_factory("second.mp4", frames=30)), 409, "CONFLICT")
    assert_error(put_multipart(api, archive_id, {"file": open_named(video_factory(), "x.mp4")}), 409, "CONFLICT")

    assert archive_row(archive_id) == before
    assert len(stored_files(media_root)) == 1


@pytest.mark.parametrize("state", [JobState.COMPLETED, JobState.FAILED, JobState.INTERRUPTED])
def test_upload_after_processing_ended_is_accepted(api, archive_id, video_factory, state):
    VideoArchive.objects.filter(pk=archive_id).update(job_state=state)

    assert upload(api, archive_id, video_factory()).status_code == 201


# --- read, then refused: the archive keeps what it had


@pytest.fixture
def archive_with_video(api, archive_id, video_factory, media_root) -> tuple[int, dict, list[Path]]:
    assert upload(api, archive_id, video_factory("original.mp4")).status_code == 201
    return archive_id, archive_row(archive_id), stored_files(media_root)


def test_text_sent_as_video_is_unsupported_and_changes_nothing(
    api, archive_with_video, tmp_path, media_root, upload_temp_dir
):
    archive_id, before, files_before = archive_with_video
    text = tmp_path / "notes.mp4"
    text.write_text("this is a shopping list, not a video\n" * 200)

    body = assert_error(upload(api, archive_id, text), 415, "UNSUPPORTED_MEDIA_TYPE")

    assert "not a supported video" in body["desc"]
    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before
    assert stored_files(upload_temp_dir) == []


def test_a_playlist_naming_a_server_file_is_refused(
    api, archive_with_video, tmp_path, media_root, upload_temp_dir, video_factory
):
    """An HLS playlist is a text file FFmpeg would follow to other files: only plain media containers open."""
    archive_id, before, files_before = archive_with_video
    secret = video_factory("secret.mp4")  # a real video on the server's disk, outside the upload
    playlist = tmp_path / "clip.mp4"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{secret}\n#EXT-X-ENDLIST\n")

    body = assert_error(upload(api, archive_id, playlist), 415, "UNSUPPORTED_MEDIA_TYPE")

    assert str(secret) not in body["desc"] and str(tmp_path) not in body["desc"]
    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before
    assert stored_files(upload_temp_dir) == []


def test_text_in_a_multipart_form_is_unsupported(api, archive_with_video, media_root, upload_temp_dir):
    archive_id, before, files_before = archive_with_video
    fake = io.BytesIO(b"plain text " * 500)
    fake.name = "clip.mp4"

    assert_error(put_multipart(api, archive_id, {"file": fake}), 415, "UNSUPPORTED_MEDIA_TYPE")

    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before
    assert stored_files(upload_temp_dir) == []


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp"])
def test_a_still_image_sent_as_video_is_unsupported(api, archive_with_video, media_root, extension):
    archive_id, before, files_before = archive_with_video
    ok, image = cv2.imencode(extension, np.full((64, 64, 3), 128, np.uint8))
    assert ok

    response = api.put(url(archive_id), data=image.tobytes(), content_type="video/mp4")

    assert "still image" in assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")["desc"]
    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before


def test_truncated_video_file_is_refused(api, archive_with_video, video_factory, media_root):
    archive_id, before, files_before = archive_with_video
    whole = video_factory("whole.mp4", frames=60).read_bytes()
    cut = whole[: len(whole) // 3]

    response = api.put(url(archive_id), data=cut, content_type="video/mp4")

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before


def test_body_shorter_than_content_length_is_bad_param(api, archive_with_video, video_factory, media_root,
                                                        upload_temp_dir):
    archive_id, before, files_before = archive_with_video
    data = video_factory("new.mp4").read_bytes()
    short = data[: len(data) // 2]

    response = api.put(url(archive_id), data=short, content_type="video/mp4",
                       CONTENT_LENGTH=str(len(data)), **{"wsgi.input": io.BytesIO(short)})

    body = assert_error(response, 400, "BAD_PARAM")
    assert "truncated" in body["desc"]
    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before
    assert stored_files(upload_temp_dir) == []


def test_multipart_body_shorter_than_content_length_is_bad_param(api, archive_with_video, video_factory,
                                                                  media_root, upload_temp_dir):
    archive_id, before, files_before = archive_with_video
    data = encode_multipart(BOUNDARY, {"file": open_named(video_factory("new.mp4"), "new.mp4")})
    short = data[: len(data) - 2000]

    response = api.put(url(archive_id), data=short, content_type=MULTIPART_CONTENT,
                       CONTENT_LENGTH=str(len(data)), **{"wsgi.input": io.BytesIO(short)})

    assert_error(response, 400, "BAD_PARAM")
    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before
    assert stored_files(upload_temp_dir) == []


@pytest.mark.parametrize("length", ["abc", "-5", ""])
def test_bad_or_missing_content_length_is_bad_param(api, archive_id, video_factory, media_root, length):
    data = video_factory().read_bytes()

    response = api.put(url(archive_id), data=data, content_type="video/mp4", CONTENT_LENGTH=length)

    assert assert_error(response, 400, "BAD_PARAM")["param"] == "Content-Length"
    assert stored_files(media_root) == []


def test_frame_size_beyond_the_pixel_limit_is_refused(api, archive_id, video_factory, media_root, settings):
    settings.FFV_MAX_FRAME_PIXELS = 100 * 100

    response = upload(api, archive_id, video_factory(width=320, height=240))

    assert 400 <= response.status_code < 500
    body = assert_error(response, response.status_code, response.json()["code"])
    assert "320x240" in body["desc"]
    assert stored_files(media_root) == []
    assert archive_row(archive_id)["source_file"] == ""


def test_frame_size_within_the_pixel_limit_is_accepted(api, archive_id, video_factory, settings):
    settings.FFV_MAX_FRAME_PIXELS = 160 * 120

    assert upload(api, archive_id, video_factory(width=160, height=120)).status_code == 201


def test_viewer_cannot_upload(viewer_api, archive_id, video_factory, media_root):
    assert_error(upload(viewer_api, archive_id, video_factory()), 403, "PERMISSION_DENIED")
    assert stored_files(media_root) == []


def test_upload_errors_speak_the_request_language(operator, archive_id):
    response = token_client(operator, "ru").put(url(archive_id), data=b"x", content_type="text/plain")

    desc = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")["desc"]
    assert "Загрузите видео" in desc


# --- a real HTTP connection that stops sending


@pytest.mark.django_db(transaction=True)
def test_client_that_hangs_up_mid_upload_leaves_nothing(live_server, operator, default_group, video_factory,
                                                         media_root, upload_temp_dir):
    api = token_client(operator)
    archive_id = api.post("/videos/", {"camera_group": default_group.pk, "name": "x"}, format="json").json()["id"]
    assert upload(api, archive_id, video_factory("original.mp4")).status_code == 201
    before, files_before = archive_row(archive_id), stored_files(media_root)
    token = api._credentials["HTTP_AUTHORIZATION"]
    data = video_factory("new.mp4", frames=60).read_bytes()

    host, port = live_server.thread.host, live_server.thread.port
    with socket.create_connection((host, port), timeout=30) as sock:
        head = (
            f"PUT {url(archive_id)} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {token}\r\n"
            f"Content-Type: video/mp4\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head + data[: len(data) // 2])
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk

    status_line = reply.split(b"\r\n", 1)[0]
    assert b" 400 " in status_line, reply[:500]
    assert b'"BAD_PARAM"' in reply
    assert archive_row(archive_id) == before
    assert stored_files(media_root) == files_before
    assert stored_files(upload_temp_dir) == []
