"""Real footage for tests: clips cut from Debian opencv-doc's sample videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def trim(source: Path, target: Path, frames: int, *, blank_at: int | None = None, blank_frames: int = 0,
         container_format: str | None = None, start_seconds: float = 0.0) -> Path:
    """The first `frames` frames of `source`, re-encoded at high quality (short clips keep the suite fast).

    With `blank_at`, `blank_frames` black frames are inserted before that source frame (a scene with nobody in
    it); `container_format` picks the muxer; `start_seconds` makes the stream's clock start there instead of 0
    (as a cut from a live recording's timeline does).
    """
    with av.open(str(source)) as inp, av.open(str(target), "w", format=container_format) as out:
        in_stream = inp.streams.video[0]
        stream = out.add_stream("mpeg4", rate=in_stream.average_rate)
        stream.width, stream.height, stream.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
        stream.bit_rate = 8_000_000

        first_pts = round(start_seconds * in_stream.average_rate)
        written = 0

        def write(image: np.ndarray) -> None:
            nonlocal written
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = first_pts + written, 1 / in_stream.average_rate
            written += 1
            for packet in stream.encode(frame):
                out.mux(packet)

        for index, frame in enumerate(inp.decode(in_stream)):
            if index >= frames:
                break
            image = frame.to_ndarray(format="bgr24")
            if index == blank_at:
                for _ in range(blank_frames):
                    write(np.zeros_like(image))
            write(image)
        for packet in stream.encode():
            out.mux(packet)
    return target
