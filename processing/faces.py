"""Faces of one still image, each with its FaceNet embedding: the probes of a face search (`POST /detect/`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing.detectors import create_detector
from processing.embedders import create_embedder
from processing.frames import object_quality


@dataclass(frozen=True)
class FoundFace:
    box: tuple[int, int, int, int]  # left, top, right, bottom in image pixels
    confidence: float
    quality: float  # as for events: confidence, x0.8 when the box touches the image edge
    embedding: npt.NDArray[np.float32]  # (512,) unit vector


def find_faces(
    image_bgr: npt.NDArray[np.uint8],
    *,
    face_model: str | os.PathLike[str],
    embedder_model: str | os.PathLike[str],
    min_confidence: float = 0.9,
    input_size: tuple[int, int] = (640, 640),
    max_faces: int = 50,
) -> list[FoundFace]:
    """The faces RetinaFace finds in ``image_bgr`` (best first, at most ``max_faces``), each embedded."""
    detector = create_detector("retinaface", model_path=face_model, input_size=input_size,
                               confidence_threshold=min_confidence)
    detections = detector.detect(image_bgr)
    order = np.argsort(-detections.confidence, kind="stable")[:max_faces]
    detections = detections[order]
    if len(detections) == 0:
        return []
    quality = object_quality(detections, image_bgr.shape)
    embeddings = create_embedder("facenet", model_path=embedder_model).embed(image_bgr, detections.xyxy)
    height, width = image_bgr.shape[:2]
    found = []
    for row in range(len(detections)):
        x1, y1, x2, y2 = detections.xyxy[row]
        box = (max(0, int(round(x1))), max(0, int(round(y1))), min(width, int(round(x2))), min(height, int(round(y2))))
        found.append(FoundFace(box, float(detections.confidence[row]), float(quality[row]), embeddings[row]))
    return found
