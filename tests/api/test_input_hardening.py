"""Hostile input through the API: control characters in `url`, non-ASCII digits, empty multipart file names,
`Accept: image/*` on image endpoints, and an own error code per HTTP status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.utils import translation
from rest_framework import exceptions

from tests.api.test_events import make_event
from tests.conftest import _user, make_video, token_client, upload
from tests.errors import assert_bad_param, assert_error
from videos.errors import ERROR_CODES, exception_handler
from videos.models import VideoArchive

ARABIC_123 = "\u0661\u0662\u0663"  # "١٢٣": digits to Python's int() and to regex \d, not to FFmpeg


@pytest.fixture
def archive_id(api, default_group) -> int:
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "clip"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


# --- url: characters a URL cannot have, and Location


@pytest.mark.parametrize("url", [
    "http://example.com/a\nb.mp4",
    "http://example.com/a\r\nSet-Cookie: x=1",
    "http://example.com/a\tb.mp4",
    "http://example.com/a\x7fb.mp4",
    "http://example.com/a\x85b.mp4",  # C1 NEL
    "http://example.com/a\u2028b.mp4",  # LINE SEPARATOR
    "http://example.com/a b.mp4",
    'http://example.com/a"b.mp4',
    "http://example.com/a<b>.mp4",
    "http://example.com/\u0432\u0438\u0434\u0435\u043e.mp4",
])
def test_url_with_characters_a_url_cannot_have_is_bad_param_and_writes_nothing(api, default_group, url):
    api.raise_request_exception = False  # a 500 must show as one, not as an exception in the test

    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "u", "url": url}, format="json")

    body = assert_bad_param(response, "url")
    assert "percent-encode" in body["desc"]
    assert VideoArchive.objects.count() == 0  # the retrying client creates no duplicates
    assert "Location" not in response


def test_percent_encoded_url_is_accepted(api, default_group):
    url = "http://example.com/a%0Ab%20c.mp4?x=%D0%B2"
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "u", "url": url}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["url"] == url


@pytest.mark.parametrize("method", ["put", "patch"])
def test_url_with_a_newline_is_refused_on_update(api, default_group, archive_id, method):
    api.raise_request_exception = False
    data = {"camera_group": default_group.pk, "name": "clip", "url": "http://example.com/a\nb.mp4"}

    response = getattr(api, method)(f"/videos/{archive_id}/", data, format="json")

    assert_bad_param(response, "url")
    assert VideoArchive.objects.get(pk=archive_id).url is None


def test_create_location_is_the_archive_own_url_not_the_client_url(api, default_group):
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "u",
                                     "url": "http://example.com/clip.mp4"}, format="json")

    assert response.status_code == 201, response.content
    assert response["Location"] == f"http://testserver/videos/{response.json()['id']}/"
    assert api.get(response["Location"]).json()["url"] == "http://example.com/clip.mp4"


# --- ASCII digits only


@pytest.mark.parametrize("param, value", [
    ("width", ARABIC_123), ("height", ARABIC_123), ("quality", "\u0669\u0665"),
    ("rot", f"{ARABIC_123}x10+0+0"), ("rot", "10x10+\u0660+0"),
])
def test_screenshot_params_with_non_ascii_digits_are_bad_param(api, archive_id, video_file, param, value):
    assert upload(api, archive_id, video_file).status_code == 201
    api.raise_request_exception = False

    assert_bad_param(api.get(f"/videos/{archive_id}/screenshot/", {param: value}), param)


@pytest.mark.parametrize("stream_settings, param", [
    ({"rot": f"{ARABIC_123}x10+0+0"}, "stream_settings.rot"),
    ({"detectors": {"face": {"roi": f"10x{ARABIC_123}+0+0"}}}, "stream_settings.detectors.face.roi"),
    ({"ffmpeg_params": [f"-probesize {ARABIC_123}"]}, "stream_settings.ffmpeg_params"),
    ({"ffmpeg_params": ["-analyzeduration", ARABIC_123]}, "stream_settings.ffmpeg_params"),
    ({"ffmpeg_params": [f"-video_size {ARABIC_123}x10"]}, "stream_settings.ffmpeg_params"),
    ({"ffmpeg_params": [f"-framerate 25/{ARABIC_123}"]}, "stream_settings.ffmpeg_params"),
    ({"ffmpeg_params": [f"-ss 00:{ARABIC_123[:2]}:00"]}, "stream_settings.ffmpeg_params"),
])
def test_stream_settings_with_non_ascii_digits_are_bad_param(api, default_group, stream_settings, param):
    api.raise_request_exception = False
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "d",
                                     "stream_settings": stream_settings}, format="json")

    assert_bad_param(response, param)
    assert VideoArchive.objects.count() == 0


def test_ascii_digits_still_pass(api, default_group):
    settings_ = {"rot": "100x100+0+0", "ffmpeg_params": ["-probesize 123", "-ss 00:01:00", "-framerate 25/1"]}
    response = api.post("/videos/", {"camera_group": default_group.pk, "name": "d", "stream_settings": settings_},
                        format="json")
    assert response.status_code == 201, response.content


# --- multipart file names that reduce to nothing


def multipart(disposition: str, data: bytes) -> bytes:
    return (b"--BOUNDARY\r\nContent-Disposition: form-data; " + disposition.encode() +
            b"\r\nContent-Type: video/mp4\r\n\r\n" + data + b"\r\n--BOUNDARY--\r\n")


@pytest.mark.parametrize("filename", ["../", "..", ".", "/", "\\\\", "../../"])
def test_multipart_file_whose_name_reduces_to_nothing_is_accepted(api, archive_id, tmp_path, filename):
    video = make_video(tmp_path / "clip.mp4")
    body = multipart(f'name="file"; filename="{filename}"', video.read_bytes())

    response = api.put(f"/videos/{archive_id}/upload/source_file/", data=body,
                       content_type="multipart/form-data; boundary=BOUNDARY")

    assert response.status_code == 201, response.content
    archive = VideoArchive.objects.get(pk=archive_id)
    assert archive.file_size == video.stat().st_size
    assert Path(archive.source_file.name).name.startswith("source-")


@pytest.mark.parametrize("disposition", ['name="file"; filename=""', 'name="file"'])
@pytest.mark.parametrize("frames", [10, 400])  # under and over the 1 MiB in-memory limit of a text field
def test_multipart_file_part_without_a_filename_is_a_clear_bad_param(api, archive_id, tmp_path, disposition, frames,
                                                                    settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024
    video = make_video(tmp_path / "clip.mp4", frames=frames)
    assert (video.stat().st_size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE) == (frames == 400)
    body = multipart(disposition, video.read_bytes())

    response = api.put(f"/videos/{archive_id}/upload/source_file/", data=body,
                       content_type="multipart/form-data; boundary=BOUNDARY")

    body = assert_bad_param(response, "file")  # not 413, not "needs a 'file' field"
    assert "filename" in body["desc"]
    assert not VideoArchive.objects.get(pk=archive_id).source_file


# --- images: Accept: image/*, and credentials before content negotiation


@pytest.fixture
def picture_api(db):
    """May view archives (screenshots) and face events (their pictures)."""
    return token_client(_user("pictures", ["view_videoarchive", "view_faceevent"]))


@pytest.fixture
def shot_url(api, archive_id, video_file) -> str:
    assert upload(api, archive_id, video_file).status_code == 201
    return f"/videos/{archive_id}/screenshot/"


@pytest.mark.parametrize("accept", ["image/*", "image/jpeg", "*/*", "image/jpeg, application/json;q=0.5",
                                    "image/png, image/*;q=0.8", None])
def test_screenshot_honours_image_accept_headers(api, shot_url, accept):
    extra = {} if accept is None else {"HTTP_ACCEPT": accept}
    for method in ("get", "post"):
        response = getattr(api, method)(shot_url, **extra)
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "image/jpeg"
        assert response.content.startswith(b"\xff\xd8")


@pytest.mark.parametrize("which", ["thumbnail", "fullframe"])
@pytest.mark.parametrize("accept", ["image/*", "image/jpeg", "*/*"])
def test_event_pictures_honour_image_accept_headers(picture_api, default_group, which, accept):
    event = make_event("face", VideoArchive.objects.create(camera_group=default_group, name="a"))

    response = picture_api.get(f"/events/faces/{event.pk}/{which}/", HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"


@pytest.mark.parametrize("accept", ["image/*", "image/jpeg", "text/html", "application/xml", "*/*"])
def test_no_token_is_401_whatever_the_accept_header(anon_api, shot_url, default_group, accept):
    event = make_event("body", VideoArchive.objects.create(camera_group=default_group, name="a"))
    for path in (shot_url, f"/events/bodies/{event.pk}/thumbnail/", f"/events/bodies/{event.pk}/fullframe/",
                 "/videos/", "/videos/count/"):
        response = anon_api.get(path, HTTP_ACCEPT=accept)
        assert_error(response, 401, "UNAUTHORIZED")
        assert response["WWW-Authenticate"].startswith("Token")


def test_missing_permission_is_403_before_406(outsider_api, shot_url):
    assert_error(outsider_api.get(shot_url, HTTP_ACCEPT="text/html"), 403, "PERMISSION_DENIED")


@pytest.mark.parametrize("accept", ["image/jpeg", "image/*"])
def test_errors_of_image_endpoints_stay_in_the_json_envelope(picture_api, shot_url, archive_id, accept):
    assert_error(picture_api.get(f"/videos/{archive_id + 1}/screenshot/", HTTP_ACCEPT=accept), 404, "NOT_FOUND")
    assert_bad_param(picture_api.get(shot_url, {"width": 0}, HTTP_ACCEPT=accept), "width")
    assert_error(picture_api.get("/events/faces/999/thumbnail/", HTTP_ACCEPT=accept), 404, "NOT_FOUND")


def test_an_image_endpoint_refuses_a_type_it_cannot_give_with_not_acceptable(api, shot_url):
    body = assert_error(api.get(shot_url, HTTP_ACCEPT="text/html"), 406, "NOT_ACCEPTABLE")
    assert "image/jpeg" in body["desc"]
    body = assert_error(api.get("/videos/", HTTP_ACCEPT="image/png"), 406, "NOT_ACCEPTABLE")
    assert "application/json" in body["desc"]


# --- one code per status


def test_wrong_method_is_method_not_allowed_with_an_allow_header(api, operator):
    response = api.patch("/videos/count/", {}, format="json")

    body = assert_error(response, 405, "METHOD_NOT_ALLOWED", "")
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}
    assert "PATCH" in body["desc"] and "GET" in body["desc"]
    ru = token_client(operator, "ru").patch("/videos/count/", {}, format="json")
    ru_body = assert_error(ru, 405, "METHOD_NOT_ALLOWED", "")
    assert ru_body["desc"] != body["desc"] and "PATCH" in ru_body["desc"]


def test_not_acceptable_in_russian(operator):
    en = assert_error(token_client(operator).get("/videos/", HTTP_ACCEPT="text/html"), 406, "NOT_ACCEPTABLE")
    ru = assert_error(token_client(operator, "ru").get("/videos/", HTTP_ACCEPT="text/html"), 406, "NOT_ACCEPTABLE")
    assert ru["desc"] != en["desc"]


def test_unsupported_body_type_is_its_own_code(api, default_group):
    response = api.post("/videos/", data="name=x", content_type="text/plain")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("exc, status, code", [
    (exceptions.ParseError(), 400, "BAD_PARAM"),
    (exceptions.ValidationError({"name": ["bad"]}), 400, "BAD_PARAM"),
    (exceptions.NotAuthenticated(), 401, "UNAUTHORIZED"),
    (exceptions.PermissionDenied(), 403, "PERMISSION_DENIED"),
    (exceptions.NotFound(), 404, "NOT_FOUND"),
    (exceptions.UnsupportedMediaType("text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE"),
    (exceptions.Throttled(wait=7), 429, "TOO_MANY_REQUESTS"),
])
def test_every_status_drf_gives_has_its_own_code(exc, status, code):
    with translation.override("en"):
        response = exception_handler(exc, {"view": None, "request": None})

    assert response.status_code == status
    assert response.data["code"] == code
    assert code in ERROR_CODES  # documented in the schema's enum
    if status == 429:
        assert response["Retry-After"] == "7"


def test_schema_lists_the_new_codes(api):
    schema = json.loads(api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    enum = schema["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    assert {"METHOD_NOT_ALLOWED", "NOT_ACCEPTABLE", "TOO_MANY_REQUESTS"} <= set(enum)


# --- Host header


@pytest.mark.parametrize("path", ["/videos/", "/videos/{id}/", "/videos/?limit=1"])
def test_forged_host_is_refused_and_never_reaches_a_url(api, archive_id, path):
    response = api.get(path.format(id=archive_id), HTTP_HOST="evil.example")

    assert_error(response, 400, "BAD_PARAM")
    assert b"evil.example" not in response.content
    # Nor through a proxy's header, which is not trusted (USE_X_FORWARDED_HOST is off).
    forwarded = api.get(path.format(id=archive_id), HTTP_X_FORWARDED_HOST="evil.example")
    assert forwarded.status_code == 200 and b"evil.example" not in forwarded.content
    assert b"http://testserver/" in forwarded.content


@pytest.mark.parametrize("path, param", [
    ("/events/faces/?quality_gte=\u0660.\u0665", "quality_gte"),
    ("/events/bodies/?quality_lte=\u0661", "quality_lte"),
    ("/events/faces/?looks_like=faceevent:1&threshold=\u0660.\u0665", "threshold"),
    ("/videos/?created_date_last_n_days=\u0661", "created_date_last_n_days"),
    ("/videos/?created_date_nth_full_week=\u0661", "created_date_nth_full_week"),
    ("/videos/count/?created_date_nth_work_week=\u0662", "created_date_nth_work_week"),
    ("/videos/?limit=\u0661\u0660", "limit"),
    ("/videos/?id_in=\u0661", "id_in"),
])
def test_query_numbers_with_non_ascii_digits_are_bad_param(db, path, param):
    client = token_client(_user("reader", superuser=True))
    assert_bad_param(client.get(path), param)
