"""videos.clusters: clustering finished archives incrementally, taking them out again, the lock, the task.

Events are made with the ORM with synthetic embeddings: a few identities, each shot with a little noise.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.conftest import wait_for
from videos import clusters, jobs, services, tasks
from videos.models import (
    CLUSTER_MODELS,
    EVENT_MODELS,
    CameraGroup,
    FaceCluster,
    FaceEvent,
    JobState,
    VideoArchive,
)

DIM = 512
_serial = itertools.count(1)


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture
def people() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.stack([unit(row) for row in rng.normal(size=(6, DIM))])


_noise = np.random.default_rng(17)


def shot(person: np.ndarray, scale: float = 0.01) -> np.ndarray:
    """Another picture of the same person: cosine about 0.97 to the identity at the default scale."""
    return unit(person + _noise.normal(scale=scale, size=person.shape))


def make_archive(group: CameraGroup, state: JobState = JobState.COMPLETED) -> VideoArchive:
    return VideoArchive.objects.create(camera_group=group, name="clip", job_state=state, face_cluster_count=None,
                                       body_cluster_count=None, car_cluster_count=None)


def make_event(archive: VideoArchive, embedding: np.ndarray | None, *, kind: str = "face", frame: int | None = None,
               quality: float = 0.5):
    serial = next(_serial)
    return EVENT_MODELS[kind].objects.create(
        video_archive=archive, camera_group=archive.camera_group, frame_timestamp=serial / 25,
        frame_index=serial if frame is None else frame, frame_coords_left=0, frame_coords_top=0,
        frame_coords_right=10, frame_coords_bottom=10, quality=quality, confidence=0.9, track_id=serial,
        post_policy="best", thumbnail=f"t/{serial}.jpg", fullframe=f"f/{serial}.jpg",
        embedding=None if embedding is None else embedding.astype("<f4").tobytes(),
    )


def centroid(cluster) -> np.ndarray:
    return np.frombuffer(bytes(cluster.centroid), dtype="<f4")


def assert_consistent(kind: str = "face") -> None:
    """Every cluster's count, sum and best event agree with its members."""
    for cluster in CLUSTER_MODELS[kind].objects.all():
        members = list(EVENT_MODELS[kind].objects.filter(cluster=cluster))
        assert members, f"cluster {cluster.pk} is empty"
        assert cluster.event_count == len(members)
        expected = np.sum([np.frombuffer(bytes(m.embedding), dtype="<f4") for m in members], axis=0)
        np.testing.assert_allclose(centroid(cluster), expected, atol=1e-4)
        best = max(members, key=lambda m: (m.quality, -m.pk))
        assert cluster.best_event_id == best.pk


def groups_of(events) -> set[frozenset[int]]:
    by_cluster: dict[int, set[int]] = {}
    for event in events:
        event.refresh_from_db()
        by_cluster.setdefault(event.cluster_id, set()).add(event.pk)
    assert None not in by_cluster
    return {frozenset(ids) for ids in by_cluster.values()}


@pytest.fixture
def other_group(db) -> CameraGroup:
    return CameraGroup.objects.create(name="second floor")


pytestmark = pytest.mark.django_db


def test_clusters_one_archive(default_group, people):
    archive = make_archive(default_group)
    alice = [make_event(archive, shot(people[0]), quality=q) for q in (0.5, 0.9, 0.7)]
    bob = [make_event(archive, shot(people[1]), quality=q) for q in (0.6, 0.6)]
    unembedded = make_event(archive, None)
    counts = clusters.cluster_archive(archive_id=archive.pk)
    assert counts == {"face": 2, "body": 0, "car": 0}
    assert groups_of(alice + bob) == {frozenset(e.pk for e in alice), frozenset(e.pk for e in bob)}
    unembedded.refresh_from_db()
    assert unembedded.cluster_id is None
    assert FaceCluster.objects.get(pk=alice[0].cluster_id).best_event_id == alice[1].pk
    assert FaceCluster.objects.get(pk=bob[0].cluster_id).best_event_id == bob[0].pk  # a tie: the older event
    archive.refresh_from_db()
    assert (archive.face_cluster_count, archive.body_cluster_count, archive.car_cluster_count) == (2, 0, 0)
    assert_consistent()


