"""Video archives CRUD as a client sees it: the page's examples field for field, validation, PUT/PATCH/DELETE."""

from __future__ import annotations

import copy
import json
from datetime import datetime

import pytest

from tests.conftest import token_client, upload
from tests.errors import assert_bad_param, assert_error
from videos.models import Camera, CameraGroup, Case, VideoArchive

# The page's "Add a new video archive" response example, copied verbatim.
PAGE_CREATE_RESPONSE = json.loads(
    """
{
 "id": 6,
 "camera_group": 1,
 "name": "Pitt&Jolie",
 "url": null,
 "camera": null,
 "processing_start_date": null,
 "active": false,
 "screenshot": "http://<findface-ip:port>/videos/6/screenshot/",
 "stream_settings": {
   "detectors": {
     "face": {
       "filter_max_size": 8192,
       "filter_min_quality": 0.45,
       "filter_min_size": 60,
       "fullframe_crop_rot": false,
       "fullframe_use_png": false,
       "jpeg_quality": 95,
       "overall_only": true,
       "post_best_track_frame": true,
       "post_best_track_normalize": true,
       "post_first_track_frame": false,
       "post_last_track_frame": false,
       "realtime_post_every_interval": false,
       "realtime_post_first_immediately": false,
       "realtime_post_interval": 1,
       "roi": "",
       "track_interpolate_bboxes": true,
       "track_max_duration_frames": 0,
       "track_miss_interval": 1,
       "track_overlap_threshold": 0.25,
       "track_send_history": false,
       "tracker_type": "simple_iou",
       "track_deep_sort_matching_threshold": 0.65,
       "track_deep_sort_filter_unconfirmed_tracks": true
     },
     "body": {
       "filter_max_size": 8192,
       "filter_min_quality": 0.6,
       "filter_min_size": 70,
       "fullframe_crop_rot": false,
       "fullframe_use_png": false,
       "jpeg_quality": 95,
       "overall_only": true,
       "post_best_track_frame": true,
       "post_best_track_normalize": true,
       "post_first_track_frame": false,
       "post_last_track_frame": false,
       "realtime_post_every_interval": false,
       "realtime_post_first_immediately": false,
       "realtime_post_interval": 1,
       "roi": "",
       "track_interpolate_bboxes": true,
       "track_max_duration_frames": 0,
       "track_miss_interval": 1,
       "track_overlap_threshold": 0.25,
       "track_send_history": false,
       "tracker_type": "simple_iou",
       "track_deep_sort_matching_threshold": 0.65,
       "track_deep_sort_filter_unconfirmed_tracks": true
     },
     "car": {
       "filter_max_size": 8192,
       "filter_min_quality": 0.73,
       "filter_min_size": 100,
       "fullframe_crop_rot": false,
       "fullframe_use_png": false,
       "jpeg_quality": 95,
       "overall_only": true,
       "post_best_track_frame": true,
       "post_best_track_normalize": true,
       "post_first_track_frame": false,
       "post_last_track_frame": false,
       "realtime_post_every_interval": false,
       "realtime_post_first_immediately": false,
       "realtime_post_interval": 1,
       "roi": "",
       "track_interpolate_bboxes": true,
       "track_max_duration_frames": 0,
       "track_miss_interval": 1,
       "track_overlap_threshold": 0.25,
       "track_send_history": false,
       "tracker_type": "simple_iou",
       "track_deep_sort_matching_threshold": 0.65,
       "track_deep_sort_filter_unconfirmed_tracks": true
     }
   }
 },
 "source_len": null,
 "health_status": {
   "enabled": false,
   "status": "WAITING_FOR_SYNC",
   "msg": "",
   "statistic": {},
   "code": "red",
   "code_desc": "Отсутствует задача в видео менеджере. Дождитесь синхронизации."
 },
 "finished": false,
 "queued": false,
 "face_count": 0,
 "file_size": 0,
 "created_date": "2023-01-18T08:38:52.119129Z",
 "body_count": 0,
 "car_count": 0,
 "case": null,
 "face_cluster_count": 0,
 "body_cluster_count": 0,
 "car_cluster_count": 0
}
"""
)

