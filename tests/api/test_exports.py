"""`/exports/` without a worker: input checks, who sees what, download states, the build's order and batches
(run in-process here; tests/test_worker_exports.py runs it on a real worker), the sweeper, and retention's rules."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from tests.api.test_events import make_archive, make_cluster, make_event, unit
from tests.conftest import _user, token_client
from tests.errors import assert_bad_param, assert_error
from videos import exports, retention
from videos.clusters import embedding_from_bytes
from videos.models import EVENT_MODELS, Export, ExportStatus, FaceCluster, FaceEvent, VideoArchive

pytestmark = pytest.mark.django_db

EXPORT_PERMS = ["view_export", "add_export", "delete_export", "view_faceevent", "view_bodyevent", "view_carevent"]


@pytest.fixture
def owner(db):
    return _user("export-owner", EXPORT_PERMS)


@pytest.fixture
def owner_api(owner):
    return token_client(owner)


@pytest.fixture
def archive(default_group) -> VideoArchive:
    return make_archive(default_group)


def create(client, **body):
    return client.post("/exports/", {"kind": "face", "format": "csv", **body}, format="json")


# --- input


def test_create_answers_201_with_a_queued_export(owner_api, archive):
    response = create(owner_api, filters={"video_archive": [archive.pk], "quality_gte": 0.5}, limit=10)
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"].endswith(f"/exports/{body['id']}/")
    assert body["status"] == "queued" and body["progress"] == 0 and body["download"] is None
    assert body["filters"] == {"video_archive": [str(archive.pk)], "quality_gte": ["0.5"]}
    assert body["limit"] == 10
    assert owner_api.get(f"/exports/{body['id']}/").json()["status"] == "queued"


@pytest.mark.parametrize("body, param", [
    ({"kind": "person"}, "kind"),
    ({"format": "xlsx"}, "format"),
    ({"filters": {"no_such_filter": "1"}}, "filters.no_such_filter"),
    ({"filters": {"limit": "5"}}, "filters.limit"),
    ({"filters": {"page": "abc"}}, "filters.page"),
    ({"filters": {"looks_like": "faceevent:1"}}, "filters.looks_like"),
    ({"filters": {"quality_gte": "lots"}}, "filters.quality_gte"),
    ({"filters": {"quality_gte": 2}}, "filters.quality_gte"),
    ({"filters": {"video_archive": "1,x"}}, "filters.video_archive"),
    ({"filters": {"ordering": "name"}}, "filters.ordering"),
    ({"filters": {"created_date_nth_full_week": "1.5"}}, "filters.created_date_nth_full_week"),
    ({"filters": {"video_archive": {"a": 1}}}, "filters.video_archive"),
    ({"filters": {"video_archive": [True]}}, "filters.video_archive"),
    ({"filters": {"video_archive": ["1"] * 1001}}, "filters.video_archive"),
    ({"filters": {"name_contains": "x" * 3000}}, "filters.name_contains"),
    ({"filters": [1, 2]}, "filters"),
    ({"filters": "quality_gte=0.5"}, "filters"),
    ({"limit": 0}, "limit"),
    ({"limit": 10**12}, "limit"),
    ({"limit": "10"}, "limit"),
    ({"limit": 1.5}, "limit"),
    ({"color": "red"}, "color"),
])
def test_bad_input_is_a_bad_param_naming_the_field(owner_api, body, param):
    assert_bad_param(create(owner_api, **body), param)
    assert not Export.objects.exists()


def test_a_limit_above_the_setting_is_refused(owner_api, settings):
    settings.FFV_EXPORT_MAX_ROWS = 50
    assert_bad_param(create(owner_api, limit=51), "limit")
    assert create(owner_api, limit=50).status_code == 201
    assert create(owner_api).json()["limit"] == 50  # the default is the most


def test_errors_are_in_russian_on_request(owner):
    body = assert_bad_param(create(token_client(owner, "ru"), filters={"nope": "1"}), "filters.nope")
    assert body["desc"] == "Неизвестный фильтр."


# --- who sees what


def test_a_user_sees_only_their_exports_and_staff_sees_all(owner_api, db):
    mine = create(owner_api).json()["id"]
    other = _user("export-other", EXPORT_PERMS)
    other_api = token_client(other)
    theirs = create(other_api).json()["id"]
    assert [row["id"] for row in owner_api.get("/exports/").json()["results"]] == [mine]
    assert owner_api.get("/exports/count/").json() == {"count": 1}
    for path in (f"/exports/{theirs}/", f"/exports/{theirs}/download/"):
        assert_error(owner_api.get(path), 404, "NOT_FOUND")
    assert_error(owner_api.delete(f"/exports/{theirs}/"), 404, "NOT_FOUND")
    assert Export.objects.filter(pk=theirs).exists()

    staff = _user("export-staff", EXPORT_PERMS)
    staff.is_staff = True
    staff.save()
    staff_api = token_client(staff)
    assert {row["id"] for row in staff_api.get("/exports/").json()["results"]} == {mine, theirs}
    assert_error(staff_api.get(f"/exports/{theirs}/download/"), 409, "CONFLICT")


def test_without_permissions_everything_is_refused(owner_api, outsider_api, anon_api):
    export_id = create(owner_api).json()["id"]
    assert_error(create(outsider_api), 403, "PERMISSION_DENIED")
    assert_error(outsider_api.get(f"/exports/{export_id}/download/"), 403, "PERMISSION_DENIED")
    assert_error(anon_api.get(f"/exports/{export_id}/download/"), 401, "UNAUTHORIZED")


def test_exporting_a_kind_needs_its_event_permission(owner, db):
    no_cars = _user("export-no-cars", ["view_export", "add_export", "view_faceevent"])
    client = token_client(no_cars)
    assert_error(create(client, kind="car"), 403, "PERMISSION_DENIED")
    assert create(client, kind="face").status_code == 201
    export = _completed(no_cars)
    export.kind = "car"
    export.save()
    assert_error(client.get(f"/exports/{export.pk}/download/"), 403, "PERMISSION_DENIED")


def test_list_filters_and_unknown_parameters(owner_api):
    create(owner_api)
    zip_id = create(owner_api, kind="car", format="zip").json()["id"]
    assert [row["id"] for row in owner_api.get("/exports/?format=zip").json()["results"]] == [zip_id]
    assert [row["id"] for row in owner_api.get("/exports/?kind=car&status=queued").json()["results"]] == [zip_id]
    assert_bad_param(owner_api.get("/exports/?kind=person"), "kind")
    assert_bad_param(owner_api.get("/exports/?bogus=1"), "bogus")
    assert_bad_param(owner_api.get("/exports/?limit=100000"), "limit")


# --- download states


def _completed(owner, *, expires_in: timedelta = timedelta(hours=1), content: bytes = b"id\n1\n") -> Export:
    name = default_storage.save("exports/test/face-events.csv", ContentFile(content))
    now = timezone.now()
    return Export.objects.create(created_by=owner, kind="face", format="csv", limit=10, status=ExportStatus.COMPLETED,
                                 progress=1.0, file=name, file_size=len(content), finish_date=now,
                                 expires_at=now + expires_in)


def test_download_streams_the_file_with_a_file_name(owner, owner_api):
    export = _completed(owner)
    response = owner_api.get(f"/exports/{export.pk}/download/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="face-events-{export.pk}.csv"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == b"id\n1\n"
    assert owner_api.get(f"/exports/{export.pk}/").json()["download"].endswith(f"/exports/{export.pk}/download/")
    assert_bad_param(owner_api.get(f"/exports/{export.pk}/download/?x=1"), "x")


@pytest.mark.parametrize("state", ["queued", "in_progress", "failed"])
def test_download_before_completion_is_a_conflict(owner, owner_api, state):
    export = Export.objects.create(created_by=owner, kind="face", format="csv", limit=10, status=state)
    assert_error(owner_api.get(f"/exports/{export.pk}/download/", HTTP_ACCEPT="application/zip"), 409, "CONFLICT")


def test_download_after_expiry_is_gone_even_before_the_sweep(owner, owner_api):
    export = _completed(owner, expires_in=-timedelta(seconds=1))
    assert_error(owner_api.get(f"/exports/{export.pk}/download/"), 410, "GONE")
    result = exports.exports_sweep(send=lambda *args: None)
    assert result.expired == [export.pk]
    assert not default_storage.exists(export.file.name)
    export.refresh_from_db()
    assert (export.status, export.file.name) == ("expired", "")
    assert_error(owner_api.get(f"/exports/{export.pk}/download/"), 410, "GONE")


def test_delete_removes_the_file(owner, owner_api, django_capture_on_commit_callbacks):
    export = _completed(owner)
    with django_capture_on_commit_callbacks(execute=True):
        assert owner_api.delete(f"/exports/{export.pk}/").status_code == 204
    assert not Export.objects.filter(pk=export.pk).exists()
    assert not default_storage.exists(export.file.name)


# --- the build, in-process


def _csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


def list_as_csv(client, kind: str, query: str) -> list[dict[str, str]]:
    """The list's rows (one page of up to 1000) as the export writes them."""
    plural = {"face": "faces", "body": "bodies", "car": "cars"}[kind]
    response = client.get(f"/events/{plural}/?{query}&limit=1000")
    assert response.status_code == 200, response.content
    names = exports.columns(kind)
    return [{name: exports.csv_value(row[name]) for name in names} for row in response.json()["results"]]


