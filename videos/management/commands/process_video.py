"""Run one archive's processing in the foreground, with a progress line (for operators)."""

from __future__ import annotations

import socket
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from processing.pipeline import Progress
from processing.pipeline.progress import progress_fraction
from videos.errors import ApiError
from videos.job_messages import render_job_message
from videos.jobs import job_queue, run_job
from videos.models import JobState, VideoArchive

BAR_WIDTH = 30


def progress_line(progress: Progress, known_len: float | None) -> str:
    """`[#########.....]  31.2%   9.4 s of 30.0 s  ETA 0:00:21   25.3 fps  face:1 body:4 car:0`; the bar and the
    share stay empty while the video's length is unknown, the ETA shows `--:--` until it is measured."""
    total = progress.source_len or known_len or 0.0
    share = progress_fraction(progress.processed_duration, total)
    filled = round(share * BAR_WIDTH) if total else 0
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    percent = f"{100 * share:5.1f}%" if total else "   ?  "
    of_total = f" of {total:.1f} s" if total else ""
    eta = progress.eta_seconds
    eta_text = str(timedelta(seconds=round(eta))) if eta is not None else "--:--"
    counts = " ".join(f"{kind}:{c.posted}" for kind, c in progress.objects.items())
    return (f"[{bar}] {percent} {progress.processed_duration:7.1f} s{of_total}  ETA {eta_text}  "
            f"{progress.processing_fps:6.1f} fps  {counts}   ")


class Command(BaseCommand):
    help = "Process video archive ID here and now, without Celery, showing progress."

    def add_arguments(self, parser) -> None:
        parser.add_argument("archive_id", type=int)

    def handle(self, *args, archive_id: int, **options) -> None:
        archive = VideoArchive.objects.filter(pk=archive_id).first()
        if archive is None:
            raise CommandError(f"video archive {archive_id} does not exist")
        if not archive.has_source:
            raise CommandError(f"video archive {archive_id} has no source")
        # A new job, as process/ queues one (its first attempt purges the previous results), run here.
        try:
            task_id = job_queue(archive_id=archive_id, send=None)
        except ApiError as exc:
            raise CommandError(f"video archive {archive_id}: {exc.desc}") from exc
        known_len = archive.source_len

        def watch(progress: Progress) -> None:
            self.stdout.write("\r" + progress_line(progress, known_len), ending="")
            self.stdout.flush()

        final = run_job(archive_id=archive_id, task_id=task_id, worker=f"manage.py@{socket.gethostname()}",
                        watch=watch, chunked=False)  # (the fleet cuts long archives, not this command)
        archive.refresh_from_db()
        message = render_job_message(archive.job_msg_code, archive.job_msg_params)
        self.stdout.write("")
        self.stdout.write(f"video archive {archive_id}: {final.value if final else 'not run'}"
                          f"{': ' + message if message else ''}; faces {archive.face_count}, "
                          f"bodies {archive.body_count}, cars {archive.car_count}")
        if final == JobState.FAILED:
            raise CommandError(message or "processing failed")
