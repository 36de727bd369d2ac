"""Persons (videos.persons): naming, merging and splitting clusters through the API, and what later clustering
(new archives, re-processed archives) keeps of it. Real clustering code (videos.clusters) with synthetic
embeddings, as in tests/test_clusters_service.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from tests.conftest import ALL_VIDEO_PERMS, WorkerProcess, _user, token_client, wait_for
from tests.errors import assert_bad_param, assert_error
from tests.test_clusters_service import make_archive, make_event, shot, unit
from tests.test_worker_pipeline import create_archive, finished, footage
from videos import clusters, jobs, persons, services
from videos.models import (
    CLUSTER_MODELS,
    EVENT_MODELS,
    BodyCluster,
    ClusterPin,
    FaceCluster,
    FaceEvent,
    JobState,
    VideoArchive,
)

pytestmark = pytest.mark.django_db

DIM = 512
PERSON_PERMS = [f"{what}_{kind}{model}" for kind in ("face", "body", "car") for model in ("cluster", "event")
                for what in ("view", "add", "change", "delete")]


@pytest.fixture
def people() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.stack([unit(row) for row in rng.normal(size=(6, DIM))])


@pytest.fixture
def twins(people) -> tuple[np.ndarray, np.ndarray]:
    """Two people alike enough (cosine about 0.8) that clustering puts them together at threshold 0.6."""
    first = people[0]
    second = unit(people[0] + 0.75 * people[1])
    assert 0.7 < float(first @ second) < 0.9
    return first, second


@pytest.fixture
def papi(db) -> APIClient:
    return token_client(_user("person-editor", PERSON_PERMS))


def assert_consistent(kind: str = "face") -> None:
    """Every cluster's count, sum and best event agree with its members; only curated clusters may be empty."""
    for cluster in CLUSTER_MODELS[kind].objects.all():
        members = list(EVENT_MODELS[kind].objects.filter(cluster=cluster))
        assert cluster.event_count == len(members), cluster.pk
        if not members:
            assert cluster.curated and cluster.best_event_id is None, f"cluster {cluster.pk} is empty"
            continue
        expected = np.sum([np.frombuffer(bytes(m.embedding), dtype="<f4") for m in members], axis=0)
        np.testing.assert_allclose(np.frombuffer(bytes(cluster.centroid), "<f4"), expected, atol=1e-4)
        assert cluster.best_event_id == max(members, key=lambda m: (m.quality, -m.pk)).pk


def assert_archive_counts() -> None:
    for archive in VideoArchive.objects.all():
        for kind in ("face", "body", "car"):
            count = getattr(archive, f"{kind}_cluster_count")
            if count is not None:
                assert count == clusters.archive_cluster_count(kind, archive.pk), (archive.pk, kind)


def cluster_of(event) -> int:
    return FaceEvent.objects.get(pk=event.pk).cluster_id


def clustered(archive, vectors, **kwargs) -> list:
    events = [make_event(archive, vector, **kwargs) for vector in vectors]
    clusters.cluster_archive(archive_id=archive.pk)
    return events


def row_count(api: APIClient, plural: str = "faces") -> int:
    response = api.get(f"/clusters/{plural}/count/")
    assert response.status_code == 200
    return response.json()["count"]


def reprocess(archive: VideoArchive, django_capture_on_commit_callbacks) -> jobs.ClaimedJob:
    """process/ and the worker's claim: the archive's events leave their clusters and are purged."""
    archive.refresh_from_db()
    archive.source_file.name = "videos/x.mp4"
    archive.save()
    with django_capture_on_commit_callbacks(execute=False):
        services.archive_process(archive_id=archive.pk, send=lambda *args: None)
    archive.refresh_from_db()
    claimed = jobs.job_claim(archive_id=archive.pk, task_id=archive.job_task_id, worker="test")
    assert claimed is not None and not claimed.resumed
    assert not FaceEvent.objects.filter(video_archive=archive).exists()
    return claimed