@pytest.mark.parametrize("ordering", ["", "quality", "-quality", "created_date", "-created_date,quality", "id"])
def test_the_build_equals_the_list_in_its_order_across_batches(owner, owner_api, archive, monkeypatch, ordering):
    monkeypatch.setattr(exports, "EXPORT_BATCH", 2)  # several keyset batches, ties in quality across them
    now = timezone.now()
    for index in range(7):
        make_event("face", archive, quality=[0.3, 0.5, 0.5, 0.9, 0.5, 0.1, 0.7][index],
                   created=now - timedelta(minutes=index % 3))
    filters = {"video_archive": [str(archive.pk)], **({"ordering": [ordering]} if ordering else {})}
    export = Export.objects.create(created_by=owner, kind="face", format="csv", limit=1000, filters=filters,
                                   base_url="http://testserver/")
    exports.export_build(export_id=export.pk)
    export.refresh_from_db()
    assert (export.status, export.progress, export.row_count, export.total) == ("completed", 1.0, 7, 7)
    with default_storage.open(export.file.name, "rb") as handle:
        rows = _csv_rows(handle.read())
    query = f"video_archive={archive.pk}" + (f"&ordering={ordering}" if ordering else "")
    assert rows == list_as_csv(owner_api, "face", query)


def test_the_limit_cuts_the_export_and_says_so(owner, archive):
    for quality in (0.1, 0.2, 0.3):
        make_event("car", archive, quality=quality)
    export = Export.objects.create(created_by=owner, kind="car", format="csv", limit=2,
                                   filters={"ordering": ["quality"]})
    exports.export_build(export_id=export.pk)
    export.refresh_from_db()
    assert (export.row_count, export.total, export.truncated) == (2, 2, True)
    with default_storage.open(export.file.name, "rb") as handle:
        assert [row["quality"] for row in _csv_rows(handle.read())] == ["0.1", "0.2"]


