"""The video pipeline: decode, detect, track, post; progress reported through callbacks. No Django here.

`run_pipeline` takes plain settings and callbacks and returns plain results; `videos.jobs` glues it to the
database. The stages, each a module: `source` (decoding in its own thread feeding a bounded queue, under a
watchdog), `sampler` (which frames are analysed), `detection` (frames in flight through the detectors),
`tracking` (per kind: track, post, checkpoint) and `progress` (counters, throttled reports); `run` puts them
together.
"""

from processing.pipeline.detection import (
    DetectedFrame,
    Detectors,
    FrameDetection,
    ThreadedDetection,
    faces_in_upper_bodies,
)
from processing.pipeline.errors import PipelineError, SourceStalled
from processing.pipeline.progress import KIND_PLURALS, KindCounters, PipelineResult, Progress, ProgressReporter
from processing.pipeline.run import run_pipeline
from processing.pipeline.sampler import FrameSampler, SampledFrame
from processing.pipeline.source import FRAME_COPIES, FrameSource
from processing.pipeline.tracking import MIN_EMBEDDED_SIDE, KindTracker, Tracking

__all__ = [
    "FRAME_COPIES",
    "KIND_PLURALS",
    "MIN_EMBEDDED_SIDE",
    "DetectedFrame",
    "Detectors",
    "FrameDetection",
    "FrameSampler",
    "FrameSource",
    "KindCounters",
    "KindTracker",
    "PipelineError",
    "PipelineResult",
    "Progress",
    "ProgressReporter",
    "SampledFrame",
    "SourceStalled",
    "ThreadedDetection",
    "Tracking",
    "faces_in_upper_bodies",
    "run_pipeline",
]
