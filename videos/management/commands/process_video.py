"""Run one archive's processing in the foreground, with a progress line (for operators)."""

from __future__ import annotations

import socket

from django.core.management.base import BaseCommand, CommandError

from processing.pipeline import Progress
from videos.errors import ApiError
from videos.job_messages import render_job_message
from videos.jobs import job_queue, run_job
from videos.models import JobState, VideoArchive


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
        total = archive.source_len or 0.0

        def watch(progress: Progress) -> None:
            done = progress.processed_duration
            share = f"{100 * done / total:5.1f}%" if total else "     "
            counts = " ".join(f"{kind}:{c.posted}" for kind, c in progress.objects.items())
            self.stdout.write(
                f"\r{share} {done:8.1f}s of {total:.1f}s  {progress.processing_fps:6.1f} fps  {counts}   ", ending=""
            )
            self.stdout.flush()

        final = run_job(archive_id=archive_id, task_id=task_id, worker=f"manage.py@{socket.gethostname()}",
                        watch=watch)
        archive.refresh_from_db()
        message = render_job_message(archive.job_msg_code, archive.job_msg_params)
        self.stdout.write("")
        self.stdout.write(f"video archive {archive_id}: {final.value if final else 'not run'}"
                          f"{': ' + message if message else ''}; faces {archive.face_count}, "
                          f"bodies {archive.body_count}, cars {archive.car_count}")
        if final == JobState.FAILED:
            raise CommandError(message or "processing failed")