def test_a_second_delivery_builds_nothing(owner, archive):
    make_event("body", archive)
    export = Export.objects.create(created_by=owner, kind="body", format="zip", limit=10)
    exports.export_build(export_id=export.pk)
    export.refresh_from_db()
    first = (export.status, export.file.name, export.finish_date, export.attempts)
    exports.export_build(export_id=export.pk)
    export.refresh_from_db()
    assert (export.status, export.file.name, export.finish_date, export.attempts) == first


def test_the_sweeper_resends_lost_builds_and_fails_exhausted_ones(owner, settings):
    stale = timezone.now() - timedelta(seconds=settings.FFV_QUEUE_STALE_SECONDS + 5)
    lost = Export.objects.create(created_by=owner, kind="face", format="csv", limit=1, heartbeat=stale, task_id="t1")
    fresh = Export.objects.create(created_by=owner, kind="face", format="csv", limit=1, heartbeat=timezone.now())
    dead = Export.objects.create(created_by=owner, kind="face", format="csv", limit=1, status="in_progress",
                                 heartbeat=stale, attempts=1, task_id="t3")
    spent = Export.objects.create(created_by=owner, kind="face", format="csv", limit=1, status="in_progress",
                                  heartbeat=stale, attempts=settings.FFV_JOB_MAX_ATTEMPTS)
    sent: list[tuple[int, str]] = []
    result = exports.exports_sweep(send=lambda export_id, task_id: sent.append((export_id, task_id)))
    assert sorted(sent) == sorted([(lost.pk, "t1"), (dead.pk, "t3")])
    assert result.failed == [spent.pk]
    spent.refresh_from_db()
    assert (spent.status, spent.msg_code) == ("failed", "too_many_attempts")
    assert fresh.pk not in {export_id for export_id, _task in sent}
    assert exports.export_claim(dead.pk) is not None  # its lease ran out: the re-sent build may take it


