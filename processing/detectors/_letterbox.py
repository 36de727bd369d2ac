"""YOLO pre/post-processing shared by the runtime detector and the export tool.

numpy ports of ultralytics' ``LetterBox`` (+ to-tensor) and of its NMS, so YOLO outputs can be
produced and checked without torch.  :mod:`processing.detectors.yolo` runs them in the service;
:mod:`processing.models_prep.yolo_export` re-exports them for its verification helpers.
OpenCV is imported only when a frame is actually letterboxed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LetterboxInfo", "letterbox", "non_max_suppression"]


@dataclass(frozen=True)
class LetterboxInfo:
    """How a frame was mapped into the network input (to undo it for boxes)."""

    ratio: float
    pad_left: int
    pad_top: int
    input_hw: tuple[int, int]
    frame_hw: tuple[int, int]


def letterbox(
    frame_bgr: np.ndarray,
    imgsz: int | tuple[int, int] = 640,
    *,
    auto: bool = False,
    stride: int = 32,
    trim: bool = False,
) -> tuple[np.ndarray, LetterboxInfo]:
    """ultralytics LetterBox + to-tensor: returns (1,3,H,W) float32 RGB in 0..1.

    ``imgsz`` is the network input: an int for a square one, or ``(height, width)``
    (ultralytics' ``new_shape`` order).  The frame is scaled to fit, centred and padded
    with grey 114.  ``auto=True`` pads only up to a multiple of ``stride`` (e.g. 640x480
    for a 4:3 frame), which needs a model built with dynamic H/W.  ``trim=True`` drops whole pairs of
    ``stride``-pixel padding rows (or columns), one from each side: the picture keeps the place on the
    network's stride grid it has in the full ``imgsz`` input, so the boxes are those of the full input (to a
    pixel or so), at less cost (640x512 instead of 640x640 for a 4:3 frame: 20% fewer pixels).  ``auto``
    would shift the picture on the grid (640x480), and in a crowd of overlapping people a shift of half a
    cell changes which boxes come out (bench/RESULTS.md).
    """
    import cv2

    out_h, out_w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    h0, w0 = frame_bgr.shape[:2]
    r = min(out_h / h0, out_w / w0)
    new_w, new_h = int(round(w0 * r)), int(round(h0 * r))
    dw, dh = out_w - new_w, out_h - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    elif trim:
        dw, dh = dw % (2 * stride), dh % (2 * stride)
    img = frame_bgr
    if (w0, h0) != (new_w, new_h):
        img = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    # Same rounding as ultralytics: odd padding goes to the bottom/right.
    top, bottom = int(round(dh / 2 - 0.1)), int(round(dh / 2 + 0.1))
    left, right = int(round(dw / 2 - 0.1)), int(round(dw / 2 + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    tensor = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255.0
    return tensor, LetterboxInfo(r, left, top, (img.shape[0], img.shape[1]), (h0, w0))


def non_max_suppression(
    prediction: np.ndarray,
    *,
    conf_thres: float = 0.25,
    iou_thres: float = 0.7,
    max_det: int = 300,
    agnostic: bool = False,
    max_nms: int = 30000,
) -> list[np.ndarray]:
    """numpy port of ultralytics' NMS (single label per box).

    ``prediction``: (N, 4+nc, A) raw ``output0``.  Returns per image an array
    (K, 6): x1, y1, x2, y2, score, class (input pixels).  Defaults match
    ``model.predict`` (conf 0.25, iou 0.7).
    """
    results: list[np.ndarray] = []
    max_wh = 7680.0  # class offset so that different classes never overlap
    for pred in prediction:
        cls_scores = pred[4:]
        scores = cls_scores.max(axis=0)
        keep = scores > conf_thres
        if not keep.any():
            results.append(np.zeros((0, 6), np.float32))
            continue
        boxes = pred[:4, keep].T
        score = scores[keep]
        label = cls_scores[:, keep].argmax(axis=0).astype(np.float32)
        xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
        order = np.argsort(-score, kind="stable")[:max_nms]
        xyxy, score, label = xyxy[order], score[order], label[order]
        offset = xyxy + (0.0 if agnostic else label[:, None] * max_wh)
        chosen = _greedy_nms(offset, score, iou_thres)[:max_det]
        results.append(np.concatenate([xyxy[chosen], score[chosen, None], label[chosen, None]], axis=1))
    return results


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Indices kept by greedy NMS; ``boxes`` already sorted by descending score."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(boxes), dtype=bool)
    kept: list[int] = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        kept.append(i)
        rest = np.nonzero(alive[i + 1 :])[0] + i + 1
        if rest.size == 0:
            break
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        iou = inter / (areas[i] + areas[rest] - inter)
        alive[rest[iou > iou_thres]] = False
    return np.asarray(kept, dtype=np.int64)