def finish(claimed: jobs.ClaimedJob, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        jobs.job_finish(claimed, JobState.COMPLETED)
    clusters.cluster_archive(archive_id=claimed.archive_id)  # what the task sent on commit runs


def again(archive: VideoArchive, event: FaceEvent, vector: np.ndarray | None = None) -> FaceEvent:
    """The re-run's event of the same track, policy and frame (what a worker makes again from the same video)."""
    return FaceEvent.objects.create(
        video_archive=archive, camera_group=archive.camera_group, frame_timestamp=event.frame_timestamp,
        frame_index=event.frame_index, frame_coords_left=0, frame_coords_top=0, frame_coords_right=10,
        frame_coords_bottom=10, quality=event.quality, confidence=0.9, track_id=event.track_id,
        post_policy=event.post_policy, thumbnail="t/again.jpg", fullframe="f/again.jpg",
        embedding=bytes(event.embedding) if vector is None else vector.astype("<f4").tobytes(),
    )


# --- naming


def test_name_a_cluster(papi, default_group, people):
    archive = make_archive(default_group)
    [event] = clustered(archive, [shot(people[0])])
    cluster_id = cluster_of(event)
    assert papi.get(f"/clusters/faces/{cluster_id}/").json()["name"] == ""
    response = papi.patch(f"/clusters/faces/{cluster_id}/", {"name": "  Hal  "}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "Hal" and body["id"] == cluster_id and body["event_count"] == 1
    assert body["video_archives"] == [archive.pk]
    assert papi.get(f"/clusters/faces/{cluster_id}/").json()["name"] == "Hal"
    assert FaceCluster.objects.get(pk=cluster_id).curated
    # A GET body sent back: read-only fields are ignored, the name is written.
    echoed = {**body, "name": "Hal Stewart", "event_count": 99}
    assert papi.patch(f"/clusters/faces/{cluster_id}/", echoed, format="json").json()["event_count"] == 1
    assert papi.get(f"/clusters/faces/{cluster_id}/").json()["name"] == "Hal Stewart"
    assert [row["id"] for row in papi.get("/clusters/faces/?name_contains=STEW").json()["results"]] == [cluster_id]
    assert papi.get("/clusters/faces/count/?name_contains=roxanne").json() == {"count": 0}
    assert papi.patch(f"/clusters/faces/{cluster_id}/", {}, format="json").json()["name"] == "Hal Stewart"
    assert papi.patch(f"/clusters/faces/{cluster_id}/", {"name": ""}, format="json").json()["name"] == ""


def test_the_admin_lists_the_name(papi, client, default_group, people, media_root):
    from django.contrib.auth.models import User

    archive = make_archive(default_group)
    [event] = clustered(archive, [shot(people[0])])
    papi.patch(f"/clusters/faces/{cluster_of(event)}/", {"name": "Roxanne Ritchi"}, format="json")
    client.force_login(User.objects.create_superuser("admin", password="pw", email=""))
    response = client.get("/admin/videos/facecluster/")
    assert response.status_code == 200 and "Roxanne Ritchi" in response.content.decode()


@pytest.mark.parametrize("body, param", [
    ({"name": 5}, "name"), ({"name": None}, "name"), ({"name": "x" * 257}, "name"), ({"nickname": "x"}, "nickname"),
    ({"name": ["Hal"]}, "name"), ({"name": "Hal\u0000"}, "name"),
])
def test_naming_bad_input(papi, default_group, people, body, param):
    archive = make_archive(default_group)
    [event] = clustered(archive, [shot(people[0])])
    assert_bad_param(papi.patch(f"/clusters/faces/{cluster_of(event)}/", body, format="json"), param)
    assert FaceCluster.objects.get().name == "" and not FaceCluster.objects.get().curated


def test_naming_a_missing_cluster_or_with_put_or_without_permission(papi, default_group, people):
    archive = make_archive(default_group)
    [event] = clustered(archive, [shot(people[0])])
    assert_error(papi.patch("/clusters/faces/987654/", {"name": "x"}, format="json"), 404, "NOT_FOUND")
    assert_error(papi.patch(f"/clusters/bodies/{cluster_of(event)}/", {"name": "x"}, format="json"), 404,
                 "NOT_FOUND")
    assert_error(papi.put(f"/clusters/faces/{cluster_of(event)}/", {"name": "x"}, format="json"), 405,
                 "METHOD_NOT_ALLOWED")
    viewer = token_client(_user("viewer", ["view_facecluster"]))
    assert_error(viewer.patch(f"/clusters/faces/{cluster_of(event)}/", {"name": "x"}, format="json"), 403,
                 "PERMISSION_DENIED")
    assert FaceCluster.objects.get().name == ""


# --- merging


def test_merge_clusters_into_one(papi, default_group, people):
    first, second = make_archive(default_group), make_archive(default_group)
    alice = clustered(first, [shot(people[0]) for _ in range(2)], quality=0.6)
    bob = clustered(second, [shot(people[1]), shot(people[1])], quality=0.7)
    carol = clustered(second, [shot(people[2])], quality=0.9)
    target, merged_bob, merged_carol = cluster_of(alice[0]), cluster_of(bob[0]), cluster_of(carol[0])
    papi.patch(f"/clusters/faces/{merged_bob}/", {"name": "Bob"}, format="json")
    assert row_count(papi) == 3
    second.refresh_from_db()
    assert second.face_cluster_count == 2

    response = papi.post(f"/clusters/faces/{target}/merge/", {"ids": [merged_bob, merged_carol]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == [{"id": merged_bob, "success": True, "error": None},
                               {"id": merged_carol, "success": True, "error": None}]
    assert set(FaceCluster.objects.values_list("pk", flat=True)) == {target}
    assert {cluster_of(event) for event in alice + bob + carol} == {target}
    body = papi.get(f"/clusters/faces/{target}/").json()
    assert body["event_count"] == 5 and body["best_event"] == carol[0].pk
    assert body["name"] == "Bob"  # the target had none: the first merged name
    assert body["video_archives"] == [first.pk, second.pk]
    assert row_count(papi) == 1 == len(papi.get("/clusters/faces/").json()["results"])
    second.refresh_from_db()
    assert second.face_cluster_count == 1
    assert_consistent()
    assert_archive_counts()


def test_merge_answers_per_id(papi, default_group, people):
    archive = make_archive(default_group)
    events = clustered(archive, [shot(person) for person in people[:3]])
    target, other, third = (cluster_of(event) for event in events)
    body_cluster = BodyCluster.objects.create(event_count=0, centroid=b"")
    while FaceCluster.objects.filter(pk=body_cluster.pk).exists():  # an id no face cluster has
        body_cluster = BodyCluster.objects.create(event_count=0, centroid=b"")
    missing = max(target, other, third, body_cluster.pk) + 1000
    response = papi.post(f"/clusters/faces/{target}/merge/",
                         {"ids": [other, missing, other, body_cluster.pk, third]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == [
        {"id": other, "success": True, "error": None},
        {"id": missing, "success": False, "error": "not_found"},
        {"id": other, "success": False, "error": "duplicate"},
        {"id": body_cluster.pk, "success": False, "error": "not_found"},  # ids are per kind
        {"id": third, "success": True, "error": None},
    ]
    assert BodyCluster.objects.filter(pk=body_cluster.pk).exists()
    assert FaceCluster.objects.get().event_count == 3
    assert_consistent()


def test_merge_refuses_two_faces_of_one_frame(papi, default_group, people):
    archive = make_archive(default_group)
    # One frame, two people: a merge would say they are one.
    first = make_event(archive, shot(people[0]), frame=40)
    second = make_event(archive, shot(people[1]), frame=40)
    other = make_event(archive, shot(people[2]), frame=41)
    clusters.cluster_archive(archive_id=archive.pk)
    target, refused, taken = cluster_of(first), cluster_of(second), cluster_of(other)
    response = papi.post(f"/clusters/faces/{target}/merge/", {"ids": [refused, taken]}, format="json")
    assert response.json() == [{"id": refused, "success": False, "error": "same_frame"},
                               {"id": taken, "success": True, "error": None}]
    assert FaceCluster.objects.count() == 2
    assert cluster_of(first) == cluster_of(other) != cluster_of(second)
    assert_consistent()


@pytest.mark.parametrize("body, param", [
    ({}, "ids"), ({"ids": []}, "ids"), ({"ids": "5"}, "ids"), ({"ids": ["5"]}, "ids.0"), ({"ids": [1.5]}, "ids.0"),
    ({"ids": [0]}, "ids.0"), ({"ids": [10**18]}, "ids.0"), ({"ids": [True]}, "ids.0"),
    ({"ids": list(range(1, 102))}, "ids"),
    ({"ids": [1], "into": 2}, "into"), ([1, 2], ""),
])
def test_merge_bad_input(papi, default_group, people, body, param):
    archive = make_archive(default_group)
    events = clustered(archive, [shot(person) for person in people[:2]])
    response = papi.post(f"/clusters/faces/{cluster_of(events[0])}/merge/", body, format="json")
    assert_bad_param(response, param)
    assert FaceCluster.objects.count() == 2


def test_merge_into_itself_or_a_missing_cluster(papi, default_group, people):
    archive = make_archive(default_group)
    events = clustered(archive, [shot(person) for person in people[:2]])
    first, second = cluster_of(events[0]), cluster_of(events[1])
    assert_bad_param(papi.post(f"/clusters/faces/{first}/merge/", {"ids": [second, first]}, format="json"), "ids")
    assert_error(papi.post("/clusters/faces/987654/merge/", {"ids": [first]}, format="json"), 404, "NOT_FOUND")
    assert FaceCluster.objects.count() == 2 and not FaceCluster.objects.filter(curated=True).exists()
    ru = token_client(_user("ru-editor", PERSON_PERMS), language="ru")
    body = assert_bad_param(ru.post(f"/clusters/faces/{first}/merge/", {"ids": [first]}, format="json"), "ids")
    assert body["desc"] == "Кластер нельзя объединить с самим собой."


def test_merge_needs_change_and_delete(default_group, people):
    archive = make_archive(default_group)
    events = clustered(archive, [shot(person) for person in people[:2]])
    path = f"/clusters/faces/{cluster_of(events[0])}/merge/"
    changer = token_client(_user("changer", ["view_facecluster", "change_facecluster"]))
    assert_error(changer.post(path, {"ids": [cluster_of(events[1])]}, format="json"), 403, "PERMISSION_DENIED")
    assert FaceCluster.objects.count() == 2


# --- splitting


def test_split_events_into_a_new_cluster(papi, default_group, people):
    first, second = make_archive(default_group), make_archive(default_group)
    kept = clustered(first, [shot(people[0]) for _ in range(3)], quality=0.8)
    moved = clustered(second, [shot(people[0]) for _ in range(2)], quality=0.6)
    source = cluster_of(kept[0])
    assert {cluster_of(event) for event in kept + moved} == {source}
    second.refresh_from_db()
    assert second.face_cluster_count == 1 and row_count(papi) == 1
    response = papi.post(f"/clusters/faces/{source}/split/",
                         {"events": [event.pk for event in moved] + [moved[0].pk], "name": "Roxanne"}, format="json")
    assert response.status_code == 201, response.content
    new = response.json()
    assert response["Location"].endswith(f"/clusters/faces/{new['id']}/")
    assert new["name"] == "Roxanne" and new["event_count"] == 2 and new["best_event"] == moved[0].pk
    assert new["video_archives"] == [second.pk]
    assert {cluster_of(event) for event in moved} == {new["id"]}
    assert papi.get(f"/clusters/faces/{source}/").json()["event_count"] == 3
    assert row_count(papi) == 2
    assert FaceCluster.objects.get(pk=source).curated and FaceCluster.objects.get(pk=new["id"]).curated
    assert_consistent()
    assert_archive_counts()
    first.refresh_from_db()
    assert first.face_cluster_count == 1


@pytest.mark.parametrize("body, param", [
    ({}, "events"), ({"events": []}, "events"), ({"events": ["1"]}, "events.0"), ({"events": None}, "events"),
    ({"events": [1], "name": 3}, "name"), ({"events": [1], "cluster": 3}, "cluster"),
    ({"events": list(range(1, 1002))}, "events"),
])
def test_split_bad_input(papi, default_group, people, body, param):
    archive = make_archive(default_group)
    clustered(archive, [shot(people[0]) for _ in range(2)])
    cluster = FaceCluster.objects.get()
    assert_bad_param(papi.post(f"/clusters/faces/{cluster.pk}/split/", body, format="json"), param)
    assert FaceCluster.objects.count() == 1


def test_split_refuses_strangers_and_emptying(papi, default_group, people):
    archive = make_archive(default_group)
    mine = clustered(archive, [shot(people[0]) for _ in range(2)])
    [stranger] = clustered(archive, [shot(people[1])])
    source = cluster_of(mine[0])
    path = f"/clusters/faces/{source}/split/"
    body = assert_bad_param(papi.post(path, {"events": [mine[0].pk, stranger.pk]}, format="json"), "events")
    assert str(stranger.pk) in body["desc"]
    assert_bad_param(papi.post(path, {"events": [mine[0].pk, 987654]}, format="json"), "events")
    assert_bad_param(papi.post(path, {"events": [event.pk for event in mine]}, format="json"), "events")
    assert_error(papi.post("/clusters/faces/987654/split/", {"events": [mine[0].pk]}, format="json"), 404,
                 "NOT_FOUND")
    # A body cluster's split does not take face events.
    assert_error(papi.post(f"/clusters/bodies/{source}/split/", {"events": [mine[0].pk]}, format="json"), 404,
                 "NOT_FOUND")
    assert FaceCluster.objects.count() == 2 and not FaceCluster.objects.filter(curated=True).exists()
    assert_consistent()


# --- what later clustering keeps


def test_a_split_is_not_merged_again_by_new_archives(papi, default_group, twins):
    first, second = twins
    archive = make_archive(default_group)
    ones = clustered(archive, [shot(first) for _ in range(3)], quality=0.9)
    twos = clustered(archive, [shot(second) for _ in range(3)], quality=0.5)
    source = cluster_of(ones[0])
    assert {cluster_of(event) for event in ones + twos} == {source}  # clustering took them for one person
    new = papi.post(f"/clusters/faces/{source}/split/", {"events": [e.pk for e in twos]}, format="json").json()["id"]

    later = make_archive(default_group)
    more_ones = clustered(later, [shot(first) for _ in range(2)])
    more_twos = clustered(later, [shot(second) for _ in range(2)])
    assert {cluster_of(event) for event in more_ones} == {source}
    assert {cluster_of(event) for event in more_twos} == {new}
    assert FaceCluster.objects.count() == 2
    assert_consistent()
    assert_archive_counts()


def test_reprocessing_puts_events_back_where_a_person_put_them(papi, default_group, twins,
                                                                 django_capture_on_commit_callbacks):
    first, second = twins
    kept, redone = make_archive(default_group), make_archive(default_group)
    ones = clustered(kept, [shot(first) for _ in range(3)], quality=0.9)
    # The re-processed archive has both people, the second one's events closer to the first's cluster.
    redone_ones = clustered(redone, [shot(first) for _ in range(2)], quality=0.8)
    redone_twos = clustered(redone, [unit(second + 0.3 * first) for _ in range(2)], quality=0.4)
    source = cluster_of(ones[0])
    assert {cluster_of(event) for event in redone_ones + redone_twos} == {source}
    new = papi.post(f"/clusters/faces/{source}/split/", {"events": [e.pk for e in redone_twos], "name": "Twin"},
                    format="json").json()["id"]
    redone.refresh_from_db()
    assert redone.face_cluster_count == 2

    claimed = reprocess(redone, django_capture_on_commit_callbacks)
    # While it runs: the person's new cluster lost every event and stays, by its last direction.
    empty = papi.get(f"/clusters/faces/{new}/").json()
    assert (empty["name"], empty["event_count"], empty["best_event"], empty["thumbnail"]) == ("Twin", 0, None, None)
    assert ClusterPin.objects.filter(video_archive=redone).count() == 4
    assert_consistent()

    back_ones = [again(redone, event) for event in redone_ones]
    # The second one comes back looking like the first person (say, another embedder): its pin still wins.
    back_twos = [again(redone, redone_twos[0]), again(redone, redone_twos[1], vector=shot(first))]
    finish(claimed, django_capture_on_commit_callbacks)
    assert {cluster_of(event) for event in back_ones} == {source}
    assert {cluster_of(event) for event in back_twos} == {new}  # not re-merged by similarity
    assert not ClusterPin.objects.exists()
    assert FaceCluster.objects.get(pk=new).name == "Twin"
    redone.refresh_from_db()
    assert redone.face_cluster_count == 2
    assert_consistent()
    assert_archive_counts()


def test_a_merged_cluster_survives_reprocessing_of_all_its_events(papi, default_group, people,
                                                                    django_capture_on_commit_callbacks):
    archive = make_archive(default_group)
    alice = clustered(archive, [shot(people[0]) for _ in range(2)])
    bob = clustered(archive, [shot(people[1]) for _ in range(2)])
    target = cluster_of(alice[0])
    assert papi.post(f"/clusters/faces/{target}/merge/", {"ids": [cluster_of(bob[0])]},
                     format="json").json()[0]["success"]
    papi.patch(f"/clusters/faces/{target}/", {"name": "Alice"}, format="json")

    claimed = reprocess(archive, django_capture_on_commit_callbacks)
    assert FaceCluster.objects.get(pk=target).event_count == 0
    back = [again(archive, event) for event in alice + bob]
    # One event of the new run is not one the worker made before (other settings): it finds the cluster by its
    # direction, kept while it was empty... and a face of a frame the cluster has again cannot join it.
    stranger = make_event(archive, shot(people[0]), frame=10_000)
    twin_of_frame = make_event(archive, shot(people[0]), frame=alice[0].frame_index)
    twin_of_frame.track_id = 99_999
    twin_of_frame.save()
    finish(claimed, django_capture_on_commit_callbacks)
    assert {cluster_of(event) for event in back} == {target}
    assert cluster_of(stranger) == target
    assert cluster_of(twin_of_frame) not in (None, target)
    assert FaceCluster.objects.get(pk=target).name == "Alice"
    assert_consistent()
    assert_archive_counts()


def test_a_new_archive_joins_an_emptied_named_cluster_by_its_direction(papi, default_group, people):
    gone = make_archive(default_group)
    [event] = clustered(gone, [shot(people[3])])
    cluster_id = cluster_of(event)
    papi.patch(f"/clusters/faces/{cluster_id}/", {"name": "Minion"}, format="json")
    services.archive_delete(archive_id=gone.pk)
    assert FaceCluster.objects.get(pk=cluster_id).event_count == 0
    assert not ClusterPin.objects.exists()  # the archive's pins went with it

    later = make_archive(default_group)
    [back] = clustered(later, [shot(people[3])])
    [other] = clustered(later, [shot(people[4])])
    assert cluster_of(back) == cluster_id and cluster_of(other) != cluster_id
    assert_consistent()


def test_deleting_the_last_event_of_a_named_cluster_keeps_it(papi, default_group, people):
    archive = make_archive(default_group)
    [event] = clustered(archive, [shot(people[0])])
    [plain_event] = clustered(archive, [shot(people[1])])
    cluster_id, plain = cluster_of(event), cluster_of(plain_event)
    papi.patch(f"/clusters/faces/{cluster_id}/", {"name": "Hal"}, format="json")
    assert papi.delete(f"/events/faces/{event.pk}/").status_code == 204
    assert papi.delete(f"/events/faces/{plain_event.pk}/").status_code == 204
    assert papi.get(f"/clusters/faces/{cluster_id}/").json()["event_count"] == 0
    assert not FaceCluster.objects.filter(pk=plain).exists()
    assert row_count(papi) == 1
    archive.refresh_from_db()
    assert archive.face_cluster_count == 0
    assert_consistent()


def test_bodies_and_cars_merge_and_split_too(papi, default_group, people):
    archive = make_archive(default_group)
    for kind, plural in (("body", "bodies"), ("car", "cars")):
        first = [make_event(archive, shot(people[0]), kind=kind) for _ in range(2)]
        second = make_event(archive, shot(people[5]), kind=kind)
        clusters.cluster_archive(archive_id=archive.pk)
        model = EVENT_MODELS[kind]
        ids = [model.objects.get(pk=event.pk).cluster_id for event in (*first, second)]
        assert ids[0] == ids[1] != ids[2]
        merged = papi.post(f"/clusters/{plural}/{ids[0]}/merge/", {"ids": [ids[2]]}, format="json")
        assert merged.json() == [{"id": ids[2], "success": True, "error": None}]
        split = papi.post(f"/clusters/{plural}/{ids[0]}/split/", {"events": [second.pk]}, format="json")
        assert split.status_code == 201 and split.json()["event_count"] == 1
        assert CLUSTER_MODELS[kind].objects.count() == 2
        assert_consistent(kind)
    assert_archive_counts()


# --- concurrency


@pytest.mark.django_db(transaction=True)
def test_concurrent_merges_take_each_cluster_once(default_group, people):
    archive = make_archive(default_group)
    events = clustered(archive, [shot(person) for person in people[:3]])
    first, second, contested = (cluster_of(event) for event in events)
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def merge(target: int) -> None:
        try:
            start.wait(5)
            results[target] = persons.cluster_merge(kind="face", cluster_id=target, ids=[contested])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=merge, args=(target,)) for target in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    outcomes = sorted(result[0].error or "merged" for result in results.values())
    assert outcomes == ["merged", "not_found"]
    assert FaceCluster.objects.count() == 2
    assert sorted(FaceCluster.objects.values_list("event_count", flat=True)) == [1, 2]
    assert_consistent()


@pytest.mark.django_db(transaction=True)
def test_merges_of_two_clusters_into_each_other_at_once(default_group, people):
    archive = make_archive(default_group)
    events = clustered(archive, [shot(person) for person in people[:2]])
    first, second = (cluster_of(event) for event in events)
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def merge(target: int, other: int) -> None:
        try:
            start.wait(5)
            with transaction.atomic():
                persons.cluster_merge(kind="face", cluster_id=target, ids=[other])
            outcomes.append("merged")
        except Exception as exc:  # the loser: its target was merged away
            outcomes.append(type(exc).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=merge, args=pair) for pair in ((first, second), (second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["NotFound", "merged"]
    assert FaceCluster.objects.get().event_count == 2
    assert_consistent()


# --- with a real worker


@pytest.fixture
def model_worker(transactional_db, processing_queue, media_root, tmp_path, models_dir):
    """As in tests/test_worker_pipeline.py: a real worker with the prepared models on this test's queue."""
    process = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                            extra_env={"FFV_MODELS_DIR": str(models_dir), "FFV_JOB_LEASE_SECONDS": "5"}).start()
    yield process
    process.stop()


@pytest.mark.worker
def test_megamind_persons_survive_reprocessing_by_a_real_worker(default_group, model_worker):
    """Megamind.avi through the API: split its largest cluster, name it, merge others where allowed, process the
    archive again; the re-run's events (the same video, the same settings) are where a person put them."""
    api = token_client(_user("persons-operator", ALL_VIDEO_PERMS + PERSON_PERMS))

    def processed(archive_id: int) -> dict:
        assert api.post(f"/videos/{archive_id}/process/").status_code == 200
        assert wait_for(lambda: finished(api, archive_id), timeout=300), model_worker.log()[-3000:]
        assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["face_cluster_count"] is not None,
                        timeout=120), model_worker.log()[-3000:]
        return api.get(f"/videos/{archive_id}/").json()

    def placement(archive_id: int) -> dict[tuple[int, str, int], int]:
        events = FaceEvent.objects.filter(video_archive_id=archive_id)
        return {(track, policy, frame): cluster for track, policy, frame, cluster in
                events.values_list("track_id", "post_policy", "frame_index", "cluster_id")}

    archive_id = create_archive(api, default_group, footage("Megamind.avi"), {"body": None, "car": None})
    processed(archive_id)
    found = api.get("/clusters/faces/", {"video_archive": archive_id, "limit": 100}).json()["results"]
    assert len(found) >= 3, found
    largest = max(found, key=lambda cluster: cluster["event_count"])
    assert largest["event_count"] >= 2, found
    moved = FaceEvent.objects.filter(cluster_id=largest["id"]).order_by("id").values_list("id", flat=True)[0]
    split = api.post(f"/clusters/faces/{largest['id']}/split/", {"events": [moved], "name": "Hal, once"},
                     format="json")
    assert split.status_code == 201, split.content
    assert api.patch(f"/clusters/faces/{largest['id']}/", {"name": "Hal"}, format="json").status_code == 200
    singles = [cluster["id"] for cluster in found if cluster["id"] != largest["id"]]
    merged = api.post(f"/clusters/faces/{singles[0]}/merge/", {"ids": singles[1:]}, format="json")
    assert merged.status_code == 200 and len(merged.json()) == len(singles) - 1, merged.content
    assert {result["error"] for result in merged.json()} <= {None, "same_frame"}
    before = placement(archive_id)
    names = dict(FaceCluster.objects.values_list("pk", "name"))
    assert api.get(f"/videos/{archive_id}/").json()["face_cluster_count"] == len(set(before.values()))

    archive = processed(archive_id)
    after = placement(archive_id)
    assert after == before  # every event of the re-run in the cluster a person put its first run's event in
    assert dict(FaceCluster.objects.values_list("pk", "name")) == names
    assert archive["face_cluster_count"] == len(set(after.values()))
    assert_consistent()
