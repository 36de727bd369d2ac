"""The source stage: decoding in a thread of its own, through a bounded queue, under a watchdog. No Django here.

The decoder thread decodes the first frame and waits: the run checks that frames of that size fit the worker's
memory and sizes the queue (`release`) before more frames are decoded. Then decoding overlaps with inference.
The consumer never blocks on the decoder for long: when no frame comes for a poll interval, iteration yields
None (a tick, so that the run can report progress and honour a stop request), and when none came for
`stall_seconds` it raises SourceStalled. A decoder stuck in a demuxer is abandoned (it is a daemon thread):
it cannot keep the job, or the process, from finishing.

A url source is fetched first, in the same thread (processing.fetch): the download is stopped with the source,
and every chunk that arrives counts as progress for the watchdog (the fetch's own read timeout ends a server
that stops sending). The spool file goes when the decoder's generator is closed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import BinaryIO

from processing.config import PipelineSettings
from processing.decoding import DecodedFrame, DecodeStats, decode_frames
from processing.fetch import is_remote, spooled
from processing.pipeline.errors import SourceStalled, out_of_memory

# Copies of a frame a run holds at once (decoder's picture, BGR frame, transformed frame, the detector's input):
# frames that cannot fit the worker's memory limit this many times over are refused before decoding goes on.
FRAME_COPIES = 4
# The longest the consumer waits for a frame before it ticks (seconds).
MAX_POLL = 1.0

_END = object()


class FrameSource:
    """Iterates the decoded frames, with None for each poll interval the decoder kept the caller waiting."""

    def __init__(self, frames: Generator[DecodedFrame, None, None], stats: DecodeStats, *, stall_seconds: float,
                 poll: float, stop: threading.Event | None = None) -> None:
        self.stats = stats
        self._frames = frames
        self._stall_seconds = stall_seconds
        self._poll = max(0.01, min(poll, stall_seconds) if stall_seconds > 0 else poll)
        # One frame until `release`: the first frame waits there while the run checks its size.
        self._buffer: queue.Queue[object] = queue.Queue(maxsize=1)
        self._stop = stop or threading.Event()
        self._released = threading.Event()
        self._last_item = time.monotonic()
        self._stalled = False
        self._thread = threading.Thread(target=self._produce, name="decoder", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, settings: PipelineSettings, stats: DecodeStats, *, first_index: int) -> FrameSource:
        stop = threading.Event()
        # The decoder thread starts in the constructor and may receive data before it returns: until then there
        # is nothing to touch (the watchdog's clock starts at construction anyway).
        opened: list[FrameSource] = []
        if is_remote(settings.source):
            frames = _fetched_frames(settings, stats, first_index=first_index, should_stop=stop.is_set,
                                     on_data=lambda: opened[0].touch() if opened else None)
        else:
            frames = _frames(settings, settings.source, stats, first_index=first_index)
        poll = min(max(settings.progress_interval, 0.05), MAX_POLL)
        source = cls(frames, stats, stall_seconds=settings.decode_stall_seconds, poll=poll, stop=stop)
        opened.append(source)
        return source

    def touch(self) -> None:
        """The source made progress without a frame (a fetch received data): the watchdog starts over."""
        self._last_item = time.monotonic()

    def release(self, depth: int) -> None:
        """Let the decoder go on past the first frame, buffering up to `depth` frames ahead."""
        with self._buffer.mutex:  # no producer waits in put(): it waits for this release
            self._buffer.maxsize = max(1, depth)
        self._released.set()

    def __iter__(self) -> Iterator[DecodedFrame | None]:
        """Frames in order, None while waiting; re-raises the decoder's error; SourceStalled on a stall."""
        while True:
            try:
                item = self._buffer.get(timeout=self._poll)
            except queue.Empty:
                waited = time.monotonic() - self._last_item
                if self._stall_seconds > 0 and waited >= self._stall_seconds:
                    self._stalled = True
                    seconds = self._stall_seconds
                    raise SourceStalled("source_stalled", seconds=int(seconds) if seconds == int(seconds) else seconds
                                        ) from None
                yield None
                continue
            self._last_item = time.monotonic()
            if item is _END:
                return
            if isinstance(item, BaseException):
                # Raised without a reference from this frame: its traceback holds the decoder's frames (a whole
                # codec context, 200 MB a picture for a decompression bomb), which must go with the error, not
                # wait for the garbage collector to find a cycle through this generator.
                error: BaseException | None = item
                item = None
                try:
                    raise error  # type: ignore[misc]  # (never None here)
                finally:
                    error = None
            assert isinstance(item, DecodedFrame)
            yield item

    def close(self) -> None:
        """Stop the decoder; wait a moment for it to close the container, unless it is stuck."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=0 if self._stalled else 1.0)
        # Frames decoded ahead and never taken go now, not when the source object is collected.
        while True:
            try:
                self._buffer.get_nowait()
            except queue.Empty:
                break

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._buffer.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for index, frame in enumerate(self._frames):
                if not self._put(frame):
                    return
                if index == 0:
                    while not self._released.wait(0.2):
                        if self._stop.is_set():
                            return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
        finally:
            self._frames.close()


def _frames(settings: PipelineSettings, path: str | Path | BinaryIO, stats: DecodeStats, *, first_index: int
            ) -> Generator[DecodedFrame, None, None]:
    return decode_frames(
        path,
        stats,
        max_pixels=settings.max_pixels,
        options=settings.ffmpeg_options,
        format_name=settings.ffmpeg_format or None,
        first_index=first_index,
        start_time=settings.span[0] if settings.span else 0.0,
        end_time=settings.span[1] if settings.span else None,
        threads=settings.decode_threads,
    )


def _fetched_frames(settings: PipelineSettings, stats: DecodeStats, *, first_index: int,
                    should_stop: Callable[[], bool], on_data: Callable[[], None]
                    ) -> Generator[DecodedFrame, None, None]:
    with spooled(str(settings.source), settings.fetch, should_stop=should_stop, on_data=on_data) as path:
        yield from _frames(settings, path, stats, first_index=first_index)


def frames_in_flight(settings: PipelineSettings) -> int:
    """Frames the detection stage may hold at once: its workers' frames, or its batches' (the filling one too)."""
    workers = max(1, settings.detect_workers)
    if settings.detect_batch > 1:
        return settings.detect_batch * (workers + 1)
    return workers


def buffer_depth(settings: PipelineSettings, stats: DecodeStats) -> int:
    """Frames to decode ahead; raises PipelineError when frames of this size cannot fit the memory limit."""
    frame_bytes = stats.width * stats.height * 3
    workers = frames_in_flight(settings)
    if settings.memory_limit_bytes and frame_bytes * FRAME_COPIES * workers > settings.memory_limit_bytes:
        raise out_of_memory(stats)
    # As many frames ahead as fit the buffer budget: 8 small ones, a single one of 8192x8192 (200 MB).
    return max(1, min(8, settings.decode_buffer_bytes // max(1, frame_bytes)))
