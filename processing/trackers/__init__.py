"""Trackers: the ``Tracker`` protocol, the ``Track`` record, a registry by name and the built-ins."""

from processing.trackers.base import (
    Checkpointable,
    CheckpointState,
    EndReason,
    Track,
    Tracker,
    available_trackers,
    create_tracker,
    register_tracker,
)
from processing.trackers.deep_sort import DeepSortTracker
from processing.trackers.simple_iou import SimpleIouTracker

__all__ = [
    "CheckpointState",
    "Checkpointable",
    "DeepSortTracker",
    "EndReason",
    "SimpleIouTracker",
    "Track",
    "Tracker",
    "available_trackers",
    "create_tracker",
    "register_tracker",
]