# The one result of the page's "List video archives" response example, copied verbatim.
PAGE_LIST_ITEM = json.loads(
    """
   {
     "id": 2,
     "camera_group": 1,
     "name": "file.mp4",
     "url": null,
     "camera": null,
     "processing_start_date": null,
     "active": false,
     "screenshot": "http://<findface-ip:port>/videos/2/screenshot/",
     "stream_settings": {
       "detectors": {
         "face": {
           "filter_max_size": 8192,
           "filter_min_quality": 0.45,
           "filter_min_size": 60,
           "fullframe_crop_rot": false,
           "fullframe_use_png": false,
           "jpeg_quality": 95,
           "overall_only": true,
           "post_best_track_frame": true,
           "post_best_track_normalize": true,
           "post_first_track_frame": false,
           "post_last_track_frame": false,
           "realtime_post_every_interval": false,
           "realtime_post_first_immediately": false,
           "realtime_post_interval": 1,
           "roi": "",
           "track_interpolate_bboxes": true,
           "track_max_duration_frames": 0,
           "track_miss_interval": 1,
           "track_overlap_threshold": 0.25,
           "track_send_history": false,
           "tracker_type": "simple_iou",
           "track_deep_sort_matching_threshold": 0.65,
           "track_deep_sort_filter_unconfirmed_tracks": true
         },
         "body": null,
         "car": null
       },
       "disable_drops": true,
       "ffmpeg_format": "",
       "ffmpeg_params": [],
       "imotion_threshold": 0,
       "play_speed": -1,
       "rot": "",
       "router_timeout_ms": 15000,
       "router_verify_ssl": true,
       "start_stream_timestamp": 0,
       "stream_data_filter": "",
       "use_stream_timestamp": false,
       "video_transform": "",
       "enable_recorder": false,
       "enable_liveness": false
     },
     "source_len": null,
     "health_status": {
       "enabled": false,
       "status": "DISABLED",
       "msg": "",
       "statistic": {
         "processed_duration": 0,
         "faces_posted": 0,
         "faces_failed": 0,
         "faces_not_posted": 0,
         "processing_fps": 0,
         "frames_dropped": 0,
         "frames_processed": 0,
         "frames_imotion_skipped": 0,
         "decoding_soft_errors": 0,
         "frame_width": 0,
         "frame_height": 0,
         "last_stream_timestamp": 0,
         "objects": null,
         "job_starts": 0
       },
       "code": "gray",
       "code_desc": "Обработка видео не запущена"
     },
     "finished": false,
     "queued": false,
     "face_count": 0,
     "file_size": 2259950,
     "created_date": "2023-01-12T08:57:36.811305Z",
     "body_count": 0,
     "car_count": 0,
     "case": null,
     "face_cluster_count": 0,
     "body_cluster_count": 0,
     "car_cluster_count": 0
   }
"""
)

# The full stream_settings of a new archive: the create example's detectors, the list example's other keys.
DEFAULT_STREAM_SETTINGS = {
    "detectors": copy.deepcopy(PAGE_CREATE_RESPONSE["stream_settings"]["detectors"]),
    **{key: value for key, value in PAGE_LIST_ITEM["stream_settings"].items() if key != "detectors"},
}

# The field order of the page's response examples (both examples agree).
FIELD_ORDER = list(PAGE_CREATE_RESPONSE)

# Statistic keys of api-notes.md "health_status"; the page's list example shows the face ones.
STATISTIC_KEYS = [
    "processed_duration",
    "faces_posted", "faces_failed", "faces_not_posted",
    "bodies_posted", "bodies_failed", "bodies_not_posted",
    "cars_posted", "cars_failed", "cars_not_posted",
    "processing_fps", "frames_dropped", "frames_processed", "frames_imotion_skipped", "decoding_soft_errors",
    "frame_width", "frame_height", "last_stream_timestamp", "objects", "job_starts",
]

