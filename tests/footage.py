"""Real footage for tests: clips cut from Debian opencv-doc's sample videos."""

from __future__ import annotations

from pathlib import Path

import av


def trim(source: Path, target: Path, frames: int) -> Path:
    """The first `frames` frames of `source`, re-encoded at high quality (short clips keep the suite fast)."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        in_stream = inp.streams.video[0]
        stream = out.add_stream("mpeg4", rate=in_stream.average_rate)
        stream.width, stream.height, stream.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
        stream.bit_rate = 8_000_000
        for index, frame in enumerate(inp.decode(in_stream)):
            if index >= frames:
                break
            image = frame.to_ndarray(format="bgr24")
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target