def test_incremental_across_archives_and_camera_groups(default_group, other_group, people):
    first = make_archive(default_group)
    alice_1 = [make_event(first, shot(people[0])) for _ in range(3)]
    make_event(first, shot(people[1]))
    clusters.cluster_archive(archive_id=first.pk)
    alice_cluster = FaceEvent.objects.get(pk=alice_1[0].pk).cluster_id

    second = make_archive(other_group)
    alice_2 = [make_event(second, shot(people[0]), quality=0.95) for _ in range(2)]
    carol = make_event(second, shot(people[2]))
    assert clusters.cluster_archive(archive_id=second.pk) == {"face": 2, "body": 0, "car": 0}
    assert {FaceEvent.objects.get(pk=e.pk).cluster_id for e in alice_2} == {alice_cluster}
    carol.refresh_from_db()
    assert carol.cluster_id not in (None, alice_cluster)
    shared = FaceCluster.objects.get(pk=alice_cluster)
    assert shared.event_count == 5 and shared.best_event_id == alice_2[0].pk
    assert FaceCluster.objects.count() == 3
    first.refresh_from_db()
    assert first.face_cluster_count == 2
    assert_consistent()


def test_faces_of_one_frame_never_share_a_cluster(default_group, people):
    archive = make_archive(default_group)
    # The same person twice in frame 7 (a mirror): two clusters, although the faces are alike.
    twins = [make_event(archive, shot(people[0], 0.001), frame=7, quality=q) for q in (0.9, 0.8)]
    clusters.cluster_archive(archive_id=archive.pk)
    ids = [FaceEvent.objects.get(pk=e.pk).cluster_id for e in twins]
    assert ids[0] != ids[1]
    # Later events of another frame join one of them; a late event of frame 7 can join neither.
    late_other = make_event(archive, shot(people[0], 0.001), frame=8)
    late_same = make_event(archive, shot(people[0], 0.001), frame=7)
    clusters.cluster_archive(archive_id=archive.pk)
    late_other.refresh_from_db()
    late_same.refresh_from_db()
    assert late_other.cluster_id in ids
    assert late_same.cluster_id not in ids
    assert_consistent()


def test_same_frame_number_in_another_archive_is_no_conflict(default_group, people):
    first, second = make_archive(default_group), make_archive(default_group)
    a = make_event(first, shot(people[0]), frame=3)
    b = make_event(second, shot(people[0]), frame=3)
    clusters.cluster_archive(archive_id=first.pk)
    clusters.cluster_archive(archive_id=second.pk)
    assert FaceEvent.objects.get(pk=a.pk).cluster_id == FaceEvent.objects.get(pk=b.pk).cluster_id


def test_bodies_and_cars_cluster_with_their_own_threshold(default_group, people, settings):
    settings.FFV_CLUSTER_THRESHOLD_BODY = 0.9
    archive = make_archive(default_group)
    body_vectors = [shot(people[3]), shot(people[3]), unit(people[3] + 0.8 * people[4])]  # the last: cos ~0.78
    bodies = [make_event(archive, vector, kind="body") for vector in body_vectors]
    # Another dimension; little noise, as the first 128 values of a unit vector are about half its length.
    cars = [make_event(archive, unit(shot(people[5], 0.005)[:128]), kind="car") for _ in range(2)]
    assert clusters.cluster_archive(archive_id=archive.pk) == {"face": 0, "body": 2, "car": 1}
    assert groups_of(bodies) == {frozenset([bodies[0].pk, bodies[1].pk]), frozenset([bodies[2].pk])}
    assert len(groups_of(cars)) == 1
    assert_consistent("body")
    assert_consistent("car")


def test_idempotent(default_group, people):
    archive = make_archive(default_group)
    for person in people[:3]:
        make_event(archive, shot(person))
    first = clusters.cluster_archive(archive_id=archive.pk)
    before = list(FaceCluster.objects.order_by("pk").values_list("pk", "event_count", "centroid"))
    assert clusters.cluster_archive(archive_id=archive.pk) == first
    assert list(FaceCluster.objects.order_by("pk").values_list("pk", "event_count", "centroid")) == before


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.STARTING, JobState.IN_PROGRESS])
def test_busy_or_gone_archives_are_left_alone(default_group, people, state):
    archive = make_archive(default_group, state)
    make_event(archive, shot(people[0]))
    assert clusters.cluster_archive(archive_id=archive.pk) is None
    assert FaceCluster.objects.count() == 0
    archive.refresh_from_db()
    assert archive.face_cluster_count is None
    assert clusters.cluster_archive(archive_id=archive.pk + 1000) is None


