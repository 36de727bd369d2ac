"""YOLOv8n fp32 against its int8 quantisation (``prepare_models --int8``), alone: latency and box agreement.

Per-frame latency at the service's input for 16:9 footage (640x384, the trimmed letterbox of 640), one ONNX Runtime
thread, one frame at a time, fp32 and int8 in turns (frame by frame, so the load of a shared machine weighs on both
alike), after warm-up; the conv GFLOP per frame beside them.  Then the int8 model's boxes against fp32's on real
frames: the share of fp32 boxes (bodies and cars) that int8 finds with the same class and IoU >= 0.5 ("recall"),
the share of int8's boxes that fp32 has ("precision"), on vtest (640x360, not in the calibration set) and Megamind
(in it).

Run from the repository root::

    .venv/bin/python bench/bench_int8.py --models-dir var/models --frames 60 --json-out bench/results-int8-latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import av  # noqa: E402
import cv2  # noqa: E402

from processing.detectors._letterbox import letterbox  # noqa: E402
from processing.detectors.yolo import YoloDetector  # noqa: E402
from processing.models_prep.prepare import box_iou  # noqa: E402
from processing.onnx_runtime import get_session  # noqa: E402

INPUT_HW = (384, 640)


def video_frames(path: Path, count: int, step: int, to_360: bool) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % step:
                continue
            image = frame.to_ndarray(format="bgr24")
            if to_360:  # vtest 768x576 -> 640x480 -> the middle 640x360, as the bench's vtest@640x360
                image = np.ascontiguousarray(cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)[60:420])
            frames.append(image)
            if len(frames) >= count:
                break
    return frames


def latency(models: dict[str, Path], frames: list[np.ndarray], repeats: int) -> dict[str, Any]:
    sessions = {name: get_session(path, providers=["CPUExecutionProvider"], intra_op_num_threads=1)
                for name, path in models.items()}
    tensors = [letterbox(frame, INPUT_HW)[0] for frame in frames]
    for session in sessions.values():
        for tensor in tensors[:3]:
            session.run(["output0"], {"images": tensor})
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for tensor in tensors:
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(["output0"], {"images": tensor})
                times[name].append(1000 * (time.perf_counter() - started))
    return {
        name: {"median_ms": round(statistics.median(values), 1), "p10_ms": round(np.percentile(values, 10), 1),
               "p90_ms": round(np.percentile(values, 90), 1), "runs": len(values)}
        for name, values in times.items()
    }


def agreement(reference: Path, candidate: Path, frames: list[np.ndarray]) -> dict[str, Any]:
    options: dict[str, Any] = {"input_size": 640, "intra_op_num_threads": 1, "providers": ["CPUExecutionProvider"]}
    fp32, int8 = YoloDetector(reference, **options), YoloDetector(candidate, **options)
    want = got = found = kept = 0
    confident = confident_found = 0
    for frame in frames:
        a, b = fp32.detect(frame), int8.detect(frame)
        want += len(a)
        got += len(b)
        confident += int((a.confidence >= 0.5).sum())
        if len(a) and len(b):
            overlap = box_iou(a.xyxy, b.xyxy)
            overlap[a.class_id[:, None] != b.class_id[None, :]] = 0.0
            hit = overlap.max(axis=1) >= 0.5
            found += int(hit.sum())
            confident_found += int(hit[a.confidence >= 0.5].sum())
            kept += int((overlap.max(axis=0) >= 0.5).sum())
    return {
        "frames": len(frames), "fp32_boxes": want, "int8_boxes": got,
        "recall": round(found / want, 3) if want else None,
        "recall_conf_ge_0.5": round(confident_found / confident, 3) if confident else None,
        "precision": round(kept / got, 3) if got else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("OPENCV_DOC_DATA_DIR", "")))
    parser.add_argument("--frames", type=int, default=60, help="frames of each video")
    parser.add_argument("--repeats", type=int, default=2, help="latency: passes over the vtest frames")
    parser.add_argument("--json-out", default="")
    args = parser.parse_args()
    models = {"fp32": args.models_dir / "yolov8n.onnx", "int8": args.models_dir / "yolov8n_int8.onnx"}
    for path in models.values():
        if not path.is_file():
            raise SystemExit(f"missing {path}: python -m processing.models_prep.prepare DIR --int8 --calibration-dir D")
    vtest = video_frames(args.data_dir / "vtest.avi", args.frames, 13, to_360=True)
    megamind = video_frames(args.data_dir / "Megamind.avi", args.frames, 4, to_360=False)
    report: dict[str, Any] = {"loadavg_start": os.getloadavg(), "input": f"{INPUT_HW[1]}x{INPUT_HW[0]}",
                              "threads": 1}
    report["latency"] = latency(models, vtest, args.repeats)
    report["agreement"] = {
        "vtest 640x360 (held out)": agreement(models["fp32"], models["int8"], vtest),
        "Megamind (calibration video)": agreement(models["fp32"], models["int8"], megamind),
    }
    report["loadavg_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
