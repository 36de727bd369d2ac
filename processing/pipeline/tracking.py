"""The track-and-post stage: per object kind a tracker, an embedder and a poster; checkpoints. No Django here.

Detected frames come in frame order. After a frame after which every tracker and poster is quiet (nothing
open), the stage records a checkpoint in `Progress.checkpoint`: a resumed run restores the trackers and posters
from it through their `Checkpointable` protocol and starts at the next frame.

The checkpoint's saved form (JSON, kept with the job): ``{"frame_index": int, "next_track_ids": {kind: int},
"progress": Progress.counters()}``; a tracker's state is ``{"next_id": ...}`` and a poster's is its kind's
``not_posted`` counter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from processing.config import DetectorConfig, PipelineSettings
from processing.detections import Detections
from processing.embedders import Embedder, create_embedder
from processing.errors import ModelMissing, file_label
from processing.frames import geometry_mask, object_quality
from processing.pipeline.detection import DetectedFrame
from processing.pipeline.errors import PipelineError
from processing.pipeline.progress import Progress
from processing.pipeline.sampler import detect_gap_frames
from processing.posting import PostedObject, TrackPoster
from processing.trackers import CheckpointState, available_trackers, create_tracker

# (kind, frame index, timestamp, track ids, their boxes in the analysed frame)
OnTracked = Callable[[str, int, float, list[int], np.ndarray], None]

# Posted objects smaller than this (larger box side, pixels) get no embedding.
MIN_EMBEDDED_SIDE = 24


class KindTracker:
    """Tracker, embedder and poster of one object kind."""

    def __init__(self, config: DetectorConfig, fps: float, stride: int, embedder: Embedder | None) -> None:
        if config.tracker_type not in available_trackers():
            raise PipelineError("tracker_unavailable", tracker=config.tracker_type, kind=config.kind,
                                available=", ".join(available_trackers()))
        options: dict[str, Any] = {
            "track_overlap_threshold": config.track_overlap_threshold,
            "track_miss_interval": max(stride, round(config.track_miss_interval * fps)),
            "track_max_duration_frames": config.track_max_duration_frames,
            "track_interpolate_bboxes": config.track_interpolate_bboxes,
            # Objects move between detections on a stride; matching where they should be keeps their tracks.
            "motion_prediction": True,
        }
        self.embed_detections = config.tracker_type == "deep_sort"
        if self.embed_detections:
            if embedder is None:
                raise PipelineError("embedder_required", kind=config.kind)
            options["track_deep_sort_matching_threshold"] = config.track_deep_sort_matching_threshold
            options["track_deep_sort_filter_unconfirmed_tracks"] = config.track_deep_sort_filter_unconfirmed_tracks
        self.tracker = create_tracker(config.tracker_type, **options)
        self.embedder = embedder
        self.poster = TrackPoster(config, embed=None if embedder is None else self._embed_one)
        self.config = config
        self.last_tracked: Detections | None = None  # this kind's tracked boxes of the last frame

    def track(self, detected: DetectedFrame) -> list[PostedObject]:
        """Track this kind's detections of one frame; returns its posts (realtime ones, then ended tracks')."""
        sampled = detected.sampled
        frame, image = sampled.frame, sampled.image
        detections = detected.found.get(self.config.kind, Detections.empty())
        detections = detections[geometry_mask(detections, self.config)]
        if self.embed_detections:
            assert self.embedder is not None
            detections = detections.with_data(embedding=self.embedder.embed(image, detections.xyxy))
        tracked = self.tracker.update(detections, frame.index)
        self.last_tracked = tracked
        quality = object_quality(tracked, image.shape)
        posts = self.poster.observe(tracked, quality, frame_index=frame.index, timestamp=frame.timestamp,
                                    image=image, full_image=sampled.full, offset=sampled.offset)
        return posts + self.poster.finish(self.tracker.pop_finished())

    def finish(self) -> list[PostedObject]:
        """End every open track (end of stream); their posts."""
        return self.poster.finish(self.tracker.finish())

    @property
    def quiet(self) -> bool:
        return self.tracker.quiet and self.poster.quiet

    def _embed_one(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        assert self.embedder is not None
        if max(box[2] - box[0], box[3] - box[1]) < MIN_EMBEDDED_SIDE:
            return None  # a face a dozen pixels wide has no identity to compare; and it costs as much as any
        return self.embedder.embed(image, np.asarray([box], np.float32))[0]


class Tracking:
    """Every kind's `KindTracker`; hands posts to `on_event` and counts them; keeps the checkpoint."""

    def __init__(self, settings: PipelineSettings, progress: Progress, *, fps: float, embedders: dict[str, Embedder],
                 on_event: Callable[[PostedObject], bool], resume: Mapping[str, Any] | None) -> None:
        self.settings = settings
        self.progress = progress
        self.on_event = on_event
        # Sees every kind's tracked boxes of each analysed frame (a chunk records its shared windows with it).
        self.on_tracked: OnTracked | None = None
        stride = detect_gap_frames(settings, fps)
        self.kinds = {kind: KindTracker(config, fps, stride, embedders.get(kind))
                      for kind, config in settings.detectors.items()}
        next_ids = (resume or {}).get("next_track_ids") or {}
        for kind, kind_tracker in self.kinds.items():
            kind_tracker.tracker.restore({"next_id": int(next_ids.get(kind, 1))})
            kind_tracker.poster.restore({"not_posted": progress.objects[kind].not_posted})

    def conclude(self, detected: DetectedFrame) -> None:
        """Track and post one detected frame; a frame after which nothing is open becomes the checkpoint."""
        sampled = detected.sampled
        for kind, kind_tracker in self.kinds.items():
            self._post(kind_tracker.track(detected), sampled.stream_offset)
            tracked = kind_tracker.last_tracked
            if self.on_tracked is not None and tracked is not None and tracked.tracker_id is not None:
                self.on_tracked(kind, sampled.frame.index, sampled.frame.timestamp, tracked.tracker_id.tolist(),
                                tracked.xyxy)
        if all(kind_tracker.quiet for kind_tracker in self.kinds.values()):
            trackers: dict[str, CheckpointState] = {kind: kt.tracker.checkpoint() for kind, kt in self.kinds.items()}
            counters = self.progress.counters()
            for kind, kind_tracker in self.kinds.items():
                # The poster's count now, not as the last report copied it into progress.
                counters["objects"][kind]["not_posted"] = kind_tracker.poster.checkpoint()["not_posted"]
            # Where this frame is, not where the sampler (ahead of tracking when frames are detected in
            # parallel) has got to: a checkpoint is the same whatever the number of detection workers.
            counters["processed_duration"] = round(sampled.frame.timestamp, 3)
            self.progress.checkpoint = {
                "frame_index": sampled.frame.index,
                "next_track_ids": {kind: state["next_id"] for kind, state in trackers.items()},
                "progress": {**counters, **sampled.frame_counters},
            }

    def finish(self, stream_offset: float) -> None:
        for kind_tracker in self.kinds.values():
            self._post(kind_tracker.finish(), stream_offset)

    def not_posted(self) -> dict[str, int]:
        return {kind: kind_tracker.poster.not_posted for kind, kind_tracker in self.kinds.items()}

    def _post(self, posts: list[PostedObject], stream_offset: float) -> None:
        settings = self.settings
        for item in posts:
            counters = self.progress.objects[item.kind]
            params = {**item.detector_params,
                      "stream_timestamp": round(settings.start_stream_timestamp + item.timestamp + stream_offset, 3)}
            if self.on_event(dataclasses.replace(item, detector_params=params)):
                counters.posted += 1
            else:
                counters.failed += 1


def load_embedders(settings: PipelineSettings) -> dict[str, Embedder]:
    """The embedder of each enabled kind whose model is configured (FaceNet for faces, MobileNetV2 else)."""
    paths = {"face": settings.models.face_embedder, "body": settings.models.object_embedder,
             "car": settings.models.object_embedder}
    names = {"face": "facenet", "body": "mobilenetv2", "car": "mobilenetv2"}
    embedders: dict[str, Embedder] = {}
    for kind in settings.detectors:
        path = paths[kind]
        if path is None:
            continue
        if not Path(path).is_file():
            raise ModelMissing("embedder_missing", file=file_label(path))
        embedders[kind] = create_embedder(names[kind], model_path=path, intra_op_num_threads=settings.ort_threads)
    return embedders
