"""`stream_settings` of a video archive through the API: excess keys, JSON types, defaults and value rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rest_framework.fields import Field

from processing.config import DetectorConfig, PipelineSettings
from processing.stream_settings import DEFAULTS_BY_VERSION, TOP_KEYS, complete_stream_settings, current_version
from tests.api.test_archives import DEFAULT_STREAM_SETTINGS, PAGE_CREATE_RESPONSE, PAGE_LIST_ITEM, assert_bad_param
from videos import jobs
from videos.models import JobState, VideoArchive

DETECTOR_KINDS = ("face", "body", "car")


# Every key of a detector's settings with its JSON kind and a valid value other than the default.
DETECTOR_FIELDS: dict[str, tuple[str, Any]] = {
    "filter_max_size": ("int", 4000),
    "filter_min_quality": ("number", 0.5),
    "filter_min_size": ("int", 30),
    "fullframe_crop_rot": ("bool", True),
    "fullframe_use_png": ("bool", True),
    "jpeg_quality": ("int", 80),
    "overall_only": ("bool", False),
    "post_best_track_frame": ("bool", False),
    "post_best_track_normalize": ("bool", False),
    "post_first_track_frame": ("bool", True),
    "post_last_track_frame": ("bool", True),
    "realtime_post_every_interval": ("bool", True),
    "realtime_post_first_immediately": ("bool", True),
    "realtime_post_interval": ("number", 2.5),
    "roi": ("str", "640x480+0+0"),
    "track_interpolate_bboxes": ("bool", False),
    "track_max_duration_frames": ("int", 100),
    "track_miss_interval": ("number", 2.5),
    "track_overlap_threshold": ("number", 0.5),
    "track_send_history": ("bool", True),
    "tracker_type": ("str", "deep_sort"),
    "track_deep_sort_matching_threshold": ("number", 0.7),
    "track_deep_sort_filter_unconfirmed_tracks": ("bool", False),
}

# Every top-level key with its JSON kind and a valid value other than the default.
TOP_FIELDS: dict[str, tuple[str, Any]] = {
    "detectors": ("object", {"face": None}),
    "disable_drops": ("bool", False),
    "ffmpeg_format": ("str", "mp4"),
    "ffmpeg_params": ("list", ["-rtsp_transport tcp"]),
    "imotion_threshold": ("number", 0.5),
    "play_speed": ("number", 2),
    "rot": ("str", "100x100+10+10"),
    "router_timeout_ms": ("int", 5000),
    "router_verify_ssl": ("bool", False),
    "start_stream_timestamp": ("number", 1700000000),
    "stream_data_filter": ("str", "filter"),
    "use_stream_timestamp": ("bool", True),
    "video_transform": ("str", "Rotate90"),
    "enable_recorder": ("bool", True),
    "enable_liveness": ("bool", True),
}

# JSON values of the wrong type for each kind.
WRONG_TYPES: dict[str, list[Any]] = {
    "int": ["10", "", True, False, 1.5, [], [1], {}, None],
    "number": ["0.5", "1", True, [], {}, None],
    "bool": [1, 0, "true", "false", "", None, [], {}],
    "str": [1, 0.5, True, [], ["a"], {}, None],
    "list": ["-rtsp_transport tcp", 1, True, {}, None],
    "object": [[], "x", 1, True],
}

DETECTOR_LEVELS = {f"detectors.{kind}": ("detectors", kind) for kind in DETECTOR_KINDS}


def nest(path: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    """`value` put at `path` inside stream_settings."""
    for key in reversed(path):
        value = {key: value}
    return value


def post(api, group, stream_settings: Any):
    return api.post("/videos/", {"camera_group": group.pk, "name": "s", "stream_settings": stream_settings},
                    format="json")


def created_settings(api, group, stream_settings: Any) -> dict[str, Any]:
    response = post(api, group, stream_settings)
    assert response.status_code == 201, response.content
    return response.json()["stream_settings"]


def test_the_tables_cover_every_key_of_the_page():
    assert set(TOP_FIELDS) == set(PAGE_LIST_ITEM["stream_settings"])
    assert set(TOP_FIELDS) == set(DEFAULT_STREAM_SETTINGS)
    for kind in DETECTOR_KINDS:
        assert set(DETECTOR_FIELDS) == set(PAGE_CREATE_RESPONSE["stream_settings"]["detectors"][kind])


# --- excess keys


EXCESS_CASES = (
    [pytest.param((), key, id=f"top-{key}") for key in TOP_FIELDS]
    + [pytest.param(("detectors",), kind, id=f"detectors-{kind}") for kind in DETECTOR_KINDS]
    + [
        pytest.param(("detectors", kind), key, id=f"{kind}-{key}")
        for kind in DETECTOR_KINDS
        for key in DETECTOR_FIELDS
    ]
)


def _valid_value(path: tuple[str, ...], key: str) -> Any:
    if path == ():
        return TOP_FIELDS[key][1]
    if path == ("detectors",):
        return {}
    return DETECTOR_FIELDS[key][1]


@pytest.mark.parametrize(("path", "key"), EXCESS_CASES)
def test_excess_key_next_to_a_known_key_is_rejected(api, default_group, path, key):
    settings = nest(path, {key: _valid_value(path, key), "bogus": 1})

    body = assert_bad_param(post(api, default_group, settings), ".".join(("stream_settings", *path, "bogus")))

    assert body["desc"] == "Unknown field."


@pytest.mark.parametrize(("path", "key"), EXCESS_CASES)
def test_excess_key_is_rejected_on_patch_too(api, default_group, path, key):
    archive_id = post(api, default_group, {}).json()["id"]
    settings = nest(path, {key: _valid_value(path, key), "bogus": 1})

    response = api.patch(f"/videos/{archive_id}/", {"stream_settings": settings}, format="json")

    assert_bad_param(response, ".".join(("stream_settings", *path, "bogus")))


@pytest.mark.parametrize(
    ("stream", "param"),
    [
        ({"Detectors": {}}, "stream_settings.Detectors"),
        ({"detectors": {"person": {}}}, "stream_settings.detectors.person"),
        ({"detectors": {"Face": {}}}, "stream_settings.detectors.Face"),
        ({"detectors": {"face": {"roi ": ""}}}, "stream_settings.detectors.face.roi "),
        ({"detectors": {"body": {"face": {}}}}, "stream_settings.detectors.body.face"),
        ({"detectors": {"car": {"detectors": {}}}}, "stream_settings.detectors.car.detectors"),
        ({"roi": ""}, "stream_settings.roi"),
        ({"face": {}}, "stream_settings.face"),
        ({"": 1}, "stream_settings."),
    ],
)
def test_excess_key_variants(api, default_group, stream, param):
    assert_bad_param(post(api, default_group, stream), param)


# --- JSON types


TYPE_CASES = (
    [
        pytest.param((), key, value, id=f"top-{key}-{value!r}")
        for key, (kind, _valid) in TOP_FIELDS.items()
        for value in WRONG_TYPES[kind]
    ]
    + [
        pytest.param(("detectors",), kind, value, id=f"detectors-{kind}-{value!r}")
        for kind in DETECTOR_KINDS
        for value in WRONG_TYPES["object"]
    ]
    + [
        pytest.param(("detectors", detector), key, value, id=f"{detector}-{key}-{value!r}")
        for detector in DETECTOR_KINDS
        for key, (kind, _valid) in DETECTOR_FIELDS.items()
        for value in WRONG_TYPES[kind]
    ]
)


@pytest.mark.parametrize(("path", "key", "value"), TYPE_CASES)
def test_wrong_json_type_is_rejected_with_its_dotted_param(api, default_group, path, key, value):
    response = post(api, default_group, nest(path, {key: value}))

    assert_bad_param(response, ".".join(("stream_settings", *path, key)))


@pytest.mark.parametrize("value", [[], "x", 1, True, None])
def test_stream_settings_must_be_an_object(api, default_group, value):
    assert_bad_param(post(api, default_group, value), "stream_settings")


def test_detectors_null_is_rejected(api, default_group):
    assert_bad_param(post(api, default_group, {"detectors": None}), "stream_settings.detectors")


@pytest.mark.parametrize("value", [[1], [None], [["-rtsp_transport", "tcp"]], [{"-rtsp_transport": "tcp"}]])
def test_ffmpeg_params_items_must_be_strings(api, default_group, value):
    # The index of the offending item is part of the dotted param.
    assert_bad_param(post(api, default_group, {"ffmpeg_params": value}), "stream_settings.ffmpeg_params.0")


def test_ffmpeg_params_names_the_offending_item(api, default_group):
    response = post(api, default_group, {"ffmpeg_params": ["-rtsp_transport tcp", 5]})

    assert_bad_param(response, "stream_settings.ffmpeg_params.1")


# --- valid values and defaults


@pytest.mark.parametrize(("key", "value"), [pytest.param(k, v, id=k) for k, (_kind, v) in TOP_FIELDS.items()])
def test_each_top_level_key_is_stored_and_the_rest_defaulted(api, default_group, key, value):
    response = post(api, default_group, {key: value})

    assert response.status_code == 201, response.content
    expected = copy.deepcopy(DEFAULT_STREAM_SETTINGS)
    if key == "detectors":
        expected["detectors"]["face"] = None
    else:
        expected[key] = value
    assert response.json()["stream_settings"] == expected
    assert api.get(f"/videos/{response.json()['id']}/").json()["stream_settings"] == expected


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
@pytest.mark.parametrize(("key", "value"), [pytest.param(k, v, id=k) for k, (_kind, v) in DETECTOR_FIELDS.items()])
def test_each_detector_key_is_stored_and_the_rest_defaulted(api, default_group, kind, key, value):
    response = post(api, default_group, {"detectors": {kind: {key: value}}})

    assert response.status_code == 201, response.content
    expected = copy.deepcopy(DEFAULT_STREAM_SETTINGS)
    expected["detectors"][kind][key] = value
    assert response.json()["stream_settings"] == expected
    assert api.get(f"/videos/{response.json()['id']}/").json()["stream_settings"] == expected


@pytest.mark.parametrize("stream", [{}, {"detectors": {}}, {"detectors": {"face": {}, "body": {}, "car": {}}}])
def test_omitted_keys_take_the_page_defaults(api, default_group, stream):
    assert created_settings(api, default_group, stream) == DEFAULT_STREAM_SETTINGS


@pytest.mark.parametrize(
    ("kind", "min_quality", "min_size"), [("face", 0.45, 60), ("body", 0.6, 70), ("car", 0.73, 100)]
)
def test_detector_defaults(api, default_group, kind, min_quality, min_size):
    settings = created_settings(api, default_group, {"detectors": {kind: {"jpeg_quality": 50}}})

    detector = settings["detectors"][kind]
    assert detector["filter_min_quality"] == min_quality
    assert detector["filter_min_size"] == min_size
    assert detector["jpeg_quality"] == 50
    assert detector == {**PAGE_CREATE_RESPONSE["stream_settings"]["detectors"][kind], "jpeg_quality": 50}


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
def test_a_detector_set_to_null_is_off_and_the_others_default_on(api, default_group, kind):
    settings = created_settings(api, default_group, {"detectors": {kind: None}})

    assert settings["detectors"][kind] is None
    for other in DETECTOR_KINDS:
        if other != kind:
            assert settings["detectors"][other] == PAGE_CREATE_RESPONSE["stream_settings"]["detectors"][other]


def test_all_detectors_off(api, default_group):
    settings = created_settings(api, default_group, {"detectors": {"face": None, "body": None, "car": None}})

    assert settings["detectors"] == {"face": None, "body": None, "car": None}


def test_key_order_follows_the_page_whatever_the_client_sent(api, default_group):
    sent = {
        "enable_liveness": True,
        "rot": "",
        "detectors": {"car": {"tracker_type": "simple_iou", "roi": ""}, "face": {"roi": "", "jpeg_quality": 90}},
    }
    archive_id = post(api, default_group, sent).json()["id"]

    settings = api.get(f"/videos/{archive_id}/").json()["stream_settings"]

    assert list(settings) == list(DEFAULT_STREAM_SETTINGS)
    assert list(settings["detectors"]) == list(DETECTOR_KINDS)
    for kind in DETECTOR_KINDS:
        assert list(settings["detectors"][kind]) == list(DETECTOR_FIELDS)


def test_integers_keep_integer_form(api, default_group):
    archive = post(
        api,
        default_group,
        {"play_speed": 2, "imotion_threshold": 3, "start_stream_timestamp": 10,
         "detectors": {"face": {"realtime_post_interval": 1, "filter_min_quality": 1, "track_overlap_threshold": 0},
                       "body": {"realtime_post_interval": 0.5}}},
    ).json()

    for body in (archive, api.get(f"/videos/{archive['id']}/").json()):
        settings = body["stream_settings"]
        face = settings["detectors"]["face"]
        for value, expected in [
            (face["realtime_post_interval"], 1), (face["filter_min_quality"], 1), (face["track_overlap_threshold"], 0),
            (settings["play_speed"], 2), (settings["imotion_threshold"], 3), (settings["start_stream_timestamp"], 10),
        ]:
            assert value == expected and type(value) is int
        assert settings["detectors"]["body"]["realtime_post_interval"] == 0.5
        assert settings["detectors"]["car"]["realtime_post_interval"] == 1
        assert type(settings["detectors"]["car"]["realtime_post_interval"]) is int


def test_integer_form_in_the_raw_json(api, default_group):
    response = post(api, default_group, {"detectors": {"face": {"realtime_post_interval": 1}}})

    raw = response.content.decode()
    assert '"realtime_post_interval":1,' in raw.replace(" ", "")
    assert '"realtime_post_interval":1.0' not in raw.replace(" ", "")


# --- value rules


def _check(api, group, settings: dict[str, Any], ok: bool, param: str) -> None:
    response = post(api, group, settings)
    if ok:
        assert response.status_code == 201, response.content
    else:
        assert_bad_param(response, param)


GEOMETRIES = [
    ("", True), ("640x480+0+0", True), ("1x1+10+20", True), ("1920x1080+100+200", True),
    ("640x480", False), ("a", False), ("0x10+0+0", False), ("10x0+0+0", False), ("-1x1+0+0", False),
    ("640x480+0", False), ("640x480-1+0", False), ("640X480+0+0", False), ("640 x480+0+0", False),
    ("1.5x2+0+0", False), ("640x480+0+0+0", False), ("640x480+0+0\n1x1+0+0", False),
]


@pytest.mark.parametrize(("value", "ok"), GEOMETRIES)
def test_rot(api, default_group, value, ok):
    _check(api, default_group, {"rot": value}, ok, "stream_settings.rot")


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
@pytest.mark.parametrize(("value", "ok"), GEOMETRIES)
def test_roi(api, default_group, kind, value, ok):
    _check(api, default_group, {"detectors": {kind: {"roi": value}}}, ok, f"stream_settings.detectors.{kind}.roi")


VIDEO_TRANSFORMS = ["", "FlipHorizontal", "FlipVertical", "Rotate90", "Rotate180", "Rotate270", "Transpose",
                    "Transverse"]


@pytest.mark.parametrize("value", VIDEO_TRANSFORMS)
def test_video_transform_allowed_values(api, default_group, value):
    assert created_settings(api, default_group, {"video_transform": value})["video_transform"] == value


@pytest.mark.parametrize("value", ["rotate90", "Rotate45", "flip", "Flip Horizontal", "Rotate90,FlipVertical", "none"])
def test_video_transform_other_values_rejected(api, default_group, value):
    assert_bad_param(post(api, default_group, {"video_transform": value}), "stream_settings.video_transform")


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
@pytest.mark.parametrize(
    ("value", "ok"), [("simple_iou", True), ("deep_sort", True), ("", False), ("kalman", False), ("Simple_IOU", False)]
)
def test_tracker_type(api, default_group, kind, value, ok):
    _check(api, default_group, {"detectors": {kind: {"tracker_type": value}}}, ok,
           f"stream_settings.detectors.{kind}.tracker_type")


@pytest.mark.parametrize(
    ("value", "ok"), [(-1, True), (0.5, True), (1, True), (2, True), (0.01, True),
                      (0, False), (-2, False), (-0.5, False), (-1.5, False)]
)
def test_play_speed(api, default_group, value, ok):
    _check(api, default_group, {"play_speed": value}, ok, "stream_settings.play_speed")


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
@pytest.mark.parametrize(("value", "ok"), [(1, True), (50, True), (100, True), (0, False), (101, False), (-1, False)])
def test_jpeg_quality(api, default_group, kind, value, ok):
    _check(api, default_group, {"detectors": {kind: {"jpeg_quality": value}}}, ok,
           f"stream_settings.detectors.{kind}.jpeg_quality")


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
@pytest.mark.parametrize("key", ["filter_min_quality", "track_overlap_threshold", "track_deep_sort_matching_threshold"])
@pytest.mark.parametrize(
    ("value", "ok"), [(0, True), (0.5, True), (1, True), (-0.01, False), (1.01, False), (2, False)]
)
def test_quality_thresholds_between_0_and_1(api, default_group, kind, key, value, ok):
    _check(api, default_group, {"detectors": {kind: {key: value}}}, ok, f"stream_settings.detectors.{kind}.{key}")


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
@pytest.mark.parametrize(("min_size", "max_size", "ok"), [(100, 100, True), (10, 100, True), (200, 100, False)])
def test_filter_min_size_must_not_exceed_filter_max_size(api, default_group, kind, min_size, max_size, ok):
    settings = {"detectors": {kind: {"filter_min_size": min_size, "filter_max_size": max_size}}}
    _check(api, default_group, settings, ok, f"stream_settings.detectors.{kind}.filter_min_size")


def test_filter_min_size_against_the_default_max_size(api, default_group):
    _check(api, default_group, {"detectors": {"face": {"filter_min_size": 9000}}}, False,
           "stream_settings.detectors.face.filter_min_size")


@pytest.mark.parametrize(
    ("key", "value"), [("rot", " 640x480+0+0 "), ("video_transform", "Rotate90 "), ("ffmpeg_format", " mp4")]
)
def test_padded_strings_are_rejected_or_stored_trimmed(api, default_group, key, value):
    response = post(api, default_group, {key: value})

    if response.status_code == 201:
        assert response.json()["stream_settings"][key] == value.strip()
    else:
        assert_bad_param(response, f"stream_settings.{key}")


@pytest.mark.parametrize("value", ["", "mp4", "matroska", "mpegts", "rtsp", "flv"])
def test_ffmpeg_format_allowed(api, default_group, value):
    assert created_settings(api, default_group, {"ffmpeg_format": value})["ffmpeg_format"] == value


@pytest.mark.parametrize(
    "value", ["concat", "lavfi", "image2", "v4l2", "x11grab", "fbdev", "alsa", "hls", "file", "../mp4", "mp 4"]
)
def test_ffmpeg_format_rejected(api, default_group, value):
    assert_bad_param(post(api, default_group, {"ffmpeg_format": value}), "stream_settings.ffmpeg_format")


@pytest.mark.parametrize(
    "value",
    [
        [],
        ["-rtsp_transport tcp"],
        ["-analyzeduration", "1000000"],
        ["-rtsp_transport", "tcp", "-probesize 5000000"],
        ["-fflags +genpts+discardcorrupt"],
        ["-timeout 5000000"],
    ],
)
def test_ffmpeg_params_allowed(api, default_group, value):
    assert created_settings(api, default_group, {"ffmpeg_params": value})["ffmpeg_params"] == value


@pytest.mark.parametrize(
    "value",
    [
        ["-i /etc/passwd"],
        ["-f concat"],
        ["file:/etc/passwd"],
        ["-rtsp_transport file:/x"],
        ["-protocol_whitelist file"],
        ["-protocol_whitelist", "file,http"],
        ["-rtsp_transport"],
        ["-analyzeduration abc"],
        ["-analyzeduration", "1000000", "/etc/passwd"],
        ["-y"],
        ["-"],
        ["--rtsp_transport tcp"],
        ["-safe 0"],
        ["-rtsp_transport tcp -i http://example.com/"],
    ],
)
def test_ffmpeg_params_rejected(api, default_group, value):
    assert_bad_param(post(api, default_group, {"ffmpeg_params": value}), "stream_settings.ffmpeg_params")


def test_ffmpeg_params_empty_item_rejected(api, default_group):
    assert_bad_param(post(api, default_group, {"ffmpeg_params": [""]}), "stream_settings.ffmpeg_params.0")


@pytest.mark.parametrize(
    ("stream", "param"),
    [
        ({"router_timeout_ms": 0}, "stream_settings.router_timeout_ms"),
        ({"imotion_threshold": -1}, "stream_settings.imotion_threshold"),
        ({"start_stream_timestamp": -1}, "stream_settings.start_stream_timestamp"),
        ({"detectors": {"face": {"filter_max_size": 0}}}, "stream_settings.detectors.face.filter_max_size"),
        ({"detectors": {"body": {"filter_min_size": -1}}}, "stream_settings.detectors.body.filter_min_size"),
        ({"detectors": {"car": {"track_miss_interval": -1}}}, "stream_settings.detectors.car.track_miss_interval"),
        ({"detectors": {"face": {"track_max_duration_frames": -1}}},
         "stream_settings.detectors.face.track_max_duration_frames"),
        ({"detectors": {"face": {"realtime_post_interval": -1}}},
         "stream_settings.detectors.face.realtime_post_interval"),
    ],
)
def test_negative_or_zero_where_not_allowed(api, default_group, stream, param):
    assert_bad_param(post(api, default_group, stream), param)


@pytest.mark.parametrize("key", ["imotion_threshold", "play_speed", "start_stream_timestamp"])
@pytest.mark.parametrize("value", [10**400, -(10**400), 1e308, 10**30], ids=["1e400", "-1e400", "1e308", "1e30"])
def test_huge_numbers_are_bad_param(api, default_group, key, value):
    assert_bad_param(post(api, default_group, {key: value}), f"stream_settings.{key}")


@pytest.mark.parametrize("key", ["filter_min_quality", "realtime_post_interval", "track_overlap_threshold",
                                 "filter_max_size", "jpeg_quality"])
def test_huge_numbers_in_a_detector_are_bad_param(api, default_group, key):
    response = post(api, default_group, {"detectors": {"face": {key: 10**400}}})

    assert_bad_param(response, f"stream_settings.detectors.face.{key}")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_bad_param(api, default_group, literal):
    body = b'{"camera_group": 1, "name": "x", "stream_settings": {"play_speed": ' + literal + b"}}"

    response = api.post("/videos/", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "BAD_PARAM"
    assert response.json()["param"] in ("", "stream_settings.play_speed")


def test_first_error_is_reported_with_nothing_stored(api, default_group):
    response = post(api, default_group, {"detectors": {"face": {"jpeg_quality": 0}}, "play_speed": 0})

    assert response.status_code == 400
    assert response.json()["param"] in ("stream_settings.detectors.face.jpeg_quality", "stream_settings.play_speed")
    assert api.get("/videos/count/").json() == {"count": 0}


# --- one definition: processing.stream_settings gives the API's and the worker's defaults


def test_create_defaults_are_the_processing_completion_of_nothing(api, default_group):
    created = post(api, default_group, {}).json()

    archive = VideoArchive.objects.get(pk=created["id"])
    assert created["stream_settings"] == complete_stream_settings({}, version=current_version())
    assert archive.stream_settings == created["stream_settings"]
    assert archive.stream_settings_version == current_version()


def _worker_settings(archive: VideoArchive) -> PipelineSettings:
    """What the worker runs for a row: an attempt claims it and completes its settings with their version's
    defaults (the attempt then ends, so the archive can be edited again)."""
    if not archive.has_source:
        VideoArchive.objects.filter(pk=archive.pk).update(url="https://example.com/video.mp4")
    task_id = jobs.job_queue(archive_id=archive.pk, send=None)
    claimed = jobs.job_claim(archive_id=archive.pk, task_id=task_id, worker="test")
    assert claimed is not None
    settings = jobs._pipeline_settings(claimed, "video.mp4")
    assert jobs.job_finish(claimed, JobState.COMPLETED)
    return settings


@pytest.mark.parametrize("seconds", [2.5, 0.25, 3])
def test_track_miss_interval_takes_fractions_of_a_second_and_the_worker_reads_them(api, default_group, seconds):
    sent = {"detectors": {"face": {"track_miss_interval": seconds}, "car": None}}
    created = created_settings(api, default_group, sent)

    assert created["detectors"]["face"]["track_miss_interval"] == seconds
    archive = VideoArchive.objects.get()
    detectors = _worker_settings(archive).detectors
    assert detectors["face"] == DetectorConfig.from_settings("face", created["detectors"]["face"])
    assert detectors["face"].track_miss_interval == seconds
    assert detectors["body"] == DetectorConfig.from_settings("body", {})
    assert "car" not in detectors


def test_a_new_archive_is_detected_ten_times_a_second_with_repeated_frames_skipped(api, default_group, settings):
    """Issue 17: time-based sampling and duplicate skipping are what a new archive gets, from the server's settings
    (FFV_DETECT_RATE, FFV_SKIP_DUPLICATE_FRAMES): stream_settings keeps the page's keys and nothing more."""
    created = post(api, default_group, {}).json()

    assert list(created["stream_settings"]) == list(TOP_KEYS)
    worker = _worker_settings(VideoArchive.objects.get(pk=created["id"]))
    assert (worker.detect_rate, worker.skip_duplicate_frames, worker.detect_stride) == (10.0, True, 1)

    settings.FFV_DETECT_RATE, settings.FFV_SKIP_DUPLICATE_FRAMES = 0.0, False
    worker = _worker_settings(VideoArchive.objects.get(pk=created["id"]))
    assert (worker.detect_rate, worker.skip_duplicate_frames) == (0.0, False)