NULL = type(None)
NUMBER = (int, float)
# Schema of the page's list: Python types a JSON value of each field may have ("┃null" adds None).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "camera_group": (int,),
    "name": (str, NULL),
    "url": (str, NULL),
    "camera": (int, NULL),
    "processing_start_date": (str, NULL),
    "active": (bool,),
    "screenshot": (str,),
    "stream_settings": (dict,),
    "source_len": (*NUMBER, NULL),
    "health_status": (dict,),
    "finished": (bool,),
    "queued": (bool,),
    "face_count": (int,),
    "file_size": (int,),
    "created_date": (str,),
    "body_count": (int,),
    "car_count": (int,),
    "case": (int, NULL),
    "face_cluster_count": (int, NULL),
    "body_cluster_count": (int, NULL),
    "car_cluster_count": (int, NULL),
}




def assert_types(body: dict) -> None:
    assert list(body) == FIELD_ORDER
    for name, types in FIELD_TYPES.items():
        value = body[name]
        assert isinstance(value, types), (name, value)
        if bool not in types:
            assert not isinstance(value, bool), (name, value)


def create(api, **data):
    return api.post("/videos/", data, format="json")


@pytest.fixture
def archive(api, default_group) -> dict:
    response = create(api, camera_group=default_group.pk, name="archive")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def other_group(db) -> CameraGroup:
    return CameraGroup.objects.create(name="Other group")


# --- create: the page's example


