"""Which objects of a track become events, and their pictures. No Django here.

Per track the poster keeps three snapshots (first, best by quality, last) with a reference to their frame;
frames are never copied or mutated, so this costs a few references per open track. When a track ends:

- `post_best_track_frame`: the best snapshot; `post_first_track_frame` / `post_last_track_frame`: those too;
- a track whose best quality is below `filter_min_quality` posts nothing and counts as `not_posted`;
- `overall_only=false` adds realtime posts while the track runs: the first object at once when
  `realtime_post_first_immediately`, then the best object of every `realtime_post_interval` seconds
  (only when it beats the last one posted, unless `realtime_post_every_interval`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from processing.config import DetectorConfig
from processing.detections import Detections
from processing.trackers.base import CheckpointState, Track

# ArcFace's 112x112 landmark template: eyes, nose tip, mouth corners.
_FACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
THUMBNAIL_MAX_SIDE = 512


@dataclass(frozen=True)
class Snapshot:
    frame_index: int
    timestamp: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the analysed (rot-cropped) frame
    quality: float
    confidence: float
    image: npt.NDArray[np.uint8]  # the analysed frame
    full_image: npt.NDArray[np.uint8]  # the frame before the `rot` crop
    offset: tuple[int, int]  # where the analysed frame lies in full_image
    landmarks: npt.NDArray[np.float32] | None = None
    embedding: npt.NDArray[np.float32] | None = None  # when the tracker had one for this detection


# (analysed image, box in it) -> unit embedding vector of the object, or None when it is too small to embed.
EmbedFunction = Callable[
    [npt.NDArray[np.uint8], tuple[float, float, float, float]], npt.NDArray[np.float32] | None
]


@dataclass(frozen=True)
class PostedObject:
    """One event to store: pictures already encoded, box in full-frame pixels."""

    kind: str
    track_id: int
    policy: str  # "best", "first", "last" or "realtime"
    frame_index: int
    timestamp: float
    box: tuple[int, int, int, int]  # left, top, right, bottom
    quality: float
    confidence: float
    thumbnail: bytes
    fullframe: bytes
    fullframe_format: str  # "jpg" or "png"
    normalized: bytes | None
    detector_params: dict[str, Any]
    embedding: npt.NDArray[np.float32] | None = None  # unit float32 vector, None without an embedder


@dataclass
class _TrackState:
    first: Snapshot
    best: Snapshot
    last: Snapshot
    frames: int = 1
    window_start: float = 0.0
    window_best: Snapshot | None = None
    last_posted_quality: float = -1.0
    history: list[list[float]] = field(default_factory=list)


class TrackPoster:
    """Applies one object kind's posting policy to the tracked detections of each analysed frame.

    Checkpointable (processing.trackers.Checkpointable): quiet when no track is open; its state is the count
    of tracks that ended below `filter_min_quality` (`not_posted`).
    """

    def __init__(self, config: DetectorConfig, embed: EmbedFunction | None = None) -> None:
        self.config = config
        self.embed = embed
        self._tracks: dict[int, _TrackState] = {}
        self.not_posted = 0

    @property
    def open_tracks(self) -> int:
        return len(self._tracks)

    @property
    def quiet(self) -> bool:
        return not self._tracks

    def checkpoint(self) -> CheckpointState:
        if not self.quiet:
            raise RuntimeError(f"{len(self._tracks)} tracks are open")
        return {"not_posted": self.not_posted}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.not_posted = int(state.get("not_posted", 0))

    def observe(
        self,
        tracked: Detections,
        quality: npt.NDArray[np.float32],
        *,
        frame_index: int,
        timestamp: float,
        image: npt.NDArray[np.uint8],
        full_image: npt.NDArray[np.uint8],
        offset: tuple[int, int],
    ) -> list[PostedObject]:
        """Update the snapshots of the tracks seen on this frame; returns realtime posts, if any."""
        posts: list[PostedObject] = []
        landmarks = tracked.data.get("landmarks")
        embeddings = tracked.data.get("embedding")
        assert tracked.tracker_id is not None
        for row, track_id in enumerate(tracked.tracker_id.tolist()):
            snapshot = Snapshot(
                frame_index=frame_index,
                timestamp=timestamp,
                box=tuple(float(v) for v in tracked.xyxy[row]),  # type: ignore[arg-type]
                quality=float(quality[row]),
                confidence=float(tracked.confidence[row]),
                image=image,
                full_image=full_image,
                offset=offset,
                landmarks=None if landmarks is None else landmarks[row],
                embedding=None if embeddings is None else embeddings[row],
            )
            state = self._tracks.get(track_id)
            if state is None:
                state = _TrackState(first=snapshot, best=snapshot, last=snapshot, window_start=timestamp)
                self._tracks[track_id] = state
                if (not self.config.overall_only and self.config.realtime_post_first_immediately
                        and snapshot.quality >= self.config.filter_min_quality):
                    posts.append(self._post(track_id, snapshot, "realtime", state))
                    state.last_posted_quality = snapshot.quality
            else:
                state.frames += 1
                state.last = snapshot
                if snapshot.quality > state.best.quality:
                    state.best = snapshot
            if self.config.track_send_history:
                state.history.append([frame_index, round(timestamp, 3), *[round(v, 1) for v in snapshot.box]])
            if not self.config.overall_only:
                posts.extend(self._realtime(track_id, state, snapshot))
        return posts

    def _realtime(self, track_id: int, state: _TrackState, snapshot: Snapshot) -> list[PostedObject]:
        if state.window_best is None or snapshot.quality > state.window_best.quality:
            state.window_best = snapshot
        if snapshot.timestamp - state.window_start < self.config.realtime_post_interval:
            return []
        candidate, state.window_best, state.window_start = state.window_best, None, snapshot.timestamp
        if candidate.quality < self.config.filter_min_quality:
            return []
        if not self.config.realtime_post_every_interval and candidate.quality <= state.last_posted_quality:
            return []
        state.last_posted_quality = candidate.quality
        return [self._post(track_id, candidate, "realtime", state)]

    def finish(self, tracks: list[Track]) -> list[PostedObject]:
        """Posts of tracks that ended; a track below `filter_min_quality` counts as not posted."""
        posts: list[PostedObject] = []
        for track in tracks:
            state = self._tracks.pop(track.track_id, None)
            if state is None or track.end_reason == "unconfirmed":
                continue  # (a tracker's filtered false detection: neither posted nor counted)
            if state.best.quality < self.config.filter_min_quality:
                self.not_posted += 1
                continue
            chosen: list[tuple[str, Snapshot]] = []
            if self.config.post_best_track_frame:
                chosen.append(("best", state.best))
            if self.config.post_first_track_frame:
                chosen.append(("first", state.first))
            if self.config.post_last_track_frame:
                chosen.append(("last", state.last))
            posts.extend(self._post(track.track_id, snapshot, policy, state) for policy, snapshot in chosen)
        return posts

    def _post(self, track_id: int, snapshot: Snapshot, policy: str, state: _TrackState) -> PostedObject:
        config = self.config
        dx, dy = snapshot.offset
        x1, y1, x2, y2 = snapshot.box
        box = (round(x1 + dx), round(y1 + dy), round(x2 + dx), round(y2 + dy))
        thumbnail = encode_jpeg(crop_with_margin(snapshot.image, snapshot.box, 0.25), config.jpeg_quality)
        frame = snapshot.image if config.fullframe_crop_rot else snapshot.full_image
        fullframe_format = "png" if config.fullframe_use_png else "jpg"
        if config.fullframe_use_png:
            fullframe = encode_png(frame)
        else:
            fullframe = encode_jpeg(frame, config.jpeg_quality)
        normalized = None
        if config.post_best_track_normalize and snapshot.landmarks is not None:
            normalized = encode_jpeg(align_face(snapshot.image, snapshot.landmarks), config.jpeg_quality)
        params: dict[str, Any] = {
            "score": round(snapshot.confidence, 4),
            "quality": round(snapshot.quality, 4),
            "box_size": round(max(x2 - x1, y2 - y1), 1),
            "track_id": track_id,
            "policy": policy,
            "frame_index": snapshot.frame_index,
            "track_start_timestamp": round(state.first.timestamp, 3),
            "track_frames": state.frames,
        }
        if config.track_send_history:
            params["history"] = list(state.history)
        embedding = snapshot.embedding
        if embedding is None and self.embed is not None:
            embedding = self.embed(snapshot.image, snapshot.box)
        return PostedObject(
            kind=config.kind,
            track_id=track_id,
            policy=policy,
            frame_index=snapshot.frame_index,
            timestamp=snapshot.timestamp,
            box=box,
            quality=snapshot.quality,
            confidence=snapshot.confidence,
            thumbnail=thumbnail,
            fullframe=fullframe,
            fullframe_format=fullframe_format,
            normalized=normalized,
            detector_params=params,
            embedding=embedding,
        )


def crop_with_margin(
    image: npt.NDArray[np.uint8], box: tuple[float, float, float, float], margin: float
) -> npt.NDArray[np.uint8]:
    """The box grown by `margin` of its size on each side, clipped to the image, at most 512 px a side."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(width, int(np.ceil(x2 + mx))), min(height, int(np.ceil(y2 + my)))
    crop = image[top:max(bottom, top + 1), left:max(right, left + 1)]
    scale = THUMBNAIL_MAX_SIDE / max(crop.shape[:2])
    if scale < 1:
        crop = cast("npt.NDArray[np.uint8]", cv2.resize(
            crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
            interpolation=cv2.INTER_AREA))
    return crop


def align_face(image: npt.NDArray[np.uint8], landmarks: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """A 112x112 face aligned on its five landmarks (the crop face recognisers expect)."""
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), _FACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:
        return cast("npt.NDArray[np.uint8]", cv2.resize(image, (112, 112)))
    return cast("npt.NDArray[np.uint8]", cv2.warpAffine(image, matrix, (112, 112), borderValue=0))


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()
