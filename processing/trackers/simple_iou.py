"""IoU tracker with FindFace Multi's ``track_*`` knobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from processing.detections import Detections, box_iou_batch
from processing.stream_settings import defaults_of
from processing.trackers.base import CheckpointState, EndReason, Track, register_tracker

# The stream_settings defaults of the knobs (current version). `track_miss_interval` is not among them: the
# setting is in seconds, the tracker counts frames (the pipeline converts at the video's frame rate).
DEFAULTS = defaults_of().detectors["face"]

# Re-association of lost tracks (SimpleIouTracker._reassociate): how far from its path, in widths of its last box, a
# lost track may take a row; the cosine similarity rows with embeddings need; how many recent embeddings count.
REASSOCIATION_REACH = 0.5
REASSOCIATION_MIN_SIMILARITY = 0.5
GALLERY = 20

@dataclass
class _OpenTrack:
    track_id: int
    class_id: int
    start_frame: int
    last_frame: int
    last_box: npt.NDArray[np.float32]
    frame_indices: list[int] = field(default_factory=list)
    boxes: list[npt.NDArray[np.float32]] = field(default_factory=list)
    interpolated: list[bool] = field(default_factory=list)
    observations: list[Detections] = field(default_factory=list)
    # Processed frames since the last match in which this track was not found.
    missed_frames: list[int] = field(default_factory=list)
    # Box change per frame (x1, y1, x2, y2), smoothed over the track's observations; zero until seen twice.
    velocity: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(4, np.float32))
    hits: int = 0  # observations so far

    def predicted_box(self, frame_index: int) -> npt.NDArray[np.float32]:
        return (self.last_box + self.velocity * (frame_index - self.last_frame)).astype(np.float32)


_Array = TypeVar("_Array", bound=npt.NDArray[Any])


def _readonly(array: _Array) -> _Array:
    array.flags.writeable = False
    return array


@register_tracker("simple_iou")
class SimpleIouTracker:
    """Greedy IoU tracker: each detection continues the open track whose last box overlaps it most.

    Matching is greedy by IoU, highest first (ties: older track, then earlier row), and only
    between rows of the same ``class_id``.  It has no motion model, so it suits detection on
    every frame or every few frames; fast objects at large strides break into several tracks.
    Ids are deterministic: 1, 2, 3, ... in order of creation, and continue after cuts.

    Frame counts are in ``frame_index`` units, not in ``update`` calls, so a setting means the
    same span of video whatever detection stride the pipeline uses.

    Args:
        track_overlap_threshold: minimum IoU (0..1) between a track's last box and a detection
            to continue the track.  Higher avoids swapping ids between crossing objects but
            breaks tracks of fast-moving ones; boxes must overlap at all even at 0.
        track_miss_interval: a track that has not been matched for more than this many frames
            is closed.  Larger bridges short occlusions and detector misses at the risk of
            handing the id to a different object that appears where the old one vanished.
        track_max_duration_frames: when > 0, a track spanning this many frames is closed and
            its object continues under a new id.  Bounds how long a track (and the memory its
            history takes) stays open, at the price of splitting one appearance into several
            tracks.  0 = unlimited.
        track_interpolate_bboxes: when a track is found again after misses, add linearly
            interpolated boxes for the processed frames it was missed in (marked
            ``interpolated``), so consumers get a box on every processed frame of the track.
            Frames that were never passed to ``update`` get no box.
        motion_prediction: match against where each track's box is expected on this frame (its
            last box moved by its smoothed per-frame velocity) instead of where it was last seen.
            Walking people detected every third frame move a good part of their width between
            detections; without prediction their IoU with the last box drops under the threshold
            and the track breaks.
        reassociate_lost: before a detection left over by the other stages starts a new track, let a
            lost track (missed on an earlier processed frame, still within the miss interval) take it
            when it lies near the track's path and is about its size (:meth:`_reassociate`): a person
            walking out from behind another keeps their id instead of getting a new one.  The price:
            within the miss interval, a different object of the same size appearing on a lost track's
            path takes its id.  Deterministic, no extra model.
    """

    def __init__(
        self,
        *,
        track_overlap_threshold: float = DEFAULTS["track_overlap_threshold"],
        track_miss_interval: int = 1,
        track_max_duration_frames: int = DEFAULTS["track_max_duration_frames"],
        track_interpolate_bboxes: bool = DEFAULTS["track_interpolate_bboxes"],
        motion_prediction: bool = False,
        reassociate_lost: bool = True,
    ) -> None:
        if not 0.0 <= track_overlap_threshold <= 1.0:
            raise ValueError(f"track_overlap_threshold must be in [0, 1], got {track_overlap_threshold}")
        if track_miss_interval < 0:
            raise ValueError(f"track_miss_interval must be >= 0, got {track_miss_interval}")
        if track_max_duration_frames < 0:
            raise ValueError(f"track_max_duration_frames must be >= 0, got {track_max_duration_frames}")
        self.track_overlap_threshold = float(track_overlap_threshold)
        self.track_miss_interval = int(track_miss_interval)
        self.track_max_duration_frames = int(track_max_duration_frames)
        self.track_interpolate_bboxes = bool(track_interpolate_bboxes)
        self.motion_prediction = bool(motion_prediction)
        self.reassociate_lost = bool(reassociate_lost)
        self.reset()

    def reset(self) -> None:
        self._open: dict[int, _OpenTrack] = {}  # insertion order = creation order = id order
        self._finished: list[Track] = []
        self._next_id = 1
        self._last_frame_index: int | None = None

    @property
    def next_id(self) -> int:
        """The id the next new track gets; a run resumed from a checkpoint sets it to continue the numbering."""
        return self._next_id

    @next_id.setter
    def next_id(self, value: int) -> None:
        self._next_id = max(1, int(value))

    @property
    def open_track_ids(self) -> list[int]:
        """Ids of tracks that may still continue."""
        return list(self._open)

    # Checkpointable: at a quiet point only the numbering carries over.
    @property
    def quiet(self) -> bool:
        return not self._open and not self._finished

    def checkpoint(self) -> CheckpointState:
        if not self.quiet:
            raise RuntimeError(f"tracks are open or not popped: {self.open_track_ids}")
        return {"next_id": self._next_id}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.next_id = int(state.get("next_id", 1))

    def update(self, detections: Detections, frame_index: int) -> Detections:
        """Assign ``tracker_id`` to every row of ``detections`` found on ``frame_index``."""
        frame_index = int(frame_index)
        if self._last_frame_index is not None and frame_index <= self._last_frame_index:
            raise ValueError(f"frame_index must increase: {frame_index} after {self._last_frame_index}")
        self._last_frame_index = frame_index

        tracks = list(self._open.values())
        matches = self._match(tracks, detections)
        ids = np.zeros(len(detections), dtype=np.int64)
        closing: list[tuple[_OpenTrack, EndReason]] = []

        for track_index, row in matches:
            track = tracks[track_index]
            max_frames = self.track_max_duration_frames
            if max_frames > 0 and frame_index - track.start_frame + 1 > max_frames:
                closing.append((track, "max_duration"))
                continue  # the row is left unmatched and starts the object's next track below
            self._extend(track, detections[row], frame_index)
            ids[row] = track.track_id

        matched_tracks = {track_index for track_index, _ in matches}
        for track_index, track in enumerate(tracks):
            if track_index in matched_tracks:
                continue
            if self._missed_for_good(track, frame_index):
                closing.append((track, "missed"))
            else:
                track.missed_frames.append(frame_index)

        for track, reason in sorted(closing, key=lambda item: item[0].track_id):
            self._close(track, reason)

        for row in np.flatnonzero(ids == 0).tolist():
            ids[row] = self._start(detections[int(row)], frame_index)
        return detections.with_tracker_id(ids)

    def _missed_for_good(self, track: _OpenTrack, frame_index: int) -> bool:
        """Whether a track not found on ``frame_index`` ends now."""
        return frame_index - track.last_frame > self.track_miss_interval

    def pop_finished(self) -> list[Track]:
        finished, self._finished = self._finished, []
        return finished

    def finish(self) -> list[Track]:
        for track in list(self._open.values()):
            self._close(track, "finished")
        return self.pop_finished()

    def _match(self, tracks: list[_OpenTrack], detections: Detections) -> list[tuple[int, int]]:
        """Greedy (track index, row) pairs, best IoU first."""
        if not tracks or len(detections) == 0:
            return []
        iou = self._iou(tracks, detections)
        allowed = self._same_class(tracks, detections) & (iou > 0) & (iou >= self.track_overlap_threshold)
        pairs = greedy_pairs(iou, allowed)
        if self.motion_prediction:
            pairs += self._match_nearby(tracks, detections, pairs)
        if self.reassociate_lost:
            pairs += self._reassociate(tracks, detections, pairs)
        return pairs

    def _reassociate(
        self, tracks: list[_OpenTrack], detections: Detections, taken: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """Last chance before rows left over start new tracks: lost tracks take the nearest row on their path.

        A lost track (missed on an earlier processed frame, not matched on this one) may take a row of its class
        whose height is within 25% and width within 50% of its last box, and whose centre lies within
        ``REASSOCIATION_REACH`` widths of its path: the segment from its last centre to where its velocity puts
        it now, so a person who stopped behind an obstacle and one who walked on at their pace are both found.
        Prediction alone over a long gap multiplies the velocity's noise by the gap. Rows carrying an
        ``embedding`` (``data["embedding"]``) need a cosine similarity of at least ``REASSOCIATION_MIN_SIMILARITY``
        with one of the track's. Pairs are taken nearest first (relative to the track's width).
        """
        lost = np.array([bool(track.missed_frames) for track in tracks])
        if not lost.any() or len(taken) >= len(detections):  # nothing lost, or no row left over
            return []
        frame_index = self._last_frame_index or 0
        last = np.stack([track.last_box for track in tracks])
        predicted = np.stack([track.predicted_box(frame_index) for track in tracks])
        start = (last[:, :2] + last[:, 2:]) / 2
        path = (predicted[:, :2] + predicted[:, 2:]) / 2 - start
        rows = detections.xyxy
        offset = (rows[None, :, :2] + rows[None, :, 2:]) / 2 - start[:, None, :]
        length = np.maximum((path**2).sum(axis=1), 1e-6)[:, None]
        along = np.clip((offset * path[:, None, :]).sum(axis=2) / length, 0.0, 1.0)
        distance = np.linalg.norm(offset - along[:, :, None] * path[:, None, :], axis=2)
        widths = np.maximum(last[:, 2] - last[:, 0], 1.0)[:, None]
        heights = np.maximum(last[:, 3] - last[:, 1], 1.0)[:, None]
        height_ratio = np.maximum(rows[:, 3] - rows[:, 1], 1.0)[None, :] / heights
        width_ratio = np.maximum(rows[:, 2] - rows[:, 0], 1.0)[None, :] / widths
        allowed = (lost[:, None] & self._same_class(tracks, detections) & (distance <= REASSOCIATION_REACH * widths)
                   & (height_ratio > 0.75) & (height_ratio < 1.33) & (width_ratio > 0.67) & (width_ratio < 1.5)
                   & self._looks_alike(tracks, detections))
        allowed[[t for t, _ in taken], :] = False
        allowed[:, [r for _, r in taken]] = False
        return greedy_pairs(-distance / widths, allowed)

    @staticmethod
    def _looks_alike(tracks: list[_OpenTrack], detections: Detections) -> npt.NDArray[np.bool_]:
        """(tracks, rows): False where both have embeddings and none of the track's is similar to the row's."""
        alike = np.ones((len(tracks), len(detections)), bool)
        embeddings = detections.data.get("embedding")
        if embeddings is None:
            return alike
        for index, track in enumerate(tracks):
            gallery = [obs.data["embedding"] for obs in track.observations[-GALLERY:] if "embedding" in obs.data]
            if gallery:
                alike[index] = (np.concatenate(gallery) @ embeddings.T).max(axis=0) >= REASSOCIATION_MIN_SIMILARITY
        return alike

    def _match_nearby(
        self, tracks: list[_OpenTrack], detections: Detections, taken: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """Second chance for tracks and rows left over by IoU: the nearest row of about the same size.

        A track seen once has no velocity yet, and an object walking across the frame moves a good part of its
        width between detections on a stride: its second box may overlap its first too little for IoU. Such a
        track may take a row whose centre lies within one box width of its own; a track with a velocity, within
        half a width of where it was predicted.
        """
        if not tracks or len(detections) == 0:
            return []
        frame_index = self._last_frame_index or 0
        predicted = np.stack([track.predicted_box(frame_index) for track in tracks])
        widths = np.maximum(predicted[:, 2] - predicted[:, 0], 1.0)
        heights = np.maximum(predicted[:, 3] - predicted[:, 1], 1.0)
        centres = (predicted[:, :2] + predicted[:, 2:]) / 2
        rows = detections.xyxy
        row_centres = (rows[:, :2] + rows[:, 2:]) / 2
        distance = np.linalg.norm(centres[:, None, :] - row_centres[None, :, :], axis=2)
        reach = np.where(np.array([track.hits for track in tracks]) <= 1, 1.0, 0.5) * widths
        height_ratio = np.maximum(rows[:, 3] - rows[:, 1], 1.0)[None, :] / heights[:, None]
        allowed = (self._same_class(tracks, detections) & (distance <= reach[:, None])
                   & (height_ratio > 0.75) & (height_ratio < 1.33))
        allowed[[t for t, _ in taken], :] = False
        allowed[:, [r for _, r in taken]] = False
        return greedy_pairs(-distance, allowed)

    def _iou(self, tracks: list[_OpenTrack], detections: Detections) -> npt.NDArray[np.float32]:
        frame_index = self._last_frame_index or 0
        boxes = [track.predicted_box(frame_index) if self.motion_prediction else track.last_box for track in tracks]
        return box_iou_batch(np.stack(boxes), detections.xyxy)

    @staticmethod
    def _same_class(tracks: list[_OpenTrack], detections: Detections) -> npt.NDArray[np.bool_]:
        return np.array([track.class_id for track in tracks])[:, None] == detections.class_id[None, :]

    def _start(self, row: Detections, frame_index: int) -> int:
        track = _OpenTrack(
            track_id=self._next_id,
            class_id=int(row.class_id[0]),
            start_frame=frame_index,
            last_frame=frame_index,
            last_box=row.xyxy[0],
        )
        self._next_id += 1
        self._open[track.track_id] = track
        self._extend(track, row, frame_index)
        return track.track_id

    def _extend(self, track: _OpenTrack, row: Detections, frame_index: int) -> None:
        box = row.xyxy[0]
        if self.track_interpolate_bboxes and track.missed_frames:
            span = frame_index - track.last_frame
            for missed in track.missed_frames:
                weight = (missed - track.last_frame) / span
                track.frame_indices.append(missed)
                track.boxes.append((track.last_box + weight * (box - track.last_box)).astype(np.float32))
                track.interpolated.append(True)
        track.missed_frames.clear()
        if track.hits:
            step = (box - track.last_box) / max(1, frame_index - track.last_frame)
            # The first step sets the velocity; later ones are smoothed, detector jitter is not motion.
            track.velocity = (step if track.hits == 1 else 0.5 * track.velocity + 0.5 * step).astype(np.float32)
        track.hits += 1
        track.frame_indices.append(frame_index)
        track.boxes.append(box)
        track.interpolated.append(False)
        track.observations.append(row.with_tracker_id([track.track_id]))
        track.last_frame = frame_index
        track.last_box = box

    def _close(self, track: _OpenTrack, reason: EndReason) -> None:
        del self._open[track.track_id]
        self._finished.append(
            Track(
                track_id=track.track_id,
                class_id=track.class_id,
                frame_indices=_readonly(np.asarray(track.frame_indices, dtype=np.int64)),
                xyxy=_readonly(np.stack(track.boxes).astype(np.float32)),
                interpolated=_readonly(np.asarray(track.interpolated, dtype=bool)),
                observations=Detections.merge(track.observations),
                end_reason=reason,
            )
        )


def greedy_pairs(score: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(track index, row) pairs taken greedily by ``score`` descending among ``allowed`` cells.

    Ties go to the older track (lower index), then the earlier row, so results are deterministic.
    """
    track_idx, row_idx = np.nonzero(allowed)
    # lexsort: last key is primary -> score descending, then track, then row.
    order = np.lexsort((row_idx, track_idx, -score[track_idx, row_idx]))
    used_tracks: set[int] = set()
    used_rows: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for t, r in zip(track_idx[order].tolist(), row_idx[order].tolist(), strict=True):
        if t not in used_tracks and r not in used_rows:
            used_tracks.add(t)
            used_rows.add(r)
            pairs.append((t, r))
    return pairs
