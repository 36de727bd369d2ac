"""Lists and `count/` as the tables grow: queries per request do not grow with the rows, an unfiltered count reads
the row counters (videos.row_counts) instead of the table and stays exact whatever adds or removes rows, and on
PostgreSQL every documented ordering is read from an index (bench/bench_api_scale.py measures the times).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation

from tests.conftest import _user, requires, token_client
from videos import selectors, services
from videos.models import CLUSTER_MODELS, EVENT_MODELS, CameraGroup, JobState, VideoArchive

PLURAL = {"face": "faces", "body": "bodies", "car": "cars"}
# Every list with a count/, and the model whose rows an unfiltered count/ counts.
COUNTED = {"/videos/": VideoArchive,
           **{f"/events/{PLURAL[kind]}/": model for kind, model in EVENT_MODELS.items()},
           **{f"/clusters/{PLURAL[kind]}/": model for kind, model in CLUSTER_MODELS.items()}}


@pytest.fixture
def api(db):
    """Events and clusters need their own view permissions: a superuser's token."""
    return token_client(_user("scale", superuser=True))


def add_archives(group: CameraGroup, count: int) -> list[VideoArchive]:
    """Archives as the API makes them (full stream_settings), every third one without a name."""
    first = VideoArchive.objects.count()
    return [services.archive_create(data={"camera_group": group,
                                          "name": None if index % 3 == 0 else f"clip {index % 7}.mp4"})
            for index in range(first, first + count)]


def add_events(kind: str, archives: list[VideoArchive], per_archive: int = 1) -> None:
    """Events (and one cluster per two events) without pictures: the lists only show the pictures' URLs."""
    model, cluster_model = EVENT_MODELS[kind], CLUSTER_MODELS[kind]
    start = model.objects.count()
    rows = []
    for number, archive in enumerate((a for a in archives for _ in range(per_archive)), start):
        cluster = cluster_model.objects.create(event_count=1, centroid=b"") if number % 2 == 0 else None
        rows.append(model(
            video_archive=archive, camera_group_id=archive.camera_group_id, frame_timestamp=number / 25,
            frame_index=number, frame_coords_left=1, frame_coords_top=2, frame_coords_right=30, frame_coords_bottom=40,
            quality=(number % 10) / 10, confidence=0.9, track_id=number, post_policy="best",
            thumbnail=f"events/{number}-thumb.jpg", fullframe=f"events/{number}-full.jpg",
            detector_params={"model": kind}, cluster=cluster,
        ))
    for event in model.objects.bulk_create(rows):
        if event.cluster_id is not None:
            cluster_model.objects.filter(pk=event.cluster_id).update(best_event=event)


def populate(group: CameraGroup, archives: int) -> None:
    made = add_archives(group, archives)
    for kind in EVENT_MODELS:
        add_events(kind, made)


