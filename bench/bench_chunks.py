"""Benchmark: one long archive as one job, and cut into chunks (FFV_CHUNK_SECONDS) run by 1 and 2 workers.

Real Celery worker processes (prefork, concurrency 1 each, as tests/conftest.py starts them) on a queue of their
own, a throwaway SQLite database and media folder, the Redis of CELERY_BROKER_URL. The video is vtest.avi
(opencv-doc) looped `--loops` times (re-encoded with PyAV, a keyframe every 12 frames); people only. For each
configuration: wall time from queueing to the archive's end, x real time, events, chunks and their attempts.

Run from the repository root (the models prepared, Redis up)::

    CELERY_BROKER_URL=redis://127.0.0.1:6379/10 \\
    OPENCV_DOC_DATA_DIR=/usr/share/doc/opencv-doc/examples/data \\
    .venv/bin/python bench/bench_chunks.py --loops 2 --max-frames 200 --chunk-seconds 12 --out bench/results-chunks.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = {"face": None, "car": None, "body": {}}


def looped(source: Path, target: Path, loops: int, max_frames: int) -> float:
    """`source` `loops` times over (at most `max_frames` frames each time); returns the duration in seconds."""
    with av.open(str(target), "w") as out:
        stream = None
        written = 0
        for _ in range(loops):
            with av.open(str(source)) as inp:
                in_stream = inp.streams.video[0]
                if stream is None:
                    stream = out.add_stream("mpeg4", rate=in_stream.average_rate)
                    stream.width, stream.height, stream.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
                    stream.bit_rate = 8_000_000
                    rate = in_stream.average_rate
                for index, frame in enumerate(inp.decode(in_stream)):
                    if index >= max_frames:
                        break
                    picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="bgr24"), format="bgr24")
                    picture.pts, picture.time_base = written, 1 / rate
                    written += 1
                    for packet in stream.encode(picture):
                        out.mux(packet)
        assert stream is not None
        for packet in stream.encode():
            out.mux(packet)
    return written / float(rate)


def run(label: str, video: Path, workers: int, chunk_seconds: float, overlap: float, work: Path) -> dict:
    from django.core.files import File

    from videos import broker, jobs
    from videos.models import ArchiveChunk, BodyEvent, CameraGroup, JobState, VideoArchive

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FFV_PROCESSING_QUEUE": queue, "FFV_CONTROL_QUEUE": f"{queue}-control",
           "FFV_CHUNK_SECONDS": str(chunk_seconds), "FFV_CHUNK_OVERLAP_SECONDS": str(overlap),
           "FFV_PROGRESS_INTERVAL": "1", "PYTHONPATH": str(ROOT)}
    from django.conf import settings

    settings.FFV_PROCESSING_QUEUE, settings.FFV_CONTROL_QUEUE = queue, f"{queue}-control"
    processes = []
    for number in range(workers):
        log = (work / f"{label}-{number}.log").open("ab")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "findface_videos", "worker", "-Q", f"{queue},{queue}-control",
             "--concurrency", "1", "--pool", "prefork", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"{queue}-{number}@%h", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        time.sleep(8)  # workers up (their models load with the first task, inside the measured time)
        archive = VideoArchive.objects.create(camera_group=CameraGroup.objects.order_by("pk").first(),
                                              name=label, stream_settings={"detectors": DETECTORS})
        with video.open("rb") as handle:
            archive.source_file.save(video.name, File(handle))
        started = time.monotonic()
        jobs.job_queue(archive_id=archive.pk, send=broker.send_processing)
        while True:
            archive.refresh_from_db()
            if archive.job_state not in (JobState.QUEUED, JobState.STARTING, JobState.IN_PROGRESS):
                break
            time.sleep(0.5)
        wall = time.monotonic() - started
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(timeout=60)
    chunks = list(ArchiveChunk.objects.filter(video_archive_id=archive.pk).order_by("index"))
    return {
        "label": label, "workers": workers, "chunk_seconds": chunk_seconds, "overlap_seconds": overlap,
        "state": archive.job_state, "wall_seconds": round(wall, 1),
        "x_real_time": round((archive.source_len or 0) / wall, 3),
        "body_events": BodyEvent.objects.filter(video_archive_id=archive.pk).count(),
        "body_tracks": BodyEvent.objects.filter(video_archive_id=archive.pk).values("track_id").distinct().count(),
        "chunks": [{"index": c.index, "start": c.start, "end": c.end, "attempts": c.starts,
                    "worker": c.worker} for c in chunks],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=795, help="frames of vtest.avi per loop")
    parser.add_argument("--chunk-seconds", type=float, default=20.0)
    parser.add_argument("--overlap", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-chunks.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-chunks-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "findface_videos.settings")
    os.environ["DATABASE_URL"] = f"sqlite:///{work / 'db.sqlite3'}"
    os.environ["MEDIA_ROOT"] = str(work / "media")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    os.environ.setdefault("FFV_DEV", "1")  # (a throwaway database on this host, never served)
    import django

    django.setup()
    from django.core.management import call_command

    import findface_videos.celery  # noqa: F401  (the app messages are sent with)

    call_command("migrate", verbosity=0)
    data = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))
    video = work / "vtest-looped.mp4"
    duration = looped(data / "vtest.avi", video, args.loops, args.max_frames)
    results = [
        run("one job, 1 worker", video, 1, 0, args.overlap, work),
        run("chunks, 1 worker", video, 1, args.chunk_seconds, args.overlap, work),
        run("chunks, 2 workers", video, 2, args.chunk_seconds, args.overlap, work),
    ]
    print(f"\nvtest.avi x{args.loops} ({duration:.1f} s, {args.max_frames} frames a loop), people only, "
          f"chunks of {args.chunk_seconds:g} s + {args.overlap:g} s overlap, {os.cpu_count()} cores\n")
    print(f"| {'run':<20} | chunks | wall s | x real time | body events | body tracks |")
    print(f"|{'-' * 22}|-------:|-------:|------------:|------------:|------------:|")
    for result in results:
        print(f"| {result['label']:<20} | {len(result['chunks']) or 1:>6} | {result['wall_seconds']:>6} | "
              f"{result['x_real_time']:>11} | {result['body_events']:>11} | {result['body_tracks']:>11} |")
    load = os.getloadavg()
    args.out.write_text(json.dumps({"video_seconds": duration, "cores": os.cpu_count(), "load_average": load,
                                    "runs": results}, indent=2) + "\n")
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; written to {args.out}")


if __name__ == "__main__":
    main()