# --- retention rules


def test_matched_and_unmatched_events_have_their_own_retention(archive, settings):
    """Matched (a watch-list card, videos.matching) and unmatched events age out by their own settings; bodies
    and cars are never matched."""
    from videos.models import Card

    old = timezone.now() - timedelta(days=100)
    card = Card.objects.create(name="wanted")
    matched = make_event("face", archive, created=old)
    FaceEvent.objects.filter(pk=matched.pk).update(matched_card=card, match_confidence=0.8)
    unmatched = make_event("face", archive, created=old)
    body = make_event("body", archive, created=old)
    settings.FFV_RETENTION_UNMATCHED_DAYS = 30  # matched: 0, kept forever
    assert retention.retention_apply().deleted == {"face": 1, "body": 1, "car": 0}
    assert list(FaceEvent.objects.values_list("pk", flat=True)) == [matched.pk]
    assert not EVENT_MODELS["body"].objects.filter(pk=body.pk).exists()
    assert unmatched.pk != matched.pk
    settings.FFV_RETENTION_MATCHED_DAYS = 90
    assert retention.retention_apply().deleted["face"] == 1
    assert not FaceEvent.objects.exists()

def test_retention_off_by_default_deletes_nothing(archive, settings):
    make_event("face", archive, created=timezone.now() - timedelta(days=3650))
    assert settings.FFV_RETENTION_UNMATCHED_DAYS == settings.FFV_RETENTION_MATCHED_DAYS == 0
    result = retention.retention_apply()
    assert result.deleted == {"face": 0, "body": 0, "car": 0}
    assert FaceEvent.objects.count() == 1


def test_matched_days_alone_keep_unmatched_events(archive, settings):
    make_event("face", archive, created=timezone.now() - timedelta(days=100))
    settings.FFV_RETENTION_MATCHED_DAYS = 1
    retention.retention_apply()
    assert FaceEvent.objects.count() == 1


