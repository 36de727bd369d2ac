"""Probing video files and taking still frames from them, with PyAV and OpenCV. No Django here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from processing.errors import CodedError, reason_of

# ASCII digits only ([0-9], not \d, which takes any script's digits); matched whole.
GEOMETRY_RE = re.compile(r"([0-9]+)x([0-9]+)\+([0-9]+)\+([0-9]+)")


# Demuxers of plain media files. Playlists and scripts (hls, concat, image2, lavfi, ...) open further files or
# URLs named inside the file, which would let an uploaded file read the server's files, so they are not here.
SAFE_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,avi,matroska,webm,flv,mpegts,mpeg,mpegvideo,h264,hevc,mjpeg,asf,ogg,rtsp"


def open_options(source: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """FFmpeg options that confine what opening `source` may touch: its own protocol and plain demuxers."""
    remote = str(source).startswith(("http://", "https://"))
    options = {
        **(extra or {}),
        "format_whitelist": SAFE_FORMATS,
        "protocol_whitelist": "http,https,tcp,tls" if remote else "file",
    }
    if remote:
        options.setdefault("rw_timeout", "15000000")  # microseconds: a stalled server ends the job, not hangs it
    return options


class MediaError(CodedError):
    """The file is not a video we can read; `code` and `params` say why (see processing.errors.MESSAGES)."""


class CropOutsideFrame(ValueError):
    """A crop region (`rot`, `roi`) does not lie inside the frame it is applied to."""

    def __init__(self, crop: Crop, frame_width: int, frame_height: int) -> None:
        self.crop, self.frame_width, self.frame_height = crop, frame_width, frame_height
        super().__init__(f"crop {crop} lies outside the {frame_width}x{frame_height} frame")


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    codec: str
    width: int
    height: int
    duration: float | None
    fps: float | None
    frames: int | None


@dataclass(frozen=True)
class Crop:
    width: int
    height: int
    x: int
    y: int

    @classmethod
    def parse(cls, value: str) -> Crop | None:
        """`WxH+X+Y`, or None for an empty string."""
        if not value:
            return None
        match = GEOMETRY_RE.fullmatch(value)
        if not match:
            raise ValueError(f"{value!r} is not of the form WxH+X+Y")
        return cls(*(int(group) for group in match.groups()))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}+{self.x}+{self.y}"

    def apply(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        if self.width <= 0 or self.height <= 0 or self.x + self.width > width or self.y + self.height > height:
            raise CropOutsideFrame(self, width, height)
        return frame[self.y : self.y + self.height, self.x : self.x + self.width]


def probe(path: str | Path, *, max_pixels: int) -> MediaInfo:
    """Open the file, find its first video stream and decode one frame to prove it is a readable video."""
    try:
        with av.open(str(path), mode="r", options=open_options(path)) as container:
            if not container.streams.video:
                raise MediaError("no_video_stream")
            if _is_still_image(container.format.name):
                raise MediaError("still_image")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width <= 0 or height <= 0:
                raise MediaError("no_frame_size")
            if width * height > max_pixels:
                raise MediaError("frame_too_large", width=width, height=height, max_pixels=max_pixels)
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            fps = float(stream.average_rate) if stream.average_rate else None
            frames = stream.frames or None
            if duration is None and frames and fps:
                duration = frames / fps
            first = _first_frame(container, stream)
            if first is None:
                raise MediaError("no_decodable_frame")
            if (first.width, first.height) != (width, height) and first.width * first.height > max_pixels:
                raise MediaError("frame_too_large", width=first.width, height=first.height, max_pixels=max_pixels)
            return MediaInfo(
                format_name=container.format.name,
                codec=stream.codec_context.name,
                width=width,
                height=height,
                duration=duration,
                fps=fps,
                frames=frames,
            )
    except MediaError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise MediaError(_unreadable_code(path)) from exc


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8")


def _unreadable_code(path: str | Path) -> str:
    """What to tell the user about a file FFmpeg would not open (never the server's temporary path)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError:
        head = b""
    if head.startswith(_IMAGE_MAGIC) or (head.startswith(b"RIFF") and head[8:12] == b"WEBP"):
        return "still_image"
    return "unsupported_container"


def _is_still_image(format_name: str) -> bool:
    """FFmpeg opens a PNG, JPEG, BMP... as a one-frame "video" through its image demuxers."""
    names = format_name.split(",")
    return any(name == "image2" or name.endswith("_pipe") for name in names)


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream):
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError:
        return None
    return None


def grab_frame(path: str | Path, *, at_fraction: float = 0.1, max_seconds: float = 5.0) -> np.ndarray:
    """A BGR frame from about `at_fraction` of the video (at most `max_seconds` in): first frames are often black."""
    try:
        with av.open(str(path), mode="r", options=open_options(path)) as container:
            if not container.streams.video:
                raise MediaError("no_video_stream")
            stream = container.streams.video[0]
            target = None
            if stream.duration and stream.time_base:
                seconds = min(float(stream.duration * stream.time_base) * at_fraction, max_seconds)
                target = int(seconds / stream.time_base) + (stream.start_time or 0)
            frame = None
            if target:
                try:
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                except av.FFmpegError:
                    container.seek(0)
                for candidate in container.decode(stream):
                    frame = candidate
                    if candidate.pts is None or candidate.pts >= target:
                        break
            if frame is None:
                container.seek(0)
                frame = _first_frame(container, stream)
            if frame is None:
                raise MediaError("no_decodable_frame")
            return frame.to_ndarray(format="bgr24")
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaError("source_unreadable", reason=reason_of(exc)) from exc


def render_jpeg(
    frame: np.ndarray,
    *,
    crop: Crop | None = None,
    width: int | None = None,
    height: int | None = None,
    quality: int = 95,
) -> tuple[bytes, int, int]:
    """Crop, then scale (one side given keeps the aspect ratio), then encode. Returns (jpeg, width, height)."""
    if crop is not None:
        frame = crop.apply(frame)
    src_h, src_w = frame.shape[:2]
    if width and not height:
        height = max(1, round(src_h * width / src_w))
    elif height and not width:
        width = max(1, round(src_w * height / src_h))
    if width and height and (width, height) != (src_w, src_h):
        interpolation = cv2.INTER_AREA if width * height < src_w * src_h else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (width, height), interpolation=interpolation)
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MediaError("jpeg_encoding_failed")
    out_h, out_w = frame.shape[:2]
    return encoded.tobytes(), out_w, out_h