def test_reprocessing_takes_the_old_events_out_first(default_group, people, django_capture_on_commit_callbacks):
    kept, redone = make_archive(default_group), make_archive(default_group)
    alice_kept = [make_event(kept, shot(people[0]), quality=0.4) for _ in range(2)]
    clusters.cluster_archive(archive_id=kept.pk)
    alice_redone = make_event(redone, shot(people[0]), quality=0.99)
    bob_redone = make_event(redone, shot(people[1]))
    clusters.cluster_archive(archive_id=redone.pk)
    shared = FaceEvent.objects.get(pk=alice_kept[0].pk).cluster_id
    assert FaceCluster.objects.get(pk=shared).best_event_id == alice_redone.pk
    bob_cluster = FaceEvent.objects.get(pk=bob_redone.pk).cluster_id

    # process/: counts null at once; the worker's claim takes the events out of their clusters, then purges them.
    redone.source_file.name = "videos/x.mp4"
    redone.save()
    with django_capture_on_commit_callbacks(execute=False):
        services.archive_process(archive_id=redone.pk, send=lambda *args: None)
    redone.refresh_from_db()
    assert (redone.face_cluster_count, redone.body_cluster_count, redone.car_cluster_count) == (None, None, None)
    assert FaceCluster.objects.get(pk=shared).event_count == 3  # still there until the run starts
    claimed = jobs.job_claim(archive_id=redone.pk, task_id=redone.job_task_id, worker="test")
    assert claimed is not None and not claimed.resumed
    assert not FaceEvent.objects.filter(video_archive=redone).exists()
    assert not FaceCluster.objects.filter(pk=bob_cluster).exists()  # left empty: deleted
    cluster = FaceCluster.objects.get(pk=shared)
    assert cluster.event_count == 2 and cluster.best_event_id == alice_kept[0].pk
    assert_consistent()

    # The run's end sends clustering (on commit); the counts become numbers again.
    make_event(redone, shot(people[1]))
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_finish(claimed, JobState.COMPLETED)
    redone.refresh_from_db()
    assert redone.job_state == JobState.COMPLETED and redone.face_cluster_count is None
    tasks.cluster_archive(redone.pk)  # what the sent task runs
    redone.refresh_from_db()
    assert (redone.face_cluster_count, redone.body_cluster_count, redone.car_cluster_count) == (1, 0, 0)
    assert_consistent()


def test_job_finish_enqueues_clustering_on_commit(default_group, monkeypatch, django_capture_on_commit_callbacks):
    archive = make_archive(default_group, JobState.IN_PROGRESS)
    archive.job_task_id, archive.job_claim = "t-1", "claim-1"
    archive.save()
    sent: list[int] = []
    monkeypatch.setattr(jobs, "enqueue_clustering", sent.append)
    job = jobs.ClaimedJob(archive_id=archive.pk, task_id="t-1", claim="claim-1", camera_group_id=default_group.pk,
                          source_name="", url=None, stream_settings={})
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_finish(job, JobState.COMPLETED)
    assert sent == [archive.pk]
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_finish(job, JobState.COMPLETED)  # not its job any more: nothing sent
    assert sent == [archive.pk]


def test_deleting_an_archive_takes_its_events_out(default_group, people):
    kept, deleted = make_archive(default_group), make_archive(default_group)
    alice = make_event(kept, shot(people[0]))
    clusters.cluster_archive(archive_id=kept.pk)
    make_event(deleted, shot(people[0]))
    make_event(deleted, shot(people[1]))
    clusters.cluster_archive(archive_id=deleted.pk)
    assert FaceCluster.objects.count() == 2
    services.archive_delete(archive_id=deleted.pk)
    assert FaceCluster.objects.count() == 1
    cluster = FaceCluster.objects.get()
    assert cluster.event_count == 1 and cluster.best_event_id == alice.pk
    np.testing.assert_allclose(centroid(cluster), np.frombuffer(bytes(alice.embedding), "<f4"), atol=1e-5)
    assert_consistent()


