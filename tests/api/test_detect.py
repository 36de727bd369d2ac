"""`POST /detect/` on a real photo (opencv-doc's messi5.jpg) with the prepared models, and bad input.

Needs the prepared models (`manage.py prepare_models`) and opencv-doc's data (./dev test fetches it); skips
without them locally and fails under CI=true.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import _user, requires, token_client
from tests.errors import assert_bad_param, assert_error
from tests.processing.conftest import OPENCV_DATA_DIR
from videos.detections import image_info
from videos.models import FaceDetection
from videos.search import probe_vector

pytestmark = pytest.mark.django_db


@pytest.fixture
def face_models(settings, models_dir) -> None:
    settings.FFV_FACE_MODEL = models_dir / "retinaface_mnet025.onnx"
    settings.FFV_FACE_EMBEDDER_MODEL = models_dir / "facenet.onnx"


def photo(name: str) -> bytes:
    path = OPENCV_DATA_DIR / name
    requires(path.is_file(), f"{path} is missing (./dev test fetches Debian's opencv-doc)")
    return path.read_bytes()


@pytest.fixture
def searcher(db):
    return _user("searcher", ["view_faceevent"])


@pytest.fixture
def client(searcher):
    return token_client(searcher)


def post_raw(client, data: bytes, content_type: str = "image/jpeg"):
    return client.generic("POST", "/detect/", data, content_type=content_type)


def post_form(client, data: bytes, field: str = "photo", name: str = "photo.jpg"):
    return client.post("/detect/", {field: SimpleUploadedFile(name, data, "image/jpeg")}, format="multipart")


def faces(response) -> list[dict]:
    assert response.status_code == 200, response.content
    body = response.json()
    assert list(body) == ["orientation", "objects"] and list(body["objects"]) == ["face"]
    return body["objects"]["face"]


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 EXIF block whose IFD0 holds only the Orientation tag."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_a_photo_as_multipart(client, searcher, face_models):
    found = faces(post_form(client, photo("messi5.jpg")))
    assert len(found) == 1
    face = found[0]
    assert list(face) == ["id", "bbox", "detection_score", "low_quality", "quality", "features"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", face["id"])
    box = face["bbox"]
    assert 0 <= box["left"] < box["right"] <= 548 and 0 <= box["top"] < box["bottom"] <= 342
    assert 20 <= box["right"] - box["left"] <= 45  # Messi's head, about 30x37 px around (241, 112)
    assert face["detection_score"] > 0.9 and face["low_quality"] is False and face["features"] == {}
    assert 0 < face["quality"] <= 1
    stored = FaceDetection.objects.get(pk=face["id"])
    assert stored.created_by == searcher
    assert (stored.frame_coords_left, stored.frame_coords_bottom) == (box["left"], box["bottom"])
    vector = probe_vector(f"detection:{face['id']}", searcher)
    assert vector.shape == (512,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5


def test_raw_jpeg_and_png_bodies_give_the_same_face(client, face_models):
    jpeg = photo("messi5.jpg")
    from_jpeg = faces(post_raw(client, jpeg))
    assert len(from_jpeg) == 1
    box = from_jpeg[0]["bbox"]
    assert abs((box["left"] + box["right"]) / 2 - 241) < 10 and abs((box["top"] + box["bottom"]) / 2 - 112) < 10
    ok, png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    from_png = faces(post_raw(client, png.tobytes(), "image/png"))
    assert [f["bbox"] for f in from_png] == [box]
    assert from_png[0]["id"] != from_jpeg[0]["id"]
    # The same face twice: their embeddings agree.
    a = np.frombuffer(FaceDetection.objects.get(pk=from_jpeg[0]["id"]).embedding, "<f4")
    b = np.frombuffer(FaceDetection.objects.get(pk=from_png[0]["id"]).embedding, "<f4")
    assert float(a @ b) > 0.99


def test_exif_orientation_is_applied_and_reported(client, face_models):
    image = cv2.imdecode(np.frombuffer(photo("messi5.jpg"), np.uint8), cv2.IMREAD_COLOR)
    sideways = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)  # stored lying down; EXIF 6 turns it upright
    ok, jpeg = cv2.imencode(".jpg", sideways, [cv2.IMWRITE_JPEG_QUALITY, 98])
    response = post_raw(client, with_exif_orientation(jpeg.tobytes(), 6))
    found = faces(response)
    assert response.json()["orientation"] == 6
    assert len(found) == 1
    box = found[0]["bbox"]  # in upright coordinates, where the face is in the original
    assert abs((box["left"] + box["right"]) / 2 - 241) < 10 and abs((box["top"] + box["bottom"]) / 2 - 112) < 10


def test_a_photo_without_faces(client, face_models):
    ok, blank = cv2.imencode(".png", np.full((120, 160, 3), 200, np.uint8))
    assert faces(post_raw(client, blank.tobytes(), "image/png")) == []
    assert FaceDetection.objects.count() == 0


@pytest.mark.parametrize(
    "data",
    [
        b"plain text, not a picture",
        b"\xff\xd8\xff\xe0\x00",  # a JPEG's first bytes, then nothing
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64,  # no frame header
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00garbage",
    ],
)
def test_bad_images(client, data):
    assert_bad_param(post_raw(client, data), "photo")
    assert FaceDetection.objects.count() == 0


def test_a_decompression_bomb_is_refused_by_its_header(client, settings):
    settings.FFV_MAX_FRAME_PIXELS = 1000 * 1000
    header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 50000, 50000) + b"\x08\x02\x00\x00\x00"
    body = assert_bad_param(post_raw(client, header + b"\x00" * 100, "image/png"), "photo")
    assert "50000x50000" in body["desc"]


def test_empty_body_and_missing_field(client):
    assert_bad_param(post_raw(client, b""), "photo")
    assert_bad_param(post_form(client, photo_bytes_of_size(10), field="file"), "photo")


def photo_bytes_of_size(size: int) -> bytes:
    return b"\xff\xd8\xff" + b"\x00" * (size - 3)


def test_oversized_photos_are_413(client, settings):
    settings.FFV_DETECT_MAX_IMAGE_SIZE = 100_000
    assert_error(post_raw(client, photo_bytes_of_size(100_001)), 413, "PAYLOAD_TOO_LARGE")
    assert_error(post_form(client, photo_bytes_of_size(100_001)), 413, "PAYLOAD_TOO_LARGE")
    assert_error(post_form(client, photo_bytes_of_size(200_000)), 413, "PAYLOAD_TOO_LARGE")


def test_other_content_types_are_415(client):
    assert_error(post_raw(client, b"{}", "application/json"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(post_raw(client, b"GIF89a", "image/gif"), 415, "UNSUPPORTED_MEDIA_TYPE")


def test_missing_models_are_503(client, settings):
    settings.FFV_FACE_EMBEDDER_MODEL = Path("/nonexistent/facenet.onnx")
    ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    settings.FFV_FACE_MODEL = Path("/nonexistent/retinaface.onnx")
    assert_error(post_raw(client, jpeg.tobytes()), 503, "SERVICE_UNAVAILABLE")


def test_permissions(anon_api, outsider_api, viewer_api, client):
    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert_error(anon_api.generic("POST", "/detect/", jpeg.tobytes(), content_type="image/jpeg"), 401,
                 "UNAUTHORIZED")
    for forbidden in (outsider_api, viewer_api):  # the viewer may see archives, not face events
        assert_error(post_raw(forbidden, jpeg.tobytes()), 403, "PERMISSION_DENIED")
    assert_error(client.get("/detect/"), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("orientation", "expected"), [(1, 1), (3, 3), (6, 6), (8, 8), (9, 1), (0, 1)],
)
def test_image_info_reads_the_exif_orientation(orientation, expected):
    ok, jpeg = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))
    info = image_info(with_exif_orientation(jpeg.tobytes(), orientation))
    assert (info.format, info.width, info.height, info.orientation) == ("jpeg", 40, 30, expected)
