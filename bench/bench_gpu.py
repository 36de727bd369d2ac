"""Benchmark for GPU hosts (issue 15): detection frames per second at 1080p by batch size, and the pipeline's
x real time. One command, nothing to edit; it runs on a CPU too, with a reduced set.

1. Footage: vtest.avi and Megamind.avi (Debian opencv-doc, ``$OPENCV_DOC_DATA_DIR``) upscaled to 1920x1080 and
   re-encoded (H.264 where PyAV has libx264, else MPEG-4) in a temporary folder, deleted at the end.
2. Detection: ``--frames`` decoded 1080p frames held in memory, run through YOLOv8n (640, the padding trimmed:
   640x384 for 16:9) and RetinaFace (640x640, whole frames) with ``max_batch_size`` 1, 2, 4, ... 32 (``--batches``);
   frames per second of the detector's ``detect_batch`` (letterbox, transfer, inference, NMS) after a warm-up
   batch. On CUDA the detectors pad a partial batch and use ORT I/O binding (their defaults there).
3. End to end: ``processing.pipeline.run_pipeline`` (decode, sample, detect, track, post; no database) on the
   1080p clips with face, body and car on and the service's default sampling (``FFV_DETECT_RATE`` 10 per second,
   duplicates skipped) and on every frame, with ``detect_batch`` 1 and the best batch of step 2, and with
   ``--concurrent`` pipelines side by side in one process (a host's chunks sharing batches); x real time =
   seconds of video / wall seconds, summed over the concurrent pipelines.

Without the CUDA provider (onnxruntime, not onnxruntime-gpu, or no GPU) it says so and runs a smoke set: batches
1..4, fewer frames, 60 frames of each clip.

Run from the repository root (models prepared by ``./dev setup``)::

    OPENCV_DOC_DATA_DIR=/usr/share/doc/opencv-doc/examples/data .venv/bin/python bench/bench_gpu.py

It prints the tables and writes ``bench/results-gpu.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from processing.config import ModelPaths, PipelineSettings  # noqa: E402
from processing.detectors import RetinaFaceDetector, YoloDetector  # noqa: E402
from processing.onnx_runtime import CUDA_PROVIDER, clear_session_cache  # noqa: E402
from processing.pipeline import run_pipeline  # noqa: E402

FULL_HD = (1920, 1080)
CLIPS = ("vtest.avi", "Megamind.avi")
ALL_KINDS = {"detectors": {"face": {}, "body": {}, "car": {}}}


def device_description(cuda: bool) -> str:
    if cuda and shutil.which("nvidia-smi"):
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
            out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
            return f"GPU: {out}"
        except (OSError, subprocess.SubprocessError):
            pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {os.cpu_count()} cores" + (" (CUDA provider present)" if cuda else "")


def source_clip(name: str, work: Path) -> Path:
    data = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))
    if (data / name).is_file():
        return data / name
    if (data / f"{name}.gz").is_file():
        target = work / name
        with gzip.open(data / f"{name}.gz", "rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        return target
    raise SystemExit(f"{data / name} missing: apt-get install opencv-doc, or set OPENCV_DOC_DATA_DIR")


def upscaled(source: Path, target: Path, max_frames: int) -> float:
    """`source` at 1920x1080 (at most `max_frames` frames); returns its duration in seconds."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        in_stream = inp.streams.video[0]
        rate = in_stream.average_rate or 25
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = *FULL_HD, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        else:
            stream.bit_rate = 20_000_000
        written = 0
        for frame in inp.decode(in_stream):
            if written >= max_frames:
                break
            image = cv2.resize(frame.to_ndarray(format="bgr24"), FULL_HD, interpolation=cv2.INTER_CUBIC)
            out_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            out_frame.pts, out_frame.time_base = written, 1 / rate
            out.mux(stream.encode(out_frame))
            written += 1
        out.mux(stream.encode(None))
    return written / float(rate)


def decoded(path: Path, count: int) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= count:
                break
    return frames


def detection_fps(name: str, make: Any, frames: list[np.ndarray], batches: list[int]) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        detector = make(batch)
        detector.detect_batch(frames[:batch])  # warm-up: session, CUDA kernels for this shape
        started = time.perf_counter()
        found = detector.detect_batch(frames)
        seconds = time.perf_counter() - started
        rows.append({"model": name, "batch": batch, "frames": len(frames), "seconds": round(seconds, 3),
                     "fps": round(len(frames) / seconds, 1), "boxes": sum(len(each) for each in found)})
        print(f"  {name:<22} batch {batch:>2}: {rows[-1]['fps']:>8.1f} frames/s", flush=True)
    return rows


