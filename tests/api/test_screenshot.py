"""GET/POST /videos/{id}/screenshot/: a JPEG frame of the source, scaled, cropped, cached."""

from __future__ import annotations

from urllib.parse import urlencode

import cv2
import numpy as np
import pytest

from tests.conftest import make_video, upload
from tests.errors import assert_error
from videos.models import VideoArchive


def decode(response) -> np.ndarray:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def size(response) -> tuple[int, int]:
    height, width = decode(response).shape[:2]
    return width, height


def shot(client, archive_id: int, method: str = "get", **params):
    """GET or POST the screenshot, parameters in the query string either way."""
    query = f"?{urlencode(params)}" if params else ""
    return getattr(client, method)(f"/videos/{archive_id}/screenshot/{query}")


@pytest.fixture
def archive(api, default_group, video_factory) -> int:
    archive_id = api.post("/videos/", {"camera_group": default_group.pk, "name": "clip"}, format="json").json()["id"]
    assert upload(api, archive_id, video_factory(width=320, height=240)).status_code == 201
    return archive_id


def test_screenshot_is_a_jpeg_of_the_source_size(api, archive):
    assert size(shot(api, archive)) == (320, 240)


def test_screenshot_shows_the_video_frame(api, archive):
    image = decode(shot(api, archive, quality=100))
    # The test video is a dark background with a white 40x40 box a quarter of the way down.
    assert image[5, 5].mean() < 60
    row = image[240 // 4 + 20]
    assert row.max() > 200


def test_screenshot_post_renders_too(api, archive):
    assert size(shot(api, archive, method="post")) == (320, 240)


def test_width_only_keeps_the_aspect_ratio(api, archive):
    assert size(shot(api, archive, width=160)) == (160, 120)


def test_height_only_keeps_the_aspect_ratio(api, archive):
    assert size(shot(api, archive, height=60)) == (80, 60)


def test_width_and_height_are_exact(api, archive):
    assert size(shot(api, archive, width=100, height=100)) == (100, 100)


def test_upscaling_is_allowed(api, archive):
    assert size(shot(api, archive, width=640)) == (640, 480)


def test_quality_changes_the_byte_size(api, archive):
    low = shot(api, archive, quality=5)
    high = shot(api, archive, quality=100)

    decode(low), decode(high)
    assert len(low.content) < len(high.content)


def test_rot_crops_the_frame(api, archive):
    assert size(shot(api, archive, rot="100x50+10+10")) == (100, 50)


def test_rot_then_width_scales_the_crop(api, archive):
    assert size(shot(api, archive, rot="100x50+10+10", width=50)) == (50, 25)


def test_crop_takes_the_right_region(api, archive):
    # The white box sits at rows 60..100; a crop of rows 0..40 is all dark, one of rows 60..100 is not.
    dark = decode(shot(api, archive, rot="320x40+0+0", quality=100))
    box = decode(shot(api, archive, rot="320x40+0+60", quality=100))
    assert dark.max() < 100
    assert box.max() > 200


def test_crop_of_the_whole_frame_is_allowed(api, archive):
    assert size(shot(api, archive, rot="320x240+0+0")) == (320, 240)


@pytest.mark.parametrize("rot", ["400x50+0+0", "100x50+300+0", "100x50+0+200", "320x240+1+0"])
def test_crop_outside_the_frame_is_bad_param(api, archive, rot):
    body = assert_error(shot(api, archive, rot=rot), 400, "BAD_PARAM")
    assert body["param"] == "rot"


@pytest.mark.parametrize("rot", ["100x50", "ax50+0+0", "100x50+-1+0", "100*50+1+1"])
def test_malformed_rot_is_bad_param(api, archive, rot):
    assert assert_error(shot(api, archive, rot=rot), 400, "BAD_PARAM")["param"] == "rot"


def test_zero_sized_crop_is_bad_param(api, archive):
    assert_error(shot(api, archive, rot="0x50+0+0"), 400, "BAD_PARAM")


@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_query_parameter_is_bad_param(api, archive, method):
    body = assert_error(shot(api, archive, method=method, size=100), 400, "BAD_PARAM")
    assert body["param"] == "size"


@pytest.mark.parametrize("quality", ["0", "101", "-1", "high", "50.5"])
def test_quality_out_of_range_is_bad_param(api, archive, quality):
    assert assert_error(shot(api, archive, quality=quality), 400, "BAD_PARAM")["param"] == "quality"


@pytest.mark.parametrize("param, value", [("width", "0"), ("width", "-5"), ("height", "abc"), ("width", "100000")])
def test_bad_size_is_bad_param(api, archive, param, value):
    assert assert_error(shot(api, archive, **{param: value}), 400, "BAD_PARAM")["param"] == param


@pytest.mark.parametrize("quality", ["1", "100"])
def test_quality_bounds_are_accepted(api, archive, quality):
    decode(shot(api, archive, quality=quality))


def test_no_source_is_not_found(api, default_group):
    archive_id = api.post("/videos/", {"camera_group": default_group.pk, "name": "empty"}, format="json").json()["id"]

    assert_error(shot(api, archive_id), 404, "NOT_FOUND")
    assert_error(shot(api, archive_id, method="post"), 404, "NOT_FOUND")


def test_unknown_archive_is_not_found(api, default_group):
    assert_error(shot(api, 987654), 404, "NOT_FOUND")


def test_after_the_source_is_deleted_there_is_no_screenshot(api, archive, django_capture_on_commit_callbacks):
    assert shot(api, archive).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/videos/{archive}/file/").status_code == 204

    assert_error(shot(api, archive), 404, "NOT_FOUND")


def test_the_screenshot_url_of_the_archive_serves_the_screenshot(api, archive):
    url = api.get(f"/videos/{archive}/").json()["screenshot"]

    assert url.endswith(f"/videos/{archive}/screenshot/")
    assert size(api.get(url)) == (320, 240)


# --- caching


def replace_behind_its_back(archive_id: int, tmp_path, **video) -> None:
    """Overwrite the stored source file with another video, as nothing in the API would."""
    stored = VideoArchive.objects.get(pk=archive_id).source_file.path
    other = make_video(tmp_path / "other.mp4", **video)
    with open(stored, "wb") as target:
        target.write(other.read_bytes())


def test_get_is_cached_and_post_renders_fresh(api, archive, tmp_path):
    first = shot(api, archive)
    assert size(first) == (320, 240)
    replace_behind_its_back(archive, tmp_path, width=160, height=120)

    cached = shot(api, archive)
    assert cached.content == first.content

    fresh = shot(api, archive, method="post")
    assert size(fresh) == (160, 120)


def test_cache_is_per_parameters(api, archive, tmp_path):
    small = shot(api, archive, width=100)
    replace_behind_its_back(archive, tmp_path, width=160, height=120)

    assert shot(api, archive, width=100).content == small.content
    # Parameters never asked for before are rendered from the file as it is now.
    assert size(shot(api, archive)) == (160, 120)


def test_reupload_invalidates_the_cache(api, archive, video_factory, django_capture_on_commit_callbacks):
    assert size(shot(api, archive)) == (320, 240)
    assert size(shot(api, archive, width=64)) == (64, 48)

    with django_capture_on_commit_callbacks(execute=True):
        assert upload(api, archive, video_factory("new.mp4", width=160, height=90)).status_code == 201

    assert size(shot(api, archive)) == (160, 90)
    assert size(shot(api, archive, width=64)) == (64, 36)


def test_reupload_invalidates_the_cache_without_commit_hooks(api, archive, video_factory):
    assert size(shot(api, archive)) == (320, 240)

    assert upload(api, archive, video_factory("new.mp4", width=160, height=90)).status_code == 201

    assert size(shot(api, archive)) == (160, 90)


def test_a_source_that_is_no_longer_a_video_is_a_conflict_on_post(api, archive):
    stored = VideoArchive.objects.get(pk=archive).source_file.path
    with open(stored, "wb") as target:
        target.write(b"garbage" * 1000)

    assert_error(shot(api, archive, method="post"), 409, "CONFLICT")


# --- who may


def test_viewer_can_take_screenshots(viewer_api, archive):
    assert size(shot(viewer_api, archive)) == (320, 240)
    assert size(shot(viewer_api, archive, method="post")) == (320, 240)


@pytest.mark.parametrize("method", ["get", "post"])
def test_outsider_cannot(outsider_api, archive, method):
    assert_error(shot(outsider_api, archive, method=method), 403, "PERMISSION_DENIED")


def test_anonymous_cannot(anon_api, archive):
    assert_error(shot(anon_api, archive), 401, "UNAUTHORIZED")