@pytest.fixture
def version_2(monkeypatch):
    """A fake version 2 whose defaults differ from version 1's at each level."""
    monkeypatch.setitem(DEFAULTS_BY_VERSION, 2, DEFAULTS_BY_VERSION[1].changed(
        top={"imotion_threshold": 5}, detector={"track_miss_interval": 3}, kinds={"face": {"filter_min_quality": 0.9}},
    ))
    assert current_version() == 2


def test_an_archive_stored_at_version_1_keeps_version_1_defaults(api, default_group, version_2):
    # Written outside the API, with keys missing: they mean version 1's defaults.
    archive = VideoArchive.objects.create(camera_group=default_group, name="old", stream_settings_version=1,
                                          stream_settings={"play_speed": 3, "detectors": {"body": None}})
    url = f"/videos/{archive.pk}/"
    expected = copy.deepcopy(DEFAULT_STREAM_SETTINGS)
    expected["play_speed"] = 3
    expected["detectors"]["body"] = None

    assert api.get(url).json()["stream_settings"] == expected
    assert api.get("/videos/").json()["results"][0]["stream_settings"] == expected
    worker = _worker_settings(archive)
    assert worker.imotion_threshold == 0 and worker.detectors["face"].filter_min_quality == 0.45
    assert worker.detectors["car"].track_miss_interval == 1

    # A PATCH changes what it sends; every other key keeps its version 1 value, now written out.
    patched = api.patch(url, {"stream_settings": {"rot": "10x10+0+0"}}, format="json")

    assert patched.status_code == 200, patched.content
    expected["rot"] = "10x10+0+0"
    assert patched.json()["stream_settings"] == expected
    archive.refresh_from_db()
    assert (archive.stream_settings, archive.stream_settings_version) == (expected, 2)
    assert api.get(url).json()["stream_settings"] == expected