def test_create_response_equals_the_page_example(operator, default_group):
    api = token_client(operator, "ru")

    response = api.post("/videos/", {"camera_group": 1, "name": "Pitt&Jolie"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert_types(body)
    expected = copy.deepcopy(PAGE_CREATE_RESPONSE)
    expected["stream_settings"] = copy.deepcopy(DEFAULT_STREAM_SETTINGS)
    for name in FIELD_ORDER:
        if name in ("id", "created_date", "screenshot"):
            continue
        assert body[name] == expected[name], name
    # Field for field; the order of keys as on the page, down to the detectors' settings.
    assert body["stream_settings"]["detectors"] == PAGE_CREATE_RESPONSE["stream_settings"]["detectors"]
    assert list(body["stream_settings"]) == list(DEFAULT_STREAM_SETTINGS)
    assert list(body["stream_settings"]["detectors"]) == ["face", "body", "car"]
    for kind in ("face", "body", "car"):
        assert list(body["stream_settings"]["detectors"][kind]) == list(
            PAGE_CREATE_RESPONSE["stream_settings"]["detectors"][kind]
        )
    assert list(body["health_status"]) == list(PAGE_CREATE_RESPONSE["health_status"])


def test_create_response_id_date_and_screenshot(api, default_group):
    before = datetime.now().astimezone()
    body = create(api, camera_group=default_group.pk, name="Pitt&Jolie").json()

    assert VideoArchive.objects.filter(pk=body["id"]).exists()
    assert body["screenshot"] == f"http://testserver/videos/{body['id']}/screenshot/"
    created = datetime.fromisoformat(body["created_date"].replace("Z", "+00:00"))
    assert created.tzinfo is not None
    assert abs((created - before).total_seconds()) < 60


def test_create_integers_keep_integer_form(api, default_group):
    body = create(api, camera_group=default_group.pk, name="ints").json()
    face = body["stream_settings"]["detectors"]["face"]
    for key in ("filter_max_size", "filter_min_size", "jpeg_quality", "realtime_post_interval",
                "track_max_duration_frames", "track_miss_interval"):
        assert type(face[key]) is int, key
    for key in ("imotion_threshold", "play_speed", "router_timeout_ms", "start_stream_timestamp"):
        assert type(body["stream_settings"][key]) is int, key


def test_get_detail_equals_create_response_in_the_page_order(api, archive):
    response = api.get(f"/videos/{archive['id']}/")

    assert response.status_code == 200
    body = response.json()
    assert body == archive
    assert_types(body)
    # Also after a round trip through the database (jsonb does not keep key order on PostgreSQL).
    assert list(body["stream_settings"]) == list(DEFAULT_STREAM_SETTINGS)
    assert list(body["stream_settings"]["detectors"]) == ["face", "body", "car"]
    for kind in ("face", "body", "car"):
        assert list(body["stream_settings"]["detectors"][kind]) == list(
            PAGE_CREATE_RESPONSE["stream_settings"]["detectors"][kind]
        )


def test_list_contains_archive_in_the_page_shape(api, archive):
    response = api.get("/videos/")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["next_page", "prev_page", "results"]
    assert body["next_page"] is None and body["prev_page"] is None
    assert body["results"] == [archive]


# --- create: validation


@pytest.mark.parametrize("missing", ["camera_group", "name"])
def test_create_requires_camera_group_and_name(api, default_group, missing):
    data = {"camera_group": default_group.pk, "name": "x"}
    del data[missing]
    assert_bad_param(api.post("/videos/", data, format="json"), missing)


def test_create_with_empty_body_is_bad_param(api, default_group):
    body = assert_bad_param(api.post("/videos/", {}, format="json"), "camera_group")
    assert body["desc"] == "This field is required."


@pytest.mark.parametrize("name", [None, "a", "x" * 256, "Пит и Джоли 🎬", "日本語の名前", "Pitt&Jolie <b>"])
def test_create_accepts_names(api, default_group, name):
    response = create(api, camera_group=default_group.pk, name=name)

    assert response.status_code == 201, response.content
    assert response.json()["name"] == name
    assert api.get(f"/videos/{response.json()['id']}/").json()["name"] == name


@pytest.mark.parametrize("name", ["", "x" * 257, True, 1, ["a"], {"a": 1}])
def test_create_rejects_names(api, default_group, name):
    assert_bad_param(create(api, camera_group=default_group.pk, name=name), "name")
    assert not VideoArchive.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/video.mp4",
        "https://cdn.example.org:8443/path/clip.mp4?token=1",
        "http://93.184.216.34/stream.mp4",
        None,
    ],
)
def test_create_accepts_public_http_urls(api, default_group, url):
    response = create(api, camera_group=default_group.pk, name="u", url=url)

    assert response.status_code == 201, response.content
    assert response.json()["url"] == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "file:///etc/passwd",
        "ftp://example.com/video.mp4",
        "rtsp://example.com/stream",
        "gopher://example.com/",
        "example.com/video.mp4",
        "http://",
        "http://localhost/video.mp4",
        "http://localhost:8000/video.mp4",
        "http://127.0.0.1/video.mp4",
        "http://127.0.0.1:6379/",
        "http://10.0.0.5/video.mp4",
        "http://192.168.1.10/video.mp4",
        "http://[::1]/video.mp4",
        "http://169.254.169.254/latest/meta-data/",
        # Other spellings of loopback and private addresses that resolvers accept.
        "http://localhost./video.mp4",
        "http://foo.localhost/video.mp4",
        "http://127.1/video.mp4",
        "http://2130706433/video.mp4",
        "http://0x7f000001/video.mp4",
        "http://0177.0.0.1/video.mp4",
        "http://0/video.mp4",
        "http://0.0.0.0/video.mp4",
        "http://10.1/video.mp4",
        "http://[::ffff:127.0.0.1]/video.mp4",
        "http://[fe80::1%25eth0]/video.mp4",
        "http://user:pw@127.0.0.1/video.mp4",
        "http://example.com:99999/video.mp4",
        "http://[::1/video.mp4",
        1,
        True,
    ],
)
def test_create_rejects_urls(api, default_group, url):
    assert_bad_param(create(api, camera_group=default_group.pk, name="u", url=url), "url")
    assert not VideoArchive.objects.exists()


@pytest.mark.parametrize("value", [999999, 0, -1, 2**63, 2**70])
def test_create_rejects_unknown_camera_group(api, default_group, value):
    assert_bad_param(create(api, camera_group=value, name="x"), "camera_group")


@pytest.mark.parametrize("value", ["1", True, 1.5, None, [1], {"id": 1}])
def test_create_rejects_wrong_camera_group_types(api, default_group, value):
    assert_bad_param(create(api, camera_group=value, name="x"), "camera_group")


