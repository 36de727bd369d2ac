"""Exports and retention on a real Celery worker (Redis, no eager mode), local storage and S3 (moto)."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import timedelta

import pytest
from celery import current_app
from django.core.files.storage import default_storage
from django.utils import timezone

from tests.api.test_events import make_archive, make_cluster, make_event, unit
from tests.api.test_exports import list_as_csv
from tests.conftest import WorkerProcess, _user, token_client, wait_for
from tests.errors import assert_error
from tests.hygiene import control_queue_of
from videos.clusters import embedding_from_bytes
from videos.models import BodyEvent, Export, FaceCluster, FaceEvent, VideoArchive

pytestmark = pytest.mark.worker

PERMS = ["view_export", "add_export", "delete_export", "view_faceevent", "view_bodyevent", "view_carevent",
         "view_facecluster", "view_videoarchive"]


@pytest.fixture
def client(transactional_db):
    return token_client(_user("exporter", PERMS))


def _finished(client, export_id: int) -> dict:
    assert wait_for(lambda: client.get(f"/exports/{export_id}/").json()["status"] in ("completed", "failed"),
                    timeout=60)
    return client.get(f"/exports/{export_id}/").json()


def _download(client, export: dict) -> bytes:
    response = client.get(export["download"])
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def test_a_csv_export_equals_the_list_for_the_same_filters(client, default_group, worker):
    archive = make_archive(default_group)
    other = make_archive(default_group, "other.mp4")
    events = [make_event("face", archive, quality=q, embedding=unit(1, q, 0, 0)) for q in (0.2, 0.6, 0.6, 0.9, 0.4)]
    make_cluster("face", events[1:3], best=events[1])
    make_event("face", other, quality=0.95)  # filtered out by video_archive
    filters = {"video_archive": [archive.pk], "quality_gte": "0.3", "ordering": "-quality"}

    created = client.post("/exports/", {"kind": "face", "format": "csv", "filters": filters}, format="json")
    assert created.status_code == 201, created.content
    export = _finished(client, created.json()["id"])
    assert export["status"] == "completed", worker.log()
    assert (export["progress"], export["row_count"], export["total"], export["truncated"]) == (1.0, 4, 4, False)
    assert export["expires_at"] is not None and export["msg"] == ""

    rows = list(csv.DictReader(io.StringIO(_download(client, export).decode("utf-8"))))
    assert rows == list_as_csv(client, "face", f"video_archive={archive.pk}&quality_gte=0.3&ordering=-quality")
    assert [row["cluster"] for row in rows if row["cluster"]] == [str(events[1].cluster_id)] * 2
    assert rows[0]["thumbnail"] == f"http://testserver/events/faces/{events[3].pk}/thumbnail/"


def test_a_zip_export_holds_the_csv_and_every_thumbnail(client, default_group, worker):
    archive = make_archive(default_group)
    events = [make_event("body", archive, quality=0.1 * (index + 1)) for index in range(3)]
    created = client.post("/exports/", {"kind": "body", "format": "zip", "filters": {"video_archive": archive.pk}},
                          format="json")
    export = _finished(client, created.json()["id"])
    assert export["status"] == "completed", worker.log()

    with zipfile.ZipFile(io.BytesIO(_download(client, export))) as archive_zip:
        assert archive_zip.testzip() is None
        names = sorted(archive_zip.namelist())
        assert names == sorted(["events.csv", *(f"thumbnails/{event.pk}.jpg" for event in events)])
        for event in events:
            with default_storage.open(event.thumbnail.name, "rb") as stored:
                assert archive_zip.read(f"thumbnails/{event.pk}.jpg") == stored.read()
        rows = list(csv.DictReader(io.StringIO(archive_zip.read("events.csv").decode("utf-8"))))
    assert [row["thumbnail_file"] for row in rows] == [f"thumbnails/{event.pk}.jpg" for event in reversed(events)]
    assert [{key: value for key, value in row.items() if key != "thumbnail_file"} for row in rows] == \
        list_as_csv(client, "body", f"video_archive={archive.pk}")


def test_an_export_expires_its_file_is_swept_and_download_is_gone(client, default_group, worker):
    make_event("car", make_archive(default_group))
    export = _finished(client, client.post("/exports/", {"kind": "car", "format": "csv"}, format="json").json()["id"])
    assert export["status"] == "completed", worker.log()
    row = Export.objects.get(pk=export["id"])
    assert default_storage.exists(row.file.name)
    Export.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    current_app.send_task("videos.sweep_jobs", queue=control_queue_of(worker.queue))
    assert wait_for(lambda: Export.objects.get(pk=row.pk).status == "expired", timeout=30), worker.log()
    assert not default_storage.exists(row.file.name)
    assert_error(client.get(f"/exports/{row.pk}/download/"), 410, "GONE")
    assert client.get(f"/exports/{row.pk}/").json()["download"] is None


def test_a_zip_export_on_s3_with_a_worker_that_shares_no_disk(
    default_group, settings, s3_env, s3_storage, processing_queue, transactional_db, tmp_path,
):
    client = token_client(_user("s3-exporter", PERMS))
    worker_dir = tmp_path / "worker"
    (worker_dir / "media").mkdir(parents=True)
    (worker_dir / "var").mkdir()
    worker = WorkerProcess(processing_queue, worker_dir / "media", tmp_path / "worker.log",
                           extra_env={**s3_env, "FFV_VAR_DIR": str(worker_dir / "var")}).start()
    try:
        events = [make_event("face", make_archive(default_group)) for _ in range(2)]
        created = client.post("/exports/", {"kind": "face", "format": "zip"}, format="json")
        export = _finished(client, created.json()["id"])
        assert export["status"] == "completed", worker.log()
        assert default_storage.exists(Export.objects.get(pk=export["id"]).file.name)  # in the bucket
        with zipfile.ZipFile(io.BytesIO(_download(client, export))) as archive_zip:
            assert sorted(archive_zip.namelist()) == sorted(
                ["events.csv", *(f"thumbnails/{event.pk}.jpg" for event in events)])
        assert list((worker_dir / "media").rglob("*.*")) == []
    finally:
        worker.stop()


def test_beat_runs_retention_which_deletes_exactly_the_old_rows_and_files_and_keeps_counts(
    client, default_group, processing_queue, media_root, tmp_path,
):
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log", beat=True, extra_env={
        "FFV_RETENTION_UNMATCHED_DAYS": "30", "FFV_RETENTION_FULLFRAME_DAYS": "7", "FFV_RETENTION_INTERVAL": "1",
    })
    try:
        now = timezone.now()
        archive = make_archive(default_group)
        old = [make_event("face", archive, quality=0.9, created=now - timedelta(days=40), embedding=unit(1, 0, 0, 0)),
               make_event("face", archive, quality=0.8, created=now - timedelta(days=31), embedding=unit(1, 1, 0, 0))]
        middle = make_event("face", archive, quality=0.3, created=now - timedelta(days=10), embedding=unit(1, 0, 1, 0))
        new = make_event("face", archive, quality=0.5, embedding=unit(0, 0, 1, 1))
        shared = make_cluster("face", [*old, middle], best=old[0])
        emptied = make_cluster("face", [make_event("face", archive, created=now - timedelta(days=50),
                                                   embedding=unit(0, 0, 0, 1))])
        make_cluster("face", [new])
        old_body = make_event("body", archive, created=now - timedelta(days=99))
        new_body = make_event("body", archive)
        gone = [*old, old_body, FaceEvent.objects.get(cluster=emptied)]
        VideoArchive.objects.filter(pk=archive.pk).update(face_count=FaceEvent.objects.count(),
                                                          body_count=BodyEvent.objects.count())
        middle_fullframe = middle.fullframe.name

        worker.start()  # its beat sends videos.apply_retention every second
        assert wait_for(lambda: not FaceEvent.objects.filter(pk=old[0].pk).exists() and
                        not BodyEvent.objects.filter(pk=old_body.pk).exists() and
                        FaceEvent.objects.get(pk=middle.pk).fullframe.name == "", timeout=60), worker.log()
        assert wait_for(lambda: not any(default_storage.exists(e.thumbnail.name) for e in gone), timeout=10)

        assert set(FaceEvent.objects.values_list("pk", flat=True)) == {middle.pk, new.pk}
        assert set(BodyEvent.objects.values_list("pk", flat=True)) == {new_body.pk}
        for event in gone:
            for name in (event.thumbnail.name, event.fullframe.name, event.normalized.name):
                assert not name or not default_storage.exists(name), name
        middle.refresh_from_db()
        assert default_storage.exists(middle.thumbnail.name)
        assert not default_storage.exists(middle_fullframe)
        assert_error(client.get(f"/events/faces/{middle.pk}/fullframe/"), 404, "NOT_FOUND")
        assert client.get(f"/events/faces/{middle.pk}/thumbnail/").status_code == 200
        for event in (new, new_body):
            assert default_storage.exists(event.fullframe.name)

        shared.refresh_from_db()
        assert (shared.event_count, shared.best_event_id) == (1, middle.pk)
        assert list(embedding_from_bytes(shared.centroid)) == pytest.approx(list(unit(1, 0, 1, 0)), abs=1e-5)
        assert not FaceCluster.objects.filter(pk=emptied.pk).exists()
        body = client.get(f"/videos/{archive.pk}/").json()
        assert (body["face_count"], body["body_count"], body["face_cluster_count"]) == (2, 1, 2)
        # The unfiltered count/ reads the trigger-kept row counters: they agree with the tables.
        assert client.get("/events/faces/count/").json() == {"count": 2}
        assert client.get("/events/bodies/count/").json() == {"count": 1}
        assert client.get("/clusters/faces/count/").json() == {"count": FaceCluster.objects.count()} == {"count": 2}
    finally:
        worker.stop()



def test_the_sweeper_finishes_builds_whose_message_was_lost_or_whose_worker_died(
    client, default_group, processing_queue, media_root, tmp_path,
):
    from django.contrib.auth.models import User

    make_event("face", make_archive(default_group))
    owner = User.objects.get(username="exporter")
    long_ago = timezone.now() - timedelta(seconds=60)
    # Never sent (a broker restart lost it) and abandoned mid-build (its worker was killed): both need the sweeper.
    lost = Export.objects.create(created_by=owner, kind="face", format="csv", limit=10, heartbeat=long_ago,
                                 task_id="lost-task")
    died = Export.objects.create(created_by=owner, kind="face", format="zip", limit=10, status="in_progress",
                                 claim="killed-worker", attempts=1, progress=0.5, heartbeat=long_ago,
                                 task_id="died-task")
    worker = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log", beat=True, extra_env={
        "FFV_SWEEP_INTERVAL": "0.5", "FFV_JOB_LEASE_SECONDS": "2", "FFV_QUEUE_STALE_SECONDS": "10",
    })
    try:
        worker.start()
        assert wait_for(lambda: set(Export.objects.filter(pk__in=[lost.pk, died.pk]).values_list(
            "status", flat=True)) == {"completed"}, timeout=60), worker.log()
        for export in (lost, died):
            export.refresh_from_db()
            assert (export.row_count, export.progress) == (1, 1.0)
            assert default_storage.exists(export.file.name)
        assert (lost.attempts, died.attempts) == (1, 2)
    finally:
        worker.stop()
