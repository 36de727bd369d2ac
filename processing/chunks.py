"""One long video cut into time chunks that separate workers run; their tracks stitched back. No Django here.

- `plan_spans` cuts a video at keyframes (a chunk's decoder seeks straight to its first frame, no prefix is
  decoded), about every `chunk_seconds`. Chunk k owns [start, end) and decodes on to end + overlap, so the
  next chunk's first `overlap` seconds are seen by both.
- `OverlapRecorder` keeps, for the frames in those shared windows, every tracked box of every track.
- `stitch` pairs the tracks of adjacent chunks that follow the same object through the shared frames (mean
  IoU of their boxes at the frames both analysed, appearance as the tie-breaker where both have an embedding)
  and returns chains of tracks that are one object (videos.chunks merges their events per posting policy).

Track ids of chunk k start at k * TRACK_ID_STRIDE + 1, so tracks of different chunks never share an id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from processing.media import MediaError, Source, av_target, open_options

TRACK_ID_STRIDE = 1_000_000
# Two tracks of adjacent chunks are one object when their boxes overlap this much on average over at least
# STITCH_MIN_COMMON frames that both analysed.
STITCH_IOU = 0.5
STITCH_MIN_COMMON = 2
# Weight of appearance (cosine of the tracks' embeddings) in the score that orders candidate pairs.
APPEARANCE_WEIGHT = 0.2


@dataclass(frozen=True)
class Span:
    index: int
    start: float  # seconds from the stream's start; a keyframe
    end: float | None  # where the next chunk starts (None: the end of the video)

    def decode_end(self, overlap: float) -> float | None:
        return None if self.end is None else self.end + overlap

    def windows(self, overlap: float) -> list[tuple[float, float]]:
        """The stretches shared with the neighbours: [start, start + overlap) and [end, end + overlap)."""
        found = []
        if self.index > 0:
            found.append((self.start, self.start + overlap))
        if self.end is not None:
            found.append((self.end, self.end + overlap))
        return found


def keyframes(source: Source) -> tuple[list[float], float | None]:
    """(keyframe times in seconds from the stream's start, the video's duration); only packets are read.

    `source` is a path or a seekable file object (a bucket's object read by ranged GETs)."""
    import av

    try:
        container = av.open(av_target(source), mode="r", options=open_options(source, None))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError("source_unreadable", reason=str(exc)) from exc
    with container:
        if not container.streams.video:
            raise MediaError("no_video_stream")
        stream = container.streams.video[0]
        time_base = float(stream.time_base) if stream.time_base else None
        if time_base is None:
            return [], None
        start_pts = stream.start_time or 0
        times: list[float] = []
        last = 0.0
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            seconds = (packet.pts - start_pts) * time_base
            last = max(last, seconds + float(packet.duration or 0) * time_base)
            if packet.is_keyframe:
                times.append(seconds)
        duration = stream.duration * time_base if stream.duration else (last or None)
        return sorted(set(times)), duration


def plan_spans(keyframe_times: list[float], duration: float | None, chunk_seconds: float, overlap: float
               ) -> list[Span]:
    """Chunks of about `chunk_seconds`, each starting at a keyframe; one span when the video is not longer."""
    if not duration or chunk_seconds <= 0 or duration <= chunk_seconds:
        return [Span(0, 0.0, None)]
    starts = [0.0]
    for time in keyframe_times:
        # The first keyframe at or after the next target; a last piece shorter than the overlap is not cut off.
        if time >= starts[-1] + chunk_seconds and duration - time > max(overlap, 1.0):
            starts.append(time)
    return [Span(i, start, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]


def first_track_id(chunk_index: int) -> int:
    return chunk_index * TRACK_ID_STRIDE + 1


def chunk_of_track(track_id: int) -> int:
    return track_id // TRACK_ID_STRIDE


class OverlapRecorder:
    """Tracked boxes at the frames of the shared windows: {kind: {track id: {frame index: [x1, y1, x2, y2]}}}
    (JSON keys are strings). A resumed chunk restores what its first attempt recorded; replayed frames
    record the same boxes again (tracking is deterministic from a checkpoint)."""

    def __init__(self, windows: list[tuple[float, float]], recorded: Mapping[str, Any] | None = None) -> None:
        self.windows = windows
        self.tracks: dict[str, dict[str, dict[str, list[float]]]] = {
            kind: {tid: dict(frames) for tid, frames in by_track.items()}
            for kind, by_track in (recorded or {}).items()
        }

    def record(self, kind: str, frame_index: int, timestamp: float, track_ids: list[int], boxes: np.ndarray) -> None:
        if not any(start - 1e-6 <= timestamp < end for start, end in self.windows):
            return
        by_track = self.tracks.setdefault(kind, {})
        for track_id, box in zip(track_ids, boxes.tolist(), strict=True):
            by_track.setdefault(str(int(track_id)), {})[str(frame_index)] = [round(v, 1) for v in box]


def iou(a: list[float], b: list[float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# (kind, track id of one chunk, track id of the next) -> cosine of their appearance, or None without embeddings
Similarity = Callable[[str, int, int], float | None]


def stitch(recorded: Mapping[int, Mapping[str, Any]], similarity: Similarity | None = None
           ) -> dict[tuple[str, int], int]:
    """Which tracks continue an earlier chunk's track: {(kind, track id): the chain's first track id}.

    `recorded` is each chunk's OverlapRecorder.tracks by chunk index. Pairs are taken best first, one to one,
    between each pair of adjacent chunks; chains follow an object over several boundaries.
    """
    head: dict[tuple[str, int], int] = {}
    indices = sorted(recorded)
    for left, right in zip(indices, indices[1:], strict=False):
        if right != left + 1:
            continue
        for kind, earlier in recorded[left].items():
            later = recorded[right].get(kind) or {}
            candidates: list[tuple[float, int, int]] = []
            for a_id, a_frames in earlier.items():
                for b_id, b_frames in later.items():
                    common = a_frames.keys() & b_frames.keys()
                    if len(common) < STITCH_MIN_COMMON:
                        continue
                    mean_iou = sum(iou(a_frames[f], b_frames[f]) for f in common) / len(common)
                    if mean_iou < STITCH_IOU:
                        continue
                    score = mean_iou
                    cosine = similarity(kind, int(a_id), int(b_id)) if similarity else None
                    if cosine is not None:
                        score = (1 - APPEARANCE_WEIGHT) * mean_iou + APPEARANCE_WEIGHT * cosine
                    candidates.append((score, int(a_id), int(b_id)))
            taken_a: set[int] = set()
            taken_b: set[int] = set()
            for _score, a_id, b_id in sorted(candidates, reverse=True):
                if a_id in taken_a or b_id in taken_b:
                    continue
                taken_a.add(a_id)
                taken_b.add(b_id)
                head[(kind, b_id)] = head.get((kind, a_id), a_id)
    return head