def test_create_with_camera_of_the_group(api, default_group):
    camera = Camera.objects.create(camera_group=default_group, name="cam")

    response = create(api, camera_group=default_group.pk, name="x", camera=camera.pk)

    assert response.status_code == 201, response.content
    assert response.json()["camera"] == camera.pk


def test_create_rejects_camera_of_another_group(api, default_group, other_group):
    camera = Camera.objects.create(camera_group=other_group, name="cam")

    assert_bad_param(create(api, camera_group=default_group.pk, name="x", camera=camera.pk), "camera")
    assert not VideoArchive.objects.exists()


@pytest.mark.parametrize("value", [999999, -1, 2**70, "1", True])
def test_create_rejects_bad_camera(api, default_group, value):
    Camera.objects.create(camera_group=default_group, name="cam")
    assert_bad_param(create(api, camera_group=default_group.pk, name="x", camera=value), "camera")


def test_create_with_case(api, default_group):
    case = Case.objects.create(name="case")

    response = create(api, camera_group=default_group.pk, name="x", case=case.pk)

    assert response.status_code == 201, response.content
    assert response.json()["case"] == case.pk


@pytest.mark.parametrize("value", [999999, -1, 2**70, "1", False])
def test_create_rejects_bad_case(api, default_group, value):
    assert_bad_param(create(api, camera_group=default_group.pk, name="x", case=value), "case")


@pytest.mark.parametrize("field", ["bogus", "stream_setting", "camera_group_id", "source_file", "job_state"])
def test_create_rejects_unknown_top_level_fields(api, default_group, field):
    assert_bad_param(create(api, camera_group=default_group.pk, name="x", **{field: 1}), field)
    assert not VideoArchive.objects.exists()


