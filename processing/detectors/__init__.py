"""Detectors: the ``Detector`` protocol, a registry by name, and the built-in detectors.

Importing this package registers the built-ins but loads no model: sessions are created on the
first ``detect`` call.
"""

from processing.detectors.base import Detector, available_detectors, create_detector, register_detector
from processing.detectors.retinaface import RetinaFaceDetector, default_retinaface_path
from processing.detectors.yolo import YoloDetector

__all__ = [
    "Detector",
    "RetinaFaceDetector",
    "YoloDetector",
    "available_detectors",
    "create_detector",
    "default_retinaface_path",
    "register_detector",
]