def test_deleting_archives_in_the_admin_takes_their_events_out_too(default_group, people, client):
    from django.contrib.auth.models import User

    kept, deleted = make_archive(default_group), make_archive(default_group)
    make_event(kept, shot(people[0]))
    clusters.cluster_archive(archive_id=kept.pk)
    make_event(deleted, shot(people[0]))
    make_event(deleted, shot(people[1]))
    clusters.cluster_archive(archive_id=deleted.pk)
    client.force_login(User.objects.create_superuser("admin", password="pw", email=""))
    response = client.post("/admin/videos/videoarchive/", {"action": "delete_selected", "post": "yes",
                                                            "_selected_action": [deleted.pk]})
    assert response.status_code == 302
    assert not VideoArchive.objects.filter(pk=deleted.pk).exists()
    assert FaceCluster.objects.get().event_count == 1
    assert_consistent()


def test_uncluster_is_idempotent_and_nulls_the_counts(default_group, people):
    archive = make_archive(default_group)
    make_event(archive, shot(people[0]))
    clusters.cluster_archive(archive_id=archive.pk)
    clusters.uncluster_archive(archive_id=archive.pk)
    clusters.uncluster_archive(archive_id=archive.pk)
    assert FaceCluster.objects.count() == 0
    archive.refresh_from_db()
    assert archive.face_cluster_count is None


def test_new_archive_shows_zero_counts(default_group):
    archive = VideoArchive.objects.create(camera_group=default_group, name="new")
    assert (archive.face_cluster_count, archive.body_cluster_count, archive.car_cluster_count) == (0, 0, 0)


def test_sweep_resends_clustering_that_never_ran(default_group):
    old = timezone.now() - timedelta(hours=1)
    lost = make_archive(default_group)
    VideoArchive.objects.filter(pk=lost.pk).update(processing_finish_date=old)
    recent = make_archive(default_group)
    VideoArchive.objects.filter(pk=recent.pk).update(processing_finish_date=timezone.now())
    running = make_archive(default_group, JobState.IN_PROGRESS)
    VideoArchive.objects.filter(pk=running.pk).update(processing_finish_date=old)
    done = VideoArchive.objects.create(camera_group=default_group, job_state=JobState.COMPLETED,
                                       processing_finish_date=old)
    sent: list[int] = []
    assert clusters.clustering_sweep(enqueue=sent.append) == [lost.pk] == sent
    assert done.face_cluster_count == 0


@pytest.mark.django_db(transaction=True)
def test_the_lock_serialises_clustering(default_group):
    held = threading.Event()
    waited: list[float] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                clusters.lock_clusters()
                held.set()
                time.sleep(0.6)
        finally:
            connection.close()

    def waiter() -> None:
        try:
            held.wait(5)
            start = time.monotonic()
            with transaction.atomic():
                clusters.lock_clusters()
                waited.append(time.monotonic() - start)
        finally:
            connection.close()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert waited and waited[0] >= 0.4


@pytest.mark.django_db(transaction=True)
def test_two_archives_clustered_at_once_keep_sums_right(default_group, people):
    archives = [make_archive(default_group) for _ in range(2)]
    for archive in archives:
        for person in people[:4]:
            for _ in range(3):
                make_event(archive, shot(person))
    errors: list[BaseException] = []

    def run(archive_id: int) -> None:
        try:
            clusters.cluster_archive(archive_id=archive_id)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(archive.pk,)) for archive in archives]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert FaceCluster.objects.count() == 4
    assert sorted(FaceCluster.objects.values_list("event_count", flat=True)) == [6, 6, 6, 6]
    assert_consistent()


@pytest.mark.worker
def test_a_real_worker_runs_the_clustering_task(worker, default_group, people):
    archive = make_archive(default_group)
    for person in people[:2]:
        make_event(archive, shot(person))
    clusters.enqueue_clustering(archive.pk)  # to the processing queue, which this test's worker consumes

    def clustered() -> bool:
        archive.refresh_from_db()
        return archive.face_cluster_count is not None

    assert wait_for(clustered, timeout=60), worker.log()[-3000:]
    assert (archive.face_cluster_count, archive.body_cluster_count, archive.car_cluster_count) == (2, 0, 0)
    assert_consistent()
