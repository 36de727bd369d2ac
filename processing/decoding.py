"""Decoding a video into frames with PyAV. No Django here.

`decode_frames` yields `DecodedFrame`s with time taken from pts (variable frame rate drifts with frame counters)
and counts packets the decoder rejected as soft errors instead of failing the whole video.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import av
import numpy as np

from processing.errors import reason_of
from processing.media import MediaError, Source, av_target, open_options


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    timestamp: float  # seconds from the start of the stream
    image: np.ndarray | None  # H x W x 3, uint8, BGR; None for frames before `first_index`
    stream_time: float = 0.0  # the container's own clock (pts without subtracting the stream's start)


@dataclass
class DecodeStats:
    soft_errors: int = 0
    width: int = 0
    height: int = 0
    duration: float | None = None
    fps: float | None = None
    frames: int | None = None
    errors: list[str] = field(default_factory=list)


def open_video(path: Source, *, options: dict[str, str] | None = None, format_name: str | None = None):
    """Open a container or raise MediaError with a message a user can act on."""
    try:
        container = av.open(av_target(path), mode="r", format=format_name or None,
                            options=open_options(path, options))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError("source_unreadable", reason=reason_of(exc)) from exc
    if not container.streams.video:
        container.close()
        raise MediaError("no_video_stream")
    return container


def decode_frames(
    path: Source,
    stats: DecodeStats,
    *,
    max_pixels: int,
    options: dict[str, str] | None = None,
    format_name: str | None = None,
    max_soft_errors: int = 1000,
    first_index: int = 0,
    start_time: float = 0.0,
    end_time: float | None = None,
    threads: int = 0,
) -> Generator[DecodedFrame, None, None]:
    """Every frame of the video; `stats` fills in as it goes (soft errors, size, duration).

    Frames before `first_index` (a resumed run's checkpoint) are decoded, so that indices and timestamps stay
    exact, but come without an image: the conversion to BGR is most of the cost of a decoded frame.

    A chunk of a long video (processing.chunks) gives `start_time` (a keyframe: the demuxer seeks straight to
    it) and `end_time` (decoding stops there); its frame indices then come from the timestamps (exact for a
    constant frame rate), so they agree with those of a run from the start.
    """
    container = open_video(path, options=options, format_name=format_name)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads > 0:  # else FFmpeg's default (one thread per core)
            stream.codec_context.thread_count = threads
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise MediaError("frame_too_large", width=width, height=height, max_pixels=max_pixels)
        stats.width, stats.height = width, height
        time_base = float(stream.time_base) if stream.time_base else None
        start_pts = stream.start_time or 0
        if stream.duration and time_base:
            stats.duration = stream.duration * time_base
        elif container.duration:
            stats.duration = container.duration / av.time_base
        stats.fps = float(stream.average_rate) if stream.average_rate else None
        stats.frames = int(stream.frames) or None  # as the container's header says (0: it does not say)
        index = 0
        seeking = start_time > 0 and bool(time_base)
        if seeking:
            assert time_base is not None
            container.seek(start_pts + int(start_time / time_base), stream=stream, backward=True)
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                if isinstance(exc, MemoryError):
                    raise  # not a damaged packet: the decoder could not allocate (see the pipeline)
                stats.soft_errors += 1
                stats.errors.append(str(exc))
                if stats.soft_errors > max_soft_errors:
                    raise MediaError("too_many_decoding_errors", count=stats.soft_errors,
                                     reason=reason_of(exc)) from exc
                continue
            for frame in frames:
                if frame.pts is not None and time_base:
                    timestamp = (frame.pts - start_pts) * time_base
                    stream_time = frame.pts * time_base
                elif stats.fps:
                    timestamp = stream_time = index / stats.fps
                else:
                    timestamp = stream_time = 0.0
                if end_time is not None and timestamp >= end_time - 1e-6:
                    return
                if seeking:
                    if timestamp < start_time - 1e-6:
                        continue  # (a seek lands on the keyframe at or before the start)
                    index = round(float(timestamp) * stats.fps) if stats.fps else index
                if frame.width * frame.height > max_pixels:
                    raise MediaError("frame_too_large", width=frame.width, height=frame.height,
                                     max_pixels=max_pixels)
                image = frame.to_ndarray(format="bgr24") if index >= first_index else None
                yield DecodedFrame(index=index, timestamp=float(timestamp), image=image, stream_time=float(stream_time))
                index += 1
    finally:
        container.close()
