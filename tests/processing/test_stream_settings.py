"""processing.stream_settings: the one definition, its versions, and what the pipeline makes of it."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from processing.config import DetectorConfig, ModelPaths, PipelineSettings
from processing.pipeline.tracking import KindTracker
from processing.stream_settings import (
    DEFAULTS_BY_VERSION,
    DETECTOR_SETTINGS,
    OBJECT_KINDS,
    TOP_KEYS,
    TOP_SETTINGS,
    complete_stream_settings,
    current_version,
    default_stream_settings,
    defaults_of,
    detector_defaults,
)
from processing.trackers import DeepSortTracker, SimpleIouTracker

KIND_FILTERS = {"face": (0.45, 60), "body": (0.6, 70), "car": (0.73, 100)}


@pytest.fixture
def version_2(monkeypatch: pytest.MonkeyPatch):
    """A fake second version that changes defaults of each level; removed after the test."""
    changed = DEFAULTS_BY_VERSION[1].changed(
        top={"play_speed": 2},
        detector={"track_miss_interval": 2.5},
        kinds={"face": {"filter_min_quality": 0.5}},
    )
    monkeypatch.setitem(DEFAULTS_BY_VERSION, 2, changed)
    return changed


@pytest.mark.parametrize(("kind", "quality", "size"), [(k, q, s) for k, (q, s) in KIND_FILTERS.items()])
def test_each_kind_has_its_own_filter_defaults(kind, quality, size):
    defaults = detector_defaults(kind, version=1)

    assert (defaults["filter_min_quality"], defaults["filter_min_size"]) == (quality, size)
    assert list(defaults) == list(DETECTOR_SETTINGS)
    assert {k: v for k, v in defaults.items() if not k.startswith("filter_min_")} == {
        k: v for k, v in detector_defaults("face", version=1).items() if not k.startswith("filter_min_")
    }


def test_completing_nothing_gives_every_key_in_the_page_order():
    complete = complete_stream_settings({}, version=1)

    assert list(complete) == list(TOP_KEYS) == ["detectors", *TOP_SETTINGS]
    assert complete["detectors"] == {kind: detector_defaults(kind, version=1) for kind in OBJECT_KINDS}
    assert complete["ffmpeg_params"] == [] and complete["play_speed"] == -1 and complete["disable_drops"] is True
    assert complete == default_stream_settings(version=1)


def test_completion_keeps_stored_values_null_detectors_and_unknown_top_keys():
    stored = {
        "play_speed": 2,
        "ffmpeg_params": ["-rtsp_transport tcp"],
        "legacy_key": 1,
        "detectors": {"face": {"jpeg_quality": 50, "old_knob": True}, "body": None, "person": {}},
    }
    before = copy.deepcopy(stored)

    complete = complete_stream_settings(stored, version=1)

    assert stored == before, "the stored dict is not changed"
    assert complete["play_speed"] == 2 and complete["ffmpeg_params"] == ["-rtsp_transport tcp"]
    assert complete["ffmpeg_params"] is not stored["ffmpeg_params"]
    assert list(complete)[-1] == "legacy_key"
    assert complete["detectors"]["face"] == {**detector_defaults("face", version=1), "jpeg_quality": 50,
                                             "old_knob": True}
    assert complete["detectors"]["body"] is None
    assert complete["detectors"]["car"] == detector_defaults("car", version=1)
    assert list(complete["detectors"]) == list(OBJECT_KINDS)


@pytest.mark.parametrize("stored", [None, [], "x", 5])
def test_completion_of_a_non_object_gives_the_defaults(stored):
    assert complete_stream_settings(stored, version=1) == default_stream_settings(version=1)


def test_completion_shares_no_list_between_calls():
    first = complete_stream_settings({}, version=1)
    first["ffmpeg_params"].append("-probesize 5")

    assert complete_stream_settings({}, version=1)["ffmpeg_params"] == []


def test_a_new_version_is_current_and_changes_only_what_it_names(version_2):
    assert current_version() == 2
    new = complete_stream_settings({}, version=2)
    old = complete_stream_settings({}, version=1)

    assert new["play_speed"] == 2 and old["play_speed"] == -1
    assert [new["detectors"][kind]["track_miss_interval"] for kind in OBJECT_KINDS] == [2.5, 2.5, 2.5]
    assert [old["detectors"][kind]["track_miss_interval"] for kind in OBJECT_KINDS] == [1, 1, 1]
    assert new["detectors"]["face"]["filter_min_quality"] == 0.5
    assert new["detectors"]["body"]["filter_min_quality"] == 0.6
    changed = {"play_speed", "detectors"}
    assert {k: v for k, v in new.items() if k not in changed} == {k: v for k, v in old.items() if k not in changed}
    assert default_stream_settings() == new


def test_settings_stored_at_version_1_keep_version_1_defaults(version_2):
    stored = {"detectors": {"face": {"jpeg_quality": 50}, "body": None}}

    complete = complete_stream_settings(stored, version=1)

    assert complete["play_speed"] == -1
    assert complete["detectors"]["face"]["filter_min_quality"] == 0.45
    assert complete["detectors"]["face"]["track_miss_interval"] == 1
    assert complete["detectors"]["face"]["jpeg_quality"] == 50
    assert complete["detectors"]["car"]["track_miss_interval"] == 1


def test_unknown_versions_and_keys_are_errors():
    with pytest.raises(ValueError, match="version"):
        complete_stream_settings({}, version=99)
    with pytest.raises(KeyError, match="no_such_key"):
        DEFAULTS_BY_VERSION[1].changed(detector={"no_such_key": 1})
    with pytest.raises(ValueError):
        dataclasses.replace(DEFAULTS_BY_VERSION[1], top={})


def test_detector_config_has_a_field_per_detector_key_and_takes_its_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(DetectorConfig)}

    assert set(fields) - {"kind"} == set(DETECTOR_SETTINGS)
    shared = detector_defaults("face")
    for name, default in fields.items():
        if name not in ("kind", "roi", "filter_min_quality", "filter_min_size"):
            assert default == shared[name], name


@pytest.mark.parametrize("kind", OBJECT_KINDS)
def test_detector_config_from_settings_fills_the_kinds_defaults(kind):
    config = DetectorConfig.from_settings(kind, {"jpeg_quality": 50})

    assert (config.filter_min_quality, config.filter_min_size) == KIND_FILTERS[kind]
    assert config.jpeg_quality == 50 and config.roi is None
    assert config.track_overlap_threshold == defaults_of().detectors[kind]["track_overlap_threshold"]


def test_pipeline_settings_from_the_completion_of_nothing():
    models = ModelPaths(face="face.onnx", objects="objects.onnx")  # type: ignore[arg-type]

    settings = PipelineSettings.from_stream_settings(default_stream_settings(), source="x.mp4", models=models,
                                                     max_pixels=1)
    bare = PipelineSettings.from_stream_settings({}, source="x.mp4", models=models, max_pixels=1)

    assert sorted(settings.detectors) == sorted(OBJECT_KINDS)
    assert settings.detectors["car"] == DetectorConfig.from_settings("car", {})
    assert bare.detectors == {}, "outside the API an omitted detector is off"
    top = defaults_of().top
    for name in ("video_transform", "play_speed", "imotion_threshold", "disable_drops", "ffmpeg_format",
                 "use_stream_timestamp", "start_stream_timestamp"):
        assert getattr(settings, name) == getattr(bare, name) == top[name], name
    assert settings.ffmpeg_options == {} and settings.rot is None


@pytest.mark.parametrize(("seconds", "fps", "frames"), [(2.5, 10.0, 25), (1, 25.0, 25), (0.5, 30.0, 15), (0, 25.0, 1)])
def test_the_miss_interval_is_seconds_and_fractions_count(seconds, fps, frames):
    config = DetectorConfig.from_settings("face", {"track_miss_interval": seconds})

    runner = KindTracker(config, fps=fps, stride=1, embedder=None)

    assert runner.tracker.track_miss_interval == frames


def test_trackers_take_the_definitions_defaults():
    defaults = detector_defaults("face")
    simple, deep = SimpleIouTracker(), DeepSortTracker()

    for tracker in (simple, deep):
        assert tracker.track_overlap_threshold == defaults["track_overlap_threshold"]
        assert tracker.track_max_duration_frames == defaults["track_max_duration_frames"]
        assert tracker.track_interpolate_bboxes == defaults["track_interpolate_bboxes"]
    assert deep.matching_threshold == defaults["track_deep_sort_matching_threshold"]
    assert deep.filter_unconfirmed == defaults["track_deep_sort_filter_unconfirmed_tracks"]