def end_to_end(label: str, clips: list[tuple[Path, float]], models: ModelPaths, *, batch: int, rate: float,
               concurrent: int) -> dict[str, Any]:
    """`concurrent` pipelines at once in this process, each over every clip in turn; x real time summed."""
    def settings(path: Path) -> PipelineSettings:
        return PipelineSettings.from_stream_settings(
            ALL_KINDS, source=path, models=models, max_pixels=8192 * 8192, progress_interval=1.0,
            detect_batch=batch, detect_rate=rate, skip_duplicate_frames=rate > 0, detect_workers=2,
            ort_threads=max(1, (os.cpu_count() or 1) // (2 * concurrent)))

    events = [0] * concurrent
    errors: list[BaseException] = []

    def one(slot: int) -> None:
        try:
            for path, _ in clips:
                run_pipeline(settings(path), on_progress=lambda p: None, should_stop=lambda: False,
                             on_event=lambda posted: events.__setitem__(slot, events[slot] + 1) or True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(slot,)) for slot in range(concurrent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    video = sum(duration for _, duration in clips) * concurrent
    row = {"run": label, "batch": batch, "detect_rate": rate, "concurrent": concurrent,
           "video_seconds": round(video, 2), "wall_seconds": round(wall, 2), "x_real_time": round(video / wall, 2),
           "events": events[0]}
    print(f"  {label:<44} {row['x_real_time']:>6.2f}x real time ({wall:.1f} s wall)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-gpu.json")
    parser.add_argument("--batches", type=int, nargs="+", help="default 1 2 4 8 16 32 on CUDA, 1 2 3 4 on CPU")
    parser.add_argument("--frames", type=int, help="1080p frames per detection run (default 256 on CUDA, 16 on CPU)")
    parser.add_argument("--clip-frames", type=int, help="frames of each clip end to end (default all / 60 on CPU)")
    parser.add_argument("--concurrent", type=int, help="pipelines side by side in the last run (4 on CUDA, 2 on CPU)")
    args = parser.parse_args()

    cuda = CUDA_PROVIDER in onnxruntime.get_available_providers()
    batches = args.batches or ([1, 2, 4, 8, 16, 32] if cuda else [1, 2, 3, 4])
    frame_count = args.frames or (256 if cuda else 16)
    clip_frames = args.clip_frames or (100_000 if cuda else 60)
    concurrent = args.concurrent or (4 if cuda else 2)
    note = ("CUDAExecutionProvider: the full set" if cuda else
            "NO CUDA provider (onnxruntime without GPU): a CPU smoke run with a reduced set; GPU figures need "
            "onnxruntime-gpu on a host with a GPU")
    device = device_description(cuda)
    print(f"{device}\nonnxruntime {onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}\n"
          f"{note}\n", flush=True)
    models = ModelPaths(face=args.models_dir / "retinaface_mnet025.onnx", objects=args.models_dir / "yolov8n.onnx",
                        face_embedder=args.models_dir / "facenet.onnx",
                        object_embedder=args.models_dir / "mobilenetv2_reid.onnx")
    for path in dataclasses.astuple(models):
        if not Path(path).is_file():
            raise SystemExit(f"{path} missing: run ./dev setup (manage.py prepare_models) first")

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        clips = []
        for name in CLIPS:
            target = work / f"{Path(name).stem}-1080p.mp4"
            clips.append((target, upscaled(source_clip(name, work), target, clip_frames)))
        print("footage: " + ", ".join(f"{path.name} {duration:.1f} s" for path, duration in clips), flush=True)
        frames = decoded(clips[0][0], frame_count)
        if len(frames) < frame_count:
            frames += decoded(clips[1][0], frame_count - len(frames))

        print("\ndetection at 1920x1080:", flush=True)
        detection = detection_fps(
            "yolov8n 640 (640x384)", lambda b: YoloDetector(models.objects, max_batch_size=b), frames, batches)
        detection += detection_fps(
            "retinaface 640x640", lambda b: RetinaFaceDetector(models.face, max_batch_size=b), frames, batches)
        best = max((row for row in detection if row["model"].startswith("yolo")), key=lambda row: row["fps"])["batch"]

        print("\nend to end (face, body, car):", flush=True)
        runs = []
        for rate, sampling in ((10.0, "10 detections/s of video"), (0.0, "every frame")):
            runs.append(end_to_end(f"batch 1, {sampling}", clips, models, batch=1, rate=rate, concurrent=1))
            if best != 1:
                runs.append(end_to_end(f"batch {best}, {sampling}", clips, models, batch=best, rate=rate,
                                       concurrent=1))
        runs.append(end_to_end(f"batch {max(best, 2)}, 10/s, {concurrent} pipelines at once", clips, models,
                               batch=max(best, 2), rate=10.0, concurrent=concurrent))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        clear_session_cache()

    print(f"\n{device}; onnxruntime {onnxruntime.__version__}; {note}\n")
    print("| model | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---:|" * len(batches))
    for model in dict.fromkeys(row["model"] for row in detection):
        cells = [f"{row['fps']:.1f}" for row in detection if row["model"] == model]
        print(f"| {model} frames/s | " + " | ".join(cells) + " |")
    print("\n| end to end, 1080p | x real time | wall s | video s |\n|---|---:|---:|---:|")
    for row in runs:
        print(f"| {row['run']} | {row['x_real_time']:.2f} | {row['wall_seconds']:.1f} | {row['video_seconds']:.1f} |")
    result = {"device": device, "cuda": cuda, "note": note, "onnxruntime": onnxruntime.__version__,
              "providers": onnxruntime.get_available_providers(), "cores": os.cpu_count(),
              "load_average": os.getloadavg(), "frames": len(frames), "detection": detection, "end_to_end": runs,
              "command": "OPENCV_DOC_DATA_DIR=... .venv/bin/python bench/bench_gpu.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