def test_an_archive_of_the_current_version_takes_its_defaults(api, default_group, version_2):
    archive = VideoArchive.objects.create(camera_group=default_group, name="new", stream_settings_version=2,
                                          stream_settings={"play_speed": 3})

    shown = api.get(f"/videos/{archive.pk}/").json()["stream_settings"]

    assert shown["imotion_threshold"] == 5
    assert shown["detectors"]["face"]["filter_min_quality"] == 0.9
    assert [shown["detectors"][kind]["track_miss_interval"] for kind in ("face", "body", "car")] == [3, 3, 3]


# --- cost of the output


def test_a_page_of_1000_archives_builds_no_more_fields_than_a_page_of_10(api, default_group, monkeypatch):
    """Serializers and their fields are set up once per request, never per row (they were: ~5 s for 1000 rows)."""
    complete = complete_stream_settings({}, version=1)
    VideoArchive.objects.bulk_create(
        VideoArchive(camera_group=default_group, name=f"a{index}", stream_settings=complete if index % 2 else {})
        for index in range(1000)
    )
    built = 0
    field_init = Field.__init__

    def counting_init(self, *args, **kwargs):
        nonlocal built
        built += 1
        field_init(self, *args, **kwargs)

    monkeypatch.setattr(Field, "__init__", counting_init)

    def fields_built_for(limit: int) -> int:
        nonlocal built
        built = 0
        response = api.get(f"/videos/?limit={limit}")
        assert response.status_code == 200, response.content
        results = response.json()["results"]
        assert len(results) == limit
        assert all(item["stream_settings"] == complete for item in results)
        return built

    fields_built_for(10)  # first request: anything built lazily once
    ten = fields_built_for(10)
    assert ten > 0
    assert fields_built_for(1000) == ten


def test_an_unknown_settings_version_is_shown_with_the_current_defaults(api, default_group):
    """A row written by a newer release (then rolled back) names a version this code does not know: the list
    and the archive's page still answer, completing its settings with the newest defaults known here."""
    archive = VideoArchive.objects.create(camera_group=default_group, name="from the future",
                                          stream_settings={"detectors": {"face": None}}, stream_settings_version=99)
    listed = api.get("/videos/?limit=1000")
    own = api.get(f"/videos/{archive.pk}/")
    assert listed.status_code == own.status_code == 200
    [row] = [row for row in listed.json()["results"] if row["id"] == archive.pk]
    assert row["stream_settings"] == own.json()["stream_settings"]
    assert own.json()["stream_settings"]["detectors"]["face"] is None
    newest = complete_stream_settings({}, version=current_version())
    assert own.json()["stream_settings"]["detectors"]["body"] == newest["detectors"]["body"]