def test_retention_keeps_a_cluster_consistent(archive, settings, django_capture_on_commit_callbacks):
    old = timezone.now() - timedelta(days=40)
    best = make_event("face", archive, quality=0.9, created=old, embedding=unit(1, 0, 0, 0))
    kept = make_event("face", archive, quality=0.4, embedding=unit(0, 1, 0, 0))
    gone = make_event("face", archive, quality=0.8, created=old, embedding=unit(0, 0, 1, 0))
    cluster = make_cluster("face", [best, kept, gone], best=best)
    lonely = make_cluster("face", [make_event("face", archive, created=old, embedding=unit(0, 0, 0, 1))])
    settings.FFV_RETENTION_UNMATCHED_DAYS = 30
    with django_capture_on_commit_callbacks(execute=True):
        assert retention.retention_apply().deleted["face"] == 3
    cluster.refresh_from_db()
    assert (cluster.event_count, cluster.best_event_id) == (1, kept.pk)
    assert list(embedding_from_bytes(cluster.centroid)) == pytest.approx([0, 1, 0, 0], abs=1e-6)
    assert not FaceCluster.objects.filter(pk=lonely.pk).exists()
    archive.refresh_from_db()
    assert (archive.face_count, archive.face_cluster_count) == (1, 1)
    assert not default_storage.exists(best.thumbnail.name) and default_storage.exists(kept.thumbnail.name)


def test_retention_keeps_a_persons_cluster_empty(archive, settings):
    """A curated cluster (named, merged or split: videos.persons) outlives its events, as it does an event's
    deletion over the API, so later archives can join the person again."""
    old = timezone.now() - timedelta(days=40)
    person = make_cluster("face", [make_event("face", archive, created=old, embedding=unit(0, 0, 1, 0))])
    FaceCluster.objects.filter(pk=person.pk).update(curated=True, name="Roxanne")
    settings.FFV_RETENTION_UNMATCHED_DAYS = 30
    assert retention.retention_apply().deleted["face"] == 1
    person.refresh_from_db()
    assert (person.name, person.event_count, person.best_event_id) == ("Roxanne", 0, None)
    assert list(embedding_from_bytes(person.centroid)) == pytest.approx([0, 0, 1, 0], abs=1e-6)


def test_gone_and_conflict_are_in_russian_on_request(owner):
    client = token_client(owner, "ru")
    expired = _completed(owner, expires_in=-timedelta(seconds=1))
    assert "истёк" in assert_error(client.get(f"/exports/{expired.pk}/download/"), 410, "GONE")["desc"]
    queued = Export.objects.create(created_by=owner, kind="face", format="csv", limit=1)
    assert "не готова" in assert_error(client.get(f"/exports/{queued.pk}/download/"), 409, "CONFLICT")["desc"]
    failed = Export.objects.create(created_by=owner, kind="face", format="csv", limit=1, status="failed",
                                   msg_code="storage_unavailable")
    msg = client.get(f"/exports/{failed.pk}/").json()["msg"]
    assert msg == "Файловое хранилище было недоступно; попробуйте ещё раз."


def test_an_export_deleted_while_it_is_built_stores_nothing(owner, archive, monkeypatch, settings, media_root,
                                                            tmp_path):
    from django.db import connection

    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    monkeypatch.setattr(exports, "EXPORT_BATCH", 1)
    settings.FFV_PROGRESS_INTERVAL = 0  # progress (and the claim check) after every batch
    for _ in range(3):
        make_event("face", archive)
    export = Export.objects.create(created_by=owner, kind="face", format="zip", limit=10)
    batches: list[str] = []

    def delete_at_the_second_batch(execute, sql, params, many, context):
        if "videos_faceevent" in sql and "LIMIT" in sql.upper():
            batches.append(sql)
            if len(batches) == 2:
                Export.objects.filter(pk=export.pk).delete()  # DELETE /exports/{id}/ meanwhile
        return execute(sql, params, many, context)

    with connection.execute_wrapper(delete_at_the_second_batch):
        exports.export_build(export_id=export.pk)
    assert len(batches) == 2  # it stopped there
    assert not Export.objects.exists()
    assert not (media_root / "exports").exists()
    assert list((tmp_path / "spool").iterdir()) == []  # its temporary file is gone too