def test_create_ignores_read_only_fields(api, default_group):
    response = create(
        api,
        camera_group=default_group.pk,
        name="x",
        id=12345,
        created_date="2000-01-01T00:00:00Z",
        face_count=7,
        file_size=99,
        source_len=10.5,
        active=True,
        finished=True,
        queued=True,
        screenshot="http://evil/",
        health_status={"status": "COMPLETED"},
        processing_start_date="2000-01-01T00:00:00Z",
        face_cluster_count=3,
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != 12345
    assert body["face_count"] == 0 and body["file_size"] == 0 and body["source_len"] is None
    assert body["active"] is False and body["finished"] is False and body["queued"] is False
    assert body["processing_start_date"] is None and body["face_cluster_count"] == 0
    assert not body["created_date"].startswith("2000")
    assert body["health_status"]["status"] == "WAITING_FOR_SYNC"


@pytest.mark.parametrize("payload", [b"[]", b'"x"', b"1", b"null", b"{bad json"])
def test_create_rejects_a_body_that_is_not_an_object(api, default_group, payload):
    response = api.post("/videos/", payload, content_type="application/json")
    assert_error(response, 400, "BAD_PARAM", response.json()["param"])
    assert not VideoArchive.objects.exists()


# --- detail and 404


def test_get_unknown_archive_is_not_found(api, default_group):
    assert_error(api.get("/videos/999999/"), 404, "NOT_FOUND", "")


@pytest.mark.parametrize("path", ["/videos/abc/", "/videos/1.5/", "/videos/-1/", "/videos/99999999999999999999999/"])
def test_get_malformed_id_is_not_found(api, default_group, path):
    assert_error(api.get(path), 404, "NOT_FOUND", "")


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_writes_to_unknown_archive_are_not_found(api, default_group, method):
    response = getattr(api, method)("/videos/999999/", {"camera_group": 1, "name": "x"}, format="json")
    assert_error(response, 404, "NOT_FOUND", "")


# --- PUT


def test_put_replaces_the_whole_archive(api, default_group, other_group):
    camera = Camera.objects.create(camera_group=default_group, name="cam")
    created = create(
        api,
        camera_group=default_group.pk,
        name="old",
        url="http://example.com/a.mp4",
        camera=camera.pk,
        stream_settings={"play_speed": 2, "detectors": {"face": {"jpeg_quality": 50}, "body": None}},
    ).json()

    response = api.put(f"/videos/{created['id']}/", {"camera_group": other_group.pk, "name": "new"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["camera_group"] == other_group.pk
    assert body["name"] == "new"
    assert body["url"] is None
    assert body["camera"] is None
    assert body["case"] is None
    assert body["stream_settings"] == DEFAULT_STREAM_SETTINGS
    assert api.get(f"/videos/{created['id']}/").json() == body


def test_put_replaces_stream_settings_omitted_keys_take_defaults(api, default_group):
    created = create(
        api,
        camera_group=default_group.pk,
        name="x",
        stream_settings={"play_speed": 2, "rot": "100x100+0+0", "detectors": {"face": {"jpeg_quality": 50}}},
    ).json()

    response = api.put(
        f"/videos/{created['id']}/",
        {"camera_group": default_group.pk, "name": "x",
         "stream_settings": {"disable_drops": False, "detectors": {"face": {"roi": "10x10+1+1"}, "car": None}}},
        format="json",
    )

    assert response.status_code == 200, response.content
    expected = copy.deepcopy(DEFAULT_STREAM_SETTINGS)
    expected["disable_drops"] = False
    expected["detectors"]["face"]["roi"] = "10x10+1+1"
    expected["detectors"]["car"] = None
    assert response.json()["stream_settings"] == expected
    assert api.get(f"/videos/{created['id']}/").json()["stream_settings"] == expected


@pytest.mark.parametrize("missing", ["camera_group", "name"])
def test_put_requires_required_fields(api, archive, missing):
    data = {"camera_group": archive["camera_group"], "name": "new"}
    del data[missing]

    assert_bad_param(api.put(f"/videos/{archive['id']}/", data, format="json"), missing)
    assert api.get(f"/videos/{archive['id']}/").json() == archive


def test_put_back_what_get_returns(api, archive):
    body = api.get(f"/videos/{archive['id']}/").json()
    body["name"] = "renamed"

    response = api.put(f"/videos/{archive['id']}/", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {**archive, "name": "renamed"}


def test_put_rejects_unknown_fields(api, archive):
    response = api.put(
        f"/videos/{archive['id']}/", {"camera_group": 1, "name": "x", "bogus": 1}, format="json"
    )
    assert_bad_param(response, "bogus")


def test_put_rejects_camera_of_another_group(api, archive, other_group):
    camera = Camera.objects.create(camera_group=other_group, name="cam")
    response = api.put(
        f"/videos/{archive['id']}/", {"camera_group": archive["camera_group"], "name": "x", "camera": camera.pk},
        format="json",
    )
    assert_bad_param(response, "camera")


# --- PATCH


def test_patch_changes_only_the_sent_fields(api, default_group):
    camera = Camera.objects.create(camera_group=default_group, name="cam")
    created = create(
        api, camera_group=default_group.pk, name="old", url="http://example.com/a.mp4", camera=camera.pk,
        stream_settings={"play_speed": 2},
    ).json()

    response = api.patch(f"/videos/{created['id']}/", {"name": "new"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {**created, "name": "new"}
    assert api.get(f"/videos/{created['id']}/").json() == {**created, "name": "new"}


def test_patch_empty_body_changes_nothing(api, archive):
    response = api.patch(f"/videos/{archive['id']}/", {}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == archive


def test_patch_merges_stream_settings(api, default_group):
    created = create(
        api,
        camera_group=default_group.pk,
        name="x",
        stream_settings={"play_speed": 2, "detectors": {"face": {"jpeg_quality": 50}, "car": None}},
    ).json()

    response = api.patch(
        f"/videos/{created['id']}/",
        {"stream_settings": {"rot": "100x100+0+0", "detectors": {"face": {"roi": "10x10+1+1"}}}},
        format="json",
    )

    assert response.status_code == 200, response.content
    expected = copy.deepcopy(created["stream_settings"])
    expected["rot"] = "100x100+0+0"
    expected["detectors"]["face"]["roi"] = "10x10+1+1"
    settings = response.json()["stream_settings"]
    assert settings == expected
    assert settings["play_speed"] == 2
    assert settings["detectors"]["face"]["jpeg_quality"] == 50
    assert settings["detectors"]["car"] is None
    assert api.get(f"/videos/{created['id']}/").json()["stream_settings"] == expected


def test_patch_turns_a_detector_off_and_on_again(api, archive):
    url = f"/videos/{archive['id']}/"

    off = api.patch(url, {"stream_settings": {"detectors": {"body": None}}}, format="json")
    assert off.status_code == 200, off.content
    detectors = off.json()["stream_settings"]["detectors"]
    assert detectors["body"] is None
    assert detectors["face"] == DEFAULT_STREAM_SETTINGS["detectors"]["face"]
    assert detectors["car"] == DEFAULT_STREAM_SETTINGS["detectors"]["car"]

    on = api.patch(url, {"stream_settings": {"detectors": {"body": {"jpeg_quality": 80}}}}, format="json")
    assert on.status_code == 200, on.content
    body = on.json()["stream_settings"]["detectors"]["body"]
    assert body == {**DEFAULT_STREAM_SETTINGS["detectors"]["body"], "jpeg_quality": 80}


def test_patch_min_size_checked_against_the_stored_max_size(api, default_group):
    created = create(
        api, camera_group=default_group.pk, name="x",
        stream_settings={"detectors": {"face": {"filter_max_size": 10000}}},
    ).json()
    url = f"/videos/{created['id']}/"

    ok = api.patch(url, {"stream_settings": {"detectors": {"face": {"filter_min_size": 9000}}}}, format="json")
    assert ok.status_code == 200, ok.content
    face = ok.json()["stream_settings"]["detectors"]["face"]
    assert (face["filter_min_size"], face["filter_max_size"]) == (9000, 10000)

    bad = api.patch(url, {"stream_settings": {"detectors": {"face": {"filter_max_size": 100}}}}, format="json")
    assert_bad_param(bad, "stream_settings.detectors.face.filter_min_size")
    assert api.get(url).json()["stream_settings"]["detectors"]["face"] == face


def test_patch_rejects_invalid_stream_settings_and_keeps_the_stored_ones(api, archive):
    url = f"/videos/{archive['id']}/"

    response = api.patch(url, {"stream_settings": {"detectors": {"face": {"bogus": 1}}}}, format="json")
    assert_bad_param(response, "stream_settings.detectors.face.bogus")
    response = api.patch(url, {"stream_settings": {"play_speed": 0}}, format="json")
    assert_bad_param(response, "stream_settings.play_speed")
    response = api.patch(url, {"stream_settings": None}, format="json")
    assert_bad_param(response, "stream_settings")
    assert api.get(url).json() == archive


@pytest.mark.parametrize(
    ("data", "param"),
    [({"name": ""}, "name"), ({"camera_group": 999999}, "camera_group"), ({"url": "ftp://x/"}, "url"),
     ({"bogus": 1}, "bogus"), ({"name": True}, "name"), ({"camera_group": None}, "camera_group")],
)
def test_patch_validates_the_sent_fields(api, archive, data, param):
    assert_bad_param(api.patch(f"/videos/{archive['id']}/", data, format="json"), param)
    assert api.get(f"/videos/{archive['id']}/").json() == archive


def test_patch_name_to_null(api, archive):
    response = api.patch(f"/videos/{archive['id']}/", {"name": None}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["name"] is None


def test_patch_camera_checked_against_the_stored_group(api, archive, other_group, default_group):
    foreign = Camera.objects.create(camera_group=other_group, name="foreign")
    own = Camera.objects.create(camera_group=default_group, name="own")
    url = f"/videos/{archive['id']}/"

    assert_bad_param(api.patch(url, {"camera": foreign.pk}, format="json"), "camera")
    response = api.patch(url, {"camera": own.pk}, format="json")
    assert response.status_code == 200 and response.json()["camera"] == own.pk
    # Moving to another group while the camera stays would break the rule as well.
    assert_bad_param(api.patch(url, {"camera_group": other_group.pk}, format="json"), "camera")
    response = api.patch(url, {"camera_group": other_group.pk, "camera": foreign.pk}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["camera_group"], response.json()["camera"]) == (other_group.pk, foreign.pk)


# --- DELETE


def test_delete_removes_the_archive(api, archive):
    url = f"/videos/{archive['id']}/"

    response = api.delete(url)

    assert response.status_code == 204
    assert response.content == b""
    assert not VideoArchive.objects.filter(pk=archive["id"]).exists()
    assert_error(api.get(url), 404, "NOT_FOUND", "")
    assert_error(api.delete(url), 404, "NOT_FOUND", "")


def test_delete_removes_the_source_file(
    api, archive, video_factory, media_root, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert upload(api, archive["id"], video_factory()).status_code == 201
    stored = VideoArchive.objects.get(pk=archive["id"]).source_file.name
    assert (media_root / stored).exists()

    # The file goes once the deletion is committed.
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/videos/{archive['id']}/").status_code == 204

    assert not (media_root / stored).exists()


# --- count


def test_count(api, default_group, other_group):
    assert api.get("/videos/count/").json() == {"count": 0}
    for index in range(3):
        create(api, camera_group=default_group.pk, name=f"a{index}")
    create(api, camera_group=other_group.pk, name="b")

    response = api.get("/videos/count/")

    assert response.status_code == 200
    assert response.json() == {"count": 4}
    assert api.get("/videos/count/?name=a1").json() == {"count": 1}
    assert api.get(f"/videos/count/?camera_groups={other_group.pk}").json() == {"count": 1}
    assert_bad_param(api.get("/videos/count/?bogus=1"), "bogus")


# --- after an upload


def test_uploaded_archive_is_disabled_gray_with_zeroed_statistic(operator, default_group, video_factory):
    api = token_client(operator, "ru")
    path = video_factory(frames=50, fps=25)
    archive_id = create(api, camera_group=default_group.pk, name="file.mp4").json()["id"]

    assert upload(api, archive_id, path).status_code == 201
    body = api.get(f"/videos/{archive_id}/").json()

    assert_types(body)
    health = body["health_status"]
    assert list(health) == list(PAGE_LIST_ITEM["health_status"])
    assert {key: value for key, value in health.items() if key != "statistic"} == {
        key: value for key, value in PAGE_LIST_ITEM["health_status"].items() if key != "statistic"
    }
    statistic = health["statistic"]
    # The page's keys in its order, then ours (README "API": progress and eta_seconds).
    assert list(statistic) == STATISTIC_KEYS + ["progress", "eta_seconds"]
    assert (statistic["progress"], statistic["eta_seconds"]) == (0, None)
    # Every key the page's example shows has the example's value (zero; objects null as on the page).
    for key, value in PAGE_LIST_ITEM["health_status"]["statistic"].items():
        assert statistic[key] == value, key
    for key in STATISTIC_KEYS:
        if key != "objects":
            assert statistic[key] == 0 and not isinstance(statistic[key], bool), key
    assert body["file_size"] == path.stat().st_size
    assert body["source_len"] == pytest.approx(50 / 25, abs=0.1)
    assert (body["active"], body["queued"], body["finished"]) == (False, False, False)
    assert body["processing_start_date"] is None
    assert body["face_count"] == body["body_count"] == body["car_count"] == 0


def test_uploaded_archive_in_the_list_matches_the_page_list_example(operator, default_group, video_factory):
    api = token_client(operator, "ru")
    path = video_factory(frames=25, fps=25)
    archive_id = create(
        api, camera_group=default_group.pk, name="file.mp4", stream_settings={"detectors": {"body": None, "car": None}}
    ).json()["id"]
    assert upload(api, archive_id, path).status_code == 201

    item = api.get("/videos/").json()["results"][0]

    expected = copy.deepcopy(PAGE_LIST_ITEM)
    for name in ("id", "created_date", "screenshot", "file_size", "source_len", "health_status"):
        expected[name] = item[name]
    assert item == expected
    assert list(item) == list(PAGE_LIST_ITEM)
    assert item["stream_settings"] == PAGE_LIST_ITEM["stream_settings"]
    assert item["file_size"] == path.stat().st_size