def queries(client, path: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.content[:500]
    return len(captured.captured_queries), response.json()


def counts_match(client) -> None:
    for path, model in COUNTED.items():
        assert client.get(f"{path}count/").json() == {"count": model.objects.count()}, path


LIST_REQUESTS = [
    *(f"{path}?limit=1000" for path in COUNTED),
    "/videos/?ordering=name&limit=1000", "/videos/?ordering=-created_date&camera_groups=1&limit=1000",
    "/videos/?name_contains=clip&ordering=-name&limit=1000",
    "/events/faces/?ordering=-quality&limit=1000", "/events/cars/?quality_gte=0.1&ordering=created_date&limit=1000",
    "/clusters/bodies/?ordering=-event_count&limit=1000", "/clusters/faces/?camera_groups=1&limit=1000",
    *(f"{path}count/" for path in COUNTED), "/videos/count/?camera_groups=1", "/events/faces/count/?quality_gte=0.5",
]


@pytest.mark.parametrize("path", LIST_REQUESTS)
def test_queries_per_request_do_not_grow_with_the_rows(api, default_group, path):
    populate(default_group, 5)
    few_queries, few = queries(api, path)
    populate(default_group, 45)
    many_queries, many = queries(api, path)

    if "results" in few:
        assert len(few["results"]) < len(many["results"])  # the page did grow
    assert many_queries == few_queries


def test_an_unfiltered_count_reads_no_table_row(api, default_group):
    populate(default_group, 3)
    for path, model in COUNTED.items():
        table, expected = model._meta.db_table, model.objects.count()
        assert expected > 0
        with CaptureQueriesContext(connection) as captured:
            assert api.get(f"{path}count/").json() == {"count": expected}
        assert not [query["sql"] for query in captured.captured_queries if f'"{table}"' in query["sql"]], path
        # A filter, or one that reads as absent, still counts exactly.
        assert api.get(f"{path}count/?created_date_gte=2000-01-01T00:00:00Z").json()["count"] == \
            model.objects.count()
        assert api.get(f"{path}count/?created_date_lt=").json()["count"] == model.objects.count()
    assert api.get(f"/videos/count/?camera_groups={default_group.pk + 1}").json() == {"count": 0}


def test_counts_stay_exact_whatever_adds_or_removes_rows(api, default_group, client):
    counts_match(api)
    # Created through the API, by the service, in bulk.
    created = [api.post("/videos/", {"camera_group": default_group.pk, "name": f"api {index}"}, format="json")
               for index in range(3)]
    assert all(response.status_code == 201 for response in created)
    populate(default_group, 6)
    VideoArchive.objects.bulk_create(VideoArchive(camera_group=default_group, name=f"bulk {index}",
                                                  stream_settings={}) for index in range(4))
    counts_match(api)
    archives = list(VideoArchive.objects.order_by("id"))

    # Deleted through the API (its events and clusters go with it), in the admin, by an event's deletion.
    assert api.delete(f"/videos/{archives[3].pk}/").status_code == 204
    counts_match(api)
    client.force_login(User.objects.create_superuser("admin", password="pw", email=""))
    response = client.post("/admin/videos/videoarchive/", {"action": "delete_selected", "post": "yes",
                                                            "_selected_action": [archives[4].pk, archives[5].pk]})
    assert response.status_code == 302
    counts_match(api)
    event = EVENT_MODELS["body"].objects.exclude(cluster=None).first()
    assert api.delete(f"/events/bodies/{event.pk}/").status_code == 204
    counts_match(api)

    # Cascades of the database's rows: a camera group's events go with it (its archives are protected, so
    # they are moved first), and a bulk delete of the ORM.
    other = CameraGroup.objects.create(name="other")
    VideoArchive.objects.filter(pk=archives[6].pk).update(camera_group=other)
    for model in EVENT_MODELS.values():
        model.objects.filter(video_archive=archives[6]).update(camera_group=other)
    VideoArchive.objects.filter(pk=archives[6].pk).update(camera_group=default_group)
    other.delete()
    counts_match(api)
    VideoArchive.objects.filter(name__startswith="bulk").delete()
    for model in CLUSTER_MODELS.values():
        model.objects.filter(event_count=1).delete()
    counts_match(api)
    assert VideoArchive.objects.count() > 0


@pytest.mark.django_db(transaction=True)
def test_counts_stay_exact_under_concurrent_creates_and_deletes(api, default_group):
    """Writers on connections of their own, at once: on PostgreSQL their counter updates meet on the counter rows
    (spread over slots by backend) and none may be lost or counted twice."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            made = [services.archive_create(data={"camera_group": default_group, "name": f"w{index}-{n}"})
                    for n in range(6)]
            for archive in made[:2]:
                services.archive_delete(archive_id=archive.pk)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert VideoArchive.objects.count() == 8 * 4
    counts_match(api)


ORDERED_LISTS = [
    "/videos/?ordering=name", "/videos/?ordering=-name", "/videos/?ordering=created_date",
    "/videos/?ordering=-created_date", "/videos/?ordering=id", "/videos/?camera_groups=1&ordering=name",
    "/videos/?camera_groups=1&ordering=-created_date", "/videos/?camera_groups=1",
    "/videos/?save_to=http%3A%2F%2Fsink.example%2F",
    *(f"/events/{PLURAL[kind]}/?ordering={order}" for kind in EVENT_MODELS
      for order in ("quality", "-quality", "created_date", "-created_date", "-id")),
    *(f"/clusters/{PLURAL[kind]}/?ordering={order}" for kind in CLUSTER_MODELS
      for order in ("event_count", "-event_count", "created_date", "-id")),
]


@pytest.mark.parametrize("path", ORDERED_LISTS)
def test_every_ordering_is_read_from_an_index(api, default_group, path):
    """The page query of each documented ordering (NULL names sorting as "", ties by id) needs no sort: with
    sorting priced out, PostgreSQL still finds an index path, first page and a page from a cursor alike."""
    requires(connection.vendor == "postgresql", "DATABASE_URL must name PostgreSQL")
    populate(default_group, 8)
    VideoArchive.objects.update(save_to="http://sink.example/")  # one sink for all: its page in id order
    first_page = api.get(f"{path}&limit=2").json()
    assert first_page["next_page"]
    for url in (f"{path}&limit=2", first_page["next_page"]):
        with CaptureQueriesContext(connection) as captured:
            assert api.get(url).status_code == 200
        page_sql = [query["sql"] for query in captured.captured_queries if "ORDER BY" in query["sql"]
                    and "LIMIT" in query["sql"] and "videos_authtoken" not in query["sql"]]
        assert len(page_sql) == 1, page_sql
        with connection.cursor() as cursor:
            cursor.execute("SET enable_sort = off")
            try:
                cursor.execute("EXPLAIN " + page_sql[0])
                plan = "\n".join(row[0] for row in cursor.fetchall())
            finally:
                cursor.execute("RESET enable_sort")
        assert "Sort" not in plan and "Index" in plan, plan


def test_fast_representation_is_drfs_own(api, default_group):
    """FastRepresentationMixin skips DRF's per-field indirection; its output must be DRF's, key for key."""
    from rest_framework.test import APIRequestFactory

    from videos.event_selectors import cluster_sources
    from videos.models import Camera, Case
    from videos.serializers.archives import VideoArchiveSerializer
    from videos.serializers.clusters import ClusterSerializer
    from videos.serializers.events import EventSerializer, FaceEventSerializer
    from videos.serializers.fields import FastRepresentationMixin

    populate(default_group, 4)
    camera = Camera.objects.create(camera_group=default_group, name="cam")
    VideoArchive.objects.filter(pk=VideoArchive.objects.first().pk).update(
        camera=camera, case=Case.objects.create(name="case"), url="http://example.com/a.mp4", source_len=12.5,
        job_state=JobState.COMPLETED, statistic={"frames_processed": 9, "objects": {"car": {"posted": 1}}},
        job_msg_code="internal_error", job_msg_params={"error": "boom"}, file_size=10)
    # Every job state (health_status differs by state), with a source, start date and statistic.
    for state in JobState.values:
        archive = add_archives(default_group, 1)[0]
        VideoArchive.objects.filter(pk=archive.pk).update(
            job_state=state, source_file="videos/x/source.mp4", source_len=10.0, job_purge_pending=True,
            processing_start_date=datetime(2026, 3, 29, 0, 30, 15, 123456, tzinfo=UTC),
            statistic={"processed_duration": 4.0, "decoding_soft_errors": 1, "eta_seconds": 3})
    request = APIRequestFactory().get("/videos/", HTTP_HOST="testserver")
    cases = [(VideoArchiveSerializer, list(selectors.archive_page_list()), {})]
    for kind, model in EVENT_MODELS.items():
        serializer = FaceEventSerializer if kind == "face" else EventSerializer
        cases.append((serializer, list(model.objects.all()), {}))
        clusters = list(CLUSTER_MODELS[kind].objects.all())
        cases.append((ClusterSerializer, clusters,
                      {"sources": cluster_sources(kind=kind, cluster_ids=[c.pk for c in clusters])}))
    # Dates are written in the current time zone (UTC as "Z"; Moscow's +03:00 across the day of a DST change
    # elsewhere); descriptions and messages in the active language.
    for zone, language in (("UTC", "en"), ("Europe/Moscow", "ru"), ("America/New_York", "en")):
        with timezone.override(zone), translation.override(language):
            for serializer_class, rows, extra in cases:
                assert rows
                fast = serializer_class(rows, many=True, context={"request": request, **extra}).data
                drf = serializer_class(rows, many=True, context={"request": request, **extra})
                own = [super(FastRepresentationMixin, drf.child).to_representation(row) for row in rows]
                assert [list(row.items()) for row in fast] == [list(row.items()) for row in own], \
                    (serializer_class, zone)
                assert json.dumps(fast) == json.dumps(own)


def test_queries_per_archive_page_do_not_grow_with_queued_rows(api, default_group):
    """health_status reads job_purge_pending of a queued archive: the page must load it with the rows."""
    add_archives(default_group, 3)
    VideoArchive.objects.update(job_state=JobState.QUEUED, job_purge_pending=True)
    few_queries, few = queries(api, "/videos/?limit=1000")
    add_archives(default_group, 30)
    VideoArchive.objects.update(job_state=JobState.QUEUED, job_purge_pending=True)
    many_queries, many = queries(api, "/videos/?limit=1000")
    assert len(many["results"]) == 33 and many_queries == few_queries
    assert {row["health_status"]["status"] for row in many["results"]} == {"AWAITING"}


def test_fast_representation_leaves_out_a_field_drf_skips():
    from types import SimpleNamespace

    from rest_framework import serializers

    from videos.serializers.fields import FastRepresentationMixin

    class Plain(serializers.Serializer):
        name = serializers.CharField()
        note = serializers.CharField(required=False)  # absent on the object: DRF leaves the key out

    class Fast(FastRepresentationMixin, Plain):
        pass

    row = SimpleNamespace(name="a")
    assert Fast(row).data == Plain(row).data == {"name": "a"}


def test_list_page_completes_each_archives_own_stream_settings(api, default_group):
    """A list page completes each distinct stored text once and shares the result between rows: every row must
    still show its own archive's settings, as the archive's own page shows them."""
    stored = [
        {},
        {"detectors": {"face": None}},
        {"detectors": {"car": {"filter_min_quality": 0.5}}, "rot": "10,10,200,200"},
        {"detectors": {"body": {"filter_min_size": 40}}, "video_decoder_disabled": True},
        {"unknown_key": [1, 2]},
    ]
    archives = []
    for settings in stored * 2:  # each text twice: shared within the page
        archives.append(VideoArchive.objects.create(camera_group=default_group, name="s", stream_settings=settings))
    page = api.get("/videos/?limit=1000").json()["results"]
    assert len(page) == len(archives)
    for row in page:
        own = api.get(f"/videos/{row['id']}/").json()["stream_settings"]
        assert json.dumps(row["stream_settings"]) == json.dumps(own), row["id"]
    assert len({json.dumps(row["stream_settings"]) for row in page}) == len(stored)


@pytest.mark.parametrize("probe_rows", [2000, 50])
def test_name_contains_pages_are_those_of_the_plain_filter(api, default_group, monkeypatch, probe_rows):
    """`name_contains` takes few matches by id (videos.filters.filter_name_contains) and many by the plain
    filter: either way every page, in every documented order, is the plain filter's."""
    from videos import filters

    monkeypatch.setattr(filters, "NAME_PROBE_ROWS", probe_rows)
    VideoArchive.objects.bulk_create([VideoArchive(camera_group=default_group, name=f"Archive {number}")
                                      for number in range(1, 400)])
    expected_ids = set(VideoArchive.objects.filter(name__icontains="archive 1").values_list("pk", flat=True))
    assert 50 < len(expected_ids) < 2000  # 1, 10-19, 100-199: over the small probe, under the large one
    for ordering in ("", "id", "-id", "name", "-name", "created_date", "-created_date"):
        seen, url = [], f"/videos/?name_contains=ARCHIVE%201&limit=30&ordering={ordering}"
        while url:
            page = api.get(url).json()
            seen += [row["id"] for row in page["results"]]
            url = page["next_page"]
        assert sorted(seen) == sorted(expected_ids) and len(seen) == len(set(seen)), ordering
    assert api.get("/videos/count/?name_contains=ARCHIVE%201").json() == {"count": len(expected_ids)}


def test_name_contains_reads_few_matches_by_id_on_postgresql(api, default_group):
    """Names that follow ids put every match of `archive 1` among the oldest rows: the newest-first page must not
    walk the primary key through the rest (it read 37,002 rows for 21 in the 100k bench)."""
    requires(connection.vendor == "postgresql", "DATABASE_URL must name PostgreSQL")
    VideoArchive.objects.bulk_create([VideoArchive(camera_group=default_group, name=f"archive {number}")
                                      for number in range(1, 3000)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE videos_videoarchive")  # the planner's view of a table that has been in use
    with CaptureQueriesContext(connection) as captured:
        assert len(api.get("/videos/?name_contains=archive%2012&limit=5").json()["results"]) == 5
    [page_sql] = [query["sql"] for query in captured.captured_queries if "LIMIT 6" in query["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE " + page_sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Rows Removed by Filter" not in plan or all(
        int(line.split(":")[1]) < 100 for line in plan.splitlines() if "Rows Removed by Filter" in line), plan
