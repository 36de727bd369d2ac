"""The ``Tracker`` protocol, the ``Track`` record trackers hand out, and the registry by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from processing.detections import Detections
from processing.registry import Registry

EndReason = Literal["missed", "max_duration", "finished", "unconfirmed"]


@dataclass(frozen=True, eq=False)
class Track:
    """One finished track.

    Attributes:
        track_id: id the tracker gave the rows (``Detections.tracker_id``).
        class_id: detector class of every row.
        frame_indices: ``(K,)`` int64, strictly increasing frames that have a box.
        xyxy: ``(K, 4)`` float32 box per entry of ``frame_indices``.
        interpolated: ``(K,)`` bool, True where the box was filled in for a missed frame.
        observations: the real detections, one row per non-interpolated frame, in frame order,
            with ``tracker_id`` and ``data`` (landmarks, embeddings) as the detector gave them;
            pick the best face of the track from here.
        end_reason: ``"missed"`` (not seen for longer than the miss interval),
            ``"max_duration"`` (cut; the object continues under a new id), ``"finished"``
            (the stream ended or :meth:`Tracker.finish` was called) or ``"unconfirmed"`` (a
            tentative track a tracker filters out as a likely false detection: not to be posted).
    """

    track_id: int
    class_id: int
    frame_indices: npt.NDArray[np.int64]
    xyxy: npt.NDArray[np.float32]
    interpolated: npt.NDArray[np.bool_]
    observations: Detections
    end_reason: EndReason

    @property
    def start_frame(self) -> int:
        return int(self.frame_indices[0])

    @property
    def last_frame(self) -> int:
        """Last frame the object was actually seen (tracks never end on an interpolated box)."""
        return int(self.frame_indices[-1])

    @property
    def observed_frame_indices(self) -> npt.NDArray[np.int64]:
        """``(len(observations),)`` frame of each row of ``observations``."""
        return self.frame_indices[~self.interpolated]


#: What `Checkpointable.checkpoint` returns: JSON-serialisable (it is saved with the job's progress).
CheckpointState = dict[str, Any]


@runtime_checkable
class Checkpointable(Protocol):
    """A stage whose state a run resumed at a quiet point restores.

    A quiet point is a frame after which nothing is open (no track, no pending post): what happens after it
    depends only on the few numbers `checkpoint` returns (the next track id, counters), not on the frames
    before, so a run that restores them and starts at the next frame posts what the uninterrupted run posts.
    """

    @property
    def quiet(self) -> bool:
        """True when nothing is open: a checkpoint taken now loses nothing."""
        ...

    def checkpoint(self) -> CheckpointState:
        """The state to restore after a quiet point; raises RuntimeError when not `quiet`."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a `checkpoint` of an earlier run (called on a fresh instance, before any frame)."""
        ...


@runtime_checkable
class Tracker(Checkpointable, Protocol):
    """Links per-frame detections into tracks; one instance per video stream.

    ``update`` must be called with strictly increasing ``frame_index`` (frames may be skipped,
    e.g. when only every n-th frame is detected); the tracker never mutates its input.
    """

    def update(self, detections: Detections, frame_index: int) -> Detections:
        """The same rows in the same order, with ``tracker_id`` set on every row."""
        ...

    def pop_finished(self) -> list[Track]:
        """Tracks that ended since the last call, ordered by end frame then id."""
        ...

    def finish(self) -> list[Track]:
        """End every open track (end of stream) and return all not yet popped tracks."""
        ...

    def reset(self) -> None:
        """Drop all state, finished tracks included; ids restart from 1."""
        ...


_trackers: Registry[Tracker] = Registry("tracker")

#: Class decorator: make ``create_tracker(name, ...)`` build this tracker (e.g. FindFace's ``tracker_type``).
register_tracker = _trackers.register
#: Build the tracker registered as ``name``; settings go to its constructor.
create_tracker = _trackers.create
#: Registered tracker names, sorted.
available_trackers = _trackers.names
