"""Faces found in an uploaded photo (`POST /detect/`): stored as FaceDetection rows, the probes of face search.

The photo must be a JPEG or PNG; its header is read before anything is decoded, so a small file claiming a huge
picture (a decompression bomb) is refused by its size in pixels (FFV_MAX_FRAME_PIXELS) without being expanded.
OpenCV turns the picture upright by its EXIF orientation before detection, so boxes are in upright coordinates;
the orientation is reported as FindFace does.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from django.conf import settings
from django.utils.translation import gettext as _

from videos.errors import BadParam, ServiceUnavailable
from videos.models import FaceDetection

DETECTION_ID_BYTES = 15  # secrets.token_urlsafe: 20 url-safe characters


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" or "png"
    width: int
    height: int
    orientation: int  # EXIF orientation 1..8 (1 when absent)


@dataclass(frozen=True)
class DetectResult:
    orientation: int
    detections: list[FaceDetection]


def image_info(data: bytes) -> ImageInfo:
    """Format, size and EXIF orientation from the header of a JPEG or PNG; BadParam for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return ImageInfo("png", width, height, 1)
    if data.startswith(b"\xff\xd8\xff"):
        found = _jpeg_header(data)
        if found is not None:
            return found
        raise BadParam(_("The JPEG image is damaged: its header cannot be read."), param="photo")
    raise BadParam(_("The photo must be a JPEG or PNG image."), param="photo")


def _jpeg_header(data: bytes) -> ImageInfo | None:
    """Walk the JPEG markers up to the frame header (SOFn), noting the EXIF orientation on the way."""
    orientation = 1
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        segment = data[position + 4 : position + 2 + length]
        if length < 2 or len(segment) < length - 2:
            return None
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:]) or orientation
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if len(segment) < 5:
                return None
            height, width = struct.unpack(">HH", segment[1:5])
            return ImageInfo("jpeg", width, height, orientation)
        position += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """Tag 0x0112 of IFD0 in a TIFF block; None when absent or malformed."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for entry in range(count):
        start = ifd + 2 + 12 * entry
        if start + 12 > len(tiff):
            return None
        tag, kind, _count = struct.unpack(order + "HHI", tiff[start : start + 8])
        if tag == 0x0112 and kind == 3:  # SHORT
            (value,) = struct.unpack(order + "H", tiff[start + 8 : start + 10])
            return value if 1 <= value <= 8 else None
    return None


def photo_faces(data: bytes) -> tuple[ImageInfo, list]:
    """The photo's header and the faces found on it (processing.faces.FoundFace, best first); BadParam for a photo
    that is empty, not a JPEG or PNG, too large in pixels or undecodable."""
    from processing.faces import find_faces  # onnxruntime loads with the first detection

    if not data:
        raise BadParam(_("The photo is empty."), param="photo")
    info = image_info(data)
    if info.width <= 0 or info.height <= 0:
        raise BadParam(_("The photo has no pixels."), param="photo")
    if info.width * info.height > settings.FFV_MAX_FRAME_PIXELS:
        raise BadParam(
            _("The photo is %(width)dx%(height)d, more than the limit of %(limit)d pixels.")
            % {"width": info.width, "height": info.height, "limit": settings.FFV_MAX_FRAME_PIXELS},
            param="photo",
        )
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise BadParam(_("The photo cannot be decoded."), param="photo")
    try:
        found = find_faces(image, face_model=Path(settings.FFV_FACE_MODEL),
                           embedder_model=Path(settings.FFV_FACE_EMBEDDER_MODEL),
                           input_size=settings.FFV_FACE_INPUT_SIZE)
    except FileNotFoundError as exc:
        raise ServiceUnavailable(
            _("The face models are not prepared (run `manage.py prepare_models`): %(reason)s") % {"reason": exc}
        ) from exc
    return info, found


def faces_detect(*, data: bytes, user) -> DetectResult:
    """Find the faces of a photo, store each as a FaceDetection of `user`, best first."""
    info, found = photo_faces(data)
    rows = [
        FaceDetection(
            id=secrets.token_urlsafe(DETECTION_ID_BYTES), created_by=user if user.is_authenticated else None,
            frame_coords_left=face.box[0], frame_coords_top=face.box[1], frame_coords_right=face.box[2],
            frame_coords_bottom=face.box[3], confidence=round(face.confidence, 4), quality=round(face.quality, 4),
            embedding=np.asarray(face.embedding, dtype="<f4").tobytes(),
        )
        for face in found
    ]
    FaceDetection.objects.bulk_create(rows)
    return DetectResult(orientation=info.orientation, detections=rows)
