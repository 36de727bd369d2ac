"""The whole Django-free pipeline on real footage (Debian opencv-doc) with the real models.

Each setting of stream_settings that filters objects must move the result in its direction: these tests run
the same clip with and without it and compare.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from processing.config import ModelPaths, PipelineSettings
from processing.media import MediaError
from processing.pipeline import PipelineResult, run_pipeline
from processing.posting import PostedObject
from tests.footage import trim
from tests.processing.conftest import opencv_data_file, skip_or_fail

DETECTOR_DEFAULTS = {
    "face": {"filter_min_quality": 0.45, "filter_min_size": 60},
    "body": {"filter_min_quality": 0.6, "filter_min_size": 70},
    "car": {"filter_min_quality": 0.73, "filter_min_size": 100},
}


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelPaths:
    """The models as `manage.py prepare_models` writes them (kept in var/models when the setup made them)."""
    from processing.models_prep.prepare import FACENET_FILE, MOBILENET_FILE, RETINAFACE_FILE, YOLO_FILE, prepare_models

    root = Path(__file__).resolve().parents[2]
    prepared = root / "var" / "models"
    if not all((prepared / name).is_file() for name in (YOLO_FILE, RETINAFACE_FILE, FACENET_FILE, MOBILENET_FILE)):
        prepared = tmp_path_factory.mktemp("models")
        try:
            prepare_models(prepared, wheel_dir=root / "var" / "wheels")
        except (FileNotFoundError, ImportError) as error:
            skip_or_fail(f"models cannot be prepared: {error}")
    return ModelPaths(face=prepared / RETINAFACE_FILE, objects=prepared / YOLO_FILE,
                      face_embedder=prepared / FACENET_FILE, object_embedder=prepared / MOBILENET_FILE)


@pytest.fixture(scope="session")
def megamind_clip(data_tmp_dir: Path) -> Path:
    return trim(opencv_data_file("Megamind.avi", data_tmp_dir), data_tmp_dir / "megamind-120.mp4", 120)


@pytest.fixture(scope="session")
def vtest_clip(data_tmp_dir: Path) -> Path:
    return trim(opencv_data_file("vtest.avi", data_tmp_dir), data_tmp_dir / "vtest-150.mp4", 150)


def run(
    source: Path, models: ModelPaths, detectors: dict, **stream_settings
) -> tuple[PipelineResult, list[PostedObject]]:
    settings_dict = {"detectors": {kind: (None if values is None else {**DETECTOR_DEFAULTS[kind], **values})
                                   for kind, values in detectors.items()}, **stream_settings}
    settings = PipelineSettings.from_stream_settings(
        settings_dict, source=source, models=models, max_pixels=8192 * 8192, progress_interval=0.5
    )
    events: list[PostedObject] = []
    result = run_pipeline(settings, on_progress=lambda progress: None, should_stop=lambda: False,
                          on_event=lambda posted: events.append(posted) or True)
    return result, events


FACES_ONLY = {"face": {}, "body": None, "car": None}


@pytest.fixture(scope="session")
def megamind_faces(megamind_clip: Path, models: ModelPaths):
    return run(megamind_clip, models, FACES_ONLY)


def test_megamind_gives_face_events_with_pictures_and_boxes_inside_the_frame(megamind_faces):
    result, events = megamind_faces
    assert result.stopped is False
    assert len(events) >= 2
    assert {event.kind for event in events} == {"face"}
    assert result.progress.objects["face"].posted == len(events)
    assert result.progress.frames_processed == 120
    for event in events:
        left, top, right, bottom = event.box
        assert 0 <= left < right <= 720 and 0 <= top < bottom <= 528
        assert event.quality >= 0.45 and right - left >= 60 or bottom - top >= 60
        thumbnail = cv2.imdecode(np.frombuffer(event.thumbnail, np.uint8), cv2.IMREAD_COLOR)
        fullframe = cv2.imdecode(np.frombuffer(event.fullframe, np.uint8), cv2.IMREAD_COLOR)
        assert thumbnail is not None and fullframe.shape == (528, 720, 3)
        assert event.normalized is not None  # faces are aligned on their landmarks by default
        assert cv2.imdecode(np.frombuffer(event.normalized, np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)
    # One best-frame event per track with the defaults.
    assert len({event.track_id for event in events}) == len(events)


def test_vtest_gives_body_events(vtest_clip: Path, models: ModelPaths):
    result, events = run(vtest_clip, models, {"face": None, "body": {}, "car": {}})
    bodies = [event for event in events if event.kind == "body"]
    assert len(bodies) >= 3
    assert result.progress.objects["body"].posted == len(bodies)
    for event in bodies:
        left, top, right, bottom = event.box
        assert bottom - top > right - left  # people stand upright in this footage


def test_roi_keeps_only_objects_inside_it(megamind_faces, megamind_clip: Path, models: ModelPaths):
    _, baseline = megamind_faces
    roi = "360x528+0+0"  # the left half
    _, events = run(megamind_clip, models, {"face": {"roi": roi}, "body": None, "car": None})
    assert len(events) < len(baseline)
    for event in events:
        assert (event.box[0] + event.box[2]) / 2 < 360


def test_filter_min_size_drops_small_objects(megamind_faces, megamind_clip: Path, models: ModelPaths):
    _, baseline = megamind_faces
    sides = sorted(max(e.box[2] - e.box[0], e.box[3] - e.box[1]) for e in baseline)
    # Above every face seen: nothing is left. (A threshold between sizes can split a track whose face
    # hovers around it, so only the extreme gives a count that must drop.)
    _, none_left = run(megamind_clip, models, {"face": {"filter_min_size": sides[-1] + 20}, "body": None, "car": None})
    assert none_left == []
    threshold = sides[len(sides) // 2] + 1
    _, events = run(megamind_clip, models, {"face": {"filter_min_size": threshold}, "body": None, "car": None})
    for event in events:
        assert max(event.box[2] - event.box[0], event.box[3] - event.box[1]) >= threshold - 1


def test_filter_min_quality_turns_posts_into_not_posted(megamind_faces, megamind_clip: Path, models: ModelPaths):
    _, baseline = megamind_faces
    result, events = run(megamind_clip, models, {"face": {"filter_min_quality": 1.0}, "body": None, "car": None})
    assert len(events) < len(baseline)
    assert result.progress.objects["face"].not_posted >= len(baseline) - len(events)


def test_a_null_detector_is_skipped(megamind_clip: Path, models: ModelPaths):
    result, events = run(megamind_clip, models, {"face": None, "body": None, "car": None})
    assert events == []
    assert result.progress.frames_processed == 120


def test_imotion_threshold_skips_still_frames(megamind_faces, megamind_clip: Path, models: ModelPaths):
    baseline_result, _ = megamind_faces
    assert baseline_result.progress.frames_imotion_skipped == 0
    result, _ = run(megamind_clip, models, FACES_ONLY, imotion_threshold=3)
    assert result.progress.frames_imotion_skipped > 0
    assert result.progress.frames_processed == 120


def test_a_corrupted_stream_completes_or_fails_with_a_message(data_tmp_dir: Path, models: ModelPaths):
    source = opencv_data_file("Megamind_bugy.avi", data_tmp_dir)
    try:
        result, _ = run(source, models, {"face": None, "body": None, "car": None})
    except MediaError as error:
        assert str(error)
    else:
        assert result.progress.frames_processed > 0


def test_a_text_file_named_mp4_is_not_a_video(tmp_path: Path, models: ModelPaths):
    fake = tmp_path / "notes.mp4"
    fake.write_text("just some text, not a video\n" * 50)
    with pytest.raises(MediaError):
        run(fake, models, FACES_ONLY)


def test_posting_first_and_last_frames_adds_events_of_the_same_tracks(megamind_faces, megamind_clip, models):
    _, baseline = megamind_faces
    _, events = run(megamind_clip, models, {"face": {"post_first_track_frame": True, "post_last_track_frame": True},
                                            "body": None, "car": None})
    by_policy = {policy: [e for e in events if e.policy == policy] for policy in ("best", "first", "last")}
    assert len(by_policy["best"]) == len(baseline)
    assert len(by_policy["first"]) == len(by_policy["last"]) == len(baseline)
    for first, last in zip(sorted(by_policy["first"], key=lambda e: e.track_id),
                           sorted(by_policy["last"], key=lambda e: e.track_id), strict=True):
        assert first.frame_index <= last.frame_index


def test_realtime_posting_posts_during_tracks(megamind_faces, megamind_clip, models):
    _, baseline = megamind_faces
    _, events = run(megamind_clip, models, {"face": {"overall_only": False, "realtime_post_first_immediately": True,
                                                     "realtime_post_interval": 0.5,
                                                     "realtime_post_every_interval": True},
                                            "body": None, "car": None})
    realtime = [e for e in events if e.policy == "realtime"]
    assert len(realtime) > len(baseline)
    assert len([e for e in events if e.policy == "best"]) == len(baseline)


def test_png_and_rot_cropped_full_frames(megamind_clip, models):
    rot = "480x400+120+64"
    _, events = run(megamind_clip, models, {"face": {"fullframe_use_png": True, "fullframe_crop_rot": True},
                                            "body": None, "car": None}, rot=rot)
    assert events
    for event in events:
        assert event.fullframe_format == "png" and event.fullframe.startswith(b"\x89PNG")
        assert cv2.imdecode(np.frombuffer(event.fullframe, np.uint8), cv2.IMREAD_COLOR).shape == (400, 480, 3)
        left, top, right, bottom = event.box  # full-frame coordinates: inside the rot region
        assert 120 <= (left + right) / 2 <= 600 and 64 <= (top + bottom) / 2 <= 464


def test_video_transform_rotates_what_the_detectors_see(megamind_clip, models):
    _, events = run(megamind_clip, models, {"face": {"fullframe_use_png": True}, "body": None, "car": None},
                    video_transform="Rotate90")
    for event in events:
        frame = cv2.imdecode(np.frombuffer(event.fullframe, np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (720, 528, 3)  # rotated: height and width swapped
        assert 0 <= event.box[0] < event.box[2] <= 528 and 0 <= event.box[1] < event.box[3] <= 720


def test_play_speed_paces_the_run(megamind_clip, models):
    import time

    started = time.monotonic()
    result, _ = run(megamind_clip, models, {"face": None, "body": None, "car": None}, play_speed=2)
    elapsed = time.monotonic() - started
    duration = 120 / (2997 / 125)
    assert result.progress.frames_processed == 120
    assert elapsed >= duration / 2 - 0.3  # not faster than twice real time


def test_events_carry_unit_embeddings_that_tell_people_apart(megamind_faces):
    _, events = megamind_faces
    vectors = np.stack([event.embedding for event in events])
    assert vectors.shape == (len(events), 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    # Several tracks of few people: some pairs are the same person (close), some are not (far apart).
    similarity = vectors @ vectors.T
    pairs = similarity[np.triu_indices(len(events), 1)]
    assert pairs.max() > 0.5 and pairs.min() < 0.2


def test_body_events_carry_appearance_vectors(vtest_clip: Path, models: ModelPaths):
    _, events = run(vtest_clip, models, {"face": None, "body": {}, "car": None})
    assert events
    for event in events:
        assert event.embedding.shape == (1280,) and abs(float(np.linalg.norm(event.embedding)) - 1) < 1e-4


def test_without_embedder_models_events_have_no_embedding(megamind_clip: Path, models: ModelPaths):
    bare = ModelPaths(face=models.face, objects=models.objects)
    _, events = run(megamind_clip, bare, FACES_ONLY)
    assert events and all(event.embedding is None for event in events)


def test_deep_sort_tracks_faces_by_appearance(megamind_faces, megamind_clip: Path, models: ModelPaths):
    _, baseline = megamind_faces
    result, events = run(megamind_clip, models, {"face": {"tracker_type": "deep_sort"}, "body": None, "car": None})
    assert result.stopped is False and events
    assert len(events) <= len(baseline) + 1  # appearance joins, never fragments, what IoU links
    for event in events:
        assert event.embedding is not None and event.embedding.shape == (512,)


def test_deep_sort_without_an_embedder_is_a_clear_error(megamind_clip: Path, models: ModelPaths):
    from processing.pipeline import PipelineError

    bare = ModelPaths(face=models.face, objects=models.objects)
    with pytest.raises(PipelineError, match="deep_sort"):
        run(megamind_clip, bare, {"face": {"tracker_type": "deep_sort"}, "body": None, "car": None})


@pytest.fixture(scope="session")
def megamind_with_a_pause(data_tmp_dir: Path) -> Path:
    """Megamind with two seconds of black after frame 60: every face track ends there (a quiet point)."""
    return trim(opencv_data_file("Megamind.avi", data_tmp_dir), data_tmp_dir / "megamind-pause.mp4", 120,
                blank_at=60, blank_frames=48)


def event_keys(events: list[PostedObject]) -> set[tuple]:
    return {(e.kind, e.track_id, e.policy, e.frame_index, e.box) for e in events}


def test_a_resumed_run_starts_at_its_checkpoint_and_posts_the_same_events(megamind_with_a_pause, models):
    settings = PipelineSettings.from_stream_settings(
        {"detectors": {"face": DETECTOR_DEFAULTS["face"], "body": None, "car": None}},
        source=megamind_with_a_pause, models=models, max_pixels=8192 * 8192, progress_interval=0.0,
    )
    checkpoints: list[dict] = []
    full: list[PostedObject] = []
    result = run_pipeline(settings, on_progress=lambda p: checkpoints.append(p.checkpoint and dict(p.checkpoint)),
                          should_stop=lambda: False, on_event=lambda posted: full.append(posted) or True)
    quiet = [c for c in checkpoints if c and 60 <= c["frame_index"] < 108]
    assert quiet, "the pause gives a checkpoint"
    checkpoint = quiet[-1]
    before = [e for e in full if e.frame_index <= checkpoint["frame_index"]]
    assert checkpoint["progress"]["objects"]["face"]["posted"] == len(before) > 0

    import dataclasses

    resumed_events: list[PostedObject] = []
    resumed = run_pipeline(dataclasses.replace(settings, resume_from=checkpoint), on_progress=lambda p: None,
                           should_stop=lambda: False, on_event=lambda posted: resumed_events.append(posted) or True)
    assert resumed.progress.resumed_from_frame == checkpoint["frame_index"]
    # Nothing before the checkpoint is analysed again, and together the runs post exactly the same events.
    assert all(e.frame_index > checkpoint["frame_index"] for e in resumed_events)
    assert event_keys(before) | event_keys(resumed_events) == event_keys(full)
    assert resumed.progress.frames_processed == result.progress.frames_processed == 168
    assert resumed.progress.objects["face"].posted == result.progress.objects["face"].posted


def test_play_speed_drops_frames_it_is_late_for_unless_drops_are_disabled(megamind_clip, models):
    fast = {"play_speed": 500}  # far faster than face detection can go here
    dropping, _ = run(megamind_clip, models, FACES_ONLY, disable_drops=False, **fast)
    assert dropping.progress.frames_dropped > 0
    assert dropping.progress.frames_dropped + dropping.progress.frames_processed == 120
    keeping, _ = run(megamind_clip, models, FACES_ONLY, disable_drops=True, **fast)
    assert keeping.progress.frames_dropped == 0 and keeping.progress.frames_processed == 120


@pytest.fixture(scope="session")
def megamind_from_a_live_timeline(data_tmp_dir: Path) -> Path:
    """A cut whose MPEG-TS clock starts at 100 s, as a piece of a live recording does."""
    return trim(opencv_data_file("Megamind.avi", data_tmp_dir), data_tmp_dir / "megamind-100s.ts", 72,
                container_format="mpegts", start_seconds=100)


def test_stream_timestamps_follow_the_container_clock_only_when_asked(megamind_from_a_live_timeline, models):
    source = megamind_from_a_live_timeline
    own, own_events = run(source, models, FACES_ONLY, use_stream_timestamp=True, start_stream_timestamp=1000)
    file, file_events = run(source, models, FACES_ONLY, use_stream_timestamp=False, start_stream_timestamp=1000)
    duration = 71 / (2997 / 125)
    assert own.progress.last_stream_timestamp == pytest.approx(1000 + 100 + duration, abs=0.05)
    assert file.progress.last_stream_timestamp == pytest.approx(1000 + duration, abs=0.05)
    assert own_events and file_events
    for event in own_events:
        assert event.detector_params["stream_timestamp"] == pytest.approx(1100 + event.timestamp, abs=0.05)
    for event in file_events:
        assert event.detector_params["stream_timestamp"] == pytest.approx(1000 + event.timestamp, abs=0.01)


def test_ffmpeg_format_forces_the_demuxer(megamind_from_a_live_timeline, models, tmp_path):
    renamed = tmp_path / "recording.bin"  # no extension to guess from
    renamed.write_bytes(megamind_from_a_live_timeline.read_bytes())
    result, _ = run(renamed, models, {"face": None, "body": None, "car": None}, ffmpeg_format="mpegts",
                    ffmpeg_params=["-analyzeduration", "2000000", "-probesize", "5000000"])
    assert result.progress.frames_processed == 72
    with pytest.raises(MediaError):
        run(renamed, models, {"face": None, "body": None, "car": None}, ffmpeg_format="avi")


def test_faces_searched_in_upper_bodies_are_the_faces_of_the_whole_frame(data_tmp_dir: Path, models: ModelPaths):
    from processing.detections import box_iou_batch
    from processing.detectors import create_detector
    from processing.pipeline import faces_in_upper_bodies
    from tests.processing.conftest import read_video_frame

    megamind = opencv_data_file("Megamind.avi", data_tmp_dir)
    whole = create_detector("retinaface", model_path=models.face)
    crops = create_detector("retinaface", model_path=models.face, input_size=(160, 160))
    persons = create_detector("yolov8", model_path=models.objects)
    checked = 0
    for index in (30, 60, 150, 225):
        image = read_video_frame(megamind, index)
        objects = persons.detect(image)
        expected = whole.detect(image)
        found = faces_in_upper_bodies(crops, image, objects[objects.class_id == 0])
        assert found.data["landmarks"].shape == (len(found), 5, 2)
        if len(expected):
            iou = box_iou_batch(expected.xyxy, found.xyxy)
            assert iou.shape[1] > 0 and (iou.max(axis=1) > 0.5).all(), (index, expected.xyxy, found.xyxy)
            checked += len(expected)
    assert checked >= 4


def test_as_fast_as_possible_never_drops_even_when_drops_are_allowed(megamind_clip, models):
    result, _ = run(megamind_clip, models, {"face": None, "body": None, "car": None}, play_speed=-1,
                    disable_drops=False)
    assert result.progress.frames_dropped == 0 and result.progress.frames_processed == 120


def test_frames_detected_in_parallel_post_what_one_at_a_time_posts(vtest_clip: Path, megamind_with_a_pause, models):
    """detect_workers > 1 changes when frames are detected, never what is tracked, posted or checkpointed."""
    import dataclasses

    everything = {"detectors": {kind: {**DETECTOR_DEFAULTS[kind], "filter_min_quality": 0, "filter_min_size": 0}
                                for kind in ("face", "body", "car")}}
    for source in (vtest_clip, megamind_with_a_pause):
        settings = PipelineSettings.from_stream_settings(everything, source=source, models=models,
                                                         max_pixels=8192 * 8192, progress_interval=0.0)
        outcomes = []
        for workers in (1, 3):
            events: list[PostedObject] = []
            checkpoints: set[str] = set()
            result = run_pipeline(
                dataclasses.replace(settings, detect_workers=workers),
                on_progress=lambda p, seen=checkpoints: seen.add(repr(p.checkpoint)),
                should_stop=lambda: False, on_event=lambda posted, out=events: out.append(posted) or True,
            )
            outcomes.append((event_keys(events), checkpoints - {"None"}, result.progress.counters()))
        assert outcomes[0][0] and outcomes[0] == outcomes[1]
    assert outcomes[0][1], "the pause gives checkpoints to compare"


def test_heads_too_small_for_the_face_size_filter_are_not_searched(data_tmp_dir: Path, models: ModelPaths):
    from processing.detections import box_iou_batch
    from processing.detectors import create_detector
    from processing.pipeline import faces_in_upper_bodies
    from tests.processing.conftest import read_video_frame

    class CountingDetector:
        def __init__(self, detector):
            self.detector, self.crops = detector, 0

        def detect_batch(self, crops):
            self.crops += len(crops)
            return self.detector.detect_batch(crops)

    crops = CountingDetector(create_detector("retinaface", model_path=models.face, input_size=(160, 160)))
    persons = create_detector("yolov8", model_path=models.objects)
    vtest = read_video_frame(opencv_data_file("vtest.avi", data_tmp_dir), 100)
    bodies = persons.detect(vtest)
    bodies = bodies[bodies.class_id == 0]
    assert len(bodies) >= 6
    all_heads = faces_in_upper_bodies(crops, vtest, bodies)
    searched_all = crops.crops
    assert searched_all == len(bodies)
    # Distant pedestrians: no head crop is 60 px on any side, so none is searched, and no face >= 60 px is lost.
    assert len(faces_in_upper_bodies(crops, vtest, bodies, 60)) == 0 and crops.crops == searched_all
    assert not any(max(x2 - x1, y2 - y1) >= 60 for x1, y1, x2, y2 in all_heads.xyxy)

    megamind = read_video_frame(opencv_data_file("Megamind.avi", data_tmp_dir), 150)
    people = persons.detect(megamind)
    people = people[people.class_id == 0]
    close_ups = faces_in_upper_bodies(crops, megamind, people)
    sides = np.maximum(close_ups.xyxy[:, 2] - close_ups.xyxy[:, 0], close_ups.xyxy[:, 3] - close_ups.xyxy[:, 1])
    large = close_ups[sides >= 60]
    assert len(large) >= 1
    kept = faces_in_upper_bodies(crops, megamind, people, 60)
    assert box_iou_batch(large.xyxy, kept.xyxy).max(axis=1).min() > 0.99
